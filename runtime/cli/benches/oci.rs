//! OCI speed: pull + verify + precompile of a 1 MB module from a local registry (docker-registry on
//! loopback), and the time from starting `eventplug serve` to `/readyz` 200 with the module cached
//! and the registry stopped. Run: `cargo bench -p eventplug --bench oci`.

use eventplug_contract::PluginSettings;
use eventplug_oci::{Cache, HostSettings, PushRequest, Reference, Registry, RegistrySettings};
use eventplug_runtime::engine::{EngineSettings, PluginEngine};
use eventplug_runtime::pipeline::LoadedPlugin;
use eventplug_runtime::store::LocalTokenStore;
use eventplug_test_support::TempDir;
use eventplug_test_support::components::{free_port, http};
use eventplug_test_support::registry::Registry as TestRegistry;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The forwarding plugin plus enough small functions to make about 1 MB of code.
fn one_megabyte_module() -> Vec<u8> {
    let forward = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/wat/forward.wat"
    ))
    .expect("forward.wat");
    let body = forward.trim_end().strip_suffix(')').expect("module text");
    let mut wat = body.to_string();
    let mut n = 0;
    loop {
        let bytes = wat::parse_str(format!("{wat})")).expect("module parses");
        if bytes.len() >= 1 << 20 {
            return bytes;
        }
        for _ in 0..500 {
            wat.push_str(&format!(
                "\n  (func $f{n} (export \"f{n}\") (param $x i32) (result i32) (local $i i32) (loop $l (local.set $x (i32.xor (i32.mul (local.get $x) (i32.const {m})) (i32.add (local.get $i) (i32.const {n})))) (local.set $i (i32.add (local.get $i) (i32.const 1))) (br_if $l (i32.lt_u (local.get $i) (i32.const 16)))) (i32.add (local.get $x) (i32.rotl (local.get $x) (i32.const 7))))",
                m = n * 2 + 1
            ));
            n += 1;
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    // `cargo test --all-targets` runs bench targets too; only `cargo bench` (which passes
    // `--bench`) measures.
    if !std::env::args().any(|a| a == "--bench") {
        println!("benchmark: run it with `cargo bench -p eventplug --bench oci`");
        return;
    }
    let dir = TempDir::new("bench-oci");
    let mut registry = TestRegistry::start_plain(&dir.0);
    let mut hosts = HashMap::new();
    hosts.insert(
        registry.host(),
        HostSettings {
            plain_http: true,
            ca: None,
        },
    );
    let client = Registry::new(RegistrySettings {
        hosts,
        progress: false,
        ..RegistrySettings::default()
    });
    let module = one_megabyte_module();
    let target: Reference = format!("{}/bench/big:v1", registry.host())
        .parse()
        .expect("reference");
    let pinned = eventplug_oci::block_on(client.push(
        &target,
        PushRequest {
            module: module.clone(),
            file_name: "big.wasm".into(),
            annotations: BTreeMap::new(),
        },
    ))
    .expect("push");
    println!(
        "module: {} bytes, {}",
        module.len(),
        pinned.digest().unwrap_or_default()
    );

    // Pull + verify + precompile, each run with empty caches.
    let mut pulls = Vec::new();
    let mut totals = Vec::new();
    for run in 0..7 {
        let cache = Cache::new(dir.0.join(format!("oci-{run}")));
        let engine = PluginEngine::new(EngineSettings {
            cache_dir: Some(dir.0.join(format!("cwasm-{run}"))),
            ..EngineSettings::default()
        })
        .expect("engine");
        let start = Instant::now();
        let pulled = eventplug_oci::block_on(client.pull(&pinned, Some(&cache))).expect("pull");
        let pulled_at = start.elapsed();
        let mut settings = PluginSettings::for_module("big", pulled.module_path.expect("cached"));
        settings.digest = Some(pulled.module_digest);
        LoadedPlugin::load(&engine, &settings, Arc::new(LocalTokenStore::new())).expect("load");
        totals.push(start.elapsed());
        pulls.push(pulled_at);
    }
    println!(
        "pull + verify (cold cache): median {:.1} ms; pull + verify + precompile + first instance: median {:.1} ms (7 runs)",
        median(pulls).as_secs_f64() * 1e3,
        median(totals).as_secs_f64() * 1e3
    );

    // Sidecar start with the module and its precompiled artifact cached, the registry stopped.
    let port = free_port();
    let config = dir.0.join("sidecar.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: eventplug.dev/v1alpha1\nkind: SidecarConfig\nlisten:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:{port}\nupstream:\n  auditUrl: http://127.0.0.1:9/test.log\ndelivery:\n  shutdownGrace: 0s\nregistries:\n  hosts:\n    - host: {}\n      plainHttp: true\nplugins:\n  - name: big\n    module: oci://{pinned}\n",
            registry.host()
        ),
    )
    .expect("config");
    let cache = dir.0.join("sidecar-cache");
    let start_sidecar = || {
        let start = Instant::now();
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_eventplug"))
            .args(["serve", "--config"])
            .arg(&config)
            .env("EVENTPLUG_CACHE_DIR", &cache)
            .env("EVENTPLUG_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("eventplug serve");
        loop {
            if matches!(http(port, "GET", "/readyz", b""), Ok((200, _))) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "sidecar never ready"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = start.elapsed();
        let _ = child.kill();
        let _ = child.wait();
        took
    };
    let first = start_sidecar();
    registry.stop();
    let starts: Vec<Duration> = (0..7).map(|_| start_sidecar()).collect();
    println!(
        "sidecar start to /readyz 200: first start (pull + precompile) {:.1} ms; with the module cached and the registry stopped: median {:.1} ms (7 runs)",
        first.as_secs_f64() * 1e3,
        median(starts).as_secs_f64() * 1e3
    );
}
