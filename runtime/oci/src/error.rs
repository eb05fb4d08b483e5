//! Errors of talking to registries and of the cache. Each names the registry, the repository and
//! the reference involved and says what to do; none carries a credential.

use std::path::PathBuf;

/// Why a reference could not be resolved, pulled, pushed or read from the cache.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The text is not a reference eventplug understands.
    #[error("`{reference}` is not a valid reference: {message}")]
    BadReference {
        /// The text as given.
        reference: String,
        /// What is wrong with it.
        message: String,
    },
    /// The registry asked for credentials and none were configured for it.
    #[error(
        "401: the registry asks for credentials for {name} and none are configured for {registry} (reference {reference}); add them to the Docker config / pull secret"
    )]
    NoCredentials {
        /// The registry host.
        registry: String,
        /// `registry/repository`.
        name: String,
        /// The reference.
        reference: String,
    },
    /// The registry refused the credentials given.
    #[error(
        "401: the registry refused the credentials for {name}; check the pull secret (reference {reference})"
    )]
    Unauthorized {
        /// `registry/repository`.
        name: String,
        /// The reference.
        reference: String,
    },
    /// The registry accepted the credentials but refused the operation.
    #[error(
        "403: the registry denied {operation} of {name} to these credentials (reference {reference}); grant the account access to the repository"
    )]
    Denied {
        /// `pull` or `push`.
        operation: &'static str,
        /// `registry/repository`.
        name: String,
        /// The reference.
        reference: String,
    },
    /// The tag, digest or repository does not exist.
    #[error(
        "404: {reference} was not found at {registry}: {what}; check the repository, the tag or digest, and that it was pushed"
    )]
    NotFound {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// What is missing, as the registry said.
        what: String,
    },
    /// The registry could not be reached (after the retries).
    #[error(
        "cannot reach registry {registry} for {reference} after {}: {message}; check the address, that the registry is up, plainHttp/ca for this host, and network policy",
        attempts_text(*attempts)
    )]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// Attempts made.
        attempts: u32,
        /// What the network said.
        message: String,
    },
    /// The registry failed with a 5xx answer (after the retries).
    #[error(
        "registry {registry} failed on {reference} with {code} after {}: {message}; try again later, or check the registry's logs and storage",
        attempts_text(*attempts)
    )]
    ServerFailed {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// The HTTP status.
        code: u16,
        /// Attempts made.
        attempts: u32,
        /// What it said.
        message: String,
    },
    /// Bytes from the registry (or the cache) do not have the digest they were asked for.
    #[error(
        "digest mismatch for {reference}: the {what} has digest {actual}, not {expected}; the content is corrupt or was replaced, and nothing was loaded (push it again, or fix the pinned digest)"
    )]
    DigestMismatch {
        /// The reference.
        reference: String,
        /// `manifest` or `module layer`.
        what: &'static str,
        /// The digest asked for.
        expected: String,
        /// The digest the bytes have.
        actual: String,
    },
    /// The artifact is not a wasm module in a layout eventplug reads.
    #[error(
        "{reference} is not a wasm plugin artifact: it has {found}; eventplug accepts {accepted}; push the module with `eventplug push` (or oras with config application/vnd.wasm.config.v0+json and layer application/wasm)"
    )]
    UnsupportedLayout {
        /// The reference.
        reference: String,
        /// The media types found.
        found: String,
        /// The layouts accepted.
        accepted: String,
    },
    /// The module is over the size cap.
    #[error(
        "{reference}: the module is {size} bytes, over the limit of {limit} bytes; make the module smaller or raise the limit"
    )]
    TooLarge {
        /// The reference.
        reference: String,
        /// Its size (as declared, or as far as it was read).
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The registry answered something else that failed.
    #[error("registry {registry} failed on {reference}: {message}")]
    Registry {
        /// The registry host.
        registry: String,
        /// The reference.
        reference: String,
        /// What it said.
        message: String,
    },
    /// The registry connection settings are unusable (a CA file that cannot be read, say).
    #[error("registry settings for {registry}: {message}")]
    Settings {
        /// The registry host.
        registry: String,
        /// What is wrong.
        message: String,
    },
    /// The Docker config (pull secret) could not be read.
    #[error("registry credentials file {path}: {message}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the credentials themselves).
        message: String,
    },
    /// The cache could not be written or read.
    #[error("module cache {path}: {message}")]
    Cache {
        /// The file or folder.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A module file given to push could not be read, or a pulled one written.
    #[error("{path}: {error}")]
    File {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        error: std::io::Error,
    },
}

fn attempts_text(attempts: u32) -> String {
    if attempts == 1 {
        "1 attempt".into()
    } else {
        format!("{attempts} attempts")
    }
}

impl OciError {
    /// Whether retrying may help (network errors and registry 5xx answers).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::ServerFailed { .. })
    }
}
