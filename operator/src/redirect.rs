//! How event-handler is pointed at the sidecar without changing its image or its config file:
//! command-line flags (`--fluentd-url`, `--fluentd-session-url`), which beat its TOML and its
//! environment. The flags go into the container's `args`, which the official chart leaves unset
//! (it sets `command` only, and `args` are appended to it); an entry the operator owns there
//! survives the owner's `helm upgrade`, since Helm's three-way merge leaves fields its manifests
//! never had. An environment variable would not do: the TOML beats it, and the chart's TOML always
//! names fluentd.
//!
//! When another field manager owns `args` (chart versions that render `args: [start, --config, …]`,
//! or a `kubectl apply`), `args` is an atomic list: taking it over would fight the chart on every
//! upgrade. Then nothing is changed and the plan says which values to add to the chart instead.

use crate::discovery::Upstream;
use k8s_openapi::api::apps::v1::Deployment;

/// The field manager the operator applies with.
pub const FIELD_MANAGER: &str = "eventplug-operator";

/// What to do about event-handler's flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redirect {
    /// Set the container's `args` to these (the operator owns them).
    Args(Vec<String>),
    /// Leave the Deployment; the chart's owner adds `extra_args` (the `Injected` condition says so).
    Refused {
        /// The flags to add through the chart's values.
        extra_args: Vec<String>,
        /// Why the operator cannot set them itself.
        reason: String,
    },
}

/// The path of an http(s) URL (`https://h:1/a.log` → `/a.log`).
fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    match rest.find('/') {
        Some(slash) => rest[slash..].to_string(),
        None => "/".to_string(),
    }
}

/// The flags that send event-handler's events to the sidecar on `port`, on the same paths.
pub fn redirect_flags(upstream: &Upstream, port: u16) -> Vec<String> {
    let mut flags = vec![format!(
        "--fluentd-url=http://127.0.0.1:{port}{}",
        path_of(&upstream.url.value)
    )];
    if let Some(session) = &upstream.session_url {
        flags.push(format!(
            "--fluentd-session-url=http://127.0.0.1:{port}{}",
            path_of(&session.value)
        ));
    }
    flags
}

/// The field managers that own the `args` of container `container`, read from `managedFields`.
pub fn args_owners(deployment: &Deployment, container: &str) -> Vec<String> {
    let key = format!("k:{{\"name\":\"{container}\"}}");
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|entry| {
            entry
                .fields_v1
                .as_ref()
                .and_then(|f| {
                    f.0.pointer(&format!(
                        "/f:spec/f:template/f:spec/f:containers/{}/f:args",
                        key.replace('~', "~0").replace('/', "~1")
                    ))
                })
                .is_some()
        })
        .filter_map(|entry| entry.manager.clone())
        .collect()
}

