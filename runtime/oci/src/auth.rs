//! Registry credentials from a Docker config JSON, the `.dockerconfigjson` content Kubernetes
//! imagePullSecrets hold: `{"auths": {"host": {"auth": base64("user:password")}}}`, or
//! `username`/`password`, or a `registrytoken` (sent as a bearer token). Read from a file or from a
//! mounted Secret's folder. The secrets never appear in `Debug` output, logs or errors.

use crate::error::OciError;
use base64::Engine as _;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// How to authenticate to one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// No credentials: anonymous access (a bearer token flow is still followed when the registry
    /// offers anonymous tokens).
    Anonymous,
    /// A user name and password (or access token), sent with HTTP basic auth or traded for a bearer
    /// token, as the registry's challenge asks.
    Basic {
        /// The user name.
        username: String,
        /// The password or token.
        password: String,
    },
    /// A registry token sent as `Authorization: Bearer`.
    Bearer(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Anonymous => f.write_str("Anonymous"),
            Self::Basic { username, .. } => write!(f, "Basic({username}, <redacted>)"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
        }
    }
}

impl Credential {
    pub(crate) fn to_client(&self) -> oci_client::secrets::RegistryAuth {
        use oci_client::secrets::RegistryAuth;
        match self {
            Self::Anonymous => RegistryAuth::Anonymous,
            Self::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Self::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// Credentials by registry host.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    by_host: HashMap<String, Credential>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.by_host.iter()).finish()
    }
}

#[derive(serde::Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: HashMap<String, DockerAuth>,
}

#[derive(serde::Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    registrytoken: Option<String>,
    #[serde(default)]
    identitytoken: Option<String>,
}

/// The host of a Docker config `auths` key: `https://host:port/v1/` → `host:port`.
fn host_of(key: &str) -> String {
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key);
    match host {
        "index.docker.io" | "registry-1.docker.io" => "docker.io".into(),
        other => other.to_ascii_lowercase(),
    }
}

impl Credentials {
    /// No credentials for any registry.
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the credential of one registry host.
    pub fn insert(&mut self, host: &str, credential: Credential) {
        self.by_host.insert(host_of(host), credential);
    }

    /// The credential for `host`, anonymous when none is configured.
    pub fn for_host(&self, host: &str) -> &Credential {
        self.by_host
            .get(&host_of(host))
            .unwrap_or(&Credential::Anonymous)
    }

    /// Whether any credential is configured for `host`.
    pub fn has(&self, host: &str) -> bool {
        self.by_host.contains_key(&host_of(host))
    }

    /// Parses Docker config JSON text; `origin` names it in errors.
    pub fn from_docker_config(text: &str, origin: &Path) -> Result<Self, OciError> {
        let fail = |message: String| OciError::AuthFile {
            path: origin.to_path_buf(),
            message,
        };
        // serde_json's messages quote no input values, only positions.
        let config: DockerConfig = serde_json::from_str(text)
            .map_err(|e| fail(format!("not a Docker config JSON ({e})")))?;
        let mut credentials = Self::default();
        for (key, entry) in config.auths {
            let credential = if let Some(token) = entry.registrytoken {
                Credential::Bearer(token)
            } else if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
                Credential::Basic {
                    username: username.clone(),
                    password: password.clone(),
                }
            } else if let Some(auth) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|_| fail(format!("auths.{key}.auth is not base64")))?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| fail(format!("auths.{key}.auth is not UTF-8")))?;
                let Some((username, password)) = decoded.split_once(':') else {
                    return Err(fail(format!(
                        "auths.{key}.auth must be base64 of `username:password`"
                    )));
                };
                Credential::Basic {
                    username: username.into(),
                    password: password.into(),
                }
            } else if entry.identitytoken.is_some() {
                return Err(fail(format!(
                    "auths.{key} has only an identitytoken (a credential helper's refresh token), which eventplug cannot use; give username and password or a registrytoken"
                )));
            } else {
                return Err(fail(format!(
                    "auths.{key} has no auth, username/password or registrytoken"
                )));
            };
            credentials.insert(&key, credential);
        }
        Ok(credentials)
    }

    /// Reads a Docker config JSON from `path`: a file, or a mounted Secret's folder holding
    /// `.dockerconfigjson` (or `config.json`).
    pub fn from_path(path: &Path) -> Result<Self, OciError> {
        let file: PathBuf = if path.is_dir() {
            [".dockerconfigjson", "config.json"]
                .iter()
                .map(|name| path.join(name))
                .find(|f| f.is_file())
                .ok_or_else(|| OciError::AuthFile {
                    path: path.to_path_buf(),
                    message: "the folder holds neither .dockerconfigjson nor config.json".into(),
                })?
        } else {
            path.to_path_buf()
        };
        let text = std::fs::read_to_string(&file).map_err(|e| OciError::AuthFile {
            path: file.clone(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::from_docker_config(&text, &file)
    }

    /// The Docker config a command line user has: `$REGISTRY_AUTH_FILE`, else
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; anonymous when none exists.
    pub fn from_environment() -> Result<Self, OciError> {
        let candidates = [
            std::env::var_os("REGISTRY_AUTH_FILE").map(PathBuf::from),
            std::env::var_os("DOCKER_CONFIG").map(|d| PathBuf::from(d).join("config.json")),
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json")),
        ];
        match candidates.into_iter().flatten().find(|f| f.is_file()) {
            Some(file) => Self::from_path(&file),
            None => Ok(Self::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_every_form_and_never_shows_secrets() {
        let text = r#"{"auths": {
            "https://127.0.0.1:5000/v1/": {"auth": "dXNlcjpzM2NyZXQ="},
            "ghcr.io": {"username": "bot", "password": "hunter2"},
            "quay.io": {"registrytoken": "tok3n"}
        }}"#;
        let creds = Credentials::from_docker_config(text, Path::new("x")).expect("valid");
        assert_eq!(
            creds.for_host("127.0.0.1:5000"),
            &Credential::Basic {
                username: "user".into(),
                password: "s3cret".into()
            }
        );
        assert_eq!(
            creds.for_host("QUAY.io"),
            &Credential::Bearer("tok3n".into())
        );
        assert_eq!(creds.for_host("example.com"), &Credential::Anonymous);
        let shown = format!("{creds:?}");
        for secret in ["s3cret", "hunter2", "tok3n", "dXNlcjpzM2NyZXQ="] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }

    #[test]
    fn a_bad_file_is_named_without_its_content() {
        let error = Credentials::from_docker_config(
            r#"{"auths": {"h.io": {"auth": "not base64 hunter2"}}}"#,
            Path::new("/s/.dockerconfigjson"),
        )
        .expect_err("bad");
        let text = error.to_string();
        assert!(
            text.contains("/s/.dockerconfigjson") && text.contains("not base64"),
            "{text}"
        );
        assert!(!text.contains("hunter2"), "{text}");
    }
}
