//! The config's second source (`source.kubernetes`): the operator's Secret, watched through the
//! Kubernetes API with the token mounted into the sidecar (the operator mounts the sidecar's own
//! ServiceAccount's, never event-handler's), and the module ConfigMaps, read when
//! the config names a module the pod does not hold yet. A change so reaches the sidecar within
//! about a second, not at kubelet's next refresh of the mounted files (a minute or more).
//!
//! What is read is copied into the mirror folder (modules first, then the config, so a config in
//! the mirror always finds its modules); the reload then takes the newer of the mounted file and
//! the mirror's copy by `revision`, so neither source can take the sidecar backwards, and the
//! mounted files stay the start-up source and the fallback while the API is unreachable.

use crate::module_source::{join_module, private_dir};
use eventplug_contract::{KubernetesSource, SidecarConfig};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The folder the API source writes to: `config.yaml` and `modules/<chunk>`.
#[derive(Debug, Clone)]
pub struct Mirror {
    dir: PathBuf,
}

impl Mirror {
    /// A mirror kept in `dir`.
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The config copied from the Secret.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// The module chunks copied from the ConfigMaps.
    pub fn modules_dir(&self) -> PathBuf {
        self.dir.join("modules")
    }
}

/// Follows `source` until the task is dropped: every version of the Secret is copied into
/// `mirror` (with the modules it needs) and `changed` is notified. Unreachable API servers and
/// refused requests are logged and retried with backoff; the running config stays meanwhile.
pub async fn follow(source: KubernetesSource, mirror: Mirror, changed: Arc<Notify>) {
    let client = loop {
        match Client::try_default().await {
            Ok(client) => break client,
            Err(error) => {
                tracing::warn!(%error, "source.kubernetes: no client for the Kubernetes API (is the service-account token mounted?); the mounted config is used, retrying in 10 s");
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
        }
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &source.namespace);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &source.namespace);
    let selector = format!("metadata.name={}", source.secret);
    let mut events = watcher(secrets, watcher::Config::default().fields(&selector))
        .default_backoff()
        .boxed();
    tracing::info!(namespace = %source.namespace, secret = %source.secret, "following the config through the Kubernetes API");
    // A version that could not be copied (a module ConfigMap not complete yet, a failed read) is
    // tried again every few seconds until it is, or a newer version replaces it.
    let mut pending: Option<Secret> = None;
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            () = tokio::time::sleep(RETRY), if pending.is_some() => {
                if let Some(secret) = pending.take() {
                    pending = try_copy(&source, secret, &config_maps, &mirror, &changed).await;
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            Ok(watcher::Event::Apply(secret) | watcher::Event::InitApply(secret)) => {
                pending = try_copy(&source, secret, &config_maps, &mirror, &changed).await;
            }
            Ok(watcher::Event::Delete(_)) => {
                tracing::warn!(secret = %source.secret, "source.kubernetes: the config Secret was deleted; the running config stays");
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => {
                tracing::warn!(%error, secret = %source.secret, "source.kubernetes: watching the config Secret failed; retrying (the running config stays)");
            }
        }
    }
}

/// How long a version that could not be copied waits before it is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Copies `secret` and wakes the reload; gives it back when it could not be copied.
async fn try_copy(
    source: &KubernetesSource,
    secret: Secret,
    config_maps: &Api<ConfigMap>,
    mirror: &Mirror,
    changed: &Notify,
) -> Option<Secret> {
    match copy(source, &secret, config_maps, mirror).await {
        Ok(()) => {
            changed.notify_one();
            None
        }
        Err(error) => {
            tracing::warn!(%error, secret = %source.secret, "source.kubernetes: this version of the config was not copied yet; trying again (the running config stays)");
            Some(secret)
        }
    }
}

/// Copies one version of the Secret: the modules its config needs that neither the mount nor the
/// mirror holds, then the config itself.
async fn copy(
    source: &KubernetesSource,
    secret: &Secret,
    config_maps: &Api<ConfigMap>,
    mirror: &Mirror,
) -> Result<(), String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(&source.key))
        .map(|value| value.0.clone())
        .ok_or_else(|| format!("the Secret has no key {}", source.key))?;
    let text = std::str::from_utf8(&bytes).map_err(|e| format!("{}: {e}", source.key))?;
    // An invalid config is still copied: the reload refuses it and says why, as for the file.
    if let Ok(config) = SidecarConfig::parse(text) {
        let wanted = wanted_modules(&config);
        let missing: Vec<&Wanted> = wanted
            .iter()
            .filter(|module| !held(module, mirror))
            .collect();
        if !missing.is_empty() {
            fetch_modules(source, config_maps, mirror, &missing).await?;
        }
        write_atomically(&mirror.config_file(), &bytes)?;
        let files: Vec<&str> = wanted.iter().map(|w| w.file.as_str()).collect();
        prune(&mirror.modules_dir(), &files);
        return Ok(());
    }
    write_atomically(&mirror.config_file(), &bytes)
}

