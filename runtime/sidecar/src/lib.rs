//! `eventplug serve`: the sidecar between event-handler and fluentd. It accepts each event on
//! loopback as fluentd would, runs the plugin chain, forwards to the real fluentd and answers 200
//! only once the event is delivered or deliberately skipped.
//!
//! Its config is `eventplug_contract::SidecarConfig`; its `/status` report is
//! `eventplug_contract::StatusReport`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod admin;
mod api_source;
mod connection;
mod effects;
mod ingest;
mod live;
mod metrics;
mod module_source;
mod plugin_set;
mod poison;
mod response;
mod upstream;

pub use effects::{
    DeliveryClass, EffectSink, EffectWorkers, EffectsPending, KeyedEffect, LogSink, SinkError,
};
pub use live::{Live, Routes};
pub use metrics::Metrics;
pub use upstream::{Blame, Upstream, UpstreamError};

use eventplug_contract::SidecarConfig;
use eventplug_runtime::engine::{EngineSettings, PluginEngine, module_digest};
use eventplug_runtime::pipeline::{Pipeline, PipelineSettings, VerdictCache};
use eventplug_runtime::store::{LocalTokenStore, TokenStore};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use poison::PoisonTracker;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// The running sidecar.
pub struct Sidecar {
    engine: PluginEngine,
    tokens: Arc<dyn TokenStore>,
    live: RwLock<Arc<Live>>,
    /// Counters and histograms.
    pub metrics: Arc<Metrics>,
    /// The workers that carry out effects.
    pub effects: EffectWorkers,
    poison: PoisonTracker,
    cache: Arc<VerdictCache>,
    draining: AtomicBool,
    config_path: PathBuf,
    /// The copy of the config (and its modules) read through the Kubernetes API.
    mirror: api_source::Mirror,
    /// The config `apiVersion`s this sidecar reads.
    reads: Vec<String>,
    /// `admin.address` of every config it loads, when its pod says ([`ADMIN_ADDRESS_ENV`]).
    admin_address: Option<String>,
    /// Where the API source runs, once a config asks for it.
    runtime: tokio::runtime::Handle,
    /// The API source followed (the first a config names; a change takes effect at the next start).
    following: Mutex<Option<eventplug_contract::KubernetesSource>>,
    /// Notified when the API source copied a new config.
    changed: Arc<tokio::sync::Notify>,
    fingerprint: Mutex<String>,
    /// Set while the upstream refuses the sidecar itself (401, 403, 404); cleared by its next 200
    /// or a new upstream client.
    upstream_refusal: Mutex<Option<String>>,
}

/// The environment variable that limits the config `apiVersion`s a sidecar reads (comma
/// separated, each one it knows): to rehearse an upgrade with a sidecar that reads what the
/// previous release reads.
pub const READ_API_VERSIONS_ENV: &str = "EVENTPLUG_READ_API_VERSIONS";

/// The environment variable that replaces `admin.address` of every config the sidecar loads: the
/// pod carries its admin port (the one its probes use), so a config that pods of two templates
/// share during a rollout cannot move it.
pub const ADMIN_ADDRESS_ENV: &str = "EVENTPLUG_ADMIN_ADDRESS";

/// The admin address [`ADMIN_ADDRESS_ENV`] gives, checked (`None` when it is not set).
fn admin_address_override(value: Option<&str>) -> Result<Option<String>, String> {
    let Some(value) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    value
        .parse::<std::net::SocketAddr>()
        .map(|_| Some(value.to_owned()))
        .map_err(|e| {
            format!("{ADMIN_ADDRESS_ENV}: `{value}` is not an address like `0.0.0.0:9090`: {e}")
        })
}

/// The digests of the config sources' bytes, as one text.
fn source_digests(sources: &[PathBuf]) -> String {
    sources
        .iter()
        .map(|path| {
            std::fs::read(path)
                .map(|b| module_digest(&b))
                .unwrap_or_default()
        })
        .collect::<Vec<_>>()
        .join("|")
}

