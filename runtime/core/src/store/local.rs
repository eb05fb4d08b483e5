//! A token store in process memory: the default for `eventplug run` and for tests.

use super::{MAX_SCOPES_PER_PLUGIN, MAX_TOKENS, MAX_TOKENS_PER_SCOPE, TokenStore, TokenStoreError};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Scopes the store holds at most; expired scopes are dropped before this refuses a new one.
const MAX_SCOPES: usize = 100_000;
/// Every this many takes, scopes whose tokens all expired are dropped.
const PURGE_EVERY: u64 = 1024;

#[derive(Default)]
struct Scopes {
    by_key: HashMap<(String, String), VecDeque<Instant>>,
    /// Scopes held per plugin, kept equal to the counts in `by_key`.
    per_plugin: HashMap<String, usize>,
    /// Tokens held in all scopes, live or not yet dropped.
    tokens: usize,
    takes: u64,
}

impl Scopes {
    fn purge(&mut self, now: Instant) {
        self.by_key
            .retain(|_, expiries| expiries.iter().any(|expiry| *expiry > now));
        self.per_plugin.clear();
        self.tokens = 0;
        for ((plugin, _), expiries) in self.by_key.iter_mut() {
            expiries.retain(|expiry| *expiry > now);
            self.tokens += expiries.len();
            *self.per_plugin.entry(plugin.clone()).or_default() += 1;
        }
    }

    fn remove(&mut self, key: &(String, String)) -> Option<VecDeque<Instant>> {
        let removed = self.by_key.remove(key)?;
        self.tokens = self.tokens.saturating_sub(removed.len());
        if let Some(count) = self.per_plugin.get_mut(&key.0) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_plugin.remove(&key.0);
            }
        }
        Some(removed)
    }
}

/// Tokens kept in this process only, lost when it exits. Bounded: scopes whose tokens all expired
/// are dropped regularly, at most 100,000 scopes are held, at most [`MAX_SCOPES_PER_PLUGIN`] per
/// plugin, at most [`MAX_TOKENS_PER_SCOPE`] tokens per scope and [`MAX_TOKENS`] in all.
pub struct LocalTokenStore {
    scopes: Mutex<Scopes>,
    max_tokens: usize,
}

impl Default for LocalTokenStore {
    fn default() -> Self {
        Self::with_max_tokens(MAX_TOKENS)
    }
}

