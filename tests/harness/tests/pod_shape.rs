//! The pod the operator will inject, proven with real pods on the test cluster.
//!
//! event-handler's Deployment in the official chart's shape (its TOML from a ConfigMap by
//! subPath, the fluentd certificate Secret file by file with mode 0600, the chart's command and
//! no args; here the event-handler stand-in plays event-handler), plus what the operator adds,
//! written out by hand: the redirect flags in event-handler's `args`, the `eventplug` sidecar
//! container before it (its own read-only copy of the certificate Secret, its config and module
//! ConfigMaps, the `/status` token, probes on the admin port, a restricted security context, a
//! postStart hook running `eventplug wait-ready`), and an emptyDir for event-handler's cursor.
//! fluentd is nginx with mTLS on the node's bridge address.
#![forbid(unsafe_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use eventplug_harness::event_handler::{
    APP, EVENT_HANDLER, Fluentd, PLUGIN_DIR, POD_READY, SIDECAR, admin_get, create,
    create_chart_inputs, object, pod_ip, ready, report, restarts, sha256_digest, the_pod, uid,
    uid_of, wait_delivered, wait_for,
};
use eventplug_harness::{EventplugImages, TestNamespace, describe_pod, kill_container};
use eventplug_operator::{modules, render};
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Api;
use kube::api::LogParams;
use serde_json::{Value, json};

/// The sidecar's emptyDir for its caches.
const CACHE_VOLUME: &str = "/var/cache/eventplug";
/// Its module cache: a folder the sidecar creates in the emptyDir. Not the emptyDir itself: the
/// cache refuses a folder it cannot make private (an emptyDir is root's, mode 0777, and uid 65532
/// cannot chmod it), so it would compile every module again at every start.
const CACHE_DIR: &str = "/var/cache/eventplug/modules";
/// What the plugin adds to every login event.
const MARK: &str = r#""seen-by":"pod-shape""#;

/// The plugin: annotates every `user.login` event, forwards anything else unchanged.
fn plugin_module() -> Vec<u8> {
    let wat = eventplug_test_support::branching_plugin(
        "",
        "user.login",
        &eventplug_test_support::set_response("seen-by", "\"pod-shape\""),
        &Default::default(),
        "",
    );
    wat::parse_str(&wat).unwrap_or_else(|e| panic!("the plugin's WAT does not parse: {e}"))
}

fn random_token() -> String {
    use std::io::Read;
    let mut buf = [0u8; 24];
    match std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut buf)) {
        Ok(()) => buf.iter().map(|b| format!("{b:02x}")).collect(),
        Err(e) => panic!("reading /dev/urandom for the status token: {e}"),
    }
}

/// The sidecar's config as the operator renders it (docs/operator.md): ingest on loopback, admin
/// on every address with the `/status` token, fluentd with the sidecar's own certificate copy, the
/// module pinned by digest in the modules folder (delivered as chunks), JSON logs.
fn sidecar_config(fluentd: &Fluentd, digest: &str) -> String {
    let certs = render::FLUENTD_CERTS_DIR;
    format!(
        "apiVersion: eventplug.dev/v1alpha1
kind: SidecarConfig
revision: 1
listen:
  address: 127.0.0.1:{listen}
admin:
  address: 0.0.0.0:{admin}
  statusTokenFile: {token}
upstream:
  auditUrl: {audit}
  sessionUrl: {session}
  ca: {certs}/ca.crt
  cert: {certs}/client.crt
  key: {certs}/client.key
  timeout: 10s
logging:
  format: json
plugins:
  - name: annotate
    module: {module}
    digest: {digest}
    failurePolicy: FailClosed
    limits: {{memoryLimit: 16Mi, concurrency: 2}}
",
        listen = render::LISTEN_PORT,
        admin = render::DEFAULT_ADMIN_PORT,
        token = render::STATUS_TOKEN_FILE,
        audit = fluentd.nginx.url("/test.log"),
        session = fluentd.nginx.url("/session"),
        module = render::module_path(digest).display(),
    )
}

/// The sidecar container's memory limit by the operator's rule: the base plus, per plugin,
/// memoryLimit × concurrency × 2 (old and new versions side by side during a reload).
fn sidecar_memory() -> u64 {
    render::BASE_MEMORY.get() + (16 << 20) * 2 * 2
}

