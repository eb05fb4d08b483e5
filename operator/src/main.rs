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
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .json()
        .init();
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
        let client = match kube::Client::try_default().await {
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
        let metrics = Arc::new(eventplug_operator::metrics::Metrics::new());
        tokio::spawn(eventplug_operator::metrics::serve(listener, metrics.clone()));
        let webhook = match &settings.webhook {
            None => None,
            Some(webhook) => match start_webhook(webhook).await {
                Ok(webhook) => Some(webhook),
                Err(error) => {
                    eprintln!("eventplug-operator: {error}");
                    return ExitCode::FAILURE;
                }
            },
        };
        tracing::info!(namespaces = ?settings.policy.allowed_namespaces, "eventplug-operator running");
        eventplug_operator::controller::run(client, settings, metrics, webhook, shutdown_signal()).await;
        tracing::info!("eventplug-operator stopped");
        ExitCode::SUCCESS
    })
}

/// Starts the admission webhook's server: a fresh CA and serving certificate for the address the
/// API server uses, the listener, the server task.
async fn start_webhook(
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
            let host = url
                .trim_start_matches("https://")
                .split(['/', ':'])
                .next()
                .unwrap_or_default()
                .to_string();
            (ClientConfig::Url(url.clone()), vec![host])
        }
        (None, None) => (
            ClientConfig::Url(format!("https://{bound}")),
            vec![bound.ip().to_string()],
        ),
    };
    let tls = webhook::tls(&hosts)?;
    let scopes = Arc::new(webhook::Scopes::default());
    tokio::spawn(webhook::serve(listener, tls.config.clone(), scopes.clone()));
    tracing::info!(address = %bound, ?client, "admission webhook serving");
    Ok(eventplug_operator::controller::Webhook {
        client,
        ca_pem: tls.ca_pem,
        scopes,
    })
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
