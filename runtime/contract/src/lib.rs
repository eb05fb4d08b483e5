//! The contract between whoever writes a sidecar config (the operator, or a person) and the sidecar
//! that reads it: the config and plugin settings, the duration and size types their keys use, the
//! config `apiVersion`s, the status report the sidecar serves at `/status`, and validation errors
//! that name the key at fault.
//!
//! Every type serializes, deserializes and describes itself as JSON Schema, and none pulls in the
//! engine, Kubernetes or an HTTP stack, so the operator can depend on it alone.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod byte_size;
mod duration;
mod parse;
mod plugin;
mod sidecar;
mod status;
mod validation;

pub use byte_size::ByteSize;
pub use duration::{Duration, MAX_DURATION};
pub use parse::from_yaml;
pub use plugin::{FailurePolicy, MAX_NAME_BYTES, Mode, PluginLimits, PluginSettings};
pub use sidecar::{
    ACCEPTED_API_VERSIONS, API_VERSION, API_VERSION_V1ALPHA1, API_VERSION_V1ALPHA2, AdminConfig,
    DEFAULT_ADMIN_ADDRESS, DeliveryConfig, EVENT_HANDLER_TIMEOUT, EmptySection, KIND,
    KubernetesSource, ListenConfig, LogFormat, LoggingConfig, MAX_INSTANCES, MIN_RELOAD_INTERVAL,
    PoisonPolicy, RegistriesConfig, RegistryHost, SidecarConfig, SourceConfig, UpstreamConfig,
    url_path,
};
pub use status::{PluginStatus, StatusReport};
pub use validation::ValidationError;
