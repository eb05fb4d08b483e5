//! `eventplug-operator`: `run` the controller, or print the CRDs (`crd`).
#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// The eventplug operator.
#[derive(Debug, Parser)]
#[command(name = "eventplug-operator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions (EventPlugin, EventPluginTarget) as YAML, as `crds/`
    /// holds them.
    Crd,
    /// Run the controller (Kubernetes credentials from the pod, or from $KUBECONFIG).
    Run {
        /// The operator's settings (policy, sidecar image, registries).
        #[arg(long)]
        settings: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd => match eventplug_operator::crd::crds_yaml() {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("eventplug-operator: cannot render the CRDs: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run { settings } => run(&settings),
    }
}

fn run(settings: &std::path::Path) -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("EVENTPLUG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Logs on stderr, JSON lines unless EVENTPLUG_LOG_FORMAT=text; stdout stays for what a
    // command prints (`crd`).
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match std::env::var("EVENTPLUG_LOG_FORMAT").as_deref() {
        Ok("text") => logs.init(),
        Ok("json") | Err(_) => logs.json().init(),
        Ok(other) => {
            eprintln!(
                "eventplug-operator: EVENTPLUG_LOG_FORMAT={other:?} is not a log format: use json or text"
            );
            return ExitCode::FAILURE;
        }
    }
    let settings = match eventplug_operator::settings::Settings::load(settings) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("eventplug-operator: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("eventplug-operator: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let metrics = Arc::new(eventplug_operator::metrics::Metrics::new());
        let client = match counted_client(metrics.clone()).await {
            Ok(client) => client,
            Err(error) => {
                eprintln!(
                    "eventplug-operator: no Kubernetes credentials (in a pod: its service account; outside: $KUBECONFIG): {error}"
                );
                return ExitCode::FAILURE;
            }
        };
        let listener = match tokio::net::TcpListener::bind(&settings.metrics_address).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "eventplug-operator: cannot listen on metricsAddress {}: {error}",
                    settings.metrics_address
                );
                return ExitCode::FAILURE;
            }
        };
        if let Ok(address) = listener.local_addr() {
            tracing::info!(%address, "metrics and health serving");
        }
        tokio::spawn(eventplug_operator::metrics::serve(listener, metrics.clone()));
        let webhook = match &settings.webhook {
            None => None,
            Some(webhook) => match start_webhook(&client, webhook).await {
                Ok(webhook) => {
                    tokio::spawn(eventplug_operator::webhook::watch_scopes(
                        client.clone(),
                        webhook.scopes.clone(),
                    ));
                    Some(webhook)
                }
                Err(error) => {
                    eprintln!("eventplug-operator: {error}");
                    return ExitCode::FAILURE;
                }
            },
        };
        tracing::info!(namespaces = ?settings.policy.allowed_namespaces, "eventplug-operator running");
        let Some(election) = settings.leader_election.clone() else {
            eventplug_operator::controller::run(client, settings, metrics, webhook, shutdown_signal())
                .await;
            tracing::info!("eventplug-operator stopped");
            return ExitCode::SUCCESS;
        };
        let identity = std::env::var("POD_NAME")
            .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id()));
        let candidate =
            eventplug_operator::leader::Candidate::new(client.clone(), election, identity);
        tracing::info!(identity = candidate.identity(), "waiting to lead (the webhook is served meanwhile)");
        tokio::select! {
            () = candidate.acquire() => {}
            () = shutdown_signal() => return ExitCode::SUCCESS,
        }
        tracing::info!(identity = candidate.identity(), "leading");
        let (lost_tx, lost_rx) = tokio::sync::oneshot::channel::<String>();
        let stop = async move {
            tokio::select! {
                () = shutdown_signal() => {}
                why = lost_rx => {
                    tracing::error!(why = why.unwrap_or_default(), "lost the lease: stopping");
                }
            }
        };
        let lost = std::sync::atomic::AtomicBool::new(false);
        let holding = async {
            let why = candidate.hold().await;
            lost.store(true, std::sync::atomic::Ordering::SeqCst);
            let _ = lost_tx.send(why);
            // Give the controller a moment to stop on its own before the process ends.
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
        };
        tokio::select! {
            () = eventplug_operator::controller::run(client, settings, metrics, webhook, stop) => {}
            () = holding => {}
        }
        if lost.load(std::sync::atomic::Ordering::SeqCst) {
            // A restarted process campaigns again.
            return ExitCode::FAILURE;
        }
        tracing::info!("eventplug-operator stopped");
        ExitCode::SUCCESS
    })
}

