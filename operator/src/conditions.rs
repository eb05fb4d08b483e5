//! An EventPlugin's status from what the operator found at its targets. Pure: the controller
//! gathers a [`TargetOutcome`] per target (what was applied, what each pod's sidecar reports) and
//! this module turns it into conditions, so every rule of "Ready means running" is tested here.

use crate::crd::{EventPluginStatus, TargetStatus};
use eventplug_contract::StatusReport;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Why something did not happen: a condition reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The reason (`TargetNotFound`, `UpstreamConfigUnreadable`, …).
    pub reason: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl Problem {
    /// A problem.
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// One pod of a target's current ReplicaSet.
#[derive(Debug, Clone, PartialEq)]
pub struct PodReport {
    /// The pod.
    pub name: String,
    /// Whether the pod is Ready.
    pub ready: bool,
    /// The image of its sidecar, if it has one.
    pub image: Option<String>,
    /// What its sidecar said at `/status`, or why it said nothing.
    pub status: Result<StatusReport, String>,
}

/// What one EventPlugin is at one target.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginAtTarget {
    /// Its module: the manifest digest and the module digest, or why it has none.
    pub module: Result<(String, String), Problem>,
    /// Why the target's chain leaves it out (policy, memory), if it does.
    pub refused: Option<Problem>,
}

/// What the operator found and did at one target.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetOutcome {
    /// The Deployment.
    pub deployment: String,
    /// Whether the sidecar and the redirect are in the Deployment, or why not.
    pub injected: Result<(), Problem>,
    /// The revision of the config rendered for the target.
    pub revision: u64,
    /// The config's `stop`, when a FailClosed plugin cannot run.
    pub stopped: Option<String>,
    /// Whether the cursor survives pod replacement (a persistent volume) or only container
    /// restarts.
    pub survives_pod_replacement: bool,
    /// The plugins of the config the target's sidecars are given (after this reconcile: the new
    /// one, or the one left in place when the new one could not be made).
    pub chain: Vec<String>,
    /// The Deployment's pods, of every ReplicaSet.
    pub pods: Vec<PodReport>,
    /// Why the target's sidecar keeps an older image than the operator's, while it does.
    pub outdated: Option<String>,
}

impl TargetOutcome {
    /// Whether `pod` runs plugin `name` at module digest `digest` from this outcome's revision on.
    fn runs(&self, pod: &PodReport, name: &str, digest: &str) -> bool {
        let Ok(report) = &pod.status else {
            return false;
        };
        pod.ready
            && report.revision >= self.revision
            && report
                .plugins
                .iter()
                .any(|p| p.name == name && p.loaded && p.running_digest.as_deref() == Some(digest))
    }
}

fn condition(
    kind: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) -> Condition {
    Condition {
        type_: kind.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: Time(jiff::Timestamp::now()),
    }
}

