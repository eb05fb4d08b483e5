//! Where event-handler really sends its events, read from event-handler itself: its container's
//! command line, its environment and the TOML file it is started with (mounted from a ConfigMap),
//! with the precedence event-handler's flag parser (kong) gives them: a command-line flag beats the
//! TOML, which beats the environment, which beats the defaults.
//!
//! Nothing is guessed: a config that cannot be read, a TOML and an environment that name different
//! fluentd URLs, or certificate files no volume provides are errors that become conditions.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Volume, VolumeMount};
use std::collections::BTreeMap;
use std::path::{Component, Path};

/// The event-handler flags, TOML keys and environment variables that name the upstream (Teleport's
/// event-handler; the `FDWRD` spelling of three of them is its own).
const SETTINGS: [Setting; 5] = [
    Setting {
        flag: "--fluentd-url",
        toml: "url",
        env: "FDFWD_FLUENTD_URL",
    },
    Setting {
        flag: "--fluentd-session-url",
        toml: "session-url",
        env: "FDFWD_FLUENTD_SESSION_URL",
    },
    Setting {
        flag: "--fluentd-ca",
        toml: "ca",
        env: "FDWRD_FLUENTD_CA",
    },
    Setting {
        flag: "--fluentd-cert",
        toml: "cert",
        env: "FDWRD_FLUENTD_CERT",
    },
    Setting {
        flag: "--fluentd-key",
        toml: "key",
        env: "FDWRD_FLUENTD_KEY",
    },
];

/// The flag and variable naming event-handler's config file.
const CONFIG_FLAG: &str = "--config";
const CONFIG_ENV: &str = "FDFWD_CONFIG";
const STORAGE_FLAG: &str = "--storage";
const STORAGE_ENV: &str = "FDFWD_STORAGE";

struct Setting {
    flag: &'static str,
    toml: &'static str,
    env: &'static str,
}

impl Setting {
    /// A file setting (ca, cert, key): kong checks the file exists, and when both the environment
    /// and the TOML set one, kong 0.7.1 leaves it empty (the stand-in's tests show it), whatever
    /// the values.
    fn is_file(&self) -> bool {
        matches!(self.toml, "ca" | "cert" | "key")
    }
}

/// Where one upstream setting came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag.
    Flag,
    /// The TOML config file.
    Toml,
    /// An environment variable.
    Env,
}

/// A setting's value and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The value.
    pub value: String,
    /// Its source.
    pub source: Source,
}

/// A file of a Secret as a container sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretFile {
    /// The Secret.
    pub secret: String,
    /// The key whose value the file holds.
    pub key: String,
}

/// event-handler's upstream, as it would use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// `[forward.fluentd] url`: where audit events go.
    pub url: Found,
    /// `session-url`: where session events go, if set.
    pub session_url: Option<Found>,
    /// `ca`, `cert`, `key`: file paths in event-handler's container, and which Secret key each is.
    pub ca: Option<(Found, SecretFile)>,
    /// The client certificate.
    pub cert: Option<(Found, SecretFile)>,
    /// The client key.
    pub key: Option<(Found, SecretFile)>,
    /// The config file event-handler reads, if any: ConfigMap and key.
    pub config_file: Option<(String, String)>,
    /// event-handler's storage folder (its cursor), if set (`--storage`, `storage`,
    /// `FDFWD_STORAGE`, in kong's order).
    pub storage: Option<String>,
}

/// Why the upstream cannot be known.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The container is not there (or is not named and there are several).
    #[error("{0}")]
    Container(String),
    /// The config file cannot be read.
    #[error("{0}")]
    Unreadable(String),
    /// Two sources name different values and it is not certain which one wins.
    #[error("{0}")]
    Ambiguous(String),
    /// No fluentd URL is set anywhere.
    #[error("{0}")]
    Missing(String),
}

impl DiscoveryError {
    /// The condition reason.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Container(_) => "ContainerNotFound",
            Self::Unreadable(_) => "UpstreamConfigUnreadable",
            Self::Ambiguous(_) => "UpstreamConfigAmbiguous",
            Self::Missing(_) => "UpstreamNotConfigured",
        }
    }
}