/// What identifies the config on disk: the digests of the sources' bytes (`source_digests`,
/// taken before they are read, so a copy written meanwhile is seen at the next check), and the
/// size and time of every file the config names (plugin modules, and the upstream certificates,
/// which a Secret update rotates).
fn fingerprint(digests: String, mirror_modules: &Path, config: Option<&SidecarConfig>) -> String {
    let mut text = digests;
    let Some(config) = config else { return text };
    let upstream = &config.upstream;
    let files = config.plugins.iter().map(|p| &p.module).chain(
        [&upstream.ca, &upstream.cert, &upstream.key]
            .into_iter()
            .flatten(),
    );
    // A module delivered in chunks (`<file>.0`, `<file>.1`, …) counts by its chunks.
    let chunks: Vec<PathBuf> = config
        .plugins
        .iter()
        .filter(|p| !p.module.exists())
        .flat_map(|p| {
            let mirrored = p.module.file_name().map(|name| mirror_modules.join(name));
            let mut files = module_source::chunk_files(&p.module);
            files.extend(mirrored.iter().flat_map(|m| module_source::chunk_files(m)));
            files
        })
        .collect();
    for file in files.chain(chunks.iter()) {
        if let Ok(meta) = std::fs::metadata(file) {
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .unwrap_or_default();
            text.push_str(&format!(
                "|{}:{}:{}",
                file.display(),
                meta.len(),
                modified.as_nanos()
            ));
        }
    }
    text
}

impl Sidecar {
    /// Reads the config and loads every plugin; the effect workers run on `runtime`. A plugin that
    /// fails to load does not stop the sidecar: events are refused with 503 (so event-handler
    /// retries and nothing unfiltered leaves) until a config that loads arrives.
    pub fn start(
        config_path: &Path,
        runtime: &tokio::runtime::Handle,
    ) -> Result<Arc<Self>, String> {
        let engine =
            PluginEngine::new(EngineSettings::with_default_cache()).map_err(|e| e.to_string())?;
        let mirror = api_source::Mirror::new(
            engine
                .settings()
                .cache_dir
                .as_deref()
                .map(|d| d.join("api"))
                .unwrap_or_else(|| std::env::temp_dir().join("eventplug-api")),
        );
        let reads = read_api_versions(std::env::var(READ_API_VERSIONS_ENV).ok().as_deref())?;
        let admin_address =
            admin_address_override(std::env::var(ADMIN_ADDRESS_ENV).ok().as_deref())?;
        let (mut config, _, _) = load_newest(&[config_path.to_path_buf()], &reads)?;
        if let Some(address) = &admin_address {
            config.admin.address.clone_from(address);
        }
        let cache = Arc::new(VerdictCache::new(
            config.delivery.verdict_cache_entries,
            config.delivery.verdict_cache_ttl.get(),
        ));
        let metrics = Arc::new(Metrics::new());
        let effects = {
            let _entered = runtime.enter();
            EffectWorkers::start(
                Arc::new(LogSink),
                Arc::new(LogSink),
                config.delivery.effect_queue,
                metrics.clone(),
            )
        };
        let sidecar = Arc::new(Self {
            engine,
            tokens: Arc::new(LocalTokenStore::new()),
            live: RwLock::new(Arc::new(placeholder_live(&config)?)),
            metrics,
            effects,
            poison: PoisonTracker::default(),
            cache,
            draining: AtomicBool::new(false),
            config_path: config_path.to_path_buf(),
            mirror,
            reads,
            admin_address,
            runtime: runtime.clone(),
            following: Mutex::new(None),
            changed: Arc::new(tokio::sync::Notify::new()),
            fingerprint: Mutex::new(String::new()),
            upstream_refusal: Mutex::new(None),
        });
        let (config, print, hash, source) = sidecar.load()?;
        sidecar.apply(config, print, hash, source)?;
        Ok(sidecar)
    }

