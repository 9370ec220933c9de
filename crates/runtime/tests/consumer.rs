//! The change-feed consumer against a real upstream feed: an upstream store
//! writes events to its outbox, the consumer follows that store's feed and
//! applies each event in its own database by emitting one event naming the
//! upstream sequence, so the consumer's own outbox shows what was applied,
//! how often and in which transaction. On SQLite, and on PostgreSQL too when
//! `BOWTIE_TEST_DATABASE_URL` names one (each test on fresh schemas).

use std::sync::Arc;
use std::time::Duration;

use bowtie_proto::common::{Event, Money};
use bowtie_runtime::config::{DatabaseSettings, Settings};
use bowtie_runtime::db::Db;
use bowtie_runtime::error::Error;
use bowtie_runtime::feed::{self, Feed, NewEvent};
use bowtie_runtime::peer::{ApplyEvent, Consumer, OpenFeed, payload};
use bowtie_runtime::shutdown::Shutdown;
use bowtie_runtime::sql::migration::{MigrationTrait, MigratorTrait};
use bowtie_runtime::store::Store;

/// Only the runtime's own tables (outbox, cursors, idempotency keys).
struct Migrator;

impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        bowtie_runtime::schema::runtime_migrations()
    }
}

const CONSUMER: &str = "test.things";
/// Most events per transaction, as `peers.feed_batch` sets by default.
const BATCH: usize = 200;
/// The amount that the consumer refuses for good (only the poison test writes it).
const POISON: i64 = 500;

/// Where a test's two stores live.
struct Backend {
    upstream: DatabaseSettings,
    consumer: DatabaseSettings,
    _dir: tempfile::TempDir,
    schemas: Vec<String>,
}

impl Backend {
    fn sqlite() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let base = Settings::defaults()?.accounts.database;
        let url = |name: &str| format!("sqlite://{}", dir.path().join(name).display());
        Ok(Self {
            upstream: base.with_url(&url("upstream.db"), "upstream"),
            consumer: base.with_url(&url("consumer.db"), "consumer"),
            _dir: dir,
            schemas: Vec::new(),
        })
    }

    /// Fresh schemas on `BOWTIE_TEST_DATABASE_URL`, when it is set.
    fn postgres() -> anyhow::Result<Option<Self>> {
        let Ok(url) = std::env::var("BOWTIE_TEST_DATABASE_URL") else {
            return Ok(None);
        };
        if url.trim().is_empty() {
            return Ok(None);
        }
        let tag = uuid::Uuid::new_v4().simple().to_string();
        let schemas = vec![format!("upstream_{tag}"), format!("consumer_{tag}")];
        let base = Settings::defaults()?.accounts.database;
        Ok(Some(Self {
            upstream: base.with_url(&url, &schemas[0]),
            consumer: base.with_url(&url, &schemas[1]),
            _dir: tempfile::tempdir()?,
            schemas,
        }))
    }

    async fn drop_schemas(&self) -> anyhow::Result<()> {
        if self.schemas.is_empty() {
            return Ok(());
        }
        let db = Db::connect(&self.upstream).await?;
        for schema in &self.schemas {
            bowtie_runtime::pg::drop_schema(db.writer(), schema).await?;
        }
        db.close().await;
        Ok(())
    }
}

/// Runs `scenario` on SQLite, then on PostgreSQL when configured.
async fn on_every_backend<F, Fut>(scenario: F) -> anyhow::Result<()>
where
    F: Fn(Arc<Backend>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    scenario(Arc::new(Backend::sqlite()?)).await?;
    if let Some(pg) = Backend::postgres()? {
        let pg = Arc::new(pg);
        let outcome = scenario(pg.clone()).await;
        pg.drop_schemas().await?;
        outcome?;
    }
    Ok(())
}

async fn open_store(settings: &DatabaseSettings, shutdown: &Shutdown) -> anyhow::Result<Store> {
    let db = Db::connect(settings).await?;
    db.migrate::<Migrator>().await?;
    Ok(Store::new(db.clone(), Feed::new(db, shutdown.clone())))
}

/// Writes events with the amounts `amounts` to `upstream`'s feed, 100 per
/// transaction.
async fn write_things(upstream: &Store, amounts: std::ops::Range<i64>) -> anyhow::Result<()> {
    let all: Vec<i64> = amounts.collect();
    for chunk in all.chunks(100) {
        let chunk = chunk.to_vec();
        upstream
            .write(None, move |tx| {
                Box::pin(async move {
                    for n in chunk {
                        tx.emit(NewEvent::new(
                            "thing",
                            n.to_string(),
                            "thing.happened",
                            &Money {
                                currency_code: "USD".into(),
                                minor_units: n,
                            },
                        ));
                    }
                    Ok(())
                })
            })
            .await?;
    }
    Ok(())
}

