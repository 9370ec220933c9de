//! Streaming exports for a warehouse load: every row of a table in a
//! stable order (a unique key), in batches of rows per message, each row
//! with the cursor to resume after it.
//!
//! The stream is pulled: the next batch is read (keyset pagination, one
//! bounded query after the last key) only when the client has taken the
//! previous message, so a slow reader holds one batch in memory, never the
//! table. A cursor is opaque text naming its export (`movements`, ...) and
//! the last key; a cursor of another export, or text that is not a cursor,
//! is INVALID_ARGUMENT naming the field `cursor`.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;

use crate::error::Error;
use crate::feed::EventStream;

/// Rows per message when the request does not say.
pub const DEFAULT_BATCH: u64 = 1000;
/// Most rows per message.
pub const MAX_BATCH: u64 = 5000;

/// The cursor that resumes export `kind` after the row of key `key`.
pub fn cursor(kind: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{kind}|{key}"))
}

/// The key `cursor` resumes after (`None` for an empty cursor: from the
/// first row); INVALID_ARGUMENT naming `cursor` when it is not a cursor of
/// export `kind`.
pub fn resume_after(kind: &str, cursor: &str) -> Result<Option<String>, Error> {
    if cursor.is_empty() {
        return Ok(None);
    }
    let bad = || Error::invalid("cursor", format!("is not a cursor of the {kind} export"));
    let bytes = URL_SAFE_NO_PAD
        .decode(cursor.as_bytes())
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    match text.split_once('|') {
        Some((k, key)) if k == kind && !key.is_empty() => Ok(Some(key.to_owned())),
        _ => Err(bad()),
    }
}

/// Rows per message asked for: 0 is [`DEFAULT_BATCH`], 1 to [`MAX_BATCH`];
/// anything else is INVALID_ARGUMENT naming `batch_size`.
pub fn batch_size(asked: i32) -> Result<u64, Error> {
    match asked {
        0 => Ok(DEFAULT_BATCH),
        n if n > 0 && (n as u64) <= MAX_BATCH => Ok(n as u64),
        _ => Err(Error::invalid(
            "batch_size",
            format!("must be 0 (default {DEFAULT_BATCH}) or 1 to {MAX_BATCH}"),
        )),
    }
}

/// The stream of export `kind` from the row after `after`: `fetch(after,
/// limit)` reads at most `limit` rows in key order after a key (`None`:
/// from the first), `key` gives a row's key and `wrap` turns a batch of
/// rows, each with its cursor, into a message. The stream ends after a
/// batch shorter than `batch`; a failed read ends it with the error's
/// status.
pub fn stream<Row, Msg, F, Fut, K, W>(
    kind: &'static str,
    after: Option<String>,
    batch: u64,
    fetch: F,
    key: K,
    wrap: W,
) -> EventStream<Msg>
where
    Row: Send + 'static,
    Msg: Send + 'static,
    F: Fn(Option<String>, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Vec<Row>, Error>> + Send + 'static,
    K: Fn(&Row) -> String + Send + Sync + 'static,
    W: Fn(Vec<(Row, String)>) -> Msg + Send + Sync + 'static,
{
    let state = (Some(after), fetch, key, wrap);
    futures::stream::unfold(state, move |(after, fetch, key, wrap)| async move {
        // `None`: the last batch was sent (or a read failed).
        let after = after?;
        match fetch(after, batch).await {
            Err(e) => Some((Err(e.into()), (None, fetch, key, wrap))),
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => {
                let last = rows.len() < batch as usize;
                let rows: Vec<(Row, String)> = rows
                    .into_iter()
                    .map(|r| {
                        let c = cursor(kind, &key(&r));
                        (r, c)
                    })
                    .collect();
                let next = if last {
                    None
                } else {
                    rows.last().map(|(r, _)| Some(key(r)))
                };
                Some((Ok(wrap(rows)), (next, fetch, key, wrap)))
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_resumes_after_its_key_of_its_own_export_only() -> Result<(), Error> {
        let c = cursor("movements", "1700000000000000/0191d6a4");
        assert_eq!(
            resume_after("movements", &c)?.as_deref(),
            Some("1700000000000000/0191d6a4")
        );
        assert_eq!(resume_after("movements", "")?, None);
        for bad in [
            cursor("accounts", "x"),
            "!!".to_owned(),
            cursor("movements", ""),
        ] {
            let Err(Error::InvalidArgument(v)) = resume_after("movements", &bad) else {
                panic!("{bad:?} accepted");
            };
            assert!(format!("{v:?}").contains("cursor"), "{v:?}");
        }
        Ok(())
    }

    #[test]
    fn batch_sizes_default_to_a_thousand_and_stop_at_five_thousand() {
        assert_eq!(batch_size(0).ok(), Some(1000));
        assert_eq!(batch_size(1).ok(), Some(1));
        assert_eq!(batch_size(5000).ok(), Some(5000));
        assert!(batch_size(5001).is_err());
        assert!(batch_size(-1).is_err());
    }

    #[tokio::test]
    async fn the_stream_reads_batch_by_batch_after_the_last_key() {
        let table: Vec<u32> = (1..=7).collect();
        let fetch = move |after: Option<String>, limit: u64| {
            let table = table.clone();
            async move {
                let after: u32 = after.map_or(0, |a| a.parse().unwrap_or(u32::MAX));
                Ok(table
                    .into_iter()
                    .filter(|r| *r > after)
                    .take(limit as usize)
                    .collect::<Vec<u32>>())
            }
        };
        let batches: Vec<Vec<(u32, String)>> = stream(
            "numbers",
            Some("2".to_owned()),
            2,
            fetch,
            u32::to_string,
            |rows| rows,
        )
        .filter_map(|m| async move { m.ok() })
        .collect()
        .await;
        let rows: Vec<Vec<u32>> = batches
            .iter()
            .map(|b| b.iter().map(|(r, _)| *r).collect())
            .collect();
        assert_eq!(rows, vec![vec![3, 4], vec![5, 6], vec![7]]);
        assert_eq!(batches[1][1].1, cursor("numbers", "6"));
    }
}
