//! eventplug-oci against a real registry (Debian's docker-registry on loopback), with PyPI's oras
//! and skopeo on the other side.

use eventplug_oci::{
    Cache, Credential, Credentials, HostSettings, Layout, OciError, PushRequest, Reference,
    Registry as Client, RegistrySettings, sha256_digest,
};
use eventplug_test_support::TempDir;
use eventplug_test_support::registry::Registry;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Bytes that start like a wasm module; the OCI layer does not look further.
fn module(seed: u8, len: usize) -> Vec<u8> {
    let mut bytes = b"\0asm\x01\0\0\0".to_vec();
    bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)));
    bytes
}

fn plain_client(registry: &Registry) -> Client {
    let mut hosts = HashMap::new();
    hosts.insert(
        registry.host(),
        HostSettings {
            plain_http: true,
            ca: None,
        },
    );
    Client::new(RegistrySettings {
        hosts,
        timeout: Duration::from_secs(5),
        ..RegistrySettings::default()
    })
}

fn reference(text: &str) -> Reference {
    text.parse().expect("valid reference")
}

fn push(client: &Client, target: &str, bytes: &[u8]) -> Reference {
    let mut annotations = BTreeMap::new();
    annotations.insert("org.opencontainers.image.version".into(), "1.0.0".into());
    eventplug_oci::block_on(client.push(
        &reference(target),
        PushRequest {
            module: bytes.to_vec(),
            file_name: "plugin.wasm".into(),
            annotations,
        },
    ))
    .expect("push")
}

fn pull(
    client: &Client,
    target: &Reference,
    cache: Option<&Cache>,
) -> Result<eventplug_oci::Pulled, OciError> {
    eventplug_oci::block_on(client.pull(target, cache))
}