    /// The config files: the mounted one, and the API source's copy once a config asked for the
    /// API source (never before: a file nobody asked for is not a config) and while its folder
    /// is private to this user.
    fn sources(&self) -> Vec<PathBuf> {
        let mut sources = vec![self.config_path.clone()];
        let following = self
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if following {
            match module_source::private_dir(self.mirror.dir()) {
                Ok(()) => sources.push(self.mirror.config_file()),
                Err(error) => {
                    tracing::warn!(%error, "the API source's copy is not read");
                }
            }
        }
        sources
    }

    /// The newest valid config of the sources, its fingerprint, its hash and which source it
    /// came from (`file` or `api`).
    fn load(&self) -> Result<(SidecarConfig, String, String, &'static str), String> {
        let sources = self.sources();
        let digests = source_digests(&sources);
        let (mut config, path, hash) = load_newest(&sources, &self.reads)?;
        if let Some(address) = &self.admin_address {
            config.admin.address.clone_from(address);
        }
        let print = fingerprint(digests, &self.mirror.modules_dir(), Some(&config));
        let source = if path == self.config_path {
            "file"
        } else {
            "api"
        };
        Ok((config, print, hash, source))
    }

    /// The current state.
    pub fn live(&self) -> Arc<Live> {
        self.live.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Why the upstream refuses the sidecar, while it does (a configuration fault: 401, 403, 404).
    pub fn upstream_refusal(&self) -> Option<String> {
        self.upstream_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_upstream_refusal(&self, reason: Option<String>) {
        *self
            .upstream_refusal
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = reason;
    }

    /// The config `apiVersion`s this sidecar reads, newest first.
    pub fn reads(&self) -> &[String] {
        &self.reads
    }

    /// Whether SIGTERM was received.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Checks the config file and applies it when it changed. Returns whether a new config was
    /// applied; an invalid config is reported and the running one kept.
    pub fn reload_if_changed(&self) -> Result<bool, String> {
        let current = self.live();
        let print = fingerprint(
            source_digests(&self.sources()),
            &self.mirror.modules_dir(),
            Some(&current.config),
        );
        if *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) == print {
            return Ok(false);
        }
        let outcome = self
            .load()
            .and_then(|(config, print, hash, source)| self.apply(config, print, hash, source));
        match &outcome {
            Ok(()) => self.metrics.reload("applied"),
            Err(error) => {
                // Remember the bad file so it is reported once, not every interval.
                *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = print;
                self.metrics.reload("invalid");
                tracing::error!(%error, "new config refused; the running config stays");
            }
        }
        outcome.map(|()| true)
    }

    fn apply(
        &self,
        config: SidecarConfig,
        print: String,
        hash: String,
        source: &'static str,
    ) -> Result<(), String> {
        let previous = self.live();
        if previous.generation > 0
            && config.revision == previous.config.revision
            && hash == previous.config_hash
            && previous.statuses.iter().all(|s| s.loaded)
        {
            // The same config from the other source (the API's copy, then kubelet's), every plugin
            // of it loaded: nothing to do.
            *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = print;
            return Ok(());
        }
        if previous.generation > 0 && config.revision < previous.config.revision {
            return Err(format!(
                "config revision {} is older than the running revision {}: not applied",
                config.revision, previous.config.revision
            ));
        }
        if previous.generation > 0
            && (
                previous.config.delivery.verdict_cache_entries,
                previous.config.delivery.verdict_cache_ttl,
            ) != (
                config.delivery.verdict_cache_entries,
                config.delivery.verdict_cache_ttl,
            )
        {
            tracing::warn!(
                "delivery.verdictCacheEntries and verdictCacheTtl changes take effect at the next start"
            );
        }
        if previous.generation > 0 && previous.config.admin.address != config.admin.address {
            tracing::warn!(old = %previous.config.admin.address, new = %config.admin.address, "admin.address changes take effect at the next start");
        }
        if previous.generation > 0 && previous.config.listen.address != config.listen.address {
            tracing::warn!(old = %previous.config.listen.address, new = %config.listen.address, "listen.address changes take effect at the next start");
        }
        if previous.generation > 0
            && previous.config.listen.max_connections != config.listen.max_connections
        {
            tracing::warn!(
                old = previous.config.listen.max_connections,
                new = config.listen.max_connections,
                "listen.maxConnections changes take effect at the next start"
            );
        }
        let running: Vec<_> = previous.pipeline.plugins().cloned().collect();
        let mirror_modules = self.mirror.modules_dir();
        let sources = module_source::ModuleSources::new(
            &config.registries,
            self.engine.settings().cache_dir.as_deref(),
            Some(&mirror_modules),
        );
        let applied = plugin_set::apply(
            &self.engine,
            &sources,
            &running,
            &config.plugins,
            &self.tokens,
        );
        let in_use: Vec<&Path> = applied
            .plugins
            .iter()
            .map(|p| p.settings.module.as_path())
            .collect();
        sources.prune_joined(&in_use);
        let missing = applied.missing();
        let suspended: Vec<&str> = config
            .plugins
            .iter()
            .filter(|p| p.suspend)
            .map(|p| p.name.as_str())
            .collect();
        let blocked = if let Some(reason) = &config.stop {
            Some(format!("events refused by the config's stop: {reason}"))
        } else if !suspended.is_empty() {
            Some(format!(
                "plugin {} suspended (an emergency stop): events are refused until suspend is cleared",
                suspended.join(", ")
            ))
        } else {
            None
        };
        let blocked = blocked.or_else(|| {
            (!missing.is_empty()).then(|| {
                let names: Vec<String> = missing
                    .iter()
                    .map(|s| format!("{}: {}", s.name, s.error.as_deref().unwrap_or("not loaded")))
                    .collect();
                format!(
                    "plugins not loaded, events refused until they load: {}",
                    names.join("; ")
                )
            })
        });
        for status in &applied.statuses {
            let before = previous
                .statuses
                .iter()
                .find(|s| s.name == status.name)
                .map(|s| s.running_digest.as_deref().unwrap_or_default());
            self.metrics.plugin_loaded(
                &status.name,
                before,
                status.running_digest.as_deref(),
                status.loaded,
            );
            if !status.loaded {
                self.metrics.reload("plugin_failed");
            }
        }
        for gone in previous
            .statuses
            .iter()
            .filter(|old| !applied.statuses.iter().any(|s| s.name == old.name))
        {
            self.metrics
                .plugin_removed(&gone.name, gone.running_digest.as_deref());
        }
        let upstream_print = upstream_fingerprint(&config.upstream);
        let upstream = if previous.generation > 0 && previous.upstream_fingerprint == upstream_print
        {
            previous.upstream.clone()
        } else {
            let client = Arc::new(Upstream::new(&config.upstream)?);
            // A new client (new certificates or URLs) may be accepted: find out with the next event.
            self.set_upstream_refusal(None);
            client
        };
        let pipeline = Arc::new(Pipeline::with_cache(
            applied.plugins,
            PipelineSettings {
                max_event_bytes: usize::try_from(config.listen.max_body_bytes.get())
                    .unwrap_or(usize::MAX),
                ..PipelineSettings::default()
            },
            self.cache.clone(),
        ));
        let generation = previous.generation + 1;
        let live = Live {
            plugin_names: live::plugin_names(&pipeline),
            routes: Routes::new(&config)?,
            config_hash: hash,
            config,
            generation,
            pipeline,
            blocked,
            statuses: applied.statuses,
            upstream,
            upstream_fingerprint: upstream_print,
        };
        self.metrics
            .config_generation
            .set(i64::try_from(generation).unwrap_or(i64::MAX));
        self.metrics
            .module_cache_bytes
            .set(i64::try_from(self.engine.disk_cache_bytes()).unwrap_or(i64::MAX));
        tracing::info!(generation, revision = live.config.revision, config_hash = %live.config_hash, ready = live.blocked.is_none(), "config applied");
        self.follow(live.config.source.as_ref());
        self.metrics
            .configs_applied
            .get_or_create(&metrics::SourceLabel { source })
            .inc();
        *self.live.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(live);
        *self.fingerprint.lock().unwrap_or_else(|p| p.into_inner()) = print;
        Ok(())
    }
}

impl Sidecar {
    /// Starts the API source the first time a config names one.
    fn follow(&self, source: Option<&eventplug_contract::SourceConfig>) {
        let Some(source) = source else { return };
        let mut following = self.following.lock().unwrap_or_else(|p| p.into_inner());
        match &*following {
            Some(running) if *running != source.kubernetes => {
                tracing::warn!("source.kubernetes changes take effect at the next start");
            }
            Some(_) => {}
            None => {
                *following = Some(source.kubernetes.clone());
                self.runtime.spawn(api_source::follow(
                    source.kubernetes.clone(),
                    self.mirror.clone(),
                    self.changed.clone(),
                ));
            }
        }
    }
}

/// The config `apiVersion`s a sidecar reads: every one it knows, or those `limit` names.
fn read_api_versions(limit: Option<&str>) -> Result<Vec<String>, String> {
    let known = eventplug_contract::ACCEPTED_API_VERSIONS;
    let Some(limit) = limit.filter(|l| !l.trim().is_empty()) else {
        return Ok(known.iter().map(|v| v.to_string()).collect());
    };
    let mut reads = Vec::new();
    for version in limit.split(',').map(str::trim) {
        if !known.contains(&version) {
            return Err(format!(
                "{READ_API_VERSIONS_ENV}: `{version}` is not a config apiVersion this sidecar knows ({})",
                known.join(", ")
            ));
        }
        reads.push(version.to_string());
    }
    Ok(reads)
}

/// The newest config of `sources` by `revision` (a later source wins a tie), with the source it
/// came from and the sha256 of its bytes. A missing or invalid source is passed over while another
/// is valid; when none is, the first one's error is returned.
fn load_newest(
    sources: &[PathBuf],
    reads: &[String],
) -> Result<(SidecarConfig, PathBuf, String), String> {
    // Every source is a copy of the first: relative paths are relative to its folder.
    let base = sources
        .first()
        .and_then(|p| p.parent())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut newest: Option<(SidecarConfig, PathBuf, String)> = None;
    let mut first_error = None;
    for (index, path) in sources.iter().enumerate() {
        let loaded = std::fs::read(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|bytes| {
                let text = String::from_utf8(bytes.clone())
                    .map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
                let config = SidecarConfig::parse_relative_to(&text, &base)
                    .map_err(|e| format!("config {}: {e}", path.display()))?;
                if !reads.contains(&config.api_version) {
                    return Err(format!(
                        "{}: apiVersion `{}` is not one this sidecar reads ({}; {READ_API_VERSIONS_ENV} limits them)",
                        path.display(),
                        config.api_version,
                        reads.join(", ")
                    ));
                }
                Ok((config, module_digest(&bytes)))
            });
        match loaded {
            Ok((config, hash)) => {
                if newest
                    .as_ref()
                    .is_none_or(|(best, _, _)| config.revision >= best.revision)
                {
                    newest = Some((config, path.clone(), hash));
                }
            }
            // The API source's copy is optional: its absence is no error.
            Err(_) if index > 0 && !path.exists() => {}
            Err(error) => {
                if first_error.is_none() {
                    first_error = Some(error.clone());
                }
                if index > 0 {
                    tracing::warn!(%error, "the API source's copy of the config is refused");
                }
            }
        }
    }
    newest.ok_or_else(|| first_error.unwrap_or_else(|| "no config".into()))
}

/// What the upstream client is made of: its settings and the certificate files' size and time.
fn upstream_fingerprint(upstream: &eventplug_contract::UpstreamConfig) -> String {
    let mut text = format!(
        "{:?}|{:?}|{:?}|{:?}",
        upstream.ca, upstream.cert, upstream.key, upstream.timeout
    );
    for file in [&upstream.ca, &upstream.cert, &upstream.key]
        .into_iter()
        .flatten()
    {
        if let Ok(meta) = std::fs::metadata(file) {
            text.push_str(&format!("|{}:{:?}", meta.len(), meta.modified().ok()));
        }
    }
    text
}

/// The state before the first config is applied (generation 0, no plugins).
fn placeholder_live(config: &SidecarConfig) -> Result<Live, String> {
    Ok(Live {
        plugin_names: Default::default(),
        config: config.clone(),
        config_hash: String::new(),
        generation: 0,
        pipeline: Arc::new(Pipeline::new(Vec::new(), PipelineSettings::default())),
        blocked: Some("starting".into()),
        statuses: Vec::new(),
        upstream: Arc::new(Upstream::new(&config.upstream)?),
        upstream_fingerprint: String::new(),
        routes: Routes::new(config)?,
    })
}

/// The addresses the sidecar listens on, as written to `--addresses-file`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct BoundAddresses {
    /// Where events are taken.
    pub listen: std::net::SocketAddr,
    /// Where `/healthz`, `/readyz`, `/metrics` and `/status` answer.
    pub admin: std::net::SocketAddr,
}