/// Everything in the namespace: Secrets, ConfigMaps and the Deployment; returns the `/status`
/// token and the module's digest.
async fn deploy(ns: &TestNamespace, fluentd: &Fluentd, events: usize) -> (String, String) {
    let images = EventplugImages::shared().await;
    let secrets: Api<Secret> = ns.api();
    let config_maps: Api<ConfigMap> = ns.api();
    create_chart_inputs(ns, fluentd).await;
    let string_data = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    };

    // What the operator provides: the status token, the sidecar's config, the module ConfigMap.
    let token = random_token();
    let status = Secret {
        metadata: ObjectMeta {
            name: Some("eventplug-status".into()),
            ..Default::default()
        },
        string_data: Some(string_data(&[("status-token", token.clone())])),
        ..Default::default()
    };
    create(&secrets, &status).await;
    let module = plugin_module();
    let digest = sha256_digest(&module);
    let config = ConfigMap {
        metadata: ObjectMeta {
            name: Some("eventplug-sidecar".into()),
            ..Default::default()
        },
        data: Some(string_data(&[(
            "config.yaml",
            sidecar_config(fluentd, &digest),
        )])),
        ..Default::default()
    };
    create(&config_maps, &config).await;
    let packed = match modules::pack(&[(&digest, &module)], 1, modules::CONFIG_MAP_BYTES) {
        Ok(mut packed) => packed.remove(0),
        Err(e) => panic!("packing the module: {e}"),
    };
    assert!(
        packed.contains_key(&modules::chunk_key(&digest, 0)),
        "{:?}",
        packed.keys()
    );
    let module_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some("eventplug-modules-0".into()),
            ..Default::default()
        },
        binary_data: Some(
            packed
                .into_iter()
                .map(|(k, v)| (k, ByteString(v)))
                .collect(),
        ),
        ..Default::default()
    };
    create(&config_maps, &module_map).await;

    let deployments: Api<Deployment> = ns.api();
    let deployment: Deployment = object(deployment_manifest(images, events));
    create(&deployments, &deployment).await;
    (token, digest)
}