/// The container event-handler runs in: `name`, or the pod's only container besides the injected
/// sidecar.
pub fn event_handler_container<'a>(
    deployment: &'a Deployment,
    name: Option<&str>,
) -> Result<&'a Container, DiscoveryError> {
    let containers = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .map(|s| s.containers.as_slice())
        .unwrap_or_default();
    let named: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    match name {
        Some(name) => containers.iter().find(|c| c.name == name).ok_or_else(|| {
            DiscoveryError::Container(format!(
                "the Deployment has no container `{name}` (it has: {}); set spec.target.container",
                named.join(", ")
            ))
        }),
        None => match containers
            .iter()
            .filter(|c| c.name != crate::inject::SIDECAR_CONTAINER)
            .collect::<Vec<_>>()
            .as_slice()
        {
            [only] => Ok(only),
            _ => Err(DiscoveryError::Container(format!(
                "the Deployment has {} containers ({}): name event-handler's in spec.target.container",
                containers.len(),
                named.join(", ")
            ))),
        },
    }
}

/// `--flag value` and `--flag=value` of a command line; later ones win, as with kong.
fn flag_value(command_line: &[String], flag: &str) -> Option<String> {
    let mut found = None;
    let mut words = command_line.iter();
    while let Some(word) = words.next() {
        if word == flag {
            found = words.next().cloned();
        } else if let Some(value) = word
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value.to_string());
        }
    }
    found
}

/// Reads event-handler's upstream from `deployment`'s container `container` (see
/// `event_handler_container`), reading ConfigMap keys through `config_maps` (name → key → text).
/// Flags whose value starts with `ignore_prefix` (the sidecar's own redirect) are not counted.
pub fn discover(
    deployment: &Deployment,
    container: Option<&str>,
    config_maps: &BTreeMap<String, BTreeMap<String, String>>,
    ignore_prefix: Option<&str>,
) -> Result<Upstream, DiscoveryError> {
    let container = event_handler_container(deployment, container)?;
    let pod = deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref());
    let volumes = pod.and_then(|p| p.volumes.as_deref()).unwrap_or_default();
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    let command_line: Vec<String> = container
        .command
        .iter()
        .chain(container.args.iter())
        .flatten()
        .cloned()
        .collect();
    let env = |name: &str| -> Result<Option<String>, DiscoveryError> {
        let Some(var) = container
            .env
            .iter()
            .flatten()
            .rev()
            .find(|v| v.name == name)
        else {
            return Ok(None);
        };
        match (&var.value, &var.value_from) {
            (_, Some(_)) => Err(DiscoveryError::Unreadable(format!(
                "event-handler's {name} comes from a reference (valueFrom) the operator does not follow: set the value, or give the upstream in an EventPluginTarget"
            ))),
            (value, None) => Ok(value.clone()),
        }
    };
    if container.env_from.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(DiscoveryError::Unreadable(
            "event-handler's container takes variables from envFrom, which may set the fluentd URL: give the upstream in an EventPluginTarget".into(),
        ));
    }

    let config_path = match flag_value(&command_line, CONFIG_FLAG) {
        Some(path) => Some(path),
        None => env(CONFIG_ENV)?,
    };
    let (toml, config_file) = match &config_path {
        Some(path) => {
            let (config_map, key) = config_map_file(path, mounts, volumes)?;
            let text = config_maps
                .get(&config_map)
                .and_then(|data| data.get(&key))
                .ok_or_else(|| {
                    DiscoveryError::Unreadable(format!(
                        "event-handler reads {path} from ConfigMap {config_map} key {key}, which does not exist"
                    ))
                })?;
            let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
                DiscoveryError::Unreadable(format!(
                    "event-handler's config {path} (ConfigMap {config_map} key {key}) is not valid TOML: {}",
                    e.message()
                ))
            })?;
            (Some(table), Some((config_map, key)))
        }
        None => (None, None),
    };
    let fluentd = toml
        .as_ref()
        .and_then(|t| t.get("forward"))
        .and_then(|f| f.get("fluentd"));

    let mut values = Vec::new();
    for setting in &SETTINGS {
        let flag = flag_value(&command_line, setting.flag)
            .filter(|v| ignore_prefix.is_none_or(|prefix| !v.starts_with(prefix)));
        let from_toml = match fluentd.and_then(|f| f.get(setting.toml)) {
            None => None,
            Some(toml::Value::String(value)) => Some(value.clone()),
            Some(other) => {
                return Err(DiscoveryError::Unreadable(format!(
                    "[forward.fluentd] {} in event-handler's config is a {}, not a string",
                    setting.toml,
                    other.type_str()
                )));
            }
        };
        let from_env = env(setting.env)?;
        let found = match (flag, from_toml, from_env) {
            (Some(value), _, _) => Some(Found {
                value,
                source: Source::Flag,
            }),
            (None, Some(_), Some(_)) if setting.is_file() => {
                return Err(DiscoveryError::Ambiguous(format!(
                    "event-handler's config sets [forward.fluentd] {} and its environment sets {} too; for a file, event-handler's flag parser may then use neither: remove one, or give the upstream in an EventPluginTarget",
                    setting.toml, setting.env
                )));
            }
            (None, Some(toml), Some(env)) if toml != env => {
                return Err(DiscoveryError::Ambiguous(format!(
                    "event-handler's config sets [forward.fluentd] {} and its environment sets {} to another value; which one it uses depends on its flag parser's version: make them agree, or give the upstream in an EventPluginTarget",
                    setting.toml, setting.env
                )));
            }
            (None, Some(value), _) => Some(Found {
                value,
                source: Source::Toml,
            }),
            (None, None, Some(value)) => Some(Found {
                value,
                source: Source::Env,
            }),
            (None, None, None) => None,
        };
        values.push(found);
    }
    let mut values = values.into_iter();
    let mut next = || values.next().flatten();
    let url = next().ok_or_else(|| {
        DiscoveryError::Missing(
            "event-handler names no fluentd URL (flag --fluentd-url, [forward.fluentd] url in its config, or FDFWD_FLUENTD_URL)".into(),
        )
    })?;
    let session_url = next();
    let file = |found: Option<Found>| -> Result<Option<(Found, SecretFile)>, DiscoveryError> {
        found
            .map(|found| {
                let secret = secret_file(&found.value, mounts, volumes)?;
                Ok((found, secret))
            })
            .transpose()
    };
    let ca = file(next())?;
    let cert = file(next())?;
    let key = file(next())?;
    let storage = match flag_value(&command_line, STORAGE_FLAG) {
        Some(path) => Some(path),
        None => match toml.as_ref().and_then(|t| t.get("storage")) {
            Some(toml::Value::String(path)) => Some(path.clone()),
            Some(other) => {
                return Err(DiscoveryError::Unreadable(format!(
                    "storage in event-handler's config is a {}, not a string",
                    other.type_str()
                )));
            }
            None => env(STORAGE_ENV)?,
        },
    };
    Ok(Upstream {
        url,
        session_url,
        ca,
        cert,
        key,
        config_file,
        storage,
    })
}

