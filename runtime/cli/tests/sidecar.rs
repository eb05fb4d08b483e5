//! The sidecar end to end, with real parts: nginx with mTLS as fluentd, the `eventplug serve`
//! process, and an event-handler emulator (Teleport's event-handler is not available here; the
//! emulator follows its documented delivery behaviour).

mod common;

use common::components::{
    Certificates, EventHandlerEmulator, Nginx, SidecarProcess, http, http_with_headers,
};
use common::{CONTAINS, TempDir, alert_plugin, branching_plugin, set_response, verdict};
use eventplug_proto::v1 as pb;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A plugin that traps on events containing "poison", loops forever on "loopme", else forwards.
fn failing_plugin() -> String {
    common::plugin_wat(
        "",
        "(if (call $contains (local.get $ptr) (local.get $len) (i32.const 8192) (i32.const 6)) (then unreachable))
         (if (call $contains (local.get $ptr) (local.get $len) (i32.const 8256) (i32.const 6)) (then (loop $forever (br $forever))))
         (i64.const 0)",
        &format!(r#"(data (i32.const 8192) "poison") (data (i32.const 8256) "loopme") {CONTAINS}"#),
    )
}

fn annotate_plugin(value: &str) -> String {
    branching_plugin(
        "",
        "access_request.create",
        &set_response("seen-by-us", &format!("\"{value}\"")),
        &pb::HandleEventResponse::default(),
        "",
    )
}

fn skip_santa_plugin() -> String {
    branching_plugin(
        "",
        "secret-santa",
        &verdict(pb::Verdict::Skip),
        &pb::HandleEventResponse::default(),
        "",
    )
}

struct Setup {
    dir: TempDir,
    certs: Certificates,
    nginx: Nginx,
    /// More `admin` keys (lines, indented).
    admin: String,
    config: PathBuf,
}

fn write_module(dir: &Path, name: &str, wat: &str) -> PathBuf {
    let path = dir.join(format!("{name}.wasm"));
    std::fs::write(&path, wat::parse_str(wat).expect("plugin WAT parses")).expect("write module");
    path
}

impl Setup {
    fn new() -> Self {
        let dir = TempDir::new("sidecar");
        let certs = Certificates::generate(&dir.0);
        let nginx = Nginx::start(&dir.0, &certs);
        let config = dir.0.join("mount/config.yaml");
        std::fs::create_dir_all(dir.0.join("mount")).expect("mount folder");
        Self {
            dir,
            certs,
            nginx,
            admin: String::new(),
            config,
        }
    }

    /// Writes the config the way a mounted ConfigMap changes: the file is a symlink into a
    /// timestamped folder, and an update swaps the `..data` symlink to a new folder.
    fn write_config(&self, plugins: &str, delivery: &str) {
        self.write_config_with_ca(plugins, delivery, Some(&self.certs.ca));
    }

    /// `write_config` with another `upstream.ca`, or none.
    fn write_config_with_ca(&self, plugins: &str, delivery: &str, ca: Option<&Path>) {
        self.write_config_full(plugins, delivery, ca, "");
    }

    /// `write_config_with_ca` with more `listen` keys (`listen` lines, indented).
    fn write_config_full(&self, plugins: &str, delivery: &str, ca: Option<&Path>, listen: &str) {
        let text = format!(
            "apiVersion: eventplug.dev/v1alpha1\nkind: SidecarConfig\nlisten:\n  address: 127.0.0.1:0\n  maxBodyBytes: 64Ki\n{listen}admin:\n  address: 127.0.0.1:0\n{admin}upstream:\n  auditUrl: {audit}\n  sessionUrl: {session}\n{ca}  cert: {cert}\n  key: {key}\n  timeout: 2s\ndelivery:\n  reloadInterval: 100ms\n{grace}{delivery}plugins:\n{plugins}",
            admin = self.admin,
            grace = if delivery.contains("shutdownGrace:") {
                ""
            } else {
                "  shutdownGrace: 1s\n"
            },
            audit = self.nginx.url("/test.log"),
            session = self.nginx.url("/session"),
            ca = ca
                .map(|ca| format!("  ca: {}\n", ca.display()))
                .unwrap_or_default(),
            cert = self.certs.client_cert.display(),
            key = self.certs.client_key.display(),
        );
        static VERSION: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let version = format!(
            "..v{}",
            VERSION.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let mount = self.config.parent().expect("config folder");
        std::fs::create_dir_all(mount.join(&version)).expect("version folder");
        std::fs::write(mount.join(&version).join("config.yaml"), text).expect("write config");
        let _ = std::fs::remove_file(mount.join("..data_tmp"));
        std::os::unix::fs::symlink(&version, mount.join("..data_tmp")).expect("symlink");
        std::fs::rename(mount.join("..data_tmp"), mount.join("..data")).expect("swap ..data");
        if std::fs::symlink_metadata(&self.config).is_err() {
            std::os::unix::fs::symlink("..data/config.yaml", &self.config).expect("config symlink");
        }
    }

    fn start(&self) -> SidecarProcess {
        let sidecar = SidecarProcess::start(
            std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
            &self.config,
            &self.dir.0.join("cache"),
        );
        wait_until(
            || sidecar.get("/readyz").0 == 200,
            "the sidecar becomes ready",
            &sidecar,
        );
        sidecar
    }
}

/// Waits up to 15 s until `condition` holds; the failure names `what` and shows the sidecar's log.
fn wait_until(condition: impl FnMut() -> bool, what: &str, sidecar: &SidecarProcess) {
    assert!(
        common::poll_until(Duration::from_secs(15), condition),
        "timed out after 15 s waiting until {what}; sidecar log:\n{}",
        sidecar.logs()
    );
}

fn plugin_entry(name: &str, module: &Path, extra: &str) -> String {
    format!(
        "  - name: {name}\n    module: {}\n{extra}",
        module.display()
    )
}

fn login(n: usize, user: &str) -> Vec<u8> {
    format!(r#"{{"ei":0,"event":"user.login","uid":"login-{n}","time":"2024-02-23T18:56:50.628Z","user":"{user}","success":true,"addr.remote":"1.2.3.4:{n}"}}"#).into_bytes()
}

fn access_request(n: usize) -> Vec<u8> {
    format!(r#"{{"event":"access_request.create", "uid":"ar-{n}","user":"alice","roles":["db-admin"],"reason":"caf\u00e9 {n}"}}"#).into_bytes()
}

fn session_print(n: usize) -> Vec<u8> {
    format!(r#"{{"ei":{n},"event":"print","sid":"s-77","time":"2024-02-23T19:00:00Z","data":"bHMgLWxh"}}"#).into_bytes()
}

/// The stream of a small cluster: logins, access requests, a skipped user, session output.
fn mixed_events(count: usize) -> Vec<(String, Vec<u8>)> {
    (0..count)
        .map(|n| match n % 4 {
            0 => ("/test.log".to_string(), login(n, "alice")),
            1 => ("/test.log".to_string(), access_request(n)),
            2 => ("/test.log".to_string(), login(n, "secret-santa")),
            _ => ("/session.s-77.log".to_string(), session_print(n)),
        })
        .collect()
}

/// What nginx must receive for `events`: skipped ones absent, access requests annotated with
/// `value`, the rest byte-for-byte.
fn expected(events: &[(String, Vec<u8>)], value: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|(_, body)| !String::from_utf8_lossy(body).contains("secret-santa"))
        .map(|(path, body)| {
            let text = String::from_utf8(body.clone()).expect("utf-8");
            let text = if text.contains("access_request.create") {
                format!(
                    "{},\"seen-by-us\":\"{value}\"}}",
                    text.trim_end_matches('}')
                )
            } else {
                text
            };
            (path.clone(), text)
        })
        .collect()
}

/// Received bodies with repeats of the same event next to each other collapsed (a retry of an event
/// fluentd had already accepted).
fn without_retries(mut received: Vec<(String, String)>) -> Vec<(String, String)> {
    received.dedup();
    received
}

#[test]
fn events_arrive_unchanged_modified_or_skipped_in_order_even_when_fluentd_restarts() {
    let mut setup = Setup::new();
    let annotate = write_module(&setup.dir.0, "annotate", &annotate_plugin("yes"));
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config(
        &(plugin_entry(
            "annotate",
            &annotate,
            "    events: [access_request.create]\n",
        ) + &plugin_entry("skip", &skip, "    events: [user.login]\n")),
        "",
    );
    let sidecar = setup.start();
    let events = mixed_events(120);
    let port = sidecar.port;
    let stream = events.clone();
    // The emulator stops after the 15th event until fluentd is down, so the outage falls in the
    // middle of the stream whatever the machine's speed.
    let (at_15, reached) = mpsc::channel();
    let (down, stopped) = mpsc::channel::<()>();
    let emulator = std::thread::spawn(move || {
        let mut emulator = EventHandlerEmulator::new(port, stream);
        emulator.run_while(Duration::from_secs(60), |delivered| {
            if delivered == 15 {
                at_15.send(()).expect("the test waits");
                stopped.recv().expect("the test stops fluentd");
            }
        });
        emulator
    });
    reached.recv().expect("15 events delivered");
    setup.nginx.stop();
    down.send(()).expect("the emulator waits");
    // Back once the sidecar has found it unreachable.
    wait_until(
        || {
            metric(
                &sidecar,
                r#"eventplug_upstream_errors_total{reason="unreachable"} "#,
            ) > 0
        },
        "the sidecar finds fluentd unreachable",
        &sidecar,
    );
    setup.nginx.resume();
    let emulator = emulator.join().expect("emulator finished");
    assert!(
        emulator.failures > 0,
        "the outage was not noticed by event-handler"
    );

    let expected = expected(&events, "yes");
    let received = setup.nginx.wait_received(expected.len());
    assert_eq!(without_retries(received.clone()), expected);
    // Each plugin ran once per event it selects, however often the event was delivered.
    let (_, metrics) = sidecar.get("/metrics");
    assert!(metrics.contains(r#"eventplug_plugin_events_total{plugin="annotate",mode="enforce",result="modified"} 30"#), "{metrics}");
    assert!(
        metrics.contains(
            r#"eventplug_plugin_events_total{plugin="skip",mode="enforce",result="skipped"} 30"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eventplug_upstream_errors_total{reason="unreachable"}"#),
        "{metrics}"
    );
}

#[test]
fn failure_policies_hold_for_traps_and_infinite_loops() {
    let setup = Setup::new();
    let failing = write_module(&setup.dir.0, "failing", &failing_plugin());
    setup.write_config(
        &plugin_entry(
            "open",
            &failing,
            "    failurePolicy: FailOpen\n    limits: {timeout: 100ms}\n",
        ),
        "",
    );
    let sidecar = setup.start();
    let trap = br#"{"event":"x","uid":"t1","note":"poison"}"#;
    let looping = br#"{"event":"x","uid":"t2","note":"loopme"}"#;
    assert_eq!(sidecar.post("/test.log", trap).0, 200);
    let started = Instant::now();
    assert_eq!(sidecar.post("/test.log", looping).0, 200);
    // Its 100 ms timeout let it go: a bound a loaded machine keeps, not a measurement.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "a looping plugin held the event for {:?}",
        started.elapsed()
    );
    let received: Vec<String> = setup
        .nginx
        .wait_received(2)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        received,
        [
            String::from_utf8_lossy(trap),
            String::from_utf8_lossy(looping)
        ]
    );

    setup.write_config(
        &plugin_entry(
            "closed",
            &failing,
            "    failurePolicy: FailClosed\n    limits: {timeout: 100ms}\n",
        ),
        "  poisonPolicy: block\n",
    );
    wait_until(
        || sidecar.get("/status").1.contains("\"closed\""),
        "the FailClosed config is applied",
        &sidecar,
    );
    let (status, body) = sidecar.post("/test.log", br#"{"event":"x","uid":"t3","note":"poison"}"#);
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("plugin closed failed (FailClosed): trapped")
            && body.contains("attempt 1 of 3"),
        "{body}"
    );
    let (status, body) = sidecar.post("/test.log", br#"{"event":"x","uid":"t4","note":"loopme"}"#);
    assert_eq!(status, 500);
    assert!(body.contains("timed out"), "{body}");
    // An event that passes, after them: nginx logs requests in the order it answers them, so once
    // it is logged, anything forwarded of the two refused events would be logged before it.
    let after = br#"{"event":"x","uid":"t5","note":"harmless"}"#;
    assert_eq!(sidecar.post("/test.log", after).0, 200);
    let received: Vec<String> = setup
        .nginx
        .wait_received(3)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        received,
        [
            String::from_utf8_lossy(trap),
            String::from_utf8_lossy(looping),
            String::from_utf8_lossy(after)
        ],
        "nothing unfiltered left"
    );
}

#[test]
fn poison_events_are_quarantined_as_a_bodyless_record_or_blocked_after_n_attempts() {
    // The failing plugin is FailClosed (a redactor, say), so the original must never leave:
    // `quarantine` sends a record of the event without its body, `block` keeps refusing it, and
    // `forward` is refused as a config (eventplug-contract's tests).
    let setup = Setup::new();
    let failing = write_module(&setup.dir.0, "failing", &failing_plugin());
    let closed = plugin_entry("closed", &failing, "    failurePolicy: FailClosed\n");
    for policy in ["quarantine", "block"] {
        setup.write_config(
            &closed,
            &format!("  poisonPolicy: {policy}\n  poisonAttempts: 3\n"),
        );
        let sidecar = setup.start();
        let before = setup.nginx.received().len();
        let event = format!(
            r#"{{"event":"x","uid":"poison-{policy}","note":"poison","secret":"hunter2"}}"#
        );
        let statuses: Vec<u16> = (0..4)
            .map(|_| sidecar.post("/test.log", event.as_bytes()).0)
            .collect();
        if policy == "quarantine" {
            assert_eq!(statuses[..3], [500, 500, 200], "{policy}: {statuses:?}");
            let received = setup.nginx.wait_received(before + 1)[before..].to_vec();
            let (uri, body) = &received[0];
            assert_eq!(uri, "/eventplug.quarantine");
            assert!(
                !body.contains("hunter2") && !body.contains("poison\""),
                "{body}"
            );
            let record: serde_json::Value = serde_json::from_str(body).expect("a JSON record");
            assert!(
                record["event_key"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("uid:poison-quarantine#")),
                "{body}"
            );
            assert_eq!(record["fail_closed_plugin"], "closed", "{body}");
            assert_eq!(
                record["body_sha256"].as_str(),
                Some(eventplug_runtime::engine::module_digest(event.as_bytes()).as_str())
            );
        } else {
            assert_eq!(statuses, [500, 500, 500, 500], "{policy}");
        }
        let (_, metrics) = sidecar.get("/metrics");
        assert!(
            metrics.contains(&format!(
                "eventplug_poison_events_total{{policy=\"{policy}\"}}"
            )),
            "{metrics}"
        );
        drop(sidecar);
    }
    let quarantined = setup.nginx.received().len();
    assert!(
        setup
            .nginx
            .received()
            .iter()
            .all(|(_, body)| !body.contains("hunter2")),
        "nothing unfiltered left ({quarantined} requests)"
    );
}

#[test]
fn reloads_under_load_lose_nothing_and_a_broken_module_keeps_the_last_good_version() {
    let setup = Setup::new();
    let v1 = write_module(&setup.dir.0, "v1", &annotate_plugin("v1"));
    let v2 = write_module(&setup.dir.0, "v2", &annotate_plugin("v2"));
    let entry =
        |module: &Path| plugin_entry("annotate", module, "    events: [access_request.create]\n");
    setup.write_config(&entry(&v1), "");
    let sidecar = setup.start();
    let events: Vec<(String, Vec<u8>)> = (0..300)
        .map(|n| ("/test.log".to_string(), access_request(n)))
        .collect();
    let generation = || {
        serde_json::from_str::<serde_json::Value>(&sidecar.get("/status").1)
            .ok()
            .and_then(|status| status["generation"].as_u64())
    };
    // A switch every 30 events while they flow, each once the one before is applied, so that every
    // switch is a reload of its own (two written within one reload interval would count as one).
    let switches = 8;
    let emulator = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut emulator = EventHandlerEmulator::new(sidecar.port, events.clone());
                emulator.run_while(Duration::from_secs(60), |delivered| {
                    let round = delivered / 30;
                    if delivered % 30 == 0 && (1..=switches).contains(&round) {
                        let applied = round as u64;
                        wait_until(
                            || generation() == Some(applied),
                            &format!("config {applied} is applied"),
                            &sidecar,
                        );
                        setup.write_config(&entry(if round % 2 == 1 { &v2 } else { &v1 }), "");
                    }
                });
                emulator
            })
            .join()
            .expect("emulator finished")
    });
    let last = switches as u64 + 1;
    wait_until(
        || generation() == Some(last),
        "the last switch is applied",
        &sidecar,
    );
    assert_eq!(emulator.failures, 0, "a request failed during a switch");
    let received = setup.nginx.wait_received(events.len());
    assert_eq!(received.len(), events.len(), "every event arrived once");
    for ((_, body), (_, sent)) in received.iter().zip(&events) {
        let sent = String::from_utf8_lossy(sent);
        let base = sent.trim_end_matches('}');
        assert!(
            *body == format!("{base},\"seen-by-us\":\"v1\"}}")
                || *body == format!("{base},\"seen-by-us\":\"v2\"}}"),
            "{body}"
        );
    }
    assert_eq!(
        metric(&sidecar, "eventplug_config_generation "),
        last,
        "every switch was applied"
    );

    // A broken module arrives: the last good version keeps serving, and status says so.
    setup.write_config(&entry(&v1), "");
    wait_until(
        || sidecar.get("/status").1.contains(&digest(&v1)),
        "v1 runs",
        &sidecar,
    );
    let broken = setup.dir.0.join("broken.wasm");
    std::fs::write(&broken, b"\0asm\x01\0\0\0 this is not a module").expect("write broken");
    setup.write_config(&entry(&broken), "");
    wait_until(
        || {
            sidecar
                .get("/status")
                .1
                .contains("not a valid WebAssembly module")
        },
        "the broken module is reported",
        &sidecar,
    );
    let (_, status) = sidecar.get("/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["ready"], true);
    assert_eq!(status["plugins"][0]["loaded"], false);
    assert_eq!(status["plugins"][0]["runningDigest"], digest(&v1));
    let before = setup.nginx.received().len();
    assert_eq!(sidecar.post("/test.log", &access_request(999)).0, 200);
    let last = setup
        .nginx
        .wait_received(before + 1)
        .pop()
        .expect("delivered");
    assert!(last.1.ends_with(",\"seen-by-us\":\"v1\"}"), "{}", last.1);
}

fn digest(module: &Path) -> String {
    eventplug_runtime::engine::module_digest(&std::fs::read(module).expect("module"))
}

#[test]
fn bad_requests_get_clear_answers_and_operations_endpoints_work() {
    let setup = Setup::new();
    let failing = write_module(&setup.dir.0, "failing", &failing_plugin());
    setup.write_config(
        &plugin_entry("closed", &failing, "    failurePolicy: FailClosed\n"),
        "",
    );
    let sidecar = setup.start();
    let (status, body) = sidecar.post("/test.log", b"{\"event\":");
    assert_eq!(status, 500);
    assert!(body.contains("not valid JSON"), "{body}");
    let (status, body) = sidecar.post("/test.log", b"[1,2,3]");
    assert_eq!(status, 500);
    assert!(body.contains("not an object"), "{body}");
    let big = format!(r#"{{"event":"print","data":"{}"}}"#, "x".repeat(70_000));
    let (status, body) = sidecar.post("/test.log", big.as_bytes());
    assert_eq!(status, 413);
    assert!(body.contains("listen.maxBodyBytes"), "{body}");
    let (status, body) = sidecar.post("/elsewhere", b"{}");
    assert_eq!(status, 404);
    assert!(
        body.contains("/test.log") && body.contains("/session.<session id>.log"),
        "{body}"
    );
    let (status, _) = http(sidecar.port, "GET", "/test.log", b"").expect("answer");
    assert_eq!(status, 405);
    assert!(
        setup.nginx.received().is_empty(),
        "nothing bad was forwarded"
    );

    assert_eq!(sidecar.get("/healthz").0, 200);
    assert_eq!(sidecar.get("/readyz").0, 200);
    let (_, status) = sidecar.get("/status");
    let status: serde_json::Value = serde_json::from_str(&status).expect("status is JSON");
    assert_eq!(status["plugins"][0]["runningDigest"], digest(&failing));
    assert!(
        status["configHash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains(r#"eventplug_events_total{result="rejected"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"eventplug_events_received_total{path="audit"}"#),
        "{metrics}"
    );
    assert!(
        !sidecar
            .logs()
            .contains(&std::fs::read_to_string(&setup.certs.client_key).expect("key")),
        "the log holds a secret"
    );
}

#[test]
fn admin_endpoints_answer_on_the_admin_address_only_and_status_needs_its_token() {
    let mut setup = Setup::new();
    let token = setup.dir.0.join("status-token");
    std::fs::write(&token, "first-token\n").expect("write token");
    setup.admin = format!("  statusTokenFile: {}\n", token.display());
    let v1 = write_module(&setup.dir.0, "v1", &annotate_plugin("one"));
    setup.write_config(&plugin_entry("annotate", &v1, ""), "");
    let sidecar = setup.start();

    // The ingest listener answers no admin path, and the admin listener takes no event.
    for path in ["/healthz", "/readyz", "/metrics", "/status"] {
        let (status, body) = http(sidecar.port, "GET", path, b"").expect("ingest answers");
        assert_eq!(status, 404, "{path} on ingest");
        assert!(body.contains("admin.address"), "{body}");
    }
    let (status, body) =
        http(sidecar.admin_port, "POST", "/test.log", &login(1, "alice")).expect("admin answers");
    assert_eq!(status, 405, "{body}");
    assert!(body.contains("listen.address"), "{body}");
    assert!(
        setup.nginx.received().is_empty(),
        "the admin listener forwarded an event"
    );

    // /status needs the bearer token from the file, read at each request.
    let (status, body) = sidecar.get("/status");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("Authorization: Bearer"), "{body}");
    let status_with = |token: &str| {
        http_with_headers(
            sidecar.admin_port,
            "GET",
            "/status",
            &[("Authorization", &format!("Bearer {token}"))],
            b"",
        )
        .expect("admin answers")
    };
    assert_eq!(status_with("wrong-token").0, 401);
    let (status, report) = status_with("first-token");
    assert_eq!(status, 200, "{report}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("status is JSON");
    assert_eq!(report["plugins"][0]["runningDigest"], digest(&v1));
    std::fs::write(&token, "second-token").expect("rotate token");
    assert_eq!(status_with("first-token").0, 401, "the rotated-out token");
    assert_eq!(status_with("second-token").0, 200);
    // Probes and Prometheus need no token.
    assert_eq!(sidecar.get("/healthz").0, 200);
    assert_eq!(sidecar.get("/readyz").0, 200);

    // Stream lag: the forwarded event's time is the newest forwarded time.
    assert_eq!(sidecar.post("/test.log", &login(1, "alice")).0, 200);
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains("eventplug_newest_forwarded_event_time_seconds 1708714610.628"),
        "{metrics}"
    );
    assert!(
        metrics.contains("eventplug_stream_lag_seconds_count 1\n"),
        "{metrics}"
    );

    // An upgrade leaves only the running digest's series.
    let v2 = write_module(&setup.dir.0, "v2", &annotate_plugin("two"));
    setup.write_config(&plugin_entry("annotate", &v2, ""), "");
    wait_until(
        || status_with("second-token").1.contains(&digest(&v2)),
        "v2 runs",
        &sidecar,
    );
    let (_, metrics) = sidecar.get("/metrics");
    assert!(
        metrics.contains(&format!(
            "eventplug_plugin_loaded{{plugin=\"annotate\",digest=\"{}\"}} 1",
            digest(&v2)
        )),
        "{metrics}"
    );
    assert!(
        !metrics.contains(&digest(&v1)),
        "the old digest's series stays: {metrics}"
    );
}

#[test]
fn a_plugin_that_does_not_load_refuses_events_until_a_good_version_arrives() {
    let setup = Setup::new();
    let broken = setup.dir.0.join("broken.wasm");
    std::fs::write(&broken, b"not wasm").expect("write");
    setup.write_config(
        &plugin_entry("redact", &broken, "    failurePolicy: FailClosed\n"),
        "",
    );
    let sidecar = SidecarProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
        &setup.config,
        &setup.dir.0.join("cache"),
    );
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 503);
    assert!(body.contains("redact"), "{body}");
    assert_eq!(sidecar.post("/test.log", &login(1, "alice")).0, 503);
    assert!(setup.nginx.received().is_empty());
    let good = write_module(&setup.dir.0, "good", &skip_santa_plugin());
    setup.write_config(
        &plugin_entry("redact", &good, "    failurePolicy: FailClosed\n"),
        "",
    );
    wait_until(
        || sidecar.get("/readyz").0 == 200,
        "the good version loads",
        &sidecar,
    );
    assert_eq!(sidecar.post("/test.log", &login(1, "alice")).0, 200);
    assert_eq!(setup.nginx.wait_received(1).len(), 1);
}

#[test]
fn a_suspended_plugin_stops_the_stream_with_503_until_it_is_cleared() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config(&plugin_entry("skip", &skip, "    suspend: true\n"), "");
    let sidecar = SidecarProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
        &setup.config,
        &setup.dir.0.join("cache"),
    );
    wait_until(
        || sidecar.get("/readyz").1.contains("suspended"),
        "the sidecar reports the stop",
        &sidecar,
    );
    let (status, body) = sidecar.post("/test.log", &login(1, "alice"));
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("skip suspended"), "{body}");
    assert!(
        setup.nginx.received().is_empty(),
        "an event passed a suspended chain"
    );
    setup.write_config(&plugin_entry("skip", &skip, ""), "");
    wait_until(
        || sidecar.get("/readyz").0 == 200,
        "the stream resumes",
        &sidecar,
    );
    assert_eq!(sidecar.post("/test.log", &login(1, "alice")).0, 200);
    assert_eq!(setup.nginx.wait_received(1).len(), 1);
}