/// The chart's Deployment with the operator's additions.
fn deployment_manifest(images: &EventplugImages, events: usize) -> Value {
    // The chart mounts each certificate by subPath from one 0600 volume.
    let cert = |name: &str| json!({"name": "fluentd-cert", "mountPath": format!("{PLUGIN_DIR}/{name}"), "subPath": name});
    let admin_port = render::DEFAULT_ADMIN_PORT;
    let certificate_keys = json!([
        {"key": "ca.crt", "path": "ca.crt"},
        {"key": "client.crt", "path": "client.crt"},
        {"key": "client.key", "path": "client.key"}
    ]);
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": APP},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/name": APP}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": APP}},
                "spec": {
                    // The chart's: no fsGroup, no runAsUser for the pod.
                    "securityContext": {},
                    "containers": [
                        // Injected, and first: kubelet (1.20, no native sidecars) starts the
                        // containers in order and starts the next only after this one's postStart
                        // hook returned, that is once /readyz answers 200.
                        {
                            "name": SIDECAR,
                            "image": images.sidecar,
                            "args": ["serve", "--config", "/etc/eventplug/config.yaml"],
                            "env": [
                                {"name": "EVENTPLUG_CACHE_DIR", "value": CACHE_DIR},
                                {"name": "EVENTPLUG_ADMIN_ADDRESS", "value": format!("0.0.0.0:{admin_port}")}
                            ],
                            "ports": [{"name": "eventplug-admin", "containerPort": admin_port}],
                            "lifecycle": {"postStart": {"exec": {"command": [
                                "/usr/local/bin/eventplug", "wait-ready",
                                "--address", format!("127.0.0.1:{admin_port}"), "--timeout", "60s"
                            ]}}},
                            // Ready: the chain is loaded and fluentd does not refuse the sidecar.
                            "readinessProbe": {
                                "httpGet": {"path": "/readyz", "port": "eventplug-admin"},
                                "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 2
                            },
                            // Alive: the process answers. Never /readyz: a plugin that does not
                            // load must not restart the sidecar (it recovers on the next config).
                            "livenessProbe": {
                                "httpGet": {"path": "/healthz", "port": "eventplug-admin"},
                                "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3
                            },
                            "securityContext": {
                                "runAsNonRoot": true,
                                "runAsUser": 65532,
                                "runAsGroup": 65532,
                                "readOnlyRootFilesystem": true,
                                "allowPrivilegeEscalation": false,
                                "capabilities": {"drop": ["ALL"]},
                                "seccompProfile": {"type": "RuntimeDefault"}
                            },
                            "resources": {
                                "requests": {"cpu": "10m", "memory": "64Mi"},
                                "limits": {"memory": sidecar_memory().to_string()}
                            },
                            "volumeMounts": [
                                {"name": "eventplug-config", "mountPath": "/etc/eventplug", "readOnly": true},
                                {"name": "eventplug-modules", "mountPath": render::MODULES_DIR, "readOnly": true},
                                {"name": "eventplug-fluentd-cert", "mountPath": render::FLUENTD_CERTS_DIR, "readOnly": true},
                                {"name": "eventplug-admin", "mountPath": "/var/run/eventplug/admin", "readOnly": true},
                                {"name": "eventplug-cache", "mountPath": CACHE_VOLUME}
                            ]
                        },
                        {
                            "name": EVENT_HANDLER,
                            "image": images.event_handler,
                            "command": ["/usr/local/bin/teleport-plugin", "start", "--config", "/etc/teleport-event-handler.toml"],
                            // Injected: flags beat the chart's TOML (kong's order).
                            "args": [
                                format!("--fluentd-url=http://127.0.0.1:{}/test.log", render::LISTEN_PORT),
                                format!("--fluentd-session-url=http://127.0.0.1:{}/session", render::LISTEN_PORT)
                            ],
                            "env": [
                                {"name": "TELEPORT_PLUGIN_FAIL_FAST", "value": "true"},
                                {"name": "STANDIN_GENERATE", "value": events.to_string()}
                            ],
                            "ports": [{"name": "http", "containerPort": 80}],
                            "volumeMounts": [
                                {"name": "config", "mountPath": "/etc/teleport-event-handler.toml", "subPath": "teleport-event-handler.toml"},
                                {"name": "auth-id", "mountPath": format!("{PLUGIN_DIR}/teleport-identity")},
                                cert("ca.crt"), cert("client.crt"), cert("client.key"),
                                // Injected: the cursor outlives a restart of the container.
                                {"name": "storage", "mountPath": format!("{PLUGIN_DIR}/storage")}
                            ]
                        }
                    ],
                    "volumes": [
                        {"name": "config", "configMap": {"name": APP, "defaultMode": 384}},
                        {"name": "auth-id", "secret": {"secretName": "teleport-event-handler-identity", "defaultMode": 384}},
                        {"name": "fluentd-cert", "secret": {"secretName": "teleport-event-handler-client-tls", "defaultMode": 384}},
                        {"name": "storage", "emptyDir": {}},
                        // The sidecar's own volumes, mounted into it only. Without a pod fsGroup
                        // the files are root's, so uid 65532 reads them only with mode 0444; the
                        // volume is in no other container, and `items` takes only the three keys.
                        {"name": "eventplug-fluentd-cert", "secret": {
                            "secretName": "teleport-event-handler-client-tls",
                            "defaultMode": 292, "items": certificate_keys
                        }},
                        {"name": "eventplug-admin", "secret": {
                            "secretName": "eventplug-status", "defaultMode": 292,
                            "items": [{"key": "status-token", "path": "status-token"}]
                        }},
                        // A whole folder, not subPath: kubelet swaps its `..data` on updates,
                        // which the sidecar reloads.
                        {"name": "eventplug-config", "configMap": {"name": "eventplug-sidecar", "defaultMode": 292}},
                        {"name": "eventplug-modules", "projected": {"defaultMode": 292, "sources": [
                            {"configMap": {"name": "eventplug-modules-0"}}
                        ]}},
                        {"name": "eventplug-cache", "emptyDir": {}}
                    ]
                }
            }
        }
    })
}

/// Waits until the pod is Ready with both containers ready (and the sidecar restarted at least
/// `sidecar_restarts` times); returns it.
async fn wait_ready(ns: &TestNamespace, pod: &str, sidecar_restarts: i32) -> Pod {
    let pods: Api<Pod> = ns.api();
    wait_for(ns, pod, "the pod to be Ready", POD_READY, || async {
        let p = pods.get(pod).await?;
        let both = p
            .status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .filter(|c| c.ready)
            .count()
            == 2;
        if ready(&p) && both && restarts(&p, SIDECAR) >= sidecar_restarts {
            Ok(p)
        } else {
            Err(describe_pod(&p).into())
        }
    })
    .await
}

