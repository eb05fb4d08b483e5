//! The operator's resources: `EventPlugin` (a plugin and the event-handler it filters) and
//! `EventPluginTarget` (settings of one target that belong to no single plugin). Their CRDs are
//! generated from these types (`eventplug-operator crd`, checked against `crds/` by a test), so a
//! field's doc comment is what `kubectl explain` shows.
//!
//! The schema refuses at apply time what it can say (enums, patterns, ranges, required fields);
//! checks across fields that a 1.20 API server cannot express (it has no CEL) become conditions.

// `printcolumn(...)` repeats `type_ = "string"` by design; clippy reads it as a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use eventplug_contract::{FailurePolicy, Mode, PluginLimits, PoisonPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of the operator's resources.
pub const GROUP: &str = "eventplug.dev";

/// A WebAssembly plugin run on the audit events one event-handler Deployment forwards to fluentd.
#[derive(CustomResource, Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventplug.dev",
    version = "v1alpha1",
    kind = "EventPlugin",
    doc = "A WebAssembly plugin run on the audit events one event-handler Deployment forwards to fluentd.",
    namespaced,
    shortname = "evp",
    category = "eventplug",
    status = "EventPluginStatus",
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(name = "Target", type_ = "string", json_path = ".status.target"),
    printcolumn(name = "Digest", type_ = "string", json_path = ".status.shortDigest"),
    printcolumn(name = "Running", type_ = "string", json_path = ".status.running"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EventPluginSpec {
    /// The plugin module in an OCI registry.
    pub module: ModuleSource,
    /// The event-handler Deployment whose events the plugin sees.
    pub target: TargetRef,
    /// Lower runs first; ties run in name order.
    #[serde(default)]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: i32,
    /// Event types the plugin is called for (`user.login`, `session.*`, `*`); empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256), inner(length(min = 1, max = 253)))]
    pub events: Vec<String>,
    /// `enforce`: the plugin's verdict, edits and effects apply. `shadow`: what it would have done
    /// is recorded and the stream goes on as if it were absent.
    #[serde(default)]
    pub mode: Mode,
    /// The plugin's own configuration, handed to it as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "any_object")]
    pub config: Option<serde_json::Value>,
    /// Keys of Secrets or ConfigMaps merged into `config` (a Secret's values never appear in the
    /// rendered ConfigMap: they go to a Secret the operator owns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub config_from: Vec<ConfigSource>,
    /// Time, memory and concurrency limits of each call.
    #[serde(default)]
    pub limits: PluginLimits,
    /// What happens to an event when the plugin fails on it: `FailOpen` (it goes on as it entered
    /// the plugin) or `FailClosed` (it is refused, so nothing unfiltered leaves; for redaction).
    #[serde(default)]
    pub failure_policy: FailurePolicy,
    /// An emergency stop: the target's events are refused (503, event-handler retries) until it is
    /// cleared. Never lets events through unfiltered.
    #[serde(default)]
    pub suspend: bool,
    /// What the plugin may do beyond its verdict (filled by a later version; only `{}` now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "reserved_section")]
    pub permissions: Option<serde_json::Value>,
    /// The plugin's shared counters (filled by a later version; only `{}` now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "reserved_section")]
    pub store: Option<serde_json::Value>,
    /// Where the plugin's alerts go (filled by a later version; only `{}` now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "reserved_section")]
    pub alerts: Option<serde_json::Value>,
}

/// Where the module comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ModuleSource {
    /// `host[:port]/repository[:tag][@sha256:digest]`, without a scheme. A tag is resolved to a
    /// digest when the EventPlugin changes or on the annotation `eventplug.dev/refresh`.
    #[schemars(
        length(min = 3, max = 512),
        regex(
            pattern = r"^[a-zA-Z0-9.-]+(:[0-9]+)?/[a-z0-9]+([._/-][a-z0-9]+)*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[a-f0-9]{64})?$"
        )
    )]
    pub reference: String,
    /// A `kubernetes.io/dockerconfigjson` Secret in this namespace with the registry's
    /// credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull_secret: Option<ObjectName>,
}

/// The name of an object in the EventPlugin's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ObjectName {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// The event-handler workload: a Deployment by name or by labels, in the EventPlugin's namespace.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// The Deployment's name. Exactly one of `deployment` and `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub deployment: Option<String>,
    /// Deployments whose labels match. Exactly one of `deployment` and `selector`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// The event-handler container; default: the only container of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub container: Option<String>,
}

/// One key merged into the plugin's config. Exactly one of `secretKeyRef` and `configMapKeyRef`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigSource {
    /// A key of a Secret in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_ref: Option<KeyRef>,
    /// A key of a ConfigMap in this namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_key_ref: Option<KeyRef>,
    /// The config field the value goes to, as a string. Without it the value must be a JSON or
    /// YAML object, merged into the config's top level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub field: Option<String>,
}

/// A key of a named object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyRef {
    /// The object's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// What the operator observed and did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPluginStatus {
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The manifest digest the module reference resolved to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_digest: Option<String>,
    /// The digest's first 12 hex digits, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// The target, as `kubectl get` shows it (`deployment/<name>`, or how many a selector matched).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Pods running this digest and config, of all the target's pods (`2/2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<String>,
    /// `Ready`, `ModuleResolved`, `Injected`, `Running`, `DeliveryGuarantee`, `Degraded`,
    /// `SidecarOutdated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Per target Deployment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,
}