#[test]
fn a_module_delivered_in_chunks_is_joined_checked_and_waited_for() {
    let setup = Setup::new();
    let module = wat::parse_str(annotate_plugin("chunked")).expect("WAT");
    let digest = eventplug_runtime::engine::module_digest(&module);
    let modules = setup.dir.0.join("modules");
    std::fs::create_dir_all(&modules).expect("modules folder");
    let path = modules.join(format!("{}.wasm", digest.replace(':', "-")));
    let entry = plugin_entry("annotate", &path, &format!("    digest: {digest}\n"));
    // The config arrives before the chunks (two ConfigMaps, updated one after the other).
    setup.write_config(&entry, "");
    let sidecar = SidecarProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
        &setup.config,
        &setup.dir.0.join("cache"),
    );
    let (status, body) = sidecar.post("/test.log", &access_request(1));
    assert_eq!(status, 503, "no module yet: {body}");
    // Half the chunks: they join to another digest, so the plugin still does not load.
    let chunks: Vec<&[u8]> = module.chunks(module.len() / 3 + 1).collect();
    assert_eq!(chunks.len(), 3);
    std::fs::write(format!("{}.0", path.display()), chunks[0]).expect("chunk");
    wait_until(
        || sidecar.get("/readyz").1.contains("not the pinned"),
        "a partial module is refused by digest",
        &sidecar,
    );
    for (index, chunk) in chunks.iter().enumerate().skip(1) {
        std::fs::write(format!("{}.{index}", path.display()), chunk).expect("chunk");
    }
    wait_until(
        || sidecar.get("/readyz").0 == 200,
        "the joined module loads",
        &sidecar,
    );
    assert_eq!(sidecar.post("/test.log", &access_request(2)).0, 200);
    let received = setup.nginx.wait_received(1);
    assert!(received[0].1.contains("chunked"), "{received:?}");
}