/// Starts the admission webhook's server: a fresh CA and serving certificate for the address the
/// API server uses, the listener, the server task.
async fn start_webhook(
    kube_client: &kube::Client,
    settings: &eventplug_operator::settings::WebhookSettings,
) -> Result<eventplug_operator::controller::Webhook, String> {
    use eventplug_operator::webhook::{self, ClientConfig};
    let listener = tokio::net::TcpListener::bind(&settings.address)
        .await
        .map_err(|e| format!("cannot listen on webhook.address {}: {e}", settings.address))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("webhook listener: {e}"))?;
    let (client, hosts) = match (&settings.url, &settings.service) {
        (_, Some(service)) => (
            ClientConfig::Service {
                namespace: service.namespace.clone(),
                name: service.name.clone(),
                port: service.port,
            },
            vec![
                format!("{}.{}.svc", service.name, service.namespace),
                format!("{}.{}.svc.cluster.local", service.name, service.namespace),
            ],
        ),
        (Some(url), None) => {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("webhook.url {url} is not a URL: {e}"))?;
            if !uri.path().trim_matches('/').is_empty() {
                return Err(format!(
                    "webhook.url {url} has a path: give only https://host[:port] (the operator serves {})",
                    webhook::PATH
                ));
            }
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .ok_or_else(|| format!("webhook.url {url} names no host"))?;
            (
                ClientConfig::Url(url.trim_end_matches('/').to_string()),
                vec![host],
            )
        }
        (None, None) if bound.ip().is_unspecified() => {
            return Err(format!(
                "webhook.address {} listens on every address: give webhook.url (or webhook.service) so the API server knows which to call",
                settings.address
            ));
        }
        (None, None) => (
            ClientConfig::Url(format!("https://{bound}")),
            vec![bound.ip().to_string()],
        ),
    };
    let kept = match &settings.ca_secret {
        None => None,
        Some(secret) => kept_ca(kube_client, secret).await?,
    };
    let mut tls = webhook::tls(&hosts, kept.as_ref().map(|(c, k)| (c.as_str(), k.as_str())))?;
    if let (Some(secret), None) = (&settings.ca_secret, &kept)
        && !keep_ca(kube_client, secret, &tls.ca_pem, &tls.ca_key_pem).await?
    {
        // Another replica kept its CA first: use that one.
        let theirs = kept_ca(kube_client, secret).await?.ok_or_else(|| {
            format!(
                "the webhook CA Secret {}/{} vanished",
                secret.namespace, secret.name
            )
        })?;
        tls = webhook::tls(&hosts, Some((&theirs.0, &theirs.1)))?;
    }
    let scopes = Arc::new(webhook::Scopes::default());
    tokio::spawn(webhook::serve(listener, tls.config.clone(), scopes.clone()));
    tracing::info!(address = %bound, ?client, "admission webhook serving");
    Ok(eventplug_operator::controller::Webhook {
        client,
        ca_pem: tls.ca_pem,
        scopes,
    })
}

/// The webhook CA kept in `secret` (certificate and key, PEM), or `None` when there is none yet.
async fn kept_ca(
    client: &kube::Client,
    secret: &eventplug_operator::settings::SecretRef,
) -> Result<Option<(String, String)>, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &secret.namespace);
    let found = api.get_opt(&secret.name).await.map_err(|e| {
        format!(
            "reading the webhook CA Secret {}/{}: {e}",
            secret.namespace, secret.name
        )
    })?;
    let text = |s: &k8s_openapi::api::core::v1::Secret, key: &str| {
        s.data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|v| String::from_utf8(v.0.clone()).ok())
    };
    Ok(found.and_then(|s| Some((text(&s, "ca.crt")?, text(&s, "ca.key")?))))
}

/// Keeps a new webhook CA in `secret`; `false` when the Secret exists already.
async fn keep_ca(
    client: &kube::Client,
    secret: &eventplug_operator::settings::SecretRef,
    cert: &str,
    key: &str,
) -> Result<bool, String> {
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client.clone(), &secret.namespace);
    let body = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret.name, "labels": {"app.kubernetes.io/managed-by": "eventplug-operator"}},
        "stringData": {"ca.crt": cert, "ca.key": key}
    });
    let object: k8s_openapi::api::core::v1::Secret =
        serde_json::from_value(body).map_err(|e| format!("the webhook CA Secret: {e}"))?;
    match api.create(&kube::api::PostParams::default(), &object).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(format!(
            "keeping the webhook CA in Secret {}/{}: {e}",
            secret.namespace, secret.name
        )),
    }
}

/// This machine's host name (the pod's name in a pod), for the lease holder's identity.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "eventplug-operator".into())
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

/// A client for the API server of the environment (in a pod: its service account; outside:
/// `$KUBECONFIG`) that counts its requests in `metrics`.
async fn counted_client(
    metrics: Arc<eventplug_operator::metrics::Metrics>,
) -> Result<kube::Client, kube::Error> {
    let config = kube::Config::infer()
        .await
        .map_err(kube::Error::InferConfig)?;
    let count =
        tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
            metrics.api_request(request.method());
            request
        });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}
