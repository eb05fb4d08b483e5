//! eventplug: runs WebAssembly plugins on the audit events that Teleport's event-handler forwards.
//!
//! The library is organised by concept:
//! - [`proto`]: the interop contract generated from `proto/` (envelope, request/response, effects);
//! - [`abi`]: what a plugin module must export and may import, checked on load, and the host side
//!   of every import;
//! - [`engine`]: the wasmtime engine, the on-disk module cache, limits and the instance pool;
//! - [`store`]: the token store behind `store_take_token` / `store_release_tokens`;
//! - [`pipeline`]: one audit event's JSON in, a verdict out (envelope, plugin chain, edits, cache);
//! - [`testing`]: fixtures and records for offline plugin tests (`eventplug test`);
//! - [`serve`]: the sidecar between event-handler and fluentd (`eventplug serve`);
//! - [`cli`]: the `eventplug` command line.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod abi;
pub mod cli;
pub mod engine;
pub mod pipeline;
pub mod proto;
pub mod serve;
pub mod settings;
pub mod store;
pub mod testing;