#[test]
fn a_config_with_a_lower_revision_than_runs_is_never_applied() {
    let setup = Setup::new();
    let v1 = write_module(&setup.dir.0, "v1", &annotate_plugin("one"));
    let v2 = write_module(&setup.dir.0, "v2", &annotate_plugin("two"));
    let with_revision = |revision: u32, module: &Path| {
        // `revision` is a top-level key; the plugin list is the document's last block.
        format!(
            "{}revision: {revision}\n",
            plugin_entry("annotate", module, "")
        )
    };
    setup.write_config(&with_revision(5, &v1), "");
    let sidecar = setup.start();
    // An older copy arrives (kubelet's mounted file lagging the API, say): it is refused.
    setup.write_config(&with_revision(4, &v2), "");
    wait_until(
        || sidecar.logs().contains("older than the running revision 5"),
        "the older revision is refused",
        &sidecar,
    );
    let (_, report) = sidecar.get("/status");
    let report: serde_json::Value = serde_json::from_str(&report).expect("status is JSON");
    assert_eq!(report["revision"], 5);
    assert_eq!(report["plugins"][0]["runningDigest"], digest(&v1));
    setup.write_config(&with_revision(6, &v2), "");
    wait_until(
        || sidecar.get("/status").1.contains(&digest(&v2)),
        "the newer revision is applied",
        &sidecar,
    );
}