/// The mount that holds `path`, the path inside it and the volume.
fn mounted<'a>(
    path: &str,
    mounts: &'a [VolumeMount],
    volumes: &'a [Volume],
) -> Option<(&'a VolumeMount, String, &'a Volume)> {
    let path = Path::new(path);
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return None;
    }
    // The deepest mount wins, as in the container's filesystem.
    let mount = mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_path))
        .max_by_key(|m| m.mount_path.len())?;
    let inside = path
        .strip_prefix(&mount.mount_path)
        .ok()?
        .to_string_lossy()
        .into_owned();
    let volume = volumes.iter().find(|v| v.name == mount.name)?;
    Some((mount, inside, volume))
}

/// The key a file of a mounted ConfigMap or Secret holds: by `subPath`, or by the file's name in a
/// whole mounted volume (through `items` when they rename keys).
fn key_of(
    mount: &VolumeMount,
    inside: &str,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
) -> Option<String> {
    let relative = match mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
        Some(sub) if inside.is_empty() => sub.to_string(),
        Some(sub) => format!("{sub}/{inside}"),
        None => inside.to_string(),
    };
    match items {
        Some(items) if !items.is_empty() => items
            .iter()
            .find(|item| item.path == relative)
            .map(|item| item.key.clone()),
        _ => (!relative.is_empty() && !relative.contains('/')).then_some(relative),
    }
}