/// Plans the redirect of `container` in `deployment` to the sidecar on `port`.
pub fn plan(deployment: &Deployment, container: &str, upstream: &Upstream, port: u16) -> Redirect {
    let flags = redirect_flags(upstream, port);
    let args = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|p| p.containers.iter().find(|c| c.name == container))
        .and_then(|c| c.args.clone())
        .unwrap_or_default();
    let owners: Vec<String> = args_owners(deployment, container)
        .into_iter()
        .filter(|m| m != FIELD_MANAGER)
        .collect();
    let ours_only = args.iter().all(|a| {
        a.starts_with("--fluentd-url=http://127.0.0.1:")
            || a.starts_with("--fluentd-session-url=http://127.0.0.1:")
    });
    if owners.is_empty() && ours_only {
        return Redirect::Args(flags);
    }
    let reason = if owners.is_empty() {
        format!(
            "container {container} has args ({}) that no field manager claims: setting them would replace someone's flags",
            args.join(" ")
        )
    } else {
        format!(
            "container {container}'s args are owned by {} (an atomic list: taking it over would fight the chart at every upgrade)",
            owners.join(", ")
        )
    };
    Redirect::Refused {
        extra_args: flags,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Found, Source};
    use serde_json::json;

    fn upstream() -> Upstream {
        let found = |value: &str| Found {
            value: value.into(),
            source: Source::Toml,
        };
        Upstream {
            url: found("https://fluentd.fluentd.svc:443/events.log"),
            session_url: Some(found("https://fluentd.fluentd.svc/session.log")),
            ca: None,
            cert: None,
            key: None,
            config_file: None,
            storage: None,
        }
    }

    fn deployment(args: Option<serde_json::Value>, managed: serde_json::Value) -> Deployment {
        let mut container = json!({
            "name": "teleport-plugin-event-handler",
            "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
        });
        if let Some(args) = args {
            container["args"] = args;
        }
        serde_json::from_value(json!({
            "metadata": {"name": "eh", "managedFields": managed},
            "spec": {
                "selector": {"matchLabels": {"app": "eh"}},
                "template": {"spec": {"containers": [container]}},
            }
        }))
        .expect("a Deployment")
    }

    fn owning_args(manager: &str) -> serde_json::Value {
        json!({
            "manager": manager,
            "operation": "Update",
            "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"teleport-plugin-event-handler\"}": {".": {}, "f:args": {}, "f:command": {}}
            }}}}}
        })
    }

    const FLAGS: [&str; 2] = [
        "--fluentd-url=http://127.0.0.1:8888/events.log",
        "--fluentd-session-url=http://127.0.0.1:8888/session.log",
    ];

    #[test]
    fn the_official_chart_sets_no_args_so_the_flags_go_there() {
        let helm_owns_command = json!([{
            "manager": "helm", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                "k:{\"name\":\"teleport-plugin-event-handler\"}": {".": {}, "f:command": {}}
            }}}}}
        }]);
        let plan = plan(
            &deployment(None, helm_owns_command),
            "teleport-plugin-event-handler",
            &upstream(),
            8888,
        );
        assert_eq!(plan, Redirect::Args(FLAGS.map(String::from).to_vec()));
    }

    #[test]
    fn args_the_operator_set_before_are_updated() {
        let plan = plan(
            &deployment(
                Some(json!(["--fluentd-url=http://127.0.0.1:9999/old.log"])),
                json!([owning_args(FIELD_MANAGER)]),
            ),
            "teleport-plugin-event-handler",
            &upstream(),
            8888,
        );
        assert_eq!(plan, Redirect::Args(FLAGS.map(String::from).to_vec()));
    }

    #[test]
    fn args_another_manager_owns_are_left_with_the_values_to_add_to_the_chart() {
        let chart_args = json!(["start", "--config", "/etc/teleport-event-handler.toml"]);
        let Redirect::Refused { extra_args, reason } = plan(
            &deployment(Some(chart_args.clone()), json!([owning_args("helm")])),
            "teleport-plugin-event-handler",
            &upstream(),
            8888,
        ) else {
            panic!("must not take over helm's args");
        };
        assert_eq!(extra_args, FLAGS.map(String::from).to_vec());
        assert!(reason.contains("owned by helm"), "{reason}");
        let Redirect::Refused { reason, .. } = plan(
            &deployment(Some(chart_args), json!([])),
            "teleport-plugin-event-handler",
            &upstream(),
            8888,
        ) else {
            panic!("must not replace unclaimed args");
        };
        assert!(reason.contains("no field manager claims"), "{reason}");
    }

    #[test]
    fn the_paths_stay_those_event_handler_was_given() {
        assert_eq!(path_of("https://fluentd:8888/a/b.log"), "/a/b.log");
        assert_eq!(path_of("http://fluentd"), "/");
        let mut up = upstream();
        up.session_url = None;
        assert_eq!(
            redirect_flags(&up, 7000),
            ["--fluentd-url=http://127.0.0.1:7000/events.log"]
        );
    }
}
