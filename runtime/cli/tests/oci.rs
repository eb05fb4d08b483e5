//! `eventplug push`, `pull` and `inspect` against a real registry (Debian's docker-registry on
//! loopback), and the sidecar running `oci://` modules from its cache while the registry is down.

mod common;

use common::TempDir;
use common::components::{Certificates, Nginx, SidecarProcess};
use common::registry::Registry;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn eventplug(args: &[&str], cache: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .args(args)
        .env("EVENTPLUG_CACHE_DIR", cache)
        .env_remove("REGISTRY_AUTH_FILE")
        .env_remove("DOCKER_CONFIG")
        .output()
        .expect("run eventplug")
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "eventplug failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn forward_module(dir: &Path) -> PathBuf {
    let wat = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/wat/forward.wat"
    ))
    .expect("forward.wat");
    let path = dir.join("forward.wasm");
    std::fs::write(&path, wat::parse_str(&wat).expect("forward.wat parses")).expect("module");
    path
}

fn digest_of(bytes: &[u8]) -> String {
    eventplug_oci::sha256_digest(bytes)
}

#[test]
fn push_pull_inspect_round_trip() {
    let dir = TempDir::new("cli-oci");
    let registry = Registry::start_plain(&dir.0);
    let cache = dir.0.join("cache");
    let module = forward_module(&dir.0);
    let target = format!("{}/team/forward:1.2.0", registry.host());
    let pinned = ok(&eventplug(
        &[
            "push",
            &target,
            module.to_str().unwrap_or_default(),
            "--plain-http",
            "--source",
            "https://example.com/forward",
            "--annotation",
            "team=platform",
        ],
        &cache,
    ));
    assert!(pinned.starts_with(&format!("{target}@sha256:")), "{pinned}");

    let out = dir.0.join("pulled.wasm");
    let pulled = ok(&eventplug(
        &[
            "pull",
            &format!("oci://{target}"),
            "-o",
            out.to_str().unwrap_or_default(),
            "--plain-http",
            "--no-cache",
        ],
        &cache,
    ));
    assert_eq!(pulled, pinned);
    assert_eq!(
        std::fs::read(&out).expect("pulled"),
        std::fs::read(&module).expect("module")
    );
    // Filling a cache without keeping a file: /dev/null is written to, not replaced.
    let filled = dir.0.join("filled");
    ok(&eventplug(
        &["pull", &pinned, "-o", "/dev/null", "--plain-http"],
        &filled,
    ));
    assert!(std::fs::metadata("/dev/null").is_ok_and(|m| !m.is_file()));
    let digest = pinned
        .rsplit_once("@sha256:")
        .map(|p| p.1)
        .unwrap_or_default();
    assert!(filled.join("oci/blobs/sha256").join(digest).is_file());

    let report = ok(&eventplug(
        &["inspect", &pinned, "--output", "json", "--plain-http"],
        &cache,
    ));
    let report: serde_json::Value = serde_json::from_str(&report).expect("JSON");
    assert_eq!(
        report["digest"].as_str(),
        pinned.rsplit_once('@').map(|p| p.1)
    );
    assert_eq!(report["layout"], "cncf-wasm-v0");
    assert_eq!(
        report["configMediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(report["layerMediaTypes"][0], "application/wasm");
    assert_eq!(
        report["moduleDigest"],
        digest_of(&std::fs::read(&module).expect("module"))
    );
    assert_eq!(report["abi"]["ok"], true, "{report}");
    let annotations = &report["annotations"];
    assert_eq!(annotations["org.opencontainers.image.version"], "1.2.0");
    assert_eq!(
        annotations["org.opencontainers.image.source"],
        "https://example.com/forward"
    );
    assert!(
        annotations["org.opencontainers.image.created"].is_string(),
        "{report}"
    );
    assert_eq!(annotations["dev.eventplug.abi.version"], "1");
    assert_eq!(annotations["dev.eventplug.sdk.version"], "unknown");
    assert_eq!(annotations["team"], "platform");
    assert!(
        report["exports"]
            .as_array()
            .is_some_and(|e| e.iter().any(|x| x == "eventplug_handle_event")),
        "{report}"
    );

    let text = ok(&eventplug(&["inspect", &pinned, "--plain-http"], &cache));
    assert!(
        text.contains("layout:      cncf-wasm-v0") && text.contains("abi:         ok"),
        "{text}"
    );
}

#[test]
fn push_refuses_a_module_that_would_not_load_with_the_message_run_gives() {
    let dir = TempDir::new("cli-oci-refuse");
    let registry = Registry::start_plain(&dir.0);
    let cache = dir.0.join("cache");
    let bad = dir.0.join("bad.wasm");
    std::fs::write(
        &bad,
        wat::parse_str(r#"(module (memory (export "memory") 1))"#).expect("wat"),
    )
    .expect("bad module");
    let run = Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .args(["run", "--plugin"])
        .arg(&bad)
        .env("EVENTPLUG_CACHE_DIR", &cache)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run");
    let push = eventplug(
        &[
            "push",
            &format!("{}/team/bad:v1", registry.host()),
            bad.to_str().unwrap_or_default(),
            "--plain-http",
        ],
        &cache,
    );
    assert_eq!(push.status.code(), Some(2));
    assert_eq!(run.status.code(), Some(2));
    let push_error = String::from_utf8_lossy(&push.stderr);
    assert_eq!(push_error, String::from_utf8_lossy(&run.stderr));
    assert!(
        push_error.contains("does not meet the eventplug ABI")
            && push_error.contains("eventplug_handle_event"),
        "{push_error}"
    );
    // Nothing was pushed.
    let inspect = eventplug(
        &[
            "inspect",
            &format!("{}/team/bad:v1", registry.host()),
            "--plain-http",
        ],
        &cache,
    );
    assert!(
        String::from_utf8_lossy(&inspect.stderr).contains("404"),
        "{}",
        String::from_utf8_lossy(&inspect.stderr)
    );
}

#[test]
fn two_processes_pulling_the_same_digest_leave_one_good_cache_entry() {
    let dir = TempDir::new("cli-oci-race");
    let registry = Registry::start_plain(&dir.0);
    let cache = dir.0.join("cache");
    let module = forward_module(&dir.0);
    // A larger module (a custom section of padding) so the writes overlap.
    let mut bytes = std::fs::read(&module).expect("module");
    let padding = vec![b'x'; 3 << 20];
    bytes.push(0);
    let mut payload = vec![7u8];
    payload.extend_from_slice(b"padding");
    payload.extend_from_slice(&padding);
    let mut size = payload.len();
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        bytes.push(if size > 0 { byte | 0x80 } else { byte });
        if size == 0 {
            break;
        }
    }
    bytes.extend_from_slice(&payload);
    std::fs::write(&module, &bytes).expect("padded module");
    let pinned = ok(&eventplug(
        &[
            "push",
            &format!("{}/team/big:v1", registry.host()),
            module.to_str().unwrap_or_default(),
            "--plain-http",
        ],
        &cache,
    ));
    // Both at once: spawn both, then wait.
    let spawned: Vec<_> = (2..4)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_eventplug"))
                .args(["pull", &pinned, "--plain-http", "-o"])
                .arg(dir.0.join(format!("out{i}.wasm")))
                .env("EVENTPLUG_CACHE_DIR", dir.0.join("race-cache"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn pull")
        })
        .collect();
    for child in spawned {
        let output = child.wait_with_output().expect("pull finished");
        assert_eq!(ok(&output), pinned);
    }
    for i in 2..4 {
        assert_eq!(
            std::fs::read(dir.0.join(format!("out{i}.wasm"))).expect("out"),
            bytes
        );
    }
    let blobs = dir.0.join("race-cache/oci/blobs/sha256");
    let mut names: Vec<String> = std::fs::read_dir(&blobs)
        .expect("cache folder")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let manifest = pinned
        .rsplit_once("@sha256:")
        .map(|p| p.1.to_string())
        .unwrap_or_default();
    let mut expected = vec![
        manifest,
        digest_of(&bytes).trim_start_matches("sha256:").to_string(),
    ];
    expected.sort();
    assert_eq!(
        names, expected,
        "one entry per digest, no temporary files left"
    );
    for name in names {
        let content = std::fs::read(blobs.join(&name)).expect("entry");
        assert_eq!(
            digest_of(&content),
            format!("sha256:{name}"),
            "entry {name} is complete"
        );
    }
}

/// Waits up to 20 s until `condition` holds; the failure names `what` and shows the sidecar's log.
fn wait_until(condition: impl FnMut() -> bool, what: &str, sidecar: &SidecarProcess) {
    assert!(
        common::poll_until(Duration::from_secs(20), condition),
        "timed out after 20 s waiting until {what}; sidecar log:\n{}",
        sidecar.logs()
    );
}

#[test]
fn a_sidecar_with_its_modules_cached_starts_and_reloads_while_the_registry_is_down() {
    let dir = TempDir::new("cli-oci-sidecar");
    let mut registry = Registry::start_plain(&dir.0);
    let module = forward_module(&dir.0);
    let scratch = dir.0.join("push-cache");
    let pinned = ok(&eventplug(
        &[
            "push",
            &format!("{}/team/forward:v1", registry.host()),
            module.to_str().unwrap_or_default(),
            "--plain-http",
        ],
        &scratch,
    ));
    let (tagged, digest) = pinned.rsplit_once('@').expect("pinned");
    let certs = Certificates::generate(&dir.0);
    let nginx = Nginx::start(&dir.0, &certs);
    let config = dir.0.join("config.yaml");
    let registry_host = registry.host();
    let write = |plugins: &str| {
        let text = format!(
            "apiVersion: eventplug.dev/v1alpha1\nkind: SidecarConfig\nlisten:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstream:\n  auditUrl: {audit}\n  ca: {ca}\n  cert: {cert}\n  key: {key}\ndelivery:\n  reloadInterval: 100ms\n  shutdownGrace: 0s\nregistries:\n  timeout: 2s\n  hosts:\n    - host: {host}\n      plainHttp: true\nplugins:\n{plugins}",
            audit = nginx.url("/test.log"),
            ca = certs.ca.display(),
            cert = certs.client_cert.display(),
            key = certs.client_key.display(),
            host = registry_host,
        );
        let tmp = config.with_extension("tmp");
        std::fs::write(&tmp, text).expect("config");
        std::fs::rename(&tmp, &config).expect("config");
    };
    // A tag with its digest beside it, and the same module pinned in the reference.
    write(&format!(
        "  - name: a\n    module: oci://{tagged}\n    digest: {digest}\n"
    ));
    let cache = dir.0.join("cache");
    let binary = Path::new(env!("CARGO_BIN_EXE_eventplug"));
    let mut sidecar = SidecarProcess::start(binary, &config, &cache);
    wait_until(
        || sidecar.get("/readyz").0 == 200,
        "ready with the pulled module",
        &sidecar,
    );
    assert!(
        sidecar.logs().contains("module pulled into the cache"),
        "{}",
        sidecar.logs()
    );
    sidecar.terminate();

    registry.stop();
    let mut sidecar = SidecarProcess::start(binary, &config, &cache);
    wait_until(
        || sidecar.get("/readyz").0 == 200,
        "ready from the cache with the registry down",
        &sidecar,
    );
    let (_, status) = sidecar.get("/status");
    assert!(status.contains(&format!("oci://{tagged}")), "{status}");

    // A reload adds a second plugin on the same digest: still no registry needed.
    let repository = tagged.rsplit_once(':').map(|p| p.0).unwrap_or(tagged);
    write(&format!(
        "  - name: a\n    module: oci://{tagged}\n    digest: {digest}\n  - name: b\n    module: oci://{repository}@{digest}\n    config: {{x: 1}}\n"
    ));
    wait_until(
        || sidecar.get("/status").1.contains("\"b\""),
        "the reload applies",
        &sidecar,
    );
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "{}",
        sidecar.get("/status").1
    );
    let (code, _) = sidecar.post("/test.log", &common::login_event("u1"));
    assert_eq!(code, 200, "{}", sidecar.logs());

    // A digest that is not cached cannot be fetched: the running plugins stay and the error says why.
    write(&format!(
        "  - name: a\n    module: oci://{repository}@{}\n",
        digest_of(b"other")
    ));
    wait_until(
        || sidecar.get("/status").1.contains("cannot reach registry"),
        "the failed pull is reported",
        &sidecar,
    );
    assert_eq!(
        sidecar.get("/readyz").0,
        200,
        "the last good version keeps running"
    );
    sidecar.terminate();
}

#[test]
fn a_pull_secret_over_tls_works_and_a_refused_one_is_named_without_the_password() {
    let dir = TempDir::new("cli-oci-auth");
    let registry = Registry::start_with_auth(&dir.0, "ci", "sup3r-s3cret-pw");
    let cache = dir.0.join("cache");
    let module = forward_module(&dir.0);
    let secret = |name: &str, password: &str| {
        let folder = dir.0.join(name);
        std::fs::create_dir_all(&folder).expect("secret folder");
        let config = serde_json::json!({"auths": {registry.host(): {"username": "ci", "password": password}}});
        std::fs::write(folder.join(".dockerconfigjson"), config.to_string()).expect("secret");
        folder
    };
    let good = secret("good", "sup3r-s3cret-pw");
    let bad = secret("bad", "wr0ng-pw-value");
    let ca = registry.ca.clone().expect("test CA");
    let target = format!("{}/team/redact:v1", registry.host());
    let args = |auth: &Path| -> Vec<String> {
        vec![
            "--ca".into(),
            ca.display().to_string(),
            "--auth-file".into(),
            auth.display().to_string(),
        ]
    };
    let mut push = vec![
        "push".to_string(),
        target.clone(),
        module.display().to_string(),
    ];
    push.extend(args(&good));
    let pinned = ok(&eventplug(
        &push.iter().map(String::as_str).collect::<Vec<_>>(),
        &cache,
    ));
    assert!(pinned.starts_with(&format!("{target}@sha256:")), "{pinned}");

    let out = dir.0.join("out.wasm");
    let mut pull = vec![
        "pull".to_string(),
        target.clone(),
        "-o".into(),
        out.display().to_string(),
        "--no-cache".into(),
    ];
    pull.extend(args(&bad));
    let output = eventplug(&pull.iter().map(String::as_str).collect::<Vec<_>>(), &cache);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "401: the registry refused the credentials for {}/team/redact; check the pull secret",
            registry.host()
        )),
        "{stderr}"
    );
    assert!(
        !stderr.contains("wr0ng-pw-value") && !stderr.contains("sup3r-s3cret-pw"),
        "{stderr}"
    );
    assert!(!out.exists());
}