/// The status of EventPlugin `name` (generation `generation`) from its targets' outcomes, each
/// with what the plugin is there. `previous` keeps the transition times of unchanged conditions.
pub fn status(
    name: &str,
    generation: Option<i64>,
    targets: &[(TargetOutcome, PluginAtTarget)],
    target_problem: Option<Problem>,
    previous: Option<&EventPluginStatus>,
) -> EventPluginStatus {
    let mut conditions = Vec::new();
    let mut push = |kind: &str, ok: bool, reason: &str, message: &str| {
        conditions.push(condition(kind, ok, reason, message, generation));
    };
    let module = targets
        .iter()
        .find_map(|(_, p)| p.module.as_ref().ok())
        .cloned();
    let module_problem = targets
        .iter()
        .find_map(|(_, p)| p.module.as_ref().err())
        .cloned();
    match (&module, &module_problem) {
        (_, Some(problem)) => push("ModuleResolved", false, &problem.reason, &problem.message),
        (Some((manifest, _)), None) => push(
            "ModuleResolved",
            true,
            "Resolved",
            &format!("resolved to {manifest}"),
        ),
        (None, None) => push(
            "ModuleResolved",
            false,
            "NoTarget",
            "no target to resolve the module for",
        ),
    }
    let mut problems: Vec<Problem> = target_problem.into_iter().collect();
    problems.extend(
        targets
            .iter()
            .filter_map(|(t, _)| t.injected.as_ref().err())
            .cloned(),
    );
    problems.extend(targets.iter().filter_map(|(_, p)| p.refused.clone()));
    match problems.first() {
        Some(problem) => push("Injected", false, &problem.reason, &problem.message),
        None if targets.is_empty() => push(
            "Injected",
            false,
            "NoTarget",
            "no Deployment matches spec.target",
        ),
        None => push(
            "Injected",
            true,
            "Injected",
            "the sidecar and the redirect are in every target Deployment",
        ),
    }
    let mut per_target = Vec::new();
    let (mut pods_total, mut running_total) = (0, 0);
    for (outcome, plugin) in targets {
        // Every pod counts: one not Ready, or of an older ReplicaSet, may run without the plugin.
        let pods = &outcome.pods;
        let running = match &plugin.module {
            Ok((_, digest)) if plugin.refused.is_none() => pods
                .iter()
                .filter(|p| outcome.runs(p, name, digest))
                .count(),
            _ => 0,
        };
        pods_total += pods.len();
        running_total += running;
        per_target.push(TargetStatus {
            deployment: outcome.deployment.clone(),
            pods: i32::try_from(pods.len()).unwrap_or(i32::MAX),
            running: i32::try_from(running).unwrap_or(i32::MAX),
        });
    }
    let pod_errors: Vec<String> = targets
        .iter()
        .flat_map(|(t, _)| {
            t.pods.iter().filter_map(|p| match &p.status {
                Err(e) => Some(format!("{}: {e}", p.name)),
                Ok(report) => report
                    .plugins
                    .iter()
                    .find(|pl| pl.name == name)
                    .and_then(|pl| pl.error.as_ref())
                    .map(|e| format!("{}: {e}", p.name)),
            })
        })
        .collect();
    let running_ok = pods_total > 0 && running_total == pods_total;
    let running_message = if running_ok {
        format!("{running_total} of {pods_total} pods run this digest and config")
    } else if pods_total == 0 {
        "the target has no pod yet".to_string()
    } else {
        let mut text = format!("{running_total} of {pods_total} pods run this digest and config");
        if let Some(first) = pod_errors.first() {
            text.push_str(&format!(" ({first})"));
        }
        text
    };
    push(
        "Running",
        running_ok,
        if running_ok {
            "Running"
        } else if pods_total == 0 {
            "NoPods"
        } else {
            "NotRunningEverywhere"
        },
        &running_message,
    );
    let persistent = !targets.is_empty() && targets.iter().all(|(t, _)| t.survives_pod_replacement);
    push(
        "DeliveryGuarantee",
        true,
        if persistent {
            "PodReplacement"
        } else {
            "ContainerRestarts"
        },
        if persistent {
            "event-handler's cursor is on a persistent volume: nothing is lost when a pod is replaced"
        } else {
            "event-handler's cursor survives container restarts (an emptyDir); a replaced pod starts from now: set the chart's persistentVolumeClaim.enabled to keep it"
        },
    );
    let degraded: Option<String> = targets.iter().find_map(|(t, _)| {
        t.stopped.clone().or_else(|| {
            t.pods.iter().find_map(|p| {
                p.status.as_ref().ok().and_then(|r| {
                    r.degraded
                        .clone()
                        .or_else(|| r.upstream_refused.clone())
                        .map(|why| format!("{}: {why}", p.name))
                })
            })
        })
    });
    match &degraded {
        Some(why) => push("Degraded", true, "Degraded", why),
        None => push(
            "Degraded",
            false,
            "AsExpected",
            "no sidecar reports trouble",
        ),
    }
    match targets.iter().find_map(|(t, _)| t.outdated.as_ref()) {
        Some(why) => push("SidecarOutdated", true, "Outdated", why),
        None => push(
            "SidecarOutdated",
            false,
            "Current",
            "every injected sidecar runs the operator's image",
        ),
    }
    let ready = conditions.iter().take(3).all(|c| c.status == "True");
    let ready_message = conditions
        .iter()
        .take(3)
        .find(|c| c.status != "True")
        .map_or_else(
            || running_message.clone(),
            |c| format!("{}: {}", c.type_, c.message),
        );
    let ready_reason = conditions
        .iter()
        .take(3)
        .find(|c| c.status != "True")
        .map_or_else(|| "Running".to_string(), |c| c.reason.clone());
    conditions.insert(
        0,
        condition("Ready", ready, &ready_reason, &ready_message, generation),
    );
    // Unchanged conditions keep the time they last changed.
    if let Some(previous) = previous {
        for c in &mut conditions {
            if let Some(old) = previous
                .conditions
                .iter()
                .find(|o| o.type_ == c.type_ && o.status == c.status)
            {
                c.last_transition_time = old.last_transition_time.clone();
            }
        }
    }
    let target = match targets {
        [] => None,
        [(only, _)] => Some(format!("deployment/{}", only.deployment)),
        many => Some(format!("{} deployments", many.len())),
    };
    EventPluginStatus {
        observed_generation: generation,
        resolved_digest: module.as_ref().map(|(m, _)| m.clone()),
        short_digest: module
            .as_ref()
            .map(|(m, _)| m.trim_start_matches("sha256:").chars().take(12).collect()),
        target,
        running: Some(format!("{running_total}/{pods_total}")),
        conditions,
        targets: per_target,
    }
}

