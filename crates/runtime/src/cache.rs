//! A read cache for hot lookups (an account by id), kept correct by the
//! service's own change feed rather than by a time to live.
//!
//! - A write on this process invalidates the entries of the aggregates it
//!   emitted events for as soon as it commits ([`crate::store::Store`] calls
//!   [`Invalidates::invalidate`]), so a client reads its own writes.
//! - Writes of other replicas reach the cache through the outbox: a follower
//!   reads the feed from the sequence at start-up and drops every entry an
//!   event names, so replicas converge within one poll interval.
//! - A reader that loads from the database inserts only if nothing was
//!   invalidated since it started ([`FeedCache::generation`]), so a slow
//!   reader can never put back a value a concurrent write replaced.
//! - Whenever the follower loses the feed (database unreachable), the cache
//!   empties and stays off until it has a sequence to follow from again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use crate::feed;
use crate::shutdown::Shutdown;
use crate::store::Store;

/// Events read per batch by the follower.
const FOLLOW_BATCH: u64 = 1_000;
/// How often an idle follower looks for other replicas' writes.
const POLL: Duration = Duration::from_millis(200);

/// Something that drops cached state when an aggregate changes.
pub trait Invalidates: Send + Sync + std::fmt::Debug {
    /// `aggregate_type` / `aggregate_id` changed.
    fn invalidate(&self, aggregate_type: &str, aggregate_id: &str);
}

/// Cached values of one aggregate type by aggregate id, bounded in size.
#[derive(Debug)]
pub struct FeedCache<V> {
    aggregate_type: &'static str,
    capacity: usize,
    entries: RwLock<HashMap<String, V>>,
    generation: AtomicU64,
    enabled: AtomicBool,
}

impl<V: Clone + Send + Sync + std::fmt::Debug + 'static> FeedCache<V> {
    /// A cache of `aggregate_type` values holding at most `capacity` of
    /// them; off until [`FeedCache::follow`] has found its place in the feed.
    pub fn new(aggregate_type: &'static str, capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            aggregate_type,
            capacity: capacity.max(1),
            entries: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            enabled: AtomicBool::new(false),
        })
    }

    /// The cached value of `id`, if any.
    pub fn get(&self, id: &str) -> Option<V> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.entries.read().ok()?.get(id).cloned()
    }

    /// A stamp to take before reading from the database, for
    /// [`FeedCache::insert_if_current`].
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Caches `value` unless something was invalidated since `generation`
    /// was taken (the value may then be stale). When full, an arbitrary entry
    /// makes room.
    pub fn insert_if_current(&self, id: String, value: V, generation: u64) {
        if !self.enabled.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut entries) = self.entries.write() else {
            return;
        };
        // Checked under the write lock: an invalidation takes the same lock
        // after bumping the generation, so it cannot slip in between.
        if self.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if entries.len() >= self.capacity
            && !entries.contains_key(&id)
            && let Some(victim) = entries.keys().next().cloned()
        {
            entries.remove(&victim);
        }
        entries.insert(id, value);
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.entries.read().map(|e| e.len()).unwrap_or(0)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn drop_id(&self, id: &str) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.write() {
            entries.remove(id);
        }
    }

    fn switch_off(&self) {
        self.enabled.store(false, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        if let Ok(mut entries) = self.entries.write() {
            entries.clear();
        }
    }

    /// Follows `store`'s feed until `shutdown`, dropping every entry an
    /// event names; turns the cache on once it knows where to start.
    pub fn follow(self: &Arc<Self>, store: Store, shutdown: Shutdown) {
        let cache = Arc::clone(self);
        tokio::spawn(async move {
            tokio::select! {
                () = cache.run(&store) => {}
                () = shutdown.wait() => {}
            }
        });
    }

    async fn run(&self, store: &Store) {
        let mut commits = store.feed().commits();
        let mut cursor: Option<i64> = None;
        loop {
            let reader = store.db().reader();
            let step = match cursor {
                None => feed::last_sequence(reader).await.map(|last| {
                    // Nothing is cached yet, so nothing before `last` matters.
                    self.enabled.store(true, Ordering::Release);
                    (last, false)
                }),
                Some(after) => feed::read_after(reader, after, FOLLOW_BATCH)
                    .await
                    .map(|events| {
                        for e in events
                            .iter()
                            .filter(|e| e.aggregate_type == self.aggregate_type)
                        {
                            self.drop_id(&e.aggregate_id);
                        }
                        let more = events.len() as u64 == FOLLOW_BATCH;
                        (events.last().map_or(after, |e| e.sequence), more)
                    }),
            };
            match step {
                Ok((next, more)) => {
                    cursor = Some(next);
                    if more {
                        continue;
                    }
                }
                Err(e) => {
                    if cursor.is_some() {
                        tracing::warn!(error = %e, "cache lost the feed; off until it is back");
                    }
                    self.switch_off();
                    cursor = None;
                }
            }
            tokio::select! {
                _ = commits.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

impl<V: Clone + Send + Sync + std::fmt::Debug + 'static> Invalidates for FeedCache<V> {
    fn invalidate(&self, aggregate_type: &str, aggregate_id: &str) {
        if aggregate_type == self.aggregate_type {
            self.drop_id(aggregate_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on() -> Arc<FeedCache<u32>> {
        let cache = FeedCache::new("account", 2);
        cache.enabled.store(true, Ordering::Release);
        cache
    }

    #[test]
    fn a_value_read_before_an_invalidation_is_not_cached() {
        let cache = on();
        let stamp = cache.generation();
        cache.invalidate("account", "a");
        cache.insert_if_current("a".into(), 1, stamp);
        assert_eq!(cache.get("a"), None);
        let stamp = cache.generation();
        cache.insert_if_current("a".into(), 2, stamp);
        assert_eq!(cache.get("a"), Some(2));
    }

    #[test]
    fn invalidation_drops_only_its_own_aggregate_type() {
        let cache = on();
        cache.insert_if_current("a".into(), 1, cache.generation());
        cache.invalidate("contact", "a");
        assert_eq!(cache.get("a"), Some(1));
        cache.invalidate("account", "a");
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn a_full_cache_makes_room_and_never_exceeds_its_capacity() {
        let cache = on();
        for (i, id) in ["a", "b", "c", "d"].into_iter().enumerate() {
            cache.insert_if_current(id.into(), i as u32, cache.generation());
        }
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get("d"), Some(3));
    }

    #[test]
    fn a_cache_that_is_off_neither_answers_nor_stores() {
        let cache = FeedCache::<u32>::new("account", 8);
        cache.insert_if_current("a".into(), 1, cache.generation());
        assert!(cache.is_empty());
        cache.enabled.store(true, Ordering::Release);
        cache.insert_if_current("a".into(), 1, cache.generation());
        cache.switch_off();
        assert_eq!(cache.get("a"), None);
        assert!(cache.is_empty());
    }
}