fn config_map_file(
    path: &str,
    mounts: &[VolumeMount],
    volumes: &[Volume],
) -> Result<(String, String), DiscoveryError> {
    let unreadable = |why: &str| {
        DiscoveryError::Unreadable(format!(
            "event-handler reads its config from {path}, {why}; give the upstream in an EventPluginTarget"
        ))
    };
    let (mount, inside, volume) =
        mounted(path, mounts, volumes).ok_or_else(|| unreadable("which no volume provides"))?;
    let config_map = volume
        .config_map
        .as_ref()
        .ok_or_else(|| unreadable("which is not from a ConfigMap"))?;
    let key = key_of(mount, &inside, config_map.items.as_deref())
        .ok_or_else(|| unreadable("whose ConfigMap key cannot be told"))?;
    Ok((config_map.name.clone(), key))
}

fn secret_file(
    path: &str,
    mounts: &[VolumeMount],
    volumes: &[Volume],
) -> Result<SecretFile, DiscoveryError> {
    let unreadable = |why: &str| {
        DiscoveryError::Unreadable(format!(
            "event-handler's fluentd certificate file {path} {why}: the sidecar needs the same files; give the certificate Secret in an EventPluginTarget"
        ))
    };
    let (mount, inside, volume) =
        mounted(path, mounts, volumes).ok_or_else(|| unreadable("is on no volume"))?;
    let secret = volume
        .secret
        .as_ref()
        .ok_or_else(|| unreadable("is not from a Secret"))?;
    let key = key_of(mount, &inside, secret.items.as_deref())
        .ok_or_else(|| unreadable("is no key of its Secret"))?;
    let name = secret
        .secret_name
        .clone()
        .ok_or_else(|| unreadable("is from a Secret volume without a name"))?;
    Ok(SecretFile { secret: name, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    const TOML: &str = r#"
storage = "/var/lib/teleport/plugins/event-handler/storage"
timeout = "10s"
batch = 20
window-size = "24h"
debug = false

[teleport]
addr = "teleport.example.com:443"
identity = "/var/lib/teleport/plugins/event-handler/teleport-identity/auth_id"
refresh.enabled = true

[forward.fluentd]
url = "https://fluentd.fluentd.svc.cluster.local/events.log"
session-url = "https://fluentd.fluentd.svc.cluster.local/session.log"
ca = "/var/lib/teleport/plugins/event-handler/ca.crt"
cert = "/var/lib/teleport/plugins/event-handler/client.crt"
key = "/var/lib/teleport/plugins/event-handler/client.key"
"#;

    /// The Deployment the official chart renders (its test snapshot's shape): one container, the
    /// command with `--config`, no args, the TOML by subPath, the certificates file by file.
    fn official_chart() -> Value {
        let cert = |name: &str| json!({"name": "fluentd-cert", "mountPath": format!("/var/lib/teleport/plugins/event-handler/{name}"), "subPath": name});
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "teleport-plugin-event-handler"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app.kubernetes.io/name": "teleport-plugin-event-handler"}},
                "template": {
                    "metadata": {"labels": {"app.kubernetes.io/name": "teleport-plugin-event-handler"}},
                    "spec": {
                        "securityContext": {},
                        "containers": [{
                            "name": "teleport-plugin-event-handler",
                            "image": "public.ecr.aws/gravitational/teleport-plugin-event-handler:17.0.0",
                            "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
                            "env": [{"name": "TELEPORT_PLUGIN_FAIL_FAST", "value": "true"}],
                            "ports": [{"name": "http", "containerPort": 80}],
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/teleport-event-handler.toml", "subPath": "teleport-event-handler.toml"},
                                {"name": "auth-id", "mountPath": "/var/lib/teleport/plugins/event-handler/teleport-identity"},
                                cert("ca.crt"), cert("client.crt"), cert("client.key"),
                            ],
                        }],
                        "volumes": [
                            {"name": "config", "configMap": {"name": "teleport-plugin-event-handler", "defaultMode": 384}},
                            {"name": "auth-id", "secret": {"secretName": "teleport-event-handler-identity", "defaultMode": 384}},
                            {"name": "fluentd-cert", "secret": {"secretName": "teleport-event-handler-client-tls", "defaultMode": 384}},
                        ],
                    }
                }
            }
        })
    }

    fn deployment(value: Value) -> Deployment {
        serde_json::from_value(value).expect("a Deployment")
    }

    fn config_maps(toml: &str) -> BTreeMap<String, BTreeMap<String, String>> {
        BTreeMap::from([(
            "teleport-plugin-event-handler".to_string(),
            BTreeMap::from([("teleport-event-handler.toml".to_string(), toml.to_string())]),
        )])
    }

    fn container(value: &mut Value) -> &mut Value {
        &mut value["spec"]["template"]["spec"]["containers"][0]
    }

    #[test]
    fn the_injected_sidecar_is_not_taken_for_event_handler() {
        let mut value = official_chart();
        let containers = value["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers");
        containers.insert(0, json!({"name": "eventplug", "image": "sidecar"}));
        let injected = deployment(value);
        let found = event_handler_container(&injected, None).expect("event-handler");
        assert_eq!(found.name, "teleport-plugin-event-handler");
    }

    #[test]
    fn the_official_chart_is_read_from_its_toml_and_certificate_secret() {
        let found = discover(
            &deployment(official_chart()),
            None,
            &config_maps(TOML),
            None,
        )
        .expect("discovered");
        assert_eq!(
            found.url,
            Found {
                value: "https://fluentd.fluentd.svc.cluster.local/events.log".into(),
                source: Source::Toml
            }
        );
        assert_eq!(
            found.session_url.map(|f| f.value).as_deref(),
            Some("https://fluentd.fluentd.svc.cluster.local/session.log")
        );
        for (file, key) in [
            (&found.ca, "ca.crt"),
            (&found.cert, "client.crt"),
            (&found.key, "client.key"),
        ] {
            let (_, secret) = file.as_ref().expect("a certificate file");
            assert_eq!(secret.secret, "teleport-event-handler-client-tls");
            assert_eq!(secret.key, key);
        }
        assert_eq!(
            found.config_file,
            Some((
                "teleport-plugin-event-handler".into(),
                "teleport-event-handler.toml".into()
            ))
        );
        assert_eq!(
            found.storage.as_deref(),
            Some("/var/lib/teleport/plugins/event-handler/storage")
        );
    }

    #[test]
    fn a_flag_beats_the_toml_and_the_toml_beats_a_matching_environment() {
        let mut value = official_chart();
        container(&mut value)["args"] = json!(["--fluentd-url=https://other:8888/a.log"]);
        container(&mut value)["env"] = json!([
            {"name": "FDFWD_FLUENTD_SESSION_URL", "value": "https://fluentd.fluentd.svc.cluster.local/session.log"}
        ]);
        let found = discover(&deployment(value), None, &config_maps(TOML), None).expect("found");
        assert_eq!(found.url.value, "https://other:8888/a.log");
        assert_eq!(found.url.source, Source::Flag);
        assert_eq!(found.session_url.expect("session").source, Source::Toml);
    }

    #[test]
    fn the_sidecars_own_redirect_is_not_taken_for_the_upstream() {
        let mut value = official_chart();
        container(&mut value)["args"] = json!([
            "--fluentd-url=http://127.0.0.1:8888/events.log",
            "--fluentd-session-url=http://127.0.0.1:8888/session.log"
        ]);
        let found = discover(
            &deployment(value),
            None,
            &config_maps(TOML),
            Some("http://127.0.0.1:8888/"),
        )
        .expect("found");
        assert_eq!(found.url.source, Source::Toml);
        assert!(found.url.value.starts_with("https://fluentd."));
    }

    #[test]
    fn without_a_config_file_the_environment_and_flags_tell() {
        let mut value = official_chart();
        container(&mut value)["command"] = json!(["/usr/local/bin/teleport-plugin", "start"]);
        container(&mut value)["args"] = json!([
            "--fluentd-ca",
            "/var/lib/teleport/plugins/event-handler/ca.crt"
        ]);
        container(&mut value)["env"] = json!([
            {"name": "FDFWD_FLUENTD_URL", "value": "https://fluentd:8888/test.log"}
        ]);
        let found = discover(&deployment(value), None, &BTreeMap::new(), None).expect("found");
        assert_eq!(found.url.source, Source::Env);
        assert_eq!(found.ca.expect("ca").0.source, Source::Flag);
        assert!(found.cert.is_none() && found.config_file.is_none());
    }

    #[test]
    fn a_certificate_secret_mounted_as_a_folder_with_renamed_items() {
        let mut value = official_chart();
        let pod = &mut value["spec"]["template"]["spec"];
        pod["containers"][0]["volumeMounts"] = json!([
            {"name": "config", "mountPath": "/etc/teleport-event-handler.toml", "subPath": "teleport-event-handler.toml"},
            {"name": "fluentd-cert", "mountPath": "/var/lib/teleport/plugins/event-handler"},
        ]);
        pod["volumes"][2]["secret"]["items"] = json!([
            {"key": "tls.crt", "path": "client.crt"},
            {"key": "tls.key", "path": "client.key"},
            {"key": "ca.crt", "path": "ca.crt"},
        ]);
        let found = discover(&deployment(value), None, &config_maps(TOML), None).expect("found");
        assert_eq!(found.cert.expect("cert").1.key, "tls.crt");
        assert_eq!(found.key.expect("key").1.key, "tls.key");
    }

    #[test]
    fn disagreement_missing_files_and_bad_toml_are_errors_not_guesses() {
        let mut value = official_chart();
        container(&mut value)["env"] =
            json!([{"name": "FDFWD_FLUENTD_URL", "value": "https://elsewhere/x.log"}]);
        let error = discover(&deployment(value), None, &config_maps(TOML), None).unwrap_err();
        assert_eq!(error.reason(), "UpstreamConfigAmbiguous", "{error}");
        assert!(error.to_string().contains("FDFWD_FLUENTD_URL"), "{error}");

        let error =
            discover(&deployment(official_chart()), None, &BTreeMap::new(), None).unwrap_err();
        assert_eq!(error.reason(), "UpstreamConfigUnreadable", "{error}");
        assert!(error.to_string().contains("does not exist"), "{error}");

        let error = discover(
            &deployment(official_chart()),
            None,
            &config_maps("url = [oops"),
            None,
        )
        .unwrap_err();
        assert!(error.to_string().contains("not valid TOML"), "{error}");

        let elsewhere = TOML.replace(
            "/var/lib/teleport/plugins/event-handler/ca.crt",
            "/etc/ssl/fluentd-ca.crt",
        );
        let error = discover(
            &deployment(official_chart()),
            None,
            &config_maps(&elsewhere),
            None,
        )
        .unwrap_err();
        assert!(
            error
                .to_string()
                .contains("/etc/ssl/fluentd-ca.crt is on no volume"),
            "{error}"
        );

        let mut value = official_chart();
        container(&mut value)["env"] = json!([{"name": "FDWRD_FLUENTD_CA", "value": "/var/lib/teleport/plugins/event-handler/ca.crt"}]);
        let error = discover(&deployment(value), None, &config_maps(TOML), None).unwrap_err();
        assert_eq!(error.reason(), "UpstreamConfigAmbiguous", "{error}");
        assert!(
            error.to_string().contains("may then use neither"),
            "{error}"
        );

        let mut value = official_chart();
        container(&mut value)["envFrom"] = json!([{"configMapRef": {"name": "more"}}]);
        let error = discover(&deployment(value), None, &config_maps(TOML), None).unwrap_err();
        assert!(error.to_string().contains("envFrom"), "{error}");

        let no_url = TOML.replace(
            "url = \"https://fluentd.fluentd.svc.cluster.local/events.log\"\n",
            "",
        );
        let error = discover(
            &deployment(official_chart()),
            None,
            &config_maps(&no_url),
            None,
        )
        .unwrap_err();
        assert_eq!(error.reason(), "UpstreamNotConfigured", "{error}");
    }

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let mut value = official_chart();
        let error = discover(
            &deployment(value.clone()),
            Some("nope"),
            &config_maps(TOML),
            None,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains("teleport-plugin-event-handler"),
            "{error}"
        );
        let second = value["spec"]["template"]["spec"]["containers"][0].clone();
        let mut second = second;
        second["name"] = json!("other");
        value["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .expect("containers")
            .push(second);
        let error =
            discover(&deployment(value.clone()), None, &config_maps(TOML), None).unwrap_err();
        assert_eq!(error.reason(), "ContainerNotFound");
        assert!(
            discover(
                &deployment(value),
                Some("teleport-plugin-event-handler"),
                &config_maps(TOML),
                None
            )
            .is_ok()
        );
    }
}
