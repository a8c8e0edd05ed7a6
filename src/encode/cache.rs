//! The encoder's registered schemas by topic, bounded: at most [`MAX_TOPICS`] topics and
//! [`MAX_VERSIONS`] schema versions per topic are held. Beyond the first bound the topic used
//! least recently is dropped (a record for it later registers its schema again: one registry
//! round trip, which answers with the same id); beyond the second the oldest version of the
//! topic. A dropped entry is freed once no encoding in flight holds it.
//!
//! Invariant: a cached entry is only a shortcut; dropping one never changes what is encoded,
//! only costs one registration (test: `tests::least_recently_used_topics_are_dropped_first`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

/// Topics whose schemas the encoder holds at once.
pub(super) const MAX_TOPICS: usize = 4_096;
/// Schema versions held per topic (a table that changed shape many times).
pub(super) const MAX_VERSIONS: usize = 16;

/// Registered schemas of one part (keys or values) by topic.
pub(crate) struct TopicCache<V> {
    max_topics: usize,
    max_versions: usize,
    topics: RwLock<crate::FastMap<String, Entry<V>>>,
    /// A clock of uses, for "least recently used".
    clock: AtomicU64,
}

struct Entry<V> {
    versions: Vec<Arc<V>>,
    used: AtomicU64,
}

impl<V> TopicCache<V> {
    /// A cache of at most `max_topics` topics of at most `max_versions` versions each.
    pub(crate) fn new(max_topics: usize, max_versions: usize) -> TopicCache<V> {
        TopicCache {
            max_topics: max_topics.max(1),
            max_versions: max_versions.max(1),
            topics: RwLock::new(crate::FastMap::default()),
            clock: AtomicU64::new(0),
        }
    }

    /// The version of `topic` that `pick` chooses among those held, marking the topic used.
    pub(crate) fn find(
        &self,
        topic: &str,
        pick: impl FnOnce(&[Arc<V>]) -> Option<Arc<V>>,
    ) -> Option<Arc<V>> {
        let topics = self.topics.read().ok()?;
        let entry = topics.get(topic)?;
        let found = pick(&entry.versions)?;
        entry.used.store(
            self.clock.fetch_add(1, Ordering::Relaxed),
            Ordering::Relaxed,
        );
        Some(found)
    }

    /// Holds `version` for `topic`, dropping the topic's oldest version beyond
    /// `max_versions` and the least recently used topic beyond `max_topics`.
    pub(crate) fn insert(&self, topic: &str, version: Arc<V>) {
        let Ok(mut topics) = self.topics.write() else {
            return;
        };
        let now = self.clock.fetch_add(1, Ordering::Relaxed);
        if !topics.contains_key(topic) && topics.len() >= self.max_topics {
            let oldest = topics
                .iter()
                .min_by_key(|(_, e)| e.used.load(Ordering::Relaxed))
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                topics.remove(&t);
            }
        }
        let entry = topics.entry(topic.to_string()).or_insert_with(|| Entry {
            versions: Vec::new(),
            used: AtomicU64::new(now),
        });
        entry.used.store(now, Ordering::Relaxed);
        entry.versions.push(version);
        if entry.versions.len() > self.max_versions {
            let extra = entry.versions.len() - self.max_versions;
            entry.versions.drain(..extra);
        }
    }

    /// Topics held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.topics.read().map_or(0, |t| t.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn first(v: &[Arc<u32>]) -> Option<Arc<u32>> {
        v.first().cloned()
    }

    #[test]
    fn least_recently_used_topics_are_dropped_first() {
        let cache = TopicCache::new(3, 2);
        for (i, t) in ["a", "b", "c"].into_iter().enumerate() {
            cache.insert(t, Arc::new(i as u32));
        }
        // `a` is used again, so `b` is the least recently used when `d` comes.
        assert_eq!(cache.find("a", first).as_deref(), Some(&0));
        cache.insert("d", Arc::new(3));
        assert_eq!(cache.len(), 3);
        assert!(cache.find("b", first).is_none(), "b was dropped");
        assert!(cache.find("a", first).is_some() && cache.find("c", first).is_some());
        // A thousand topics through a cache of three hold three.
        for n in 0..1_000 {
            cache.insert(&format!("t{n}"), Arc::new(n));
        }
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn a_topic_keeps_its_newest_versions() {
        let cache = TopicCache::new(3, 2);
        for v in 0..5 {
            cache.insert("a", Arc::new(v));
        }
        let held = cache.find("a", |v| Some(Arc::new(v.iter().map(|x| **x).sum::<u32>())));
        assert_eq!(held.as_deref(), Some(&(3 + 4)), "versions 3 and 4 are held");
    }

    #[test]
    fn a_dropped_entry_is_freed_once_unused() {
        let cache = TopicCache::new(1, 1);
        let v = Arc::new(7u32);
        cache.insert("a", Arc::clone(&v));
        assert_eq!(Arc::strong_count(&v), 2);
        cache.insert("b", Arc::new(8));
        assert_eq!(Arc::strong_count(&v), 1, "the cache let go of it");
    }
}