#[test]
fn sigterm_keeps_serving_through_the_grace_period_then_exits_zero() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    // A grace period long enough for the test to act in on a loaded machine.
    setup.write_config(&plugin_entry("skip", &skip, ""), "  shutdownGrace: 3s\n");
    let mut sidecar = setup.start();
    let port = sidecar.port;
    let pid = sidecar.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill")
            .success()
    );
    wait_until(
        || http(sidecar.admin_port, "GET", "/readyz", b"").is_ok_and(|(status, _)| status == 503),
        "the sidecar, still serving, reports itself not ready while draining",
        &sidecar,
    );
    assert_eq!(
        http(port, "POST", "/test.log", &login(5, "alice"))
            .expect("still serving")
            .0,
        200,
        "events during the grace period are served"
    );
    let code = sidecar.child.wait().expect("exits").code();
    assert_eq!(code, Some(0));
    assert_eq!(setup.nginx.wait_received(1).len(), 1);
}

/// Alerts the delivery worker carried out (it runs apart from the event, so a count may lag the
/// answer by a moment).
fn effects_carried_out(sidecar: &SidecarProcess) -> u64 {
    metric(
        sidecar,
        r#"eventplug_effect_deliveries_total{class="best_effort",outcome="delivered"} "#,
    )
}

