//! Tokens behind `store_take_token` / `store_release_tokens`: counters with a time to live, scoped
//! per plugin, answered locally during the call.

mod local;

pub use local::LocalTokenStore;

/// Live tokens one scope holds at most: taking another drops the scope's oldest token, so the count
/// a plugin sees stops growing at this number.
pub const MAX_TOKENS_PER_SCOPE: usize = 10_000;
/// Tokens the store holds in all (about 16 MiB of expiry times); a take beyond it fails.
pub const MAX_TOKENS: usize = 1_000_000;
/// Scopes with live tokens one plugin may hold; a take in a new scope beyond it fails.
pub const MAX_SCOPES_PER_PLUGIN: usize = 10_000;
/// The longest time to live a token gets (7 days); longer ones are shortened to it.
pub const MAX_TTL_SECONDS: u32 = 7 * 24 * 3600;

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
#[error("token store: {0}")]
pub struct TokenStoreError(pub String);

/// Where tokens live. Implementations answer from local state so the event path never waits on the
/// network; a shared implementation syncs in the background.
pub trait TokenStore: Send + Sync {
    /// Adds a token to `scope` that lives `ttl_seconds`, and returns how many live tokens the scope
    /// holds now, this one included.
    fn take_token(
        &self,
        plugin: &str,
        scope: &str,
        ttl_seconds: u32,
    ) -> Result<u32, TokenStoreError>;
    /// Removes every token of `scope` and returns how many were live.
    fn release_tokens(&self, plugin: &str, scope: &str) -> Result<u32, TokenStoreError>;
}