/// Serves until `shutdown` resolves, then keeps serving for the grace period (so event-handler can
/// finish its in-flight events), stops accepting, waits for open requests and returns. Once both
/// listeners are bound, their addresses are written to `addresses_file` (JSON, `BoundAddresses`),
/// which is how a port of 0 in the config is learnt.
pub async fn serve(
    sidecar: Arc<Sidecar>,
    shutdown: impl Future<Output = ()>,
    addresses_file: Option<&Path>,
) -> Result<(), String> {
    let live = sidecar.live();
    let address = live.config.listen.address.clone();
    let listener = tokio::net::TcpListener::bind(&address)
        .await
        .map_err(|e| format!("cannot listen on {address} (listen.address): {e}"))?;
    let admin_address = live.config.admin.address.clone();
    let admin_listener = tokio::net::TcpListener::bind(&admin_address)
        .await
        .map_err(|e| format!("cannot listen on {admin_address} (admin.address): {e}"))?;
    let bound = BoundAddresses {
        listen: listener.local_addr().map_err(|e| e.to_string())?,
        admin: admin_listener.local_addr().map_err(|e| e.to_string())?,
    };
    if let Some(file) = addresses_file {
        write_addresses(file, &bound)?;
    }
    tracing::info!(listen = %bound.listen, admin = %bound.admin, audit_path = %live.routes.audit_path, "eventplug sidecar listening");
    let admin = tokio::spawn(admin::serve(sidecar.clone(), admin_listener, bound.admin));
    let reloader = tokio::spawn(reload_loop(sidecar.clone()));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = Arc::new(tokio::sync::Semaphore::new(
        usize::try_from(live.config.listen.max_connections).unwrap_or(usize::MAX),
    ));
    let accept = |stream: tokio::net::TcpStream| {
        let _ = stream.set_nodelay(true);
        let live = sidecar.live();
        let listen = &live.config.listen;
        let Ok(permit) = open.clone().try_acquire_owned() else {
            let limit = listen.max_connections;
            sidecar.metrics.connections_refused.inc();
            tracing::warn!(
                limit,
                "a connection over listen.maxConnections was answered 503 and closed"
            );
            tokio::spawn(connection::refuse(stream, limit));
            return;
        };
        let deadlines = connection::Deadlines {
            header: listen.header_read_timeout.get(),
            idle: listen.idle_timeout.get(),
        };
        let (phase, watching) =
            tokio::sync::watch::channel(connection::Phase::Idle(tokio::time::Instant::now()));
        let phase = Arc::new(phase);
        let owner = sidecar.clone();
        let sidecar = sidecar.clone();
        let io = connection::Watched::new(stream, phase.clone());
        let service = service_fn(move |request| {
            let sidecar = sidecar.clone();
            let phase = phase.clone();
            phase.send_replace(connection::Phase::Busy);
            async move {
                let response = ingest::handle(sidecar, request).await;
                phase.send_replace(connection::Phase::Idle(tokio::time::Instant::now()));
                Ok::<_, std::convert::Infallible>(response)
            }
        });
        // half_close: a client that shuts down its sending side after a complete request still
        // gets its answer.
        let connection = graceful.watch(
            http1::Builder::new()
                .half_close(true)
                .serve_connection(TokioIo::new(io), service),
        );
        tokio::spawn(async move {
            let _permit = permit;
            tokio::select! {
                ended = connection => {
                    if let Err(error) = ended {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                expired = connection::watchdog(watching, deadlines) => {
                    let (phase, key) = match expired {
                        connection::Expired::Idle => ("idle", "listen.idleTimeout"),
                        connection::Expired::Head => ("head", "listen.headerReadTimeout"),
                    };
                    owner
                        .metrics
                        .connections_timed_out
                        .get_or_create(&metrics::PhaseLabel { phase })
                        .inc();
                    if phase == "head" {
                        tracing::info!(timeout = ?deadlines.header, "closed a connection whose request head did not arrive within {key}");
                    } else {
                        tracing::debug!(timeout = ?deadlines.idle, "closed a connection idle for {key}");
                    }
                }
            }
        });
    };
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream),
                Err(error) => accept_failed(&error).await,
            },
            () = &mut shutdown => break,
        }
    }
    let period = sidecar.live().config.delivery.shutdown_grace;
    tracing::info!(grace = ?period, "shutdown requested: serving for the grace period, then draining");
    sidecar.draining.store(true, Ordering::Relaxed);
    let grace = tokio::time::sleep(period.get());
    tokio::pin!(grace);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => accept(stream),
                Err(error) => accept_failed(&error).await,
            },
            () = &mut grace => break,
        }
    }
    drop(listener);
    reloader.abort();
    admin.abort();
    if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("some connections were still open after 30 s and were closed");
    }
    tracing::info!("drained; exiting");
    Ok(())
}