/// Applies a thing by emitting `thing.applied` with the upstream sequence;
/// refuses the [`POISON`] amount as a malformed payload.
fn apply() -> ApplyEvent {
    Arc::new(|tx, event: Event| {
        Box::pin(async move {
            let Some(thing) = payload::<Money>(&event)? else {
                return Ok(());
            };
            if thing.minor_units == POISON {
                return Err(Error::invalid("payload.minor_units", "is poison"));
            }
            tx.emit(NewEvent::new(
                "applied",
                event.sequence.to_string(),
                "thing.applied",
                &Money {
                    currency_code: "SEQ".into(),
                    minor_units: event.sequence,
                },
            ));
            Ok(())
        })
    })
}

/// `upstream`'s feed from the cursor the consumer asks for, or always from
/// the start when `redeliver` (as a feed that lost track would).
fn open(upstream: &Store, redeliver: bool) -> OpenFeed {
    let feed = upstream.feed().clone();
    Arc::new(move |after| {
        let feed = feed.clone();
        Box::pin(async move {
            let from = if redeliver { 0 } else { after };
            feed.watch(from, |e| e).map_err(tonic::Status::from)
        })
    })
}

/// The upstream sequences the consumer applied, in the order it applied
/// them, and the instants of the transactions that applied them.
async fn applied(consumer: &Store) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
    let events = feed::read_after(consumer.db().reader(), 0, 100_000).await?;
    let mut sequences = Vec::new();
    let mut instants = Vec::new();
    for e in events {
        if let Some(m) = payload::<Money>(&e)? {
            sequences.push(m.minor_units);
            instants.push(
                e.occurred_at
                    .map_or(0, |t| t.seconds * 1_000_000 + i64::from(t.nanos / 1_000)),
            );
        }
    }
    Ok((sequences, instants))
}