#[test]
fn effects_happen_once_when_the_event_is_delivered_and_never_for_a_failed_event() {
    let mut setup = Setup::new();
    let alert = write_module(&setup.dir.0, "alert", &alert_plugin());
    let failing = write_module(&setup.dir.0, "failing", &failing_plugin());
    setup.write_config(
        &(plugin_entry("alert", &alert, "")
            + &plugin_entry(
                "closed",
                &failing,
                "    priority: 5\n    failurePolicy: FailClosed\n",
            )),
        "  poisonPolicy: block\n",
    );
    let sidecar = setup.start();
    // fluentd is down: the event is refused, its alert not yet carried out.
    setup.nginx.stop();
    let event = login(1, "alice");
    assert_eq!(sidecar.post("/test.log", &event).0, 503);
    assert_eq!(sidecar.post("/test.log", &event).0, 503);
    assert_eq!(
        effects_carried_out(&sidecar),
        0,
        "effects before the event's fate is known"
    );
    setup.nginx.resume();
    assert_eq!(sidecar.post("/test.log", &event).0, 200);
    assert_eq!(
        sidecar.post("/test.log", &event).0,
        200,
        "a redelivery after success"
    );
    wait_until(
        || effects_carried_out(&sidecar) == 1,
        "the alert is carried out",
        &sidecar,
    );
    assert_eq!(
        metric(
            &sidecar,
            r#"eventplug_effects_total{kind="alert",mode="enforce"} "#
        ),
        1,
        "handed over once, though delivered twice"
    );
    // The FailClosed plugin after the alerting one fails: its event never gets a fate, so the
    // alert declared before the failure is never carried out, however often it is retried.
    let poison = br#"{"event":"user.login","uid":"p-1","note":"poison"}"#;
    for _ in 0..4 {
        assert_eq!(sidecar.post("/test.log", poison).0, 500);
    }
    assert_eq!(effects_carried_out(&sidecar), 1);
}

#[test]
fn a_lock_effect_is_carried_out_before_its_event_is_acknowledged_and_only_once() {
    let setup = Setup::new();
    let lock = write_module(&setup.dir.0, "lock", &common::lock_plugin());
    setup.write_config(&plugin_entry("brute", &lock, ""), "");
    let sidecar = setup.start();
    let event = login(3, "mallory");
    assert_eq!(sidecar.post("/test.log", &event).0, 200);
    assert_eq!(sidecar.post("/test.log", &event).0, 200, "a redelivery");
    let delivered =
        r#"eventplug_effect_deliveries_total{class="must_deliver",outcome="delivered"} "#;
    assert_eq!(metric(&sidecar, delivered), 1, "carried out once, by key");
    assert_eq!(
        metric(
            &sidecar,
            r#"eventplug_effects_total{kind="create_lock",mode="enforce"} "#
        ),
        1
    );
    let logs = sidecar.logs();
    assert!(
        logs.contains("uid:login-3#sha256:")
            && logs.contains("/brute/0")
            && logs.contains("brute-force-mallory"),
        "the effect is logged with its idempotency key: {logs}"
    );
}