/// One target Deployment's pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// The Deployment.
    pub deployment: String,
    /// Its pods, of every ReplicaSet.
    pub pods: i32,
    /// Of those, pods whose sidecar runs this EventPlugin's digest and config.
    pub running: i32,
}

/// Settings of one target that belong to no single plugin. Optional: without it the operator's
/// defaults hold. Named like the event-handler Deployment it is for, in the same namespace.
#[derive(CustomResource, Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "eventplug.dev",
    version = "v1alpha1",
    kind = "EventPluginTarget",
    doc = "Settings of one event-handler target that belong to no single plugin.",
    namespaced,
    shortname = "evpt",
    category = "eventplug",
    status = "EventPluginTargetStatus",
    printcolumn(
        name = "Injected",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Injected\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EventPluginTargetSpec {
    /// What happens to an event that failed `poisonAttempts` times: `quarantine` (to fluentd under
    /// the quarantine tag; only a record of it while a FailClosed plugin runs), `forward` (as it
    /// arrived; refused beside a FailClosed plugin), `block` (keep refusing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poison_policy: Option<PoisonPolicy>,
    /// Failed attempts of one event before the poison policy applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub poison_attempts: Option<u32>,
    /// The largest event body accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<eventplug_contract::ByteSize>,
    /// The sidecar container's CPU request and limit, and extra memory above what its plugins
    /// need (the memory limit follows from the plugins' limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarResources>,
    /// The real fluentd, when it cannot be read from event-handler's own config.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamOverride>,
}

/// Resources of the sidecar container.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarResources {
    /// CPU request (Kubernetes quantity, `100m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(\.[0-9]+)?m?$"))]
    pub cpu: Option<String>,
    /// Memory above the plugins' own need (instances × memory limit × 2 for reloads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_headroom: Option<eventplug_contract::ByteSize>,
}

/// The fluentd event-handler forwards to, given outright.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpstreamOverride {
    /// Audit events go here (`https://fluentd:8888/test.log`).
    #[schemars(regex(pattern = r"^https?://"))]
    pub audit_url: String,
    /// Session events go to this URL + `.<sid>.log`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://"))]
    pub session_url: Option<String>,
    /// The Secret with `ca.crt`, `client.crt` and `client.key` for fluentd's mTLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_secret: Option<ObjectName>,
}

/// What the operator observed of a target.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPluginTargetStatus {
    /// The generation this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Injected`, `DeliveryGuarantee`, `SidecarOutdated`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Any JSON object, kept as given (`x-kubernetes-preserve-unknown-fields`).
fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true
    })
}

/// A section a later version fills: only an empty object is accepted now. Its fields are kept
/// (not pruned) so that `maxProperties` sees them and refuses them, rather than the API server
/// dropping them silently.
fn reserved_section(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "maxProperties": 0,
        "description": "Reserved for a later version: only {} is accepted now."
    })
}

/// The CRDs of this version, as YAML documents (what `crds/` holds).
pub fn crds_yaml() -> Result<String, String> {
    use kube::CustomResourceExt;
    let mut text = String::new();
    for crd in [EventPlugin::crd(), EventPluginTarget::crd()] {
        text.push_str("---\n");
        text.push_str(&serde_saphyr::to_string(&crd).map_err(|e| e.to_string())?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn crds_in_the_repository_are_generated_from_these_types() {
        let generated = crds_yaml().expect("renders");
        let committed = include_str!("../../crds/eventplug.dev.yaml");
        assert!(
            generated == committed,
            "crds/eventplug.dev.yaml is out of date: run `cargo run -p eventplug-operator -- crd > crds/eventplug.dev.yaml`"
        );
    }

    #[test]
    fn the_schema_is_structural_with_int_or_string_sizes_and_kept_config() {
        let crd = serde_json::to_value(EventPlugin::crd()).expect("json");
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let limits = &spec["properties"]["limits"]["properties"];
        assert_eq!(limits["memoryLimit"]["x-kubernetes-int-or-string"], true);
        assert_eq!(limits["timeout"]["type"], "string");
        assert_eq!(limits["concurrency"]["maximum"], 256.0);
        assert_eq!(
            spec["properties"]["config"]["x-kubernetes-preserve-unknown-fields"],
            true
        );
        assert_eq!(spec["properties"]["permissions"]["maxProperties"], 0);
        assert_eq!(
            spec["properties"]["failurePolicy"]["enum"],
            serde_json::json!(["FailOpen", "FailClosed"])
        );
        let required = spec["required"].as_array().expect("required fields");
        assert!(required.contains(&"module".into()) && required.contains(&"target".into()));
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "evp");
        // Every schema node says its type (or is int-or-string or kept as is): structural.
        fn check(node: &serde_json::Value, at: &str) {
            if let Some(object) = node.as_object() {
                if let Some(properties) = object.get("properties").and_then(|p| p.as_object()) {
                    for (key, child) in properties {
                        let typed = child.get("type").is_some()
                            || child.get("x-kubernetes-int-or-string").is_some()
                            || child.get("x-kubernetes-preserve-unknown-fields").is_some();
                        assert!(typed, "{at}.{key} has no type: {child}");
                        check(child, &format!("{at}.{key}"));
                    }
                }
                if let Some(items) = object.get("items") {
                    check(items, &format!("{at}[]"));
                }
            }
        }
        check(&crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "");
    }
}