/// A module file a config names, possibly delivered in chunks.
struct Wanted {
    /// Its file name (the chunks are `<file>.<n>`).
    file: String,
    /// Its pinned digest.
    digest: String,
    /// Where the config names it (the mounted folder).
    mounted: std::path::PathBuf,
}

/// The file modules of `config` with a pinned digest.
fn wanted_modules(config: &SidecarConfig) -> Vec<Wanted> {
    config
        .plugins
        .iter()
        .filter(|p| p.oci_reference().is_none())
        .filter_map(|p| {
            Some(Wanted {
                file: p.module.file_name()?.to_str()?.to_string(),
                digest: p.digest.clone()?,
                mounted: p.module.clone(),
            })
        })
        .collect()
}

/// Whether `module` is there, whole or joining from its chunks, in the mount or the mirror.
fn held(module: &Wanted, mirror: &Mirror) -> bool {
    [
        module.mounted.clone(),
        mirror.modules_dir().join(&module.file),
    ]
    .iter()
    .any(|path| path.exists() || join_module(path, &module.digest).is_ok())
}

/// Reads the module ConfigMaps and copies the chunks of the `missing` modules.
async fn fetch_modules(
    source: &KubernetesSource,
    config_maps: &Api<ConfigMap>,
    mirror: &Mirror,
    missing: &[&Wanted],
) -> Result<(), String> {
    let dir = mirror.modules_dir();
    private_dir(&dir)?;
    for name in &source.module_config_maps {
        let found = config_maps
            .get_opt(name)
            .await
            .map_err(|e| format!("cannot read ConfigMap {name}: {e}"))?;
        let Some(data) = found.and_then(|cm| cm.binary_data) else {
            continue;
        };
        for (key, value) in data {
            if missing
                .iter()
                .any(|module| chunk_of(&key) == Some(module.file.as_str()))
            {
                write_atomically(&dir.join(&key), &value.0)?;
            }
        }
    }
    for Wanted { file, digest, .. } in missing.iter().copied() {
        join_module(&dir.join(file), digest)
            .map_err(|e| format!("module {file} is not complete in the module ConfigMaps: {e}"))?;
    }
    tracing::info!(
        modules = missing.len(),
        "module chunks read through the Kubernetes API"
    );
    Ok(())
}

/// The module file a chunk key (`<file>.<n>`) belongs to.
fn chunk_of(key: &str) -> Option<&str> {
    let (file, index) = key.rsplit_once('.')?;
    index.parse::<usize>().ok().map(|_| file)
}

/// Removes mirrored chunks of modules the config no longer names.
fn prune(dir: &Path, wanted: &[&str]) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let keep = name
            .to_str()
            .and_then(chunk_of)
            .is_some_and(|file| wanted.contains(&file));
        if !keep {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Writes `bytes` to `path` so that a reader never sees half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        private_dir(dir)?;
    }
    let partial = path.with_extension("partial");
    std::fs::write(&partial, bytes)
        .and_then(|()| std::fs::rename(&partial, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_keys_name_their_module() {
        assert_eq!(chunk_of("sha256-ab.wasm.0"), Some("sha256-ab.wasm"));
        assert_eq!(chunk_of("sha256-ab.wasm.12"), Some("sha256-ab.wasm"));
        assert_eq!(chunk_of("sha256-ab.wasm"), None);
        assert_eq!(chunk_of("config.yaml"), None);
    }

    #[test]
    fn chunks_of_modules_no_longer_named_are_pruned() {
        let dir = tempdir();
        for key in ["a.wasm.0", "a.wasm.1", "b.wasm.0", "stray"] {
            std::fs::write(dir.join(key), b"x").expect("write");
        }
        prune(&dir, &["a.wasm"]);
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .expect("dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["a.wasm.0", "a.wasm.1"]);
    }

    fn tempdir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "eventplug-api-source-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