/// Runs a Python script with oras in `dir`; panics (loudly) when oras is missing or the script fails.
fn python(dir: &Path, script: &str) -> String {
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("python3 (bash scripts/setup.sh installs oras)");
    assert!(
        output.status.success(),
        "python/oras failed (bash scripts/setup.sh installs oras==0.2.43): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn oras_push(dir: &Path, target: &str, file: &str, layer_type: &str, config_type: &str) {
    std::fs::write(dir.join("config.json"), b"{}").expect("config");
    python(
        dir,
        &format!(
            "import oras.client\nc = oras.client.OrasClient(hostname={host:?}, insecure=True)\nc.push(target={target:?}, files=[{file:?} + ':' + {layer_type:?}], manifest_config='config.json:' + {config_type:?}, quiet=True)\n",
            host = target.split('/').next().unwrap_or_default(),
        ),
    );
}

#[test]
fn push_pull_round_trip_verifies_and_a_pinned_pull_ignores_a_moved_tag() {
    let dir = TempDir::new("oci-roundtrip");
    let registry = Registry::start_plain(&dir.0);
    let client = plain_client(&registry);
    let v1 = module(1, 2000);
    let pinned = push(&client, &format!("{}/team/redact:v1", registry.host()), &v1);
    assert!(
        pinned
            .to_string()
            .starts_with(&format!("{}/team/redact:v1@sha256:", registry.host()))
    );

    let pulled = pull(
        &client,
        &reference(&format!("oci://{}/team/redact:v1", registry.host())),
        None,
    )
    .expect("pull by tag");
    assert_eq!(pulled.module, v1);
    assert_eq!(pulled.layout, Layout::CncfV0);
    assert_eq!(Some(pulled.manifest_digest.as_str()), pinned.digest());
    assert_eq!(pulled.module_digest, sha256_digest(&v1));
    assert_eq!(
        pulled.config_media_type,
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(
        pulled.layer_media_types,
        vec!["application/wasm".to_string()]
    );
    assert_eq!(
        pulled
            .annotations
            .get("org.opencontainers.image.version")
            .map(String::as_str),
        Some("1.0.0")
    );

    // The tag moves to a new module; the pinned reference still gets the old bytes.
    let v2 = module(2, 2000);
    let moved = push(&client, &format!("{}/team/redact:v1", registry.host()), &v2);
    assert_ne!(moved.digest(), pinned.digest());
    assert_eq!(
        pull(&client, &pinned, None).expect("pinned pull").module,
        v1
    );
    assert_eq!(
        pull(
            &client,
            &reference(&format!("{}/team/redact:v1", registry.host())),
            None
        )
        .expect("tag pull")
        .module,
        v2
    );
}

#[test]
fn oras_artifacts_in_each_layout_pull_and_eventplug_pushes_pull_with_oras_and_skopeo() {
    let dir = TempDir::new("oci-oras");
    let registry = Registry::start_plain(&dir.0);
    let host = registry.host();
    let client = plain_client(&registry);
    let bytes = module(7, 5000);
    std::fs::write(dir.0.join("m.wasm"), &bytes).expect("module");
    for (repo, layer, config, layout) in [
        (
            "cncf",
            "application/wasm",
            "application/vnd.wasm.config.v0+json",
            Layout::CncfV0,
        ),
        (
            "v1",
            "application/vnd.wasm.content.layer.v1+wasm",
            "application/vnd.wasm.config.v1+json",
            Layout::WasmV1,
        ),
        (
            "solo",
            "application/vnd.module.wasm.content.layer.v1+wasm",
            "application/vnd.module.wasm.config.v1+json",
            Layout::Solo,
        ),
    ] {
        oras_push(
            &dir.0,
            &format!("{host}/oras/{repo}:v1"),
            "m.wasm",
            layer,
            config,
        );
        let pulled = pull(&client, &reference(&format!("{host}/oras/{repo}:v1")), None)
            .unwrap_or_else(|e| panic!("{repo}: {e}"));
        assert_eq!(pulled.layout, layout, "{repo}");
        assert_eq!(pulled.module, bytes, "{repo}");
    }
    // Istio's compat image: an image whose one tar.gz layer holds plugin.wasm.
    python(
        &dir.0,
        "import tarfile\nwith tarfile.open('layer.tar.gz', 'w:gz') as t:\n    t.add('m.wasm', arcname='plugin.wasm')\n",
    );
    oras_push(
        &dir.0,
        &format!("{host}/oras/compat:v1"),
        "layer.tar.gz",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.config.v1+json",
    );
    let pulled =
        pull(&client, &reference(&format!("{host}/oras/compat:v1")), None).expect("compat");
    assert_eq!(
        (pulled.layout, pulled.module),
        (Layout::Compat, bytes.clone())
    );

    // eventplug push → oras pull: the same bytes.
    let pinned = push(&client, &format!("{host}/ep/mod:v3"), &bytes);
    let out = dir.0.join("oras-out");
    python(
        &dir.0,
        &format!(
            "import oras.client\nc = oras.client.OrasClient(hostname={host:?}, insecure=True)\nprint(c.pull(target={target:?}, outdir={out:?}))\n",
            target = pinned.to_string(),
            out = out.display().to_string()
        ),
    );
    assert_eq!(
        std::fs::read(out.join("plugin.wasm")).expect("oras wrote plugin.wasm"),
        bytes
    );

    // skopeo reads the manifest eventplug wrote: its digest and annotations. (Plain `skopeo
    // inspect` refuses artifacts that are not container images, by design.)
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", "--tls-verify=false"])
        .arg(format!("docker://{host}/ep/mod:v3"))
        .output()
        .expect("skopeo (bash scripts/setup.sh installs it)");
    assert!(
        raw.status.success(),
        "skopeo: {}",
        String::from_utf8_lossy(&raw.stderr)
    );
    let manifest: serde_json::Value = serde_json::from_slice(&raw.stdout).expect("manifest JSON");
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.wasm.config.v0+json"
    );
    assert_eq!(manifest["layers"][0]["mediaType"], "application/wasm");
    assert!(
        manifest["annotations"]["org.opencontainers.image.created"].is_string(),
        "{manifest}"
    );
    assert_eq!(
        manifest["annotations"]["org.opencontainers.image.version"],
        "1.0.0"
    );
    assert_eq!(
        sha256_digest(&raw.stdout),
        pinned.digest().unwrap_or_default()
    );
}

#[test]
fn each_failure_is_a_clear_error() {
    let dir = TempDir::new("oci-errors");
    let mut registry = Registry::start_plain(&dir.0);
    let host = registry.host();
    let client = plain_client(&registry);
    let bytes = module(3, 3000);
    let pinned = push(&client, &format!("{host}/team/redact:v1"), &bytes);

    // A digest nothing has.
    let wrong = reference(&format!("{host}/team/redact@{}", sha256_digest(b"nothing")));
    let error = pull(&client, &wrong, None)
        .expect_err("wrong digest")
        .to_string();
    assert!(
        error.starts_with("404: ") && error.contains(&format!("{host}/team/redact@sha256:")),
        "{error}"
    );

    // A tag nobody pushed.
    let error = pull(
        &client,
        &reference(&format!("{host}/team/redact:nope")),
        None,
    )
    .expect_err("missing tag")
    .to_string();
    assert!(
        error.contains("404")
            && error.contains("team/redact:nope")
            && error.contains("check the repository"),
        "{error}"
    );

    // Not a wasm artifact.
    std::fs::write(dir.0.join("notes.txt"), b"hello").expect("file");
    oras_push(
        &dir.0,
        &format!("{host}/team/notes:v1"),
        "notes.txt",
        "text/plain",
        "application/vnd.oci.image.config.v1+json",
    );
    let error = pull(&client, &reference(&format!("{host}/team/notes:v1")), None)
        .expect_err("not wasm")
        .to_string();
    assert!(
        error.contains("not a wasm plugin artifact")
            && error.contains(
                "config application/vnd.oci.image.config.v1+json and layers [text/plain]"
            )
            && error.contains("application/vnd.wasm.config.v0+json + layer application/wasm"),
        "{error}"
    );

    // Over the size cap: refused from the manifest, before the download.
    let small = Client::new(RegistrySettings {
        max_module_bytes: 1000,
        ..plain_client(&registry).settings().clone()
    });
    let error = pull(&small, &pinned, None)
        .expect_err("too large")
        .to_string();
    assert!(
        error.contains("the module is 3008 bytes, over the limit of 1000 bytes"),
        "{error}"
    );

    // A blob changed on the registry's disk: a digest mismatch, and nothing cached.
    let layer = pull(&client, &pinned, None).expect("pull").layer_digest;
    let file = registry.blob_file(&layer);
    let mut stored = std::fs::read(&file).expect("blob file");
    stored[100] ^= 0xff;
    std::fs::write(&file, &stored).expect("corrupt");
    let cache = Cache::new(dir.0.join("cache"));
    let error = pull(&client, &pinned, Some(&cache))
        .expect_err("corrupt")
        .to_string();
    assert!(
        error.contains("digest mismatch") && error.contains("nothing was loaded"),
        "{error}"
    );
    assert!(!cache.path_of(&layer).exists());

    // A manifest changed on the registry's disk.
    let manifest_file = registry.blob_file(pinned.digest().unwrap_or_default());
    let manifest = std::fs::read_to_string(&manifest_file).expect("manifest file");
    assert!(manifest.contains("\"1.0.0\""), "{manifest}");
    std::fs::write(&manifest_file, manifest.replace("\"1.0.0\"", "\"6.6.6\""))
        .expect("corrupt manifest");
    let error = pull(&client, &pinned, Some(&cache))
        .expect_err("corrupt manifest")
        .to_string();
    assert!(
        error.contains("digest mismatch")
            && error.contains("manifest")
            && error.contains("nothing was loaded"),
        "{error}"
    );

    // Nothing listening.
    registry.stop();
    let error = pull(&client, &pinned, None)
        .expect_err("unreachable")
        .to_string();
    assert!(
        error.contains(&format!("cannot reach registry {host}"))
            && error.contains("after 3 attempts"),
        "{error}"
    );
}

#[test]
fn a_cached_module_needs_no_registry_and_a_corrupt_cache_entry_is_fetched_again() {
    let dir = TempDir::new("oci-cache");
    let mut registry = Registry::start_plain(&dir.0);
    let client = plain_client(&registry);
    let bytes = module(5, 4000);
    let pinned = push(
        &client,
        &format!("{}/team/cached:v1", registry.host()),
        &bytes,
    );
    let cache = Cache::new(dir.0.join("cache"));
    let first = pull(&client, &pinned, Some(&cache)).expect("first pull");
    assert!(!first.from_cache);
    let path = first.module_path.clone().expect("cached file");
    assert_eq!(std::fs::read(&path).expect("cached"), bytes);

    // Damage the cached module: the next pull notices and fetches it again.
    std::fs::write(&path, b"garbage").expect("damage");
    let again = pull(&client, &pinned, Some(&cache)).expect("refetch");
    assert!(!again.from_cache);
    assert_eq!(std::fs::read(&path).expect("cached"), bytes);

    registry.stop();
    let offline = pull(&client, &pinned, Some(&cache)).expect("cache hit with the registry down");
    assert!(offline.from_cache);
    assert_eq!(offline.module, bytes);
}

#[test]
fn basic_auth_over_tls_with_a_docker_config_and_refusals_that_name_the_repository() {
    let dir = TempDir::new("oci-auth");
    let registry = Registry::start_with_auth(&dir.0, "ci", "pa55-w0rd-xyz");
    let host = registry.host();
    let mut hosts = HashMap::new();
    hosts.insert(
        host.clone(),
        HostSettings {
            plain_http: false,
            ca: registry.ca.clone(),
        },
    );
    let auth_file = dir.0.join(".dockerconfigjson");
    let encoded = base64_encode(b"ci:pa55-w0rd-xyz");
    std::fs::write(
        &auth_file,
        format!(r#"{{"auths":{{"{host}":{{"auth":"{encoded}"}}}}}}"#),
    )
    .expect("auth file");
    let good = Client::new(RegistrySettings {
        hosts: hosts.clone(),
        credentials: Credentials::from_path(&dir.0).expect("mounted secret folder"),
        ..RegistrySettings::default()
    });
    let bytes = module(9, 1500);
    let pinned = push(&good, &format!("{host}/team/redact:v1"), &bytes);
    assert_eq!(
        pull(&good, &pinned, None).expect("authorized pull").module,
        bytes
    );

    let mut wrong = Credentials::anonymous();
    wrong.insert(
        &host,
        Credential::Basic {
            username: "ci".into(),
            password: "not-the-password".into(),
        },
    );
    let bad = Client::new(RegistrySettings {
        hosts: hosts.clone(),
        credentials: wrong,
        ..RegistrySettings::default()
    });
    let error = pull(&bad, &pinned, None)
        .expect_err("wrong password")
        .to_string();
    assert!(
        error.starts_with(&format!("401: the registry refused the credentials for {host}/team/redact; check the pull secret")),
        "{error}"
    );
    assert!(!error.contains("not-the-password"), "{error}");

    let anonymous = Client::new(RegistrySettings {
        hosts: hosts.clone(),
        ..RegistrySettings::default()
    });
    let error = pull(&anonymous, &pinned, None)
        .expect_err("no credentials")
        .to_string();
    assert!(
        error.starts_with("401: the registry asks for credentials")
            && error.contains("team/redact"),
        "{error}"
    );

    // TLS without the CA configured for this host: the system roots do not know the test CA.
    let untrusted = Client::new(RegistrySettings {
        credentials: Credentials::from_path(&auth_file).expect("auth file"),
        attempts: 1,
        ..RegistrySettings::default()
    });
    let error = pull(&untrusted, &pinned, None)
        .expect_err("unknown CA")
        .to_string();
    assert!(
        error.contains(&format!("cannot reach registry {host}")),
        "{error}"
    );
    assert!(
        !error.contains("pa55-w0rd-xyz") && !error.contains(&encoded),
        "{error}"
    );
}

#[test]
fn the_bearer_token_flow_trades_basic_credentials_for_a_token() {
    let dir = TempDir::new("oci-token");
    let registry = Registry::start_with_token_auth(&dir.0, "ci", "t0ken-pass");
    let host = registry.host();
    let mut credentials = Credentials::anonymous();
    credentials.insert(
        &host,
        Credential::Basic {
            username: "ci".into(),
            password: "t0ken-pass".into(),
        },
    );
    let client = Client::new(RegistrySettings {
        credentials,
        ..plain_client(&registry).settings().clone()
    });
    let bytes = module(11, 1200);
    let pinned = push(&client, &format!("{host}/team/tokens:v1"), &bytes);
    assert_eq!(
        pull(&client, &reference(&format!("{host}/team/tokens:v1")), None)
            .expect("pull with a token")
            .module,
        bytes
    );

    let mut wrong = Credentials::anonymous();
    wrong.insert(
        &host,
        Credential::Basic {
            username: "ci".into(),
            password: "nope-nope".into(),
        },
    );
    let bad = Client::new(RegistrySettings {
        credentials: wrong,
        ..plain_client(&registry).settings().clone()
    });
    let error = pull(&bad, &pinned, None)
        .expect_err("refused token")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "401: the registry refused the credentials for {host}/team/tokens"
        )),
        "{error}"
    );
    assert!(!error.contains("nope-nope"), "{error}");
    let error = pull(&plain_client(&registry), &pinned, None)
        .expect_err("anonymous")
        .to_string();
    assert!(
        error.starts_with("401: the registry asks for credentials"),
        "{error}"
    );
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