/// Waits until the consumer's cursor reaches `sequence`.
async fn caught_up(consumer: &Store, sequence: i64) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let cursor = feed::load_cursor(consumer.db().reader(), CONSUMER).await?;
        if cursor >= sequence {
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "the consumer is at {cursor}, not {sequence}, after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_backlog_is_applied_exactly_once_in_order_in_far_fewer_transactions_than_events()
-> anyhow::Result<()> {
    on_every_backend(|backend| async move {
        let shutdown = Shutdown::new();
        let upstream = open_store(&backend.upstream, &shutdown).await?;
        let consumer = open_store(&backend.consumer, &shutdown).await?;
        write_things(&upstream, 1001..2001).await?;
        let last = feed::last_sequence(upstream.db().reader()).await?;
        Consumer::new(
            CONSUMER,
            consumer.clone(),
            open(&upstream, false),
            apply(),
            shutdown.clone(),
        )
        .with_batch(BATCH)
        .spawn();
        caught_up(&consumer, last).await?;
        let (sequences, instants) = applied(&consumer).await?;
        let expected: Vec<i64> = (last - 999..=last).collect();
        assert_eq!(sequences, expected);
        let mut transactions = instants.clone();
        transactions.dedup();
        assert!(
            transactions.len() <= 1000 / 4,
            "{} transactions for 1,000 events",
            transactions.len()
        );
        shutdown.trigger();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_poison_event_in_a_batch_is_skipped_alone_and_the_rest_applied_once() -> anyhow::Result<()>
{
    on_every_backend(|backend| async move {
        let shutdown = Shutdown::new();
        let upstream = open_store(&backend.upstream, &shutdown).await?;
        let consumer = open_store(&backend.consumer, &shutdown).await?;
        write_things(&upstream, 1..1001).await?;
        let last = feed::last_sequence(upstream.db().reader()).await?;
        let first = last - 999;
        Consumer::new(
            CONSUMER,
            consumer.clone(),
            open(&upstream, false),
            apply(),
            shutdown.clone(),
        )
        .with_batch(BATCH)
        .spawn();
        caught_up(&consumer, last).await?;
        let (sequences, _) = applied(&consumer).await?;
        let poison = first + POISON - 1;
        let expected: Vec<i64> = (first..=last).filter(|s| *s != poison).collect();
        assert_eq!(sequences, expected);
        shutdown.trigger();
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_restarted_consumer_handed_every_event_again_applies_none_twice() -> anyhow::Result<()> {
    on_every_backend(|backend| async move {
        let upstream_shutdown = Shutdown::new();
        let upstream = open_store(&backend.upstream, &upstream_shutdown).await?;
        write_things(&upstream, 1001..2001).await?;
        let last = feed::last_sequence(upstream.db().reader()).await?;

        // The first run applies one event per transaction and stops part way.
        let first_run = Shutdown::new();
        let consumer = open_store(&backend.consumer, &first_run).await?;
        Consumer::new(
            CONSUMER,
            consumer.clone(),
            open(&upstream, true),
            apply(),
            first_run.clone(),
        )
        .with_batch(1)
        .spawn();
        caught_up(&consumer, last - 700).await?;
        first_run.trigger();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let stopped_at = feed::load_cursor(consumer.db().reader(), CONSUMER).await?;
        assert!(stopped_at < last, "the first run finished everything");

        // The second run is handed every event from the start, in batches
        // that straddle the stored cursor.
        let second_run = Shutdown::new();
        let consumer = open_store(&backend.consumer, &second_run).await?;
        Consumer::new(
            CONSUMER,
            consumer.clone(),
            open(&upstream, true),
            apply(),
            second_run.clone(),
        )
        .with_batch(BATCH)
        .spawn();
        caught_up(&consumer, last).await?;
        let (sequences, _) = applied(&consumer).await?;
        let expected: Vec<i64> = (last - 999..=last).collect();
        assert_eq!(sequences, expected);
        second_run.trigger();
        upstream_shutdown.trigger();
        Ok(())
    })
    .await
}

/// Applies a thing by emitting `thing.seen` with how many things its
/// transaction had applied before it, as the transaction's own state
/// ([`bowtie_runtime::store::Tx::local`]) counts them; refuses [`POISON`].
fn count_in_transaction() -> ApplyEvent {
    #[derive(Default)]
    struct Seen(i64);
    Arc::new(|tx, event: Event| {
        Box::pin(async move {
            let Some(thing) = payload::<Money>(&event)? else {
                return Ok(());
            };
            let before = tx.local::<Seen>().0;
            tx.local::<Seen>().0 += 1;
            if thing.minor_units == POISON {
                return Err(Error::invalid("payload.minor_units", "is poison"));
            }
            tx.emit(NewEvent::new(
                "seen",
                event.sequence.to_string(),
                "thing.seen",
                &Money {
                    currency_code: "SEEN".into(),
                    minor_units: before,
                },
            ));
            Ok(())
        })
    })
}

#[tokio::test]
async fn what_a_transaction_keeps_dies_with_it_and_a_rolled_back_batch_leaves_nothing_behind()
-> anyhow::Result<()> {
    on_every_backend(|backend| async move {
        let shutdown = Shutdown::new();
        let upstream = open_store(&backend.upstream, &shutdown).await?;
        let consumer = open_store(&backend.consumer, &shutdown).await?;
        write_things(&upstream, 1..1001).await?;
        let last = feed::last_sequence(upstream.db().reader()).await?;
        Consumer::new(
            CONSUMER,
            consumer.clone(),
            open(&upstream, false),
            count_in_transaction(),
            shutdown.clone(),
        )
        .with_batch(BATCH)
        .spawn();
        caught_up(&consumer, last).await?;
        let (counts, instants) = applied(&consumer).await?;
        assert_eq!(counts.len(), 999, "every thing but the poison is applied");
        // Each transaction's things counted 0, 1, 2, ... from its own start:
        // nothing of an earlier transaction, nor of the batch that rolled
        // back on the poison and was applied again one thing at a time.
        let mut expected = Vec::new();
        let mut alone = 0;
        for (i, at) in instants.iter().enumerate() {
            let first_of_its_transaction = i == 0 || instants[i - 1] != *at;
            let next = if first_of_its_transaction {
                0
            } else {
                expected.last().copied().unwrap_or(-1) + 1
            };
            expected.push(next);
            let last_of_its_transaction = instants.get(i + 1) != Some(at);
            if first_of_its_transaction && last_of_its_transaction {
                alone += 1;
            }
        }
        assert_eq!(counts, expected);
        assert!(
            alone >= 1,
            "the poison's batch was applied one thing a transaction"
        );
        assert!(
            expected.iter().any(|&n| n > 0),
            "some transaction applied more than one thing"
        );
        shutdown.trigger();
        Ok(())
    })
    .await
}