fn metric(sidecar: &SidecarProcess, line_prefix: &str) -> u64 {
    let (_, metrics) = sidecar.get("/metrics");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

#[test]
fn upstream_refusals_are_blamed_on_the_event_the_configuration_or_nobody() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    let plugins = plugin_entry("skip", &skip, "");
    setup.write_config(&plugins, "  poisonAttempts: 2\n");
    let sidecar = setup.start();
    let event = |uid: &str| format!(r#"{{"event":"print","uid":"{uid}","data":"x"}}"#);

    // The event's fault: counted, then the poison policy (quarantine, with the refused bytes).
    let mut forwards = 0;
    for code in [400, 413, 415, 422] {
        let body = event(&format!("refused-{code}"));
        let path = format!("/session.status-{code}.log");
        let (status, answer) = sidecar.post(&path, body.as_bytes());
        assert_eq!(status, 500, "{code}: {answer}");
        assert!(
            answer.contains(&format!("upstream answered {code}"))
                && answer.contains("attempt 1 of 2"),
            "{answer}"
        );
        let (status, answer) = sidecar.post(&path, body.as_bytes());
        assert_eq!(status, 200, "{code}: {answer}");
        assert_eq!(answer.trim(), "quarantined");
        // Two refused forwards, then the quarantine, for each code so far.
        forwards += 3;
        let last = setup
            .nginx
            .wait_received(forwards)
            .pop()
            .expect("quarantined");
        assert_eq!(last, ("/eventplug.quarantine".to_string(), body), "{code}");
    }
    assert_eq!(
        metric(
            &sidecar,
            r#"eventplug_poison_events_total{policy="quarantine"} "#
        ),
        4
    );

    // The configuration's fault: 503 every time, never counted, and readiness says why until the
    // upstream accepts an event again.
    for code in [401, 403, 404] {
        let body = event(&format!("config-{code}"));
        for _ in 0..3 {
            let (status, answer) =
                sidecar.post(&format!("/session.status-{code}.log"), body.as_bytes());
            assert_eq!(status, 503, "{code}: {answer}");
            assert!(answer.contains("refuses the sidecar"), "{answer}");
        }
        let (status, ready) = sidecar.get("/readyz");
        assert_eq!(status, 503, "{code}");
        assert!(
            ready.contains(&format!("answered {code}")) && ready.contains("upstream.cert"),
            "{ready}"
        );
        let (_, report) = sidecar.get("/status");
        let report: serde_json::Value = serde_json::from_str(&report).expect("status is JSON");
        assert_eq!(report["ready"], false, "{report}");
        assert!(
            report["upstreamRefused"]
                .as_str()
                .is_some_and(|r| r.contains("refuses the sidecar")),
            "{report}"
        );
        assert_eq!(
            sidecar.post("/test.log", &login(code as usize, "alice")).0,
            200
        );
        assert_eq!(sidecar.get("/readyz").0, 200, "ready again after a 200");
    }
    assert!(
        sidecar
            .logs()
            .contains("the upstream refuses the sidecar itself"),
        "{}",
        sidecar.logs()
    );

    // Nobody's fault: retried with 503, never counted.
    for code in [408, 429, 500, 503] {
        let body = event(&format!("transient-{code}"));
        for _ in 0..3 {
            let (status, answer) =
                sidecar.post(&format!("/session.status-{code}.log"), body.as_bytes());
            assert_eq!(status, 503, "{code}: {answer}");
            assert!(answer.contains("retry"), "{answer}");
        }
    }
    assert_eq!(
        metric(
            &sidecar,
            r#"eventplug_poison_events_total{policy="quarantine"} "#
        ),
        4
    );

    // A quarantine that refuses the event too: the record of it goes instead; when that is refused
    // as well, the event stays unacknowledged (503) and each redelivery tries again.
    setup.write_config(
        &plugins,
        "  poisonAttempts: 2\n  quarantineTag: q.status-422\n",
    );
    wait_until(
        || {
            serde_json::from_str::<serde_json::Value>(&sidecar.get("/status").1)
                .is_ok_and(|status| status["generation"] == 2)
        },
        "the new quarantine tag is applied",
        &sidecar,
    );
    let body = event("refused-twice");
    // So far: per configuration fault three refusals and a login, per transient one three tries.
    let before = forwards + 3 * 4 + 4 * 3;
    assert_eq!(setup.nginx.wait_received(before).len(), before);
    assert_eq!(
        sidecar.post("/session.status-400.log", body.as_bytes()).0,
        500
    );
    for _ in 0..2 {
        let (status, answer) = sidecar.post("/session.status-400.log", body.as_bytes());
        assert_eq!(status, 503, "{answer}");
        assert!(
            answer.contains("the quarantine did not take it either"),
            "{answer}"
        );
    }
    let tried: Vec<String> = setup.nginx.wait_received(before + 7)[before..]
        .iter()
        .map(|(uri, _)| uri.clone())
        .collect();
    assert_eq!(
        tried.iter().filter(|uri| *uri == "/q.status-422").count(),
        4,
        "the event, then its record, on each of two redeliveries: {tried:?}"
    );
    assert!(metric(&sidecar, "eventplug_quarantine_failures_total ") >= 2);
}

#[test]
fn without_upstream_ca_the_system_roots_are_trusted_and_with_one_only_that_ca() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    let plugins = plugin_entry("skip", &skip, "");
    let other_dir = setup.dir.0.join("other");
    std::fs::create_dir_all(&other_dir).expect("other CA folder");
    let other = Certificates::generate(&other_dir);
    // The system's roots, as the standard variables point them at this test's CA.
    let no_dir = setup.dir.0.join("no-such-dir");
    let env = [
        ("SSL_CERT_FILE", setup.certs.ca.as_os_str()),
        ("SSL_CERT_DIR", no_dir.as_os_str()),
    ];
    let start = || {
        let sidecar = SidecarProcess::start_with_env(
            std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
            &setup.config,
            &setup.dir.0.join("cache"),
            &env,
        );
        wait_until(
            || sidecar.get("/readyz").0 == 200,
            "the sidecar becomes ready",
            &sidecar,
        );
        sidecar
    };

    setup.write_config_with_ca(&plugins, "", None);
    let sidecar = start();
    let (status, answer) = sidecar.post("/test.log", &login(1, "alice"));
    assert_eq!(status, 200, "{answer}\n{}", sidecar.logs());
    assert_eq!(setup.nginx.wait_received(1).len(), 1);
    drop(sidecar);

    // An explicit CA pins: fluentd's certificate, signed by another CA, is not trusted although the
    // system roots would trust it.
    setup.write_config_with_ca(&plugins, "", Some(&other.ca));
    let sidecar = start();
    let (status, answer) = sidecar.post("/test.log", &login(2, "alice"));
    assert_eq!(status, 503, "{answer}");
    assert!(answer.contains("unreachable"), "{answer}");
    assert_eq!(setup.nginx.received().len(), 1, "nothing reached fluentd");
}

