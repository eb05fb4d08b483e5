//! A token store in process memory: the default for `eventplug run` and for tests.

use super::{TokenStore, TokenStoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Tokens kept in this process only, lost when it exits.
#[derive(Default)]
pub struct LocalTokenStore {
    scopes: Mutex<HashMap<(String, String), VecDeque<Instant>>>,
}

impl LocalTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn take_token_at(&self, plugin: &str, scope: &str, ttl: Duration, now: Instant) -> u32 {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let expiries = scopes
            .entry((plugin.to_string(), scope.to_string()))
            .or_default();
        expiries.retain(|expiry| *expiry > now);
        expiries.push_back(now + ttl);
        u32::try_from(expiries.len()).unwrap_or(u32::MAX)
    }

    fn release_tokens_at(&self, plugin: &str, scope: &str, now: Instant) -> u32 {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scopes
            .remove(&(plugin.to_string(), scope.to_string()))
            .map(|expiries| expiries.iter().filter(|expiry| **expiry > now).count())
            .and_then(|count| u32::try_from(count).ok())
            .unwrap_or(0)
    }
}

impl TokenStore for LocalTokenStore {
    fn take_token(
        &self,
        plugin: &str,
        scope: &str,
        ttl_seconds: u32,
    ) -> Result<u32, TokenStoreError> {
        let ttl = Duration::from_secs(u64::from(ttl_seconds));
        Ok(self.take_token_at(plugin, scope, ttl, Instant::now()))
    }

    fn release_tokens(&self, plugin: &str, scope: &str) -> Result<u32, TokenStoreError> {
        Ok(self.release_tokens_at(plugin, scope, Instant::now()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_count_per_scope_and_expire() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        let ttl = Duration::from_secs(300);
        assert_eq!(store.take_token_at("count", "alice", ttl, start), 1);
        assert_eq!(
            store.take_token_at("count", "alice", ttl, start + Duration::from_secs(10)),
            2
        );
        assert_eq!(store.take_token_at("count", "bob", ttl, start), 1);
        assert_eq!(
            store.take_token_at("other-plugin", "alice", ttl, start),
            1,
            "plugins do not share scopes"
        );
        // Past the first two tokens' lifetime only the new one is live.
        assert_eq!(
            store.take_token_at("count", "alice", ttl, start + Duration::from_secs(400)),
            1
        );
    }

    #[test]
    fn release_counts_only_live_tokens_and_empties_the_scope() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        store.take_token_at("p", "s", Duration::from_secs(5), start);
        store.take_token_at("p", "s", Duration::from_secs(100), start);
        assert_eq!(
            store.release_tokens_at("p", "s", start + Duration::from_secs(10)),
            1
        );
        assert_eq!(store.release_tokens_at("p", "s", start), 0);
        assert_eq!(
            store.take_token_at("p", "s", Duration::from_secs(5), start),
            1
        );
    }
}
