//! The platform policy: what EventPlugins may ask for, set in the operator's settings by the
//! platform team, never granted by an EventPlugin. An EventPlugin asking for more is not loaded and
//! says why in a condition.

use crate::crd::EventPluginSpec;
use eventplug_contract::{ByteSize, FailurePolicy, Mode, PoisonPolicy};
use serde::{Deserialize, Serialize};

/// What EventPlugins may ask for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct Policy {
    /// Namespaces EventPlugins are acted on in; empty means none (the operator does nothing until
    /// the platform team names them).
    pub allowed_namespaces: Vec<String>,
    /// Registries modules may come from (`host[:port]`).
    pub allowed_registries: Vec<String>,
    /// The largest `limits.memoryLimit` of one plugin.
    pub max_memory: ByteSize,
    /// The largest `limits.concurrency` of one plugin.
    pub max_concurrency: u32,
    /// Poison policies a target may use while a FailClosed enforcing plugin runs in it.
    pub fail_closed_poison_policies: Vec<PoisonPolicy>,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            allowed_namespaces: Vec::new(),
            allowed_registries: Vec::new(),
            max_memory: ByteSize(256 << 20),
            max_concurrency: 8,
            fail_closed_poison_policies: vec![PoisonPolicy::Quarantine, PoisonPolicy::Block],
        }
    }
}

/// Why an EventPlugin is not loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The condition reason.
    pub reason: &'static str,
    /// What is refused and what to do.
    pub message: String,
}

fn refuse(reason: &'static str, message: String) -> Refusal {
    Refusal { reason, message }
}

/// The registry host of a reference (`host[:port]/repo…`).
pub fn registry_of(reference: &str) -> &str {
    reference.split('/').next().unwrap_or_default()
}

impl Policy {
    /// Checks one EventPlugin in `namespace` against the policy.
    pub fn check(&self, namespace: &str, spec: &EventPluginSpec) -> Result<(), Refusal> {
        if !self.allowed_namespaces.iter().any(|n| n == namespace) {
            return Err(refuse(
                "NamespaceNotAllowed",
                format!(
                    "namespace {namespace} is not in the operator's policy.allowedNamespaces ({}); ask the platform team to add it",
                    self.allowed_namespaces.join(", ")
                ),
            ));
        }
        let registry = registry_of(&spec.module.reference);
        if !self.allowed_registries.iter().any(|r| r == registry) {
            return Err(refuse(
                "RegistryNotAllowed",
                format!(
                    "registry {registry} is not in the operator's policy.allowedRegistries ({}): push the module to an allowed registry",
                    self.allowed_registries.join(", ")
                ),
            ));
        }
        if spec.limits.memory_limit > self.max_memory {
            return Err(refuse(
                "PolicyExceeded",
                format!(
                    "spec.limits.memoryLimit {} is over the policy's maxMemory {}",
                    spec.limits.memory_limit, self.max_memory
                ),
            ));
        }
        if spec.limits.concurrency > self.max_concurrency {
            return Err(refuse(
                "PolicyExceeded",
                format!(
                    "spec.limits.concurrency {} is over the policy's maxConcurrency {}",
                    spec.limits.concurrency, self.max_concurrency
                ),
            ));
        }
        Ok(())
    }

    /// Checks a target's poison policy against the plugins that run in it.
    pub fn check_poison_policy(
        &self,
        poison: PoisonPolicy,
        plugins: &[(&str, &EventPluginSpec)],
    ) -> Result<(), Refusal> {
        let guard = plugins.iter().find(|(_, spec)| {
            spec.mode == Mode::Enforce && spec.failure_policy == FailurePolicy::FailClosed
        });
        match guard {
            Some((name, _)) if !self.fail_closed_poison_policies.contains(&poison) => Err(refuse(
                "PolicyExceeded",
                format!(
                    "the target's poison policy {poison:?} is not allowed beside FailClosed plugin {name} (policy.failClosedPoisonPolicies)"
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(reference: &str) -> EventPluginSpec {
        serde_json::from_value(serde_json::json!({
            "module": {"reference": reference},
            "target": {"deployment": "event-handler"},
        }))
        .expect("a spec")
    }

    fn policy() -> Policy {
        Policy {
            allowed_namespaces: vec!["teleport".into()],
            allowed_registries: vec!["registry.internal:5000".into()],
            ..Policy::default()
        }
    }

    #[test]
    fn namespaces_registries_and_ceilings_are_the_platforms() {
        let ok = spec("registry.internal:5000/plugins/redact:v1");
        assert_eq!(policy().check("teleport", &ok), Ok(()));
        let err = policy().check("dev", &ok).unwrap_err();
        assert_eq!(err.reason, "NamespaceNotAllowed");
        let err = policy()
            .check("teleport", &spec("ghcr.io/someone/redact:v1"))
            .unwrap_err();
        assert_eq!(err.reason, "RegistryNotAllowed");
        assert!(err.message.contains("ghcr.io"), "{err}");
        let mut big = ok.clone();
        big.limits.memory_limit = ByteSize(1 << 30);
        assert!(
            policy()
                .check("teleport", &big)
                .unwrap_err()
                .message
                .contains("maxMemory")
        );
        let mut wide = ok;
        wide.limits.concurrency = 64;
        assert!(
            policy()
                .check("teleport", &wide)
                .unwrap_err()
                .message
                .contains("maxConcurrency")
        );
        assert!(
            Policy::default().check("teleport", &spec("r/x")).is_err(),
            "nothing is allowed by default"
        );
    }

    #[test]
    fn forward_is_not_a_poison_policy_beside_a_redactor() {
        let mut redact = spec("registry.internal:5000/plugins/redact:v1");
        redact.failure_policy = FailurePolicy::FailClosed;
        let plugins = [("redact", &redact)];
        let err = policy()
            .check_poison_policy(PoisonPolicy::Forward, &plugins)
            .unwrap_err();
        assert!(err.message.contains("redact"), "{err}");
        assert_eq!(
            policy().check_poison_policy(PoisonPolicy::Block, &plugins),
            Ok(())
        );
        redact.mode = Mode::Shadow;
        let plugins = [("redact", &redact)];
        assert_eq!(
            policy().check_poison_policy(PoisonPolicy::Forward, &plugins),
            Ok(())
        );
    }
}