impl LocalTokenStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store holding at most `max_tokens` tokens in all (tests use a small one).
    pub fn with_max_tokens(max_tokens: usize) -> Self {
        Self {
            scopes: Mutex::default(),
            max_tokens,
        }
    }

    fn take_token_at(
        &self,
        plugin: &str,
        scope: &str,
        ttl: Duration,
        now: Instant,
    ) -> Result<u32, TokenStoreError> {
        let mut scopes = self
            .scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        scopes.takes += 1;
        if scopes.takes.is_multiple_of(PURGE_EVERY) {
            scopes.purge(now);
        }
        let key = (plugin.to_string(), scope.to_string());
        if !scopes.by_key.contains_key(&key) {
            let held = |scopes: &Scopes| scopes.per_plugin.get(plugin).copied().unwrap_or(0);
            if scopes.by_key.len() >= MAX_SCOPES || held(&scopes) >= MAX_SCOPES_PER_PLUGIN {
                scopes.purge(now);
            }
            if scopes.by_key.len() >= MAX_SCOPES {
                return Err(TokenStoreError(format!(
                    "{MAX_SCOPES} scopes hold live tokens; refusing a new scope (release scopes or use shorter TTLs)"
                )));
            }
            if held(&scopes) >= MAX_SCOPES_PER_PLUGIN {
                return Err(TokenStoreError(format!(
                    "plugin {plugin} holds {MAX_SCOPES_PER_PLUGIN} scopes with live tokens, its quota; refusing a new scope (release scopes or use shorter TTLs)"
                )));
            }
            *scopes.per_plugin.entry(plugin.to_string()).or_default() += 1;
        }
        if scopes.tokens >= self.max_tokens {
            scopes.purge(now);
            if scopes.tokens >= self.max_tokens {
                return Err(TokenStoreError(format!(
                    "the store holds {} live tokens, its cap; refusing another (release scopes or use shorter TTLs)",
                    self.max_tokens
                )));
            }
        }
        let Scopes { by_key, tokens, .. } = &mut *scopes;
        let expiries = by_key.entry(key).or_default();
        let before = expiries.len();
        expiries.retain(|expiry| *expiry > now);
        if expiries.len() >= MAX_TOKENS_PER_SCOPE {
            // Drop the token that would expire first, whatever order the tokens came in.
            if let Some(first) = (0..expiries.len()).min_by_key(|&i| expiries[i]) {
                expiries.remove(first);
            }
        }
        expiries.push_back(now + ttl);
        *tokens = (*tokens + expiries.len()).saturating_sub(before);
        Ok(u32::try_from(expiries.len()).unwrap_or(u32::MAX))
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

    /// How many scopes the store holds now.
    pub fn scope_count(&self) -> usize {
        self.scopes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .by_key
            .len()
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
        self.take_token_at(plugin, scope, ttl, Instant::now())
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
        assert_eq!(
            store
                .take_token_at("count", "alice", ttl, start)
                .expect("taken"),
            1
        );
        assert_eq!(
            store
                .take_token_at("count", "alice", ttl, start + Duration::from_secs(10))
                .expect("taken"),
            2
        );
        assert_eq!(
            store
                .take_token_at("count", "bob", ttl, start)
                .expect("taken"),
            1
        );
        assert_eq!(
            store
                .take_token_at("other-plugin", "alice", ttl, start)
                .expect("taken"),
            1,
            "plugins do not share scopes"
        );
        // Past the first two tokens' lifetime only the new one is live.
        assert_eq!(
            store
                .take_token_at("count", "alice", ttl, start + Duration::from_secs(400))
                .expect("taken"),
            1
        );
    }

    #[test]
    fn expired_scopes_are_dropped_so_the_store_stays_bounded() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        for n in 0..PURGE_EVERY - 1 {
            store
                .take_token_at("p", &format!("ip-{n}"), Duration::from_secs(1), start)
                .expect("taken");
        }
        // The next take is the one that purges, after every scope above expired: only it is left.
        store
            .take_token_at(
                "p",
                "late",
                Duration::from_secs(1),
                start + Duration::from_secs(5),
            )
            .expect("taken");
        assert!(
            store.scope_count() <= 2,
            "{} scopes kept",
            store.scope_count()
        );
    }

    #[test]
    fn release_counts_only_live_tokens_and_empties_the_scope() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        store
            .take_token_at("p", "s", Duration::from_secs(5), start)
            .expect("taken");
        store
            .take_token_at("p", "s", Duration::from_secs(100), start)
            .expect("taken");
        assert_eq!(
            store.release_tokens_at("p", "s", start + Duration::from_secs(10)),
            1
        );
        assert_eq!(store.release_tokens_at("p", "s", start), 0);
        assert_eq!(
            store
                .take_token_at("p", "s", Duration::from_secs(5), start)
                .expect("taken"),
            1
        );
    }

    #[test]
    fn a_scope_holds_at_most_its_cap_of_tokens() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        let ttl = Duration::from_secs(300);
        let mut last = 0;
        for _ in 0..MAX_TOKENS_PER_SCOPE + 5 {
            last = store.take_token_at("p", "s", ttl, start).expect("taken");
        }
        assert_eq!(last as usize, MAX_TOKENS_PER_SCOPE);
    }

    #[test]
    fn each_plugin_has_its_own_scope_quota() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        let ttl = Duration::from_secs(300);
        for n in 0..MAX_SCOPES_PER_PLUGIN {
            store
                .take_token_at("greedy", &format!("s{n}"), ttl, start)
                .expect("within the quota");
        }
        let err = store
            .take_token_at("greedy", "one-more", ttl, start)
            .expect_err("over the quota");
        assert!(err.to_string().contains("quota"), "{err}");
        store
            .take_token_at("greedy", "s0", ttl, start)
            .expect("an existing scope still takes tokens");
        store
            .take_token_at("modest", "s0", ttl, start)
            .expect("another plugin is not held back");
        assert_eq!(store.release_tokens_at("greedy", "s1", start), 1);
        store
            .take_token_at("greedy", "one-more", ttl, start)
            .expect("a released scope frees quota");
    }

    #[test]
    fn the_store_holds_at_most_its_cap_of_tokens_in_all() {
        let store = LocalTokenStore::with_max_tokens(3);
        let start = Instant::now();
        let ttl = Duration::from_secs(10);
        for scope in ["a", "b", "c"] {
            store
                .take_token_at("p", scope, ttl, start)
                .expect("within the cap");
        }
        let err = store
            .take_token_at("p", "a", ttl, start)
            .expect_err("over the cap");
        assert!(err.to_string().contains("its cap"), "{err}");
        assert_eq!(store.release_tokens_at("p", "b", start), 1);
        store
            .take_token_at("p", "a", ttl, start)
            .expect("a release makes room");
        // Once they expire, tokens no longer count.
        store
            .take_token_at("q", "x", ttl, start + Duration::from_secs(60))
            .expect("expired tokens were dropped");
    }

    #[test]
    fn a_full_scope_drops_the_token_that_expires_first() {
        let store = LocalTokenStore::new();
        let start = Instant::now();
        // One short-lived token taken last among long-lived ones; filling the scope drops it first.
        for _ in 0..MAX_TOKENS_PER_SCOPE - 1 {
            store
                .take_token_at("p", "s", Duration::from_secs(600), start)
                .expect("taken");
        }
        store
            .take_token_at("p", "s", Duration::from_secs(1), start)
            .expect("taken");
        store
            .take_token_at("p", "s", Duration::from_secs(600), start)
            .expect("taken");
        // The short-lived token went, so after it would have expired every token still counts;
        // had the oldest long-lived token been dropped instead, one fewer would.
        assert_eq!(
            store.release_tokens_at("p", "s", start + Duration::from_secs(5)) as usize,
            MAX_TOKENS_PER_SCOPE
        );
    }
}
