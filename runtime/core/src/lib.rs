//! eventplug's plugin runtime: runs WebAssembly plugins on the audit events that Teleport's
//! event-handler forwards.
//!
//! Organised by concept, each depending only on the ones listed before it:
//! - [`store`]: the token store behind `store_take_token` / `store_release_tokens`;
//! - [`abi`]: what a plugin module must export and may import, checked on load, and the host side
//!   of every import;
//! - [`engine`]: the wasmtime engine, the on-disk module cache, and the instance pool;
//! - [`pipeline`]: one audit event's JSON in, a verdict out (envelope, plugin chain, edits, cache).
//!
//! The sidecar (`eventplug-sidecar`) and the command line (`eventplug`) are built on it; the config
//! types come from `eventplug-contract`, the protobuf messages from `eventplug-proto`.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
pub mod engine;
pub mod pipeline;
pub mod store;
