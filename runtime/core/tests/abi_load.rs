//! Loading checks a module against the ABI and names exactly what is wrong.

mod common;

use common::{Harness, constant_plugin, plugin_wat};
use eventplug_proto::v1 as pb;
use eventplug_runtime::engine::{LoadError, ModuleSource};

fn load_error(harness: &Harness, name: &str, wat: &str) -> String {
    harness.load_error(&harness.settings(name, wat))
}

#[test]
fn a_module_that_fits_the_abi_loads_and_reports_its_digest() {
    let harness = Harness::new();
    let settings = harness.settings(
        "fits",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    let plugin = harness.load(&settings);
    let bytes = std::fs::read(&settings.module).expect("module written");
    assert_eq!(
        plugin.digest,
        eventplug_runtime::engine::module_digest(&bytes)
    );
    assert!(plugin.digest.starts_with("sha256:"));
}

#[test]
fn missing_exports_are_each_named() {
    let harness = Harness::new();
    let err = load_error(&harness, "bare", r#"(module (memory (export "memory") 1))"#);
    for name in [
        "eventplug_abi_version",
        "eventplug_alloc",
        "eventplug_handle_event",
    ] {
        assert!(err.contains(&format!("does not export `{name}`")), "{err}");
    }
    let err = load_error(
        &harness,
        "nomem",
        r#"(module (func (export "eventplug_abi_version") (result i32) (i32.const 1)))"#,
    );
    assert!(err.contains("does not export `memory`"), "{err}");
}

#[test]
fn mistyped_exports_and_imports_name_both_signatures() {
    let harness = Harness::new();
    let wat = plugin_wat("", "(i64.const 0)", "").replace(
        r#"(func (export "eventplug_abi_version") (result i32) (i32.const 1))"#,
        r#"(func (export "eventplug_abi_version") (result i64) (i64.const 1))"#,
    );
    let err = load_error(&harness, "mistyped", &wat);
    assert!(
        err.contains(
            "exports `eventplug_abi_version` as () -> (i64), but the ABI defines it as () -> (i32)"
        ),
        "{err}"
    );

    let wat = plugin_wat(
        r#"(import "eventplug" "log" (func (param i32)))"#,
        "(i64.const 0)",
        "",
    );
    let err = load_error(&harness, "badimport", &wat);
    assert!(err.contains("imports `eventplug.log` as (i32) -> (), but the ABI defines it as (i32, i32, i32) -> ()"), "{err}");
}

#[test]
fn unknown_imports_such_as_wasi_are_refused_by_name() {
    let harness = Harness::new();
    let wat = plugin_wat(
        r#"(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
           (import "env" "memory" (memory 1))"#,
        "(i64.const 0)",
        "",
    )
    .replace(
        r#"(memory (export "memory") 1)"#,
        r#"(export "memory" (memory 0))"#,
    );
    let err = load_error(&harness, "wasi", &wat);
    assert!(
        err.contains("imports `wasi_snapshot_preview1.fd_write`, which eventplug does not provide"),
        "{err}"
    );
    assert!(
        err.contains("imports `env.memory`, which eventplug does not provide"),
        "{err}"
    );
}

#[test]
fn an_unknown_abi_version_is_refused_with_both_versions() {
    let harness = Harness::new();
    let wat = constant_plugin(&pb::HandleEventResponse::default())
        .replace("(result i32) (i32.const 1))", "(result i32) (i32.const 7))");
    let err = load_error(&harness, "v7", &wat);
    assert!(
        err.contains("ABI version 7") && err.contains("speaks version 1"),
        "{err}"
    );
}

#[test]
fn broken_and_oversized_modules_get_clear_errors() {
    let harness = Harness::new();
    let path = harness.dir.0.join("junk.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0garbage").expect("write");
    let settings = eventplug_contract::PluginSettings::for_module("junk", &path);
    let err = harness.try_load(&settings).err().expect("junk refused");
    assert!(matches!(err, LoadError::Invalid { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("is not a valid WebAssembly module"),
        "{err}"
    );

    let missing =
        eventplug_contract::PluginSettings::for_module("missing", harness.dir.0.join("nope.wasm"));
    let err = harness.try_load(&missing).err().expect("missing refused");
    assert!(
        err.to_string().contains("cannot read plugin module")
            && err.to_string().contains("nope.wasm"),
        "{err}"
    );

    let small =
        eventplug_runtime::engine::PluginEngine::new(eventplug_runtime::engine::EngineSettings {
            max_module_bytes: 8,
            ..Default::default()
        })
        .expect("engine");
    let settings = harness.settings("big", &constant_plugin(&pb::HandleEventResponse::default()));
    let err =
        eventplug_runtime::pipeline::LoadedPlugin::load(&small, &settings, harness.tokens.clone())
            .err()
            .expect("too large");
    assert!(
        err.to_string().contains("over the limit of 8 bytes"),
        "{err}"
    );
}

#[test]
fn init_receives_the_config_and_may_refuse_it() {
    let harness = Harness::new();
    // eventplug_init refuses any config whose first byte is 'x', answering InitResponse{error}.
    let refusal = eventplug_proto::v1::InitResponse {
        error: "x is not allowed".into(),
    };
    let bytes = prost::Message::encode_to_vec(&refusal);
    let wat = plugin_wat(
        "",
        "(i64.const 0)",
        &format!(
            r#"(func (export "eventplug_init") (param $ptr i32) (param $len i32) (result i64)
                 (if (result i64) (i32.and (i32.gt_u (local.get $len) (i32.const 0)) (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 34)))
                   (then (i64.const 0))
                   (else {})))
               (data (i32.const 256) "{}")"#,
            common::region(bytes.len()),
            common::wat_bytes(&bytes)
        ),
    );
    let mut settings = harness.settings("init", &wat);
    settings.config = Some(serde_json::json!("fine"));
    harness.load(&settings);
    settings.config = Some(serde_json::json!({"x": 1}));
    let err = harness.load_error(&settings);
    assert!(
        err.contains("refused its configuration: x is not allowed"),
        "{err}"
    );
}

#[test]
fn precompiled_modules_are_reused_from_the_disk_cache() {
    let harness = Harness::new();
    let settings = harness.settings(
        "cached",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    let first = harness.load(&settings);
    assert_eq!(first.source, ModuleSource::Compiled);
    // While a plugin uses the module, loading it again shares the compiled module.
    assert_eq!(harness.load(&settings).source, ModuleSource::MemoryCache);
    drop(first);
    let second =
        eventplug_runtime::engine::PluginEngine::new(eventplug_runtime::engine::EngineSettings {
            cache_dir: Some(harness.dir.0.join("cache")),
            ..Default::default()
        })
        .expect("engine");
    let plugin =
        eventplug_runtime::pipeline::LoadedPlugin::load(&second, &settings, harness.tokens.clone())
            .expect("loads from cache");
    assert_eq!(plugin.source, ModuleSource::DiskCache);
    // A corrupt cache file is not trusted: the module is compiled again.
    for entry in std::fs::read_dir(harness.dir.0.join("cache")).expect("cache dir") {
        std::fs::write(entry.expect("entry").path(), b"not a module").expect("corrupt");
    }
    let third =
        eventplug_runtime::engine::PluginEngine::new(eventplug_runtime::engine::EngineSettings {
            cache_dir: Some(harness.dir.0.join("cache")),
            ..Default::default()
        })
        .expect("engine");
    let plugin =
        eventplug_runtime::pipeline::LoadedPlugin::load(&third, &settings, harness.tokens.clone())
            .expect("recompiles");
    assert_eq!(plugin.source, ModuleSource::Compiled);
}

#[test]
fn a_module_whose_bytes_do_not_match_the_configured_digest_is_refused() {
    let harness = Harness::new();
    let mut settings = harness.settings(
        "pinned",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    let bytes = std::fs::read(&settings.module).expect("module");
    settings.digest = Some(
        eventplug_runtime::engine::module_digest(&bytes)
            .to_uppercase()
            .replace("SHA256", "sha256"),
    );
    harness.load(&settings);
    settings.digest = Some(format!("sha256:{}", "0".repeat(64)));
    let err = harness.load_error(&settings);
    assert!(
        err.contains("not the configured sha256:000")
            && err.contains("the file changed, or the digest is wrong"),
        "{err}"
    );
}

#[test]
fn settings_beyond_the_engine_are_refused() {
    let harness = Harness::new();
    let mut settings = harness.settings(
        "greedy",
        &constant_plugin(&pb::HandleEventResponse::default()),
    );
    settings.limits.memory_limit = eventplug_contract::ByteSize(8 << 30);
    let err = harness.load_error(&settings);
    assert!(
        err.contains("memoryLimit") && err.contains("over the engine's maximum"),
        "{err}"
    );
    settings.limits.memory_limit = eventplug_contract::ByteSize(1 << 20);
    settings.limits.concurrency = 0;
    let err = harness.load_error(&settings);
    assert!(err.contains("limits.concurrency: must be from 1"), "{err}");
}

/// A fresh engine over `harness`'s cache folder (as after a restart).
fn restarted_engine(harness: &Harness) -> eventplug_runtime::engine::PluginEngine {
    eventplug_runtime::engine::PluginEngine::new(eventplug_runtime::engine::EngineSettings {
        cache_dir: Some(harness.dir.0.join("cache")),
        ..Default::default()
    })
    .expect("engine")
}

/// The cache file of the only module in `harness`'s cache folder whose name starts with `hex`.
fn cache_file_of(harness: &Harness, digest: &str) -> std::path::PathBuf {
    let hex = digest.trim_start_matches("sha256:");
    std::fs::read_dir(harness.dir.0.join("cache"))
        .expect("cache dir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(hex))
        })
        .expect("the module has a cache file")
}

/// What a constant plugin sets `who` to, run through a pipeline of one.
async fn who_answers(plugin: std::sync::Arc<eventplug_runtime::pipeline::LoadedPlugin>) -> String {
    let pipeline = eventplug_runtime::pipeline::Pipeline::new(
        vec![plugin],
        eventplug_runtime::pipeline::PipelineSettings::default(),
    );
    match pipeline
        .process(br#"{"event":"x","uid":"1"}"#)
        .await
        .expect("processes")
        .outcome
        .verdict
        .clone()
    {
        eventplug_runtime::pipeline::Verdict::Modified(bytes) => {
            String::from_utf8(bytes).expect("utf-8")
        }
        other => panic!("expected an edit, got {other:?}"),
    }
}

#[tokio::test]
async fn another_modules_artifact_under_a_modules_cache_name_is_refused_and_recompiled() {
    let harness = Harness::new();
    let a = harness.settings("a", &constant_plugin(&common::set_response("who", "\"a\"")));
    let b = harness.settings("b", &constant_plugin(&common::set_response("who", "\"b\"")));
    let a_digest = harness.load(&a).digest.clone();
    let b_digest = harness.load(&b).digest.clone();
    std::fs::copy(
        cache_file_of(&harness, &b_digest),
        cache_file_of(&harness, &a_digest),
    )
    .expect("plant b's artifact under a's name");

    let engine = restarted_engine(&harness);
    let plugin =
        eventplug_runtime::pipeline::LoadedPlugin::load(&engine, &a, harness.tokens.clone())
            .expect("a loads");
    assert_eq!(
        plugin.source,
        ModuleSource::Compiled,
        "the planted file is not trusted"
    );
    assert_eq!(plugin.digest, a_digest);
    assert!(
        who_answers(std::sync::Arc::new(plugin))
            .await
            .contains(r#""who":"a""#)
    );
    // The refused file was replaced by a's own artifact, which the next start uses.
    let again = eventplug_runtime::pipeline::LoadedPlugin::load(
        &restarted_engine(&harness),
        &a,
        harness.tokens.clone(),
    )
    .expect("a loads again");
    assert_eq!(again.source, ModuleSource::DiskCache);
    assert!(
        who_answers(std::sync::Arc::new(again))
            .await
            .contains(r#""who":"a""#)
    );
}

#[tokio::test]
async fn a_garbled_artifact_with_its_headers_intact_is_refused_and_recompiled() {
    let harness = Harness::new();
    let a = harness.settings("a", &constant_plugin(&common::set_response("who", "\"a\"")));
    let digest = harness.load(&a).digest.clone();
    let file = cache_file_of(&harness, &digest);
    let mut bytes = std::fs::read(&file).expect("read artifact");
    // Flip bytes in the second half (machine code and data), leaving every header in place.
    let len = bytes.len();
    for byte in &mut bytes[len / 2..len / 2 + 64] {
        *byte ^= 0xff;
    }
    std::fs::write(&file, &bytes).expect("garble");

    let plugin = eventplug_runtime::pipeline::LoadedPlugin::load(
        &restarted_engine(&harness),
        &a,
        harness.tokens.clone(),
    )
    .expect("a loads");
    assert_eq!(
        plugin.source,
        ModuleSource::Compiled,
        "the garbled file is not run"
    );
    assert!(
        who_answers(std::sync::Arc::new(plugin))
            .await
            .contains(r#""who":"a""#)
    );
}

#[test]
fn the_cache_folder_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let harness = Harness::new();
    harness.load(&harness.settings("a", &constant_plugin(&pb::HandleEventResponse::default())));
    let mode = std::fs::metadata(harness.dir.0.join("cache"))
        .expect("cache dir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

#[test]
fn a_module_that_would_take_too_much_memory_to_compile_is_refused_before_compiling() {
    let harness = Harness::new();
    // 20,001 empty functions besides the ABI's: over the default limit of 20,000.
    let many = "(func)".repeat(20_001);
    let wat = plugin_wat("", "(i64.const 0)", &many);
    let err = load_error(&harness, "many", &wat);
    assert!(
        err.contains("not a valid WebAssembly module")
            && err.contains("functions, over the 20000 eventplug compiles"),
        "{err}"
    );
    let data = "\\00".repeat(17 << 20);
    let wat = plugin_wat(
        "",
        "(i64.const 0)",
        &format!(r#"(data (i32.const 0) "{data}")"#),
    );
    let err = load_error(&harness, "data", &wat);
    assert!(err.contains("data segments hold"), "{err}");
}

#[test]
fn a_compiled_module_no_plugin_uses_is_freed() {
    let harness = Harness::new();
    let a = harness.load(&harness.settings("a", &constant_plugin(&common::set_response("v", "1"))));
    let b = harness.load(&harness.settings("b", &constant_plugin(&common::set_response("v", "2"))));
    assert_eq!(harness.engine.modules_in_memory(), 2);
    drop(a);
    assert_eq!(
        harness.engine.modules_in_memory(),
        1,
        "a's module went with its last plugin"
    );
    drop(b);
    assert_eq!(harness.engine.modules_in_memory(), 0);
}

#[test]
fn the_disk_cache_is_pruned_to_its_cap_least_recently_used_first() {
    let harness = Harness::new();
    let a = harness.settings("a", &constant_plugin(&common::set_response("v", "1")));
    let b = harness.settings("b", &constant_plugin(&common::set_response("v", "2")));
    let a_digest = harness.load(&a).digest.clone();
    let a_file = cache_file_of(&harness, &a_digest);
    let one = std::fs::metadata(&a_file).expect("artifact").len();
    // A was used an hour ago; B is used now. The cap holds one artifact and a half.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .append(true)
        .open(&a_file)
        .and_then(|f| f.set_modified(hour_ago))
        .expect("age a");
    let engine =
        eventplug_runtime::engine::PluginEngine::new(eventplug_runtime::engine::EngineSettings {
            cache_dir: Some(harness.dir.0.join("cache")),
            max_cache_bytes: one + one / 2,
            ..Default::default()
        })
        .expect("engine");
    let b_digest =
        eventplug_runtime::pipeline::LoadedPlugin::load(&engine, &b, harness.tokens.clone())
            .expect("b loads")
            .digest;
    assert!(
        !a_file.exists(),
        "the least recently used artifact was removed"
    );
    assert!(cache_file_of(&harness, &b_digest).exists());
    assert!(engine.disk_cache_bytes() <= one + one / 2);
}

#[test]
fn a_cache_folder_others_may_write_is_not_trusted() {
    use std::os::unix::fs::PermissionsExt;
    let harness = Harness::new();
    let a = harness.settings("a", &constant_plugin(&pb::HandleEventResponse::default()));
    harness.load(&a);
    let cache = harness.dir.0.join("cache");
    std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let plugin = eventplug_runtime::pipeline::LoadedPlugin::load(
        &restarted_engine(&harness),
        &a,
        harness.tokens.clone(),
    )
    .expect("a loads");
    assert_eq!(
        plugin.source,
        ModuleSource::Compiled,
        "a world-writable folder is not trusted"
    );
    let mode = std::fs::metadata(&cache)
        .expect("cache")
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o700,
        "writing the cache made the folder private again"
    );
}