/// `/status` (with the token) names the plugin's digest as running and loaded.
async fn assert_status_runs(pod_ip: &str, token: &str, digest: &str) {
    let (code, body) = match admin_get(pod_ip, "/status", Some(token)).await {
        Ok(answer) => answer,
        Err(e) => panic!("GET /status on {pod_ip}: {e}"),
    };
    assert_eq!(code, 200, "/status: {body}");
    let status: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/status is not JSON ({e}): {body}"));
    let plugin = &status["plugins"][0];
    assert_eq!(status["ready"], json!(true), "{body}");
    assert_eq!(plugin["name"], json!("annotate"), "{body}");
    assert_eq!(plugin["runningDigest"], json!(digest), "{body}");
    assert_eq!(plugin["loaded"], json!(true), "{body}");
}

#[tokio::test]
async fn the_injected_pod_delivers_every_event_through_the_sidecar() {
    const N: usize = 20;
    let ns = TestNamespace::create("pod-shape").await;
    let fluentd = Fluentd::start(ns.cluster().node_ip());
    let created = Instant::now();
    let (token, digest) = deploy(&ns, &fluentd, N).await;
    let pod = the_pod(&ns).await;
    let ready_pod = wait_ready(&ns, &pod, 0).await;
    let became_ready = created.elapsed();

    let containers: Vec<&str> = ready_pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(containers, [SIDECAR, EVENT_HANDLER]);

    let log = wait_delivered(&ns, &pod, N, Duration::from_secs(60)).await;
    // The hook held event-handler back until the sidecar was ready: not one try failed.
    assert!(
        !log.contains("failed"),
        "event-handler had failed tries, so it started before the sidecar was ready:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "Using Fluentd url: \"http://127.0.0.1:{}/test.log\"",
            render::LISTEN_PORT
        )),
        "the args did not redirect event-handler to the sidecar:\n{log}"
    );

    // nginx has every event once, in order, each annotated by the plugin.
    let received = fluentd.nginx.wait_received(N);
    assert_eq!(received.len(), N, "{received:#?}");
    for (n, (uri, body)) in received.iter().enumerate() {
        assert_eq!(uri, "/test.log");
        assert_eq!(uid_of(body), uid(n + 1), "event {} out of order", n + 1);
        assert!(body.contains(MARK), "event {} not annotated: {body}", n + 1);
    }

    // /status from outside the pod: the token is needed, and the plugin's digest runs.
    let ip = pod_ip(&ready_pod);
    match admin_get(&ip, "/status", None).await {
        Ok((code, body)) => assert_eq!(code, 401, "/status without the token: {body}"),
        Err(e) => panic!("GET /status on {ip}: {e}"),
    }
    assert_status_runs(&ip, &token, &digest).await;
    // The module cache (an emptyDir; the root filesystem is read-only) holds the compiled module.
    let metrics = match admin_get(&ip, "/metrics", None).await {
        Ok((200, body)) => body,
        other => panic!("GET /metrics on {ip}: {other:?}"),
    };
    let cached = metrics
        .lines()
        .find_map(|l| l.strip_prefix("eventplug_module_cache_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(cached > 0.0, "nothing in the module cache:\n{metrics}");

    let pods: Api<Pod> = ns.api();
    let now = match pods.get(&pod).await {
        Ok(p) => p,
        Err(e) => panic!("reading the pod back: {e}"),
    };
    assert_eq!(
        (restarts(&now, SIDECAR), restarts(&now, EVENT_HANDLER)),
        (0, 0),
        "{}",
        report(&ns, &pod).await
    );
    eprintln!(
        "pod Ready {became_ready:?} after its objects were created; {N} events delivered {:?} after",
        created.elapsed()
    );
}

/// Waits until `container` runs and nginx has at least `count` bodies, then kills it mid-stream
/// (SIGKILL through containerd: a crash, or the OOM killer); kubelet restarts it. Returns how
/// many bodies nginx had at the kill, and when it was.
async fn kill_mid_stream(
    ns: &TestNamespace,
    pod: &str,
    fluentd: &Fluentd,
    container: &str,
    count: usize,
    n: usize,
) -> (usize, Instant) {
    let pods: Api<Pod> = ns.api();
    // kubelet reports a container's ID a moment after it started; the stream can be ahead.
    wait_for(
        ns,
        pod,
        &format!("kubelet to report {container} running"),
        POD_READY,
        || async {
            let p = pods.get(pod).await?;
            let running = p
                .status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .any(|c| {
                    c.name == container
                        && c.container_id.is_some()
                        && c.state.as_ref().is_some_and(|s| s.running.is_some())
                });
            if running {
                Ok(())
            } else {
                Err(describe_pod(&p).into())
            }
        },
    )
    .await;
    wait_for(
        ns,
        pod,
        &format!("nginx to receive {count} events"),
        Duration::from_secs(90),
        || async {
            let got = fluentd.nginx.received().len();
            if got >= count {
                Ok(())
            } else {
                Err(format!("{got} so far").into())
            }
        },
    )
    .await;
    let killed = Instant::now();
    if let Err(e) = kill_container(ns.cluster(), &pods, pod, container, "SIGKILL").await {
        panic!("{e}\n{}", report(ns, pod).await);
    }
    let at_kill = fluentd.nginx.received().len();
    assert!(
        at_kill < n,
        "the stream had ended ({at_kill} of {n}) before {container} was killed, so the kill proves \
         nothing: raise N"
    );
    (at_kill, killed)
}

#[tokio::test]
async fn killed_containers_are_restarted_and_no_event_is_lost() {
    const N: usize = 5000;
    const STEP: usize = 300;
    let ns = TestNamespace::create("pod-shape-kill").await;
    let fluentd = Fluentd::start(ns.cluster().node_ip());
    let (token, digest) = deploy(&ns, &fluentd, N).await;
    let pod = the_pod(&ns).await;
    let pods: Api<Pod> = ns.api();

    // event-handler dies mid-stream: restarted, it resumes from the cursor in its emptyDir (the
    // chart keeps it in the container's filesystem, which a restart empties).
    let (handler_kill, _) = kill_mid_stream(&ns, &pod, &fluentd, EVENT_HANDLER, STEP, N).await;

    // The sidecar dies mid-stream, once events flow again (so event-handler is back): kubelet
    // restarts it and runs its postStart hook again; event-handler retries the event it was
    // sending (or gives up, exits and resumes).
    let (sidecar_kill, killed) =
        kill_mid_stream(&ns, &pod, &fluentd, SIDECAR, handler_kill + STEP, N).await;
    let restarted = wait_ready(&ns, &pod, 1).await;
    let back = killed.elapsed();

    let log = wait_delivered(&ns, &pod, N, Duration::from_secs(180)).await;
    let resumed = log
        .lines()
        .find_map(|l| l.split("resuming at event ").nth(1))
        .and_then(|rest| rest.split(' ').next())
        .and_then(|k| k.parse::<usize>().ok());
    assert!(
        resumed.is_some_and(|k| k > 1),
        "the restarted event-handler did not resume from its cursor (resumed at {resumed:?}):\n{log}"
    );
    let received = fluentd.nginx.wait_received(N);

    // Every event arrived, annotated. An event in flight at a kill may have reached fluentd
    // without its 200 reaching event-handler's cursor, and is then sent again: at most one more
    // body per kill.
    let uids: BTreeSet<String> = received.iter().map(|(_, body)| uid_of(body)).collect();
    let missing: Vec<usize> = (1..=N).filter(|&n| !uids.contains(&uid(n))).collect();
    assert!(missing.is_empty(), "events lost: {missing:?}");
    assert!(
        received.len() <= N + 2,
        "{} bodies for {N} events: more duplicates than one in flight per kill",
        received.len()
    );
    for (uri, body) in &received {
        assert_eq!(uri, "/test.log");
        assert!(body.contains(MARK), "not annotated: {body}");
    }
    assert_status_runs(&pod_ip(&restarted), &token, &digest).await;
    // The restarted sidecar took the compiled module from the cache in its emptyDir, which
    // outlives the container: no warning about the cache.
    let sidecar_log = match pods
        .logs(
            &pod,
            &LogParams {
                container: Some(SIDECAR.into()),
                ..LogParams::default()
            },
        )
        .await
    {
        Ok(log) => log,
        Err(e) => panic!("reading the sidecar's log: {e}"),
    };
    assert!(
        !sidecar_log.contains("module cache") && !sidecar_log.contains("cached module"),
        "the restarted sidecar did not use its module cache:\n{sidecar_log}"
    );

    let now = match pods.get(&pod).await {
        Ok(p) => p,
        Err(e) => panic!("reading the pod back: {e}"),
    };
    eprintln!(
        "event-handler killed at {handler_kill} of {N} events, resumed at event {}; sidecar killed \
         at {sidecar_kill}, pod Ready again {back:?} later; restarts: sidecar {}, event-handler {} \
         (failed tries in its current log: {}); {} bodies at nginx",
        resumed.unwrap_or(0),
        restarts(&now, SIDECAR),
        restarts(&now, EVENT_HANDLER),
        log.matches("failed").count(),
        received.len()
    );
    assert_eq!(restarts(&now, SIDECAR), 1, "{}", describe_pod(&now));
    assert!(restarts(&now, EVENT_HANDLER) >= 1, "{}", describe_pod(&now));
}
