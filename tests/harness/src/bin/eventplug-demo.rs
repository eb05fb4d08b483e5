//! `eventplug-demo --redact R.wasm --skip S.wasm --events sample.jsonl`: the Kubernetes demo
//! (scripts/demo.sh), in the namespace `eventplug-demo` of the local test cluster, which it leaves
//! running for a look around. Exits non-zero when a redacted field reached fluentd, or when the
//! plugins did nothing.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use eventplug_harness::TestNamespace;
use eventplug_harness::demo::{self, REDACTED, SKIPPED_USER};

const NAMESPACE: &str = "eventplug-demo";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |flag: &str| -> Result<String, String> {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .ok_or_else(|| format!("{flag} FILE is missing (usage: eventplug-demo --redact R.wasm --skip S.wasm --events sample.jsonl)"))
    };
    let read = |flag: &str| -> Result<Vec<u8>, String> {
        let path = arg(flag)?;
        std::fs::read(&path).map_err(|e| format!("{flag} {path}: {e}"))
    };
    let inputs = (|| Ok::<_, String>((read("--redact")?, read("--skip")?, read("--events")?)))();
    let (redact, skip, events) = match inputs {
        Ok(inputs) => inputs,
        Err(e) => {
            eprintln!("eventplug-demo: {e}");
            return ExitCode::from(2);
        }
    };
    let Ok(events) = String::from_utf8(events) else {
        eprintln!("eventplug-demo: the events file is not UTF-8 text");
        return ExitCode::from(2);
    };
    let ns = match TestNamespace::recreate_kept(NAMESPACE).await {
        Ok(ns) => ns,
        Err(e) => {
            eprintln!("eventplug-demo: {e}");
            return ExitCode::FAILURE;
        }
    };
    let summary = demo::run(&ns, redact, skip, &events).await;

    println!("\n==> summary");
    println!(
        "    events in: {}   forwarded unchanged: {}   modified: {}   skipped: {}",
        summary.sent, summary.forwarded, summary.modified, summary.skipped
    );
    println!(
        "    redact masks {REDACTED:?} in every event; skip drops the logins of {SKIPPED_USER}"
    );
    if let Some((before, after)) = &summary.example {
        println!("\n    one event, as event-handler sent it and as fluentd received it:");
        for field in ["event", "uid", "user"].iter().chain(REDACTED.iter()) {
            if before.get(*field).is_some() || after.get(*field).is_some() {
                println!(
                    "      {field:<12} {:<40} -> {}",
                    show(before.get(*field)),
                    show(after.get(*field))
                );
            }
        }
    }
    println!("\n{}", demo::kubectl(&ns, &["get", "evp"]));
    let kubeconfig = ns.cluster().kubeconfig().display().to_string();
    println!("where to look next:");
    println!("    export KUBECONFIG={kubeconfig}");
    println!(
        "    kubectl -n {NAMESPACE} get evp -o yaml          # conditions, the digests that run"
    );
    println!(
        "    kubectl -n {NAMESPACE} get deploy teleport-plugin-event-handler -o yaml   # the injected sidecar"
    );
    println!("    kubectl -n {NAMESPACE} logs deploy/teleport-plugin-event-handler -c eventplug");
    println!("    kubectl -n {NAMESPACE} logs deploy/eventplug-operator");
    println!("stop the cluster: bash tests/cluster/cluster.sh down");
    println!(
        "(the fluentd stand-in ran inside this demo and stopped with it; run it again for more)"
    );

    if !summary.leaked.is_empty() {
        eprintln!(
            "eventplug-demo: FAILED: redacted fields reached fluentd: {:?}",
            summary.leaked
        );
        return ExitCode::FAILURE;
    }
    if summary.unexpected > 0 {
        eprintln!(
            "eventplug-demo: FAILED: fluentd received {} bodies that are not the events sent",
            summary.unexpected
        );
        return ExitCode::FAILURE;
    }
    if summary.modified == 0 || summary.skipped != summary.expected_skips {
        eprintln!(
            "eventplug-demo: FAILED: modified {}, skipped {} (the skip example's user has {} logins)",
            summary.modified, summary.skipped, summary.expected_skips
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// A field's value for the side-by-side view, cut to 38 characters.
fn show(value: Option<&serde_json::Value>) -> String {
    let text = match value {
        None => "(absent)".into(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.chars().count() > 38 {
        format!("{}…", text.chars().take(37).collect::<String>())
    } else {
        text
    }
}