#[test]
fn session_ids_outside_a_safe_character_set_are_refused_with_400() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config(&plugin_entry("skip", &skip, ""), "");
    let sidecar = setup.start();
    let event = session_print(1);
    for path in [
        "/session.x%2f..%2fadmin.log",
        "/session.x%2F..%2Fadmin.log",
        "/session.a%00.log",
        "/session...%2f..%2fx.log",
        "/session.a..b.log",
        "/session.a/b.log",
        "/session..log",
    ] {
        let (status, answer) = sidecar.post(path, &event);
        assert_eq!(status, 400, "{path}: {answer}");
        assert!(
            answer.contains("session id") && answer.trim_end().lines().count() == 1,
            "{path}: {answer}"
        );
    }
    assert!(setup.nginx.received().is_empty(), "nothing was forwarded");
    let uuid = "0b6f1c9e-5e0a-4b9f-9d43-1a2b3c4d5e6f";
    assert_eq!(sidecar.post(&format!("/session.{uuid}.log"), &event).0, 200);
    let received = setup.nginx.wait_received(1);
    assert_eq!(received[0].0, format!("/session.{uuid}.log"));
}

fn is_one_line(body: &str) -> bool {
    body.strip_suffix('\n')
        .is_some_and(|line| !line.contains(['\n', '\r']))
}

#[test]
fn readiness_and_refusals_answer_one_line_without_config_values() {
    let setup = Setup::new();
    // A module in text form with a syntax error: its compile error spans several lines.
    let broken = setup.dir.0.join("broken.wat");
    std::fs::write(
        &broken,
        "(module\n  (func (export \"f\") (result i32)\n    i32.const oops))\n",
    )
    .expect("write module");
    // A plugin that refuses its configuration over several lines, quoting it.
    let refusal = pb::InitResponse {
        error: "bad configuration:\n  apiKey hunter2-secret is not accepted\n".into(),
    };
    let bytes = prost::Message::encode_to_vec(&refusal);
    let refusing = write_module(
        &setup.dir.0,
        "refusing",
        &common::plugin_wat(
            "",
            "(i64.const 0)",
            &format!(
                r#"(func (export "eventplug_init") (param $ptr i32) (param $len i32) (result i64) {})
                   (data (i32.const 256) "{}")"#,
                common::region(bytes.len()),
                common::wat_bytes(&bytes)
            ),
        ),
    );
    setup.write_config(
        &(plugin_entry("broken", &broken, "")
            + &plugin_entry(
                "refusing",
                &refusing,
                "    config: {apiKey: hunter2-secret}\n",
            )),
        "",
    );
    let sidecar = SidecarProcess::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_eventplug")),
        &setup.config,
        &setup.dir.0.join("cache"),
    );
    wait_until(
        || sidecar.get("/readyz").1.contains("refusing"),
        "both plugins are reported",
        &sidecar,
    );
    let (status, ready) = sidecar.get("/readyz");
    assert_eq!(status, 503);
    let (status, refused) = sidecar.post("/test.log", &login(1, "alice"));
    assert_eq!(status, 503);
    let (_, report) = sidecar.get("/status");
    for body in [&ready, &refused, &report] {
        assert!(is_one_line(body), "not one line: {body:?}");
        assert!(
            !body.contains("hunter2"),
            "a config value is echoed: {body}"
        );
        assert!(
            body.contains("broken") && body.contains("refusing"),
            "{body}"
        );
    }
    assert!(ready.contains("<config value>"), "{ready}");
    let report: serde_json::Value = serde_json::from_str(&report).expect("status is JSON");
    assert_eq!(report["ready"], false);
}

/// A raw connection to the sidecar, reads bounded by 10 s.
fn connect(port: u16) -> std::net::TcpStream {
    let stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    stream
}

/// Everything the sidecar sends until it closes the connection, and how long that took; panics
/// when it is still open after the read timeout.
fn read_until_closed(stream: &mut std::net::TcpStream) -> (String, Duration) {
    use std::io::Read;
    let started = Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "the sidecar kept the connection open ({e}) after {:?}; received {:?}",
                started.elapsed(),
                String::from_utf8_lossy(&received)
            ),
        }
    }
    (
        String::from_utf8_lossy(&received).into_owned(),
        started.elapsed(),
    )
}

/// Reads one HTTP answer with a `content-length` body from a connection that stays open.
fn read_answer(stream: &mut std::net::TcpStream) -> String {
    use std::io::Read;
    let mut received = Vec::new();
    let mut byte = [0u8; 1];
    while !received.ends_with(b"\r\n\r\n") {
        assert_eq!(
            stream.read(&mut byte).expect("an answer"),
            1,
            "closed mid-answer"
        );
        received.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&received).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .and_then(|v| v.trim().parse().ok())
        .expect("content-length");
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).expect("the body");
    format!(
        "{}{}",
        String::from_utf8_lossy(&received),
        String::from_utf8_lossy(&body)
    )
}