/// Writes the bound addresses atomically (a reader never sees half a file).
fn write_addresses(file: &Path, bound: &BoundAddresses) -> Result<(), String> {
    let text = serde_json::to_string(bound).map_err(|e| e.to_string())?;
    let partial = file.with_extension("partial");
    std::fs::write(&partial, text)
        .and_then(|()| std::fs::rename(&partial, file))
        .map_err(|e| format!("cannot write --addresses-file {}: {e}", file.display()))
}

/// An accept error (out of file descriptors, say) is logged and waited out rather than retried in a
/// busy loop.
async fn accept_failed(error: &std::io::Error) {
    tracing::error!(%error, "cannot accept a connection; retrying in 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

async fn reload_loop(sidecar: Arc<Sidecar>) {
    loop {
        let interval = sidecar.live().config.delivery.reload_interval;
        tokio::select! {
            () = tokio::time::sleep(interval.get()) => {}
            () = sidecar.changed.notified() => {}
        }
        let checking = sidecar.clone();
        match tokio::task::spawn_blocking(move || checking.reload_if_changed()).await {
            Ok(Ok(true)) => tracing::info!("config reloaded"),
            Ok(Ok(false)) | Ok(Err(_)) => {}
            Err(error) => tracing::error!(%error, "reload task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "kind: SidecarConfig\nupstream:\n  auditUrl: http://127.0.0.1:9/a.log\n";

    fn config(api_version: &str, revision: u64) -> String {
        format!("apiVersion: {api_version}\nrevision: {revision}\n{CONFIG}")
    }

    fn files(dir: &Path, file: Option<&str>, api: Option<&str>) -> Vec<PathBuf> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir.join("api")).expect("dir");
        let paths = vec![dir.join("config.yaml"), dir.join("api/config.yaml")];
        for (path, text) in paths.iter().zip([file, api]) {
            if let Some(text) = text {
                std::fs::write(path, text).expect("write");
            }
        }
        paths
    }

    #[test]
    fn the_newer_source_wins_and_neither_goes_back() {
        let dir = std::env::temp_dir().join(format!("eventplug-sources-{}", std::process::id()));
        let reads = read_api_versions(None).expect("all");
        let v2 = eventplug_contract::API_VERSION_V1ALPHA2;
        // The API's copy is newer: it wins.
        let paths = files(&dir, Some(&config(v2, 3)), Some(&config(v2, 4)));
        let (config_4, from, _) = load_newest(&paths, &reads).expect("loads");
        assert_eq!((config_4.revision, from), (4, paths[1].clone()));
        // kubelet's copy is newer (the API copy is from before a restart): it wins.
        let paths = files(&dir, Some(&config(v2, 5)), Some(&config(v2, 4)));
        let (config_5, from, _) = load_newest(&paths, &reads).expect("loads");
        assert_eq!((config_5.revision, from), (5, paths[0].clone()));
        // No API copy: the file. A broken API copy: the file, too.
        let paths = files(&dir, Some(&config(v2, 5)), None);
        assert_eq!(load_newest(&paths, &reads).expect("loads").0.revision, 5);
        let paths = files(&dir, Some(&config(v2, 5)), Some("apiVersion: [oops"));
        assert_eq!(load_newest(&paths, &reads).expect("loads").0.revision, 5);
        // A broken file and no API copy: the file's error.
        let paths = files(&dir, Some("kind: nothing"), None);
        let error = load_newest(&paths, &reads).expect_err("nothing valid");
        assert!(error.contains("config.yaml"), "{error}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_pod_may_give_the_admin_address() {
        assert_eq!(admin_address_override(None), Ok(None));
        assert_eq!(admin_address_override(Some(" ")), Ok(None));
        assert_eq!(
            admin_address_override(Some("0.0.0.0:9191")),
            Ok(Some("0.0.0.0:9191".to_string()))
        );
        let error = admin_address_override(Some("9191")).expect_err("no host");
        assert!(error.contains(ADMIN_ADDRESS_ENV), "{error}");
    }

    #[test]
    fn a_sidecar_limited_to_v1alpha1_refuses_v1alpha2() {
        let dir = std::env::temp_dir().join(format!("eventplug-versions-{}", std::process::id()));
        let v1 = eventplug_contract::API_VERSION_V1ALPHA1;
        let v2 = eventplug_contract::API_VERSION_V1ALPHA2;
        let reads = read_api_versions(Some(v1)).expect("known");
        assert_eq!(reads, [v1]);
        let paths = files(&dir, Some(&config(v2, 1)), None);
        let error = load_newest(&paths, &reads).expect_err("refused");
        assert!(error.contains("not one this sidecar reads"), "{error}");
        let paths = files(&dir, Some(&config(v1, 1)), None);
        assert_eq!(
            load_newest(&paths, &reads)
                .expect("reads v1alpha1")
                .0
                .api_version,
            v1
        );
        let unknown = read_api_versions(Some("eventplug.dev/v9")).expect_err("unknown");
        assert!(unknown.contains(READ_API_VERSIONS_ENV), "{unknown}");
        assert_eq!(read_api_versions(None).expect("all"), [v2, v1]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
