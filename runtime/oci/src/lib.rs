//! Plugin modules as OCI artifacts: references (`host[:port]/repo[:tag][@sha256:…]`, with or
//! without `oci://`), pulls that resolve a tag once and fetch by digest with every byte verified,
//! the four wasm layouts found in registries, pushes in the CNCF wasm v0 layout, credentials from
//! Docker config JSON (imagePullSecrets), and a content-addressed cache on disk.
//!
//! No engine and no Kubernetes client: an operator can use this crate to resolve and check
//! references without linking wasmtime.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
mod cache;
mod client;
mod error;
mod layout;
mod progress;
mod reference;

pub use auth::{Credential, Credentials};
pub use cache::{Cache, sha256_digest};
pub use client::{
    DEFAULT_MAX_MODULE_BYTES, HostSettings, Pulled, PushRequest, Registry, RegistrySettings,
};
pub use error::OciError;
pub use layout::{
    COMPAT_FILE, IMAGE_CONFIGS, Layout, SOLO_CONFIG, SOLO_LAYER, TAR_GZ_LAYERS, WASM_CONFIG_V0,
    WASM_LAYER, WASM_LAYER_V1,
};
pub use reference::{Reference, is_sha256_digest};

/// ABI version annotation key `eventplug push` writes.
pub const ANNOTATION_ABI_VERSION: &str = "dev.eventplug.abi.version";
/// SDK version annotation key `eventplug push` writes.
pub const ANNOTATION_SDK_VERSION: &str = "dev.eventplug.sdk.version";

/// Runs `future` to completion on a runtime of its own, on a thread of its own, so it can be
/// called from synchronous code whether or not that code runs inside another runtime.
pub fn block_on<T: Send>(future: impl std::future::Future<Output = T> + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map(|runtime| runtime.block_on(future))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            .unwrap_or_else(|e| panic!("cannot start an async runtime: {e}"))
    })
}