#[test]
fn slow_heads_stalled_bodies_endless_chunks_and_idle_connections_are_closed() {
    use std::io::Write;
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config_full(
        &plugin_entry("skip", &skip, ""),
        "",
        Some(&setup.certs.ca),
        "  headerReadTimeout: 1s\n  bodyReadTimeout: 1s\n  idleTimeout: 1s\n",
    );
    let sidecar = setup.start();
    let bound = Duration::from_secs(5);

    // A head that never ends.
    let mut slow = connect(sidecar.port);
    slow.write_all(b"POST /test.log HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .expect("send");
    let (answer, took) = read_until_closed(&mut slow);
    assert!(took < bound, "head: closed after {took:?}");
    assert!(!answer.contains("200 OK"), "{answer}");

    // A body that stops.
    let event = login(1, "alice");
    let mut stalled = connect(sidecar.port);
    write!(
        stalled,
        "POST /test.log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
        event.len()
    )
    .expect("send head");
    stalled
        .write_all(&event[..10])
        .expect("send part of the body");
    let (answer, took) = read_until_closed(&mut stalled);
    assert!(took < bound, "stalled body: closed after {took:?}");
    assert!(
        answer.starts_with("HTTP/1.1 408") && answer.contains("listen.bodyReadTimeout"),
        "{answer}"
    );

    // A chunked body that keeps coming and never ends.
    let mut endless = connect(sidecar.port);
    endless
        .write_all(
            b"POST /test.log HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        )
        .expect("send head");
    let mut writer = endless.try_clone().expect("clone");
    let dribble = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < until && writer.write_all(b"1\r\n \r\n").is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let (answer, took) = read_until_closed(&mut endless);
    assert!(took < bound, "endless chunks: closed after {took:?}");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    drop(endless);
    dribble.join().expect("dribble");

    // A kept-alive connection that sends nothing more.
    let mut idle = connect(sidecar.port);
    // Health answers on the admin listener only; the ingest listener serves the request with 404.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    assert!(read_answer(&mut idle).starts_with("HTTP/1.1 404"));
    let (rest, took) = read_until_closed(&mut idle);
    assert!(took < bound, "idle: closed after {took:?}");
    assert!(rest.is_empty(), "{rest}");

    assert!(
        setup.nginx.received().is_empty(),
        "nothing incomplete was forwarded"
    );
    let (_, metrics) = sidecar.get("/metrics");
    for phase in ["head", "body", "idle"] {
        assert!(
            metrics.contains(&format!(
                "eventplug_connections_timed_out_total{{phase=\"{phase}\"}}"
            )),
            "{phase}: {metrics}"
        );
    }
    // The sidecar still serves.
    assert_eq!(sidecar.post("/test.log", &event).0, 200);
}

#[test]
fn connections_over_the_cap_are_answered_503_and_closed() {
    use std::io::Write;
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config_full(
        &plugin_entry("skip", &skip, ""),
        "",
        Some(&setup.certs.ca),
        "  maxConnections: 3\n",
    );
    let sidecar = setup.start();
    // Three kept-alive connections, each shown to be served. The connections that polled for
    // readiness are closed, but the sidecar may not have let go of them yet: a connection it
    // answers 503 for that reason is tried again.
    let mut open: Vec<std::net::TcpStream> = (0..3)
        .map(|n| {
            let mut served = None;
            wait_until(
                || {
                    let mut stream = connect(sidecar.port);
                    stream
                        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                        .expect("send");
                    // Served (health itself answers on the admin listener).
                    if read_answer(&mut stream).starts_with("HTTP/1.1 404") {
                        served = Some(stream);
                    }
                    served.is_some()
                },
                &format!("kept-alive connection {} of 3 is served", n + 1),
                &sidecar,
            );
            served.expect("served")
        })
        .collect();
    let mut fourth = connect(sidecar.port);
    fourth
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("send");
    let (answer, took) = read_until_closed(&mut fourth);
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        answer.starts_with("HTTP/1.1 503") && answer.contains("listen.maxConnections is 3"),
        "{answer}"
    );
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .unwrap_or_default();
    assert_eq!(body.lines().count(), 1, "{body}");
    // One closes: a new connection is served again.
    drop(open.pop());
    wait_until(
        || http(sidecar.port, "GET", "/healthz", b"").is_ok_and(|(status, _)| status == 404),
        "a connection is accepted again",
        &sidecar,
    );
    assert!(
        sidecar.logs().contains("listen.maxConnections"),
        "{}",
        sidecar.logs()
    );
}

#[test]
fn a_client_that_half_closes_after_its_request_gets_the_answer() {
    use std::io::Write;
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config(&plugin_entry("skip", &skip, ""), "");
    let sidecar = setup.start();
    let event = login(7, "alice");
    let mut stream = connect(sidecar.port);
    write!(
        stream,
        "POST /test.log HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        event.len()
    )
    .expect("send head");
    stream.write_all(&event).expect("send body");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("half-close");
    let (answer, _) = read_until_closed(&mut stream);
    assert!(answer.starts_with("HTTP/1.1 200"), "no answer: {answer:?}");
    assert_eq!(setup.nginx.wait_received(1).len(), 1);
}

#[test]
fn the_text_log_written_to_a_file_has_no_terminal_colours() {
    let setup = Setup::new();
    let skip = write_module(&setup.dir.0, "skip", &skip_santa_plugin());
    setup.write_config(&plugin_entry("skip", &skip, ""), "");
    let sidecar = setup.start();
    assert_eq!(sidecar.post("/test.log", &login(1, "alice")).0, 200);
    let logs = sidecar.logs();
    assert!(logs.contains("eventplug sidecar listening"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in a log file: {logs:?}"
    );
}

#[test]
fn a_fail_closed_version_kept_through_a_reload_still_keeps_poison_events_from_being_forwarded() {
    // v1: a FailClosed plugin that fails on the event. v2 asks for FailOpen and `forward`, which
    // the config allows, but its module does not load, so v1 keeps running: the original must
    // still never leave past it.
    let setup = Setup::new();
    let failing = write_module(&setup.dir.0, "failing", &failing_plugin());
    setup.write_config(
        &plugin_entry("closed", &failing, "    failurePolicy: FailClosed\n"),
        "  poisonPolicy: block\n  poisonAttempts: 2\n",
    );
    let sidecar = setup.start();
    let broken = setup.dir.0.join("broken.wasm");
    std::fs::write(&broken, b"not a module").expect("write broken module");
    setup.write_config(
        &plugin_entry("closed", &broken, "    failurePolicy: FailOpen\n"),
        "  poisonPolicy: forward\n  poisonAttempts: 2\n",
    );
    wait_until(
        || {
            serde_json::from_str::<serde_json::Value>(&sidecar.get("/status").1).is_ok_and(
                |status| {
                    status["generation"] == 2
                        && status["plugins"][0]["loaded"] == false
                        && status["plugins"][0]["runningDigest"].is_string()
                },
            )
        },
        "v2 is applied with v1 kept running",
        &sidecar,
    );
    let before = setup.nginx.received().len();
    let event = br#"{"event":"x","uid":"kept-guard","note":"poison","secret":"hunter2"}"#;
    let answers: Vec<(u16, String)> = (0..4).map(|_| sidecar.post("/test.log", event)).collect();
    let statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
    assert_eq!(statuses, [500, 500, 500, 500], "blocked, not forwarded");
    assert!(
        answers[3]
            .1
            .contains("not forwarded: a FailClosed plugin still runs"),
        "{}",
        answers[3].1
    );
    assert!(
        setup.nginx.received()[before..]
            .iter()
            .all(|(_, body)| !body.contains("hunter2")),
        "nothing unfiltered left"
    );
}

#[test]
fn an_event_with_a_repeated_key_never_passes_a_fail_closed_chain() {
    let setup = Setup::new();
    let redactor = write_module(
        &setup.dir.0,
        "redactor",
        &common::constant_plugin(&common::set_response("secret", "\"REDACTED\"")),
    );
    setup.write_config(
        &plugin_entry("redactor", &redactor, "    failurePolicy: FailClosed\n"),
        "  poisonPolicy: block\n",
    );
    let sidecar = setup.start();
    let before = setup.nginx.received().len();
    let (status, body) = sidecar.post(
        "/test.log",
        br#"{"event":"x","uid":"dup","secret":"hunter2","secret":"B"}"#,
    );
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("`secret` twice"), "{body}");
    let (status, _) = sidecar.post(
        "/test.log",
        br#"{"event":"x","uid":"one","secret":"hunter2"}"#,
    );
    assert_eq!(status, 200);
    let received = setup.nginx.wait_received(before + 1);
    assert!(
        received.iter().all(|(_, body)| !body.contains("hunter2")),
        "{received:?}"
    );
}
