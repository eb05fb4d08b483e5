//! The eventplug operator: the `EventPlugin` resource and what it becomes beside event-handler.
//! This crate knows the config contract and Kubernetes, never the engine: modules are checked with
//! a wasm parser and run only in the sidecar.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod coalesce;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod discovery;
pub mod identity;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod module_check;
pub mod modules;
pub mod policy;
pub mod redirect;
pub mod render;
pub mod resolve;
pub mod settings;
pub mod sidecar_status;
pub mod upgrade;
pub mod webhook;