/// Whether two statuses say the same, transition times aside (nothing to write).
pub fn same(a: &EventPluginStatus, b: &EventPluginStatus) -> bool {
    let strip = |s: &EventPluginStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use eventplug_contract::PluginStatus;

    fn report(revision: u64, digest: &str, loaded: bool) -> StatusReport {
        StatusReport {
            api_version: eventplug_contract::API_VERSION.into(),
            accepted_api_versions: Vec::new(),
            config_hash: "sha256:00".into(),
            generation: 1,
            revision,
            ready: true,
            blocked: None,
            upstream_refused: None,
            degraded: None,
            plugins: vec![PluginStatus {
                name: "redact".into(),
                module: "/m".into(),
                version: None,
                running_digest: Some(digest.into()),
                loaded,
                error: (!loaded).then(|| "does not load".to_string()),
            }],
            version: "0.1.0".into(),
        }
    }

    fn outcome(pods: Vec<PodReport>) -> TargetOutcome {
        TargetOutcome {
            deployment: "eh".into(),
            injected: Ok(()),
            revision: 3,
            stopped: None,
            survives_pod_replacement: false,
            chain: Vec::new(),
            pods,
            outdated: None,
        }
    }

    fn plugin() -> PluginAtTarget {
        PluginAtTarget {
            module: Ok(("sha256:aaaa111122223333".into(), "sha256:bbbb".into())),
            refused: None,
        }
    }

    fn pod(name: &str, ready: bool, status: Result<StatusReport, String>) -> PodReport {
        PodReport {
            image: None,
            name: name.into(),
            ready,
            status,
        }
    }

    fn get<'a>(status: &'a EventPluginStatus, kind: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == kind)
            .expect("the condition")
    }

    #[test]
    fn ready_only_when_every_ready_pod_reports_this_digest_at_this_revision() {
        let both = vec![
            pod("a", true, Ok(report(3, "sha256:bbbb", true))),
            pod("b", true, Ok(report(4, "sha256:bbbb", true))),
        ];
        let s = status("redact", Some(2), &[(outcome(both), plugin())], None, None);
        assert_eq!(get(&s, "Ready").status, "True", "{s:?}");
        assert_eq!(s.running.as_deref(), Some("2/2"));
        assert_eq!(s.short_digest.as_deref(), Some("aaaa11112222"));
        assert_eq!(s.target.as_deref(), Some("deployment/eh"));

        for (label, bad) in [
            (
                "an older revision",
                pod("b", true, Ok(report(2, "sha256:bbbb", true))),
            ),
            (
                "another digest",
                pod("b", true, Ok(report(3, "sha256:cccc", true))),
            ),
            (
                "not loaded",
                pod("b", true, Ok(report(3, "sha256:bbbb", false))),
            ),
            (
                "no answer",
                pod("b", true, Err("connection refused".into())),
            ),
        ] {
            let pods = vec![pod("a", true, Ok(report(3, "sha256:bbbb", true))), bad];
            let s = status("redact", Some(2), &[(outcome(pods), plugin())], None, None);
            assert_eq!(get(&s, "Ready").status, "False", "{label}");
            assert_eq!(get(&s, "Running").reason, "NotRunningEverywhere", "{label}");
            assert_eq!(s.running.as_deref(), Some("1/2"), "{label}");
        }
        // A pod that is not Ready (or of an older ReplicaSet) may run without the plugin.
        let pods = vec![
            pod("a", true, Ok(report(3, "sha256:bbbb", true))),
            pod("b", false, Err("starting".into())),
        ];
        let s = status("redact", Some(2), &[(outcome(pods), plugin())], None, None);
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(s.running.as_deref(), Some("1/2"));
        let s = status(
            "redact",
            Some(2),
            &[(outcome(vec![]), plugin())],
            None,
            None,
        );
        assert_eq!(get(&s, "Running").reason, "NoPods");
    }

    #[test]
    fn a_problem_names_its_reason_in_ready() {
        let mut refused = plugin();
        refused.refused = Some(Problem::new("PolicyExceeded", "memoryLimit over maxMemory"));
        let pods = vec![pod("a", true, Ok(report(3, "sha256:bbbb", true)))];
        let s = status(
            "redact",
            Some(1),
            &[(outcome(pods.clone()), refused)],
            None,
            None,
        );
        assert_eq!(get(&s, "Ready").reason, "PolicyExceeded");
        assert!(get(&s, "Ready").message.contains("maxMemory"));
        assert_eq!(
            s.running.as_deref(),
            Some("0/1"),
            "a refused plugin runs nowhere"
        );

        let mut unresolved = plugin();
        unresolved.module = Err(Problem::new("RegistryUnreachable", "registry down"));
        let s = status(
            "redact",
            Some(1),
            &[(outcome(pods), unresolved)],
            None,
            None,
        );
        assert_eq!(get(&s, "ModuleResolved").reason, "RegistryUnreachable");
        assert_eq!(get(&s, "Ready").status, "False");

        let s = status(
            "redact",
            Some(1),
            &[],
            Some(Problem::new("TargetNotFound", "no deployment eh")),
            None,
        );
        assert_eq!(get(&s, "Injected").reason, "TargetNotFound");
        assert_eq!(get(&s, "Ready").status, "False");
    }

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let pods = vec![pod("a", true, Ok(report(3, "sha256:bbbb", true)))];
        let first = status(
            "redact",
            Some(1),
            &[(outcome(pods.clone()), plugin())],
            None,
            None,
        );
        let second = status(
            "redact",
            Some(1),
            &[(outcome(pods), plugin())],
            None,
            Some(&first),
        );
        assert_eq!(
            get(&first, "Ready").last_transition_time,
            get(&second, "Ready").last_transition_time
        );
        assert!(same(&first, &second));
        let third = status(
            "redact",
            Some(1),
            &[(outcome(vec![]), plugin())],
            None,
            Some(&second),
        );
        assert!(!same(&second, &third));
    }
}
