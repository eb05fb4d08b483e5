//! Plugin author tooling as an author uses it: `eventplug new` from every bundled example, then the
//! project's own `npm test` (real AssemblyScript compiler, real `eventplug test`), and
//! `eventplug fixtures`. Needs node and npm and the npm registry (or a warm npm cache); without
//! them the test fails, naming what is missing.

mod common;

use common::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn eventplug(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run eventplug")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// PATH with this build's `eventplug` first, as `npm test` finds it.
fn path_with_eventplug() -> String {
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_eventplug"));
    let dir = bin.parent().expect("binary folder");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[test]
fn every_example_becomes_a_project_whose_tests_pass() {
    let examples = ["alert", "count", "modify", "redact", "skip", "trace"];
    let workspace = TempDir::new("new");
    for example in examples {
        let dir = workspace.0.join(format!("my-{example}"));
        let output = Command::new(env!("CARGO_BIN_EXE_eventplug"))
            .args(["new"])
            .arg(&dir)
            .args(["--example", example])
            .env("PATH", path_with_eventplug())
            .output()
            .expect("run eventplug new");
        assert!(
            output.status.success(),
            "eventplug new --example {example}:\n{}{}",
            text(&output.stdout),
            text(&output.stderr)
        );
        let package = std::fs::read_to_string(dir.join("package.json")).expect("package.json");
        assert!(
            package.contains(r#""eventplug-sdk": "file:.eventplug/eventplug-sdk-"#),
            "{package}"
        );
        assert!(
            package.contains(&format!(r#""name": "my-{example}""#)),
            "{package}"
        );
        let output = Command::new("npm")
            .arg("test")
            .current_dir(&dir)
            .env("PATH", path_with_eventplug())
            .output()
            .expect("run npm test (node and npm are needed)");
        let stdout = text(&output.stdout);
        assert!(
            output.status.success(),
            "npm test of a new {example} project failed:\n{stdout}{}",
            text(&output.stderr)
        );
        assert!(stdout.contains("Success!"), "{example}: {stdout}");
    }
}

#[test]
fn new_refuses_unknown_examples_and_non_empty_folders() {
    let workspace = TempDir::new("new-refusals");
    let output = eventplug(
        &workspace.0,
        &["new", "x", "--example", "nope", "--no-install"],
    );
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(r#"no example "nope""#)
            && stderr.contains("redact")
            && stderr.contains("trace"),
        "{stderr}"
    );
    std::fs::create_dir_all(workspace.0.join("busy")).expect("mkdir");
    std::fs::write(workspace.0.join("busy/file"), "x").expect("write");
    let output = eventplug(&workspace.0, &["new", "busy", "--no-install"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("busy is not empty"),
        "{}",
        text(&output.stderr)
    );
}

#[test]
fn new_names_a_missing_node_and_writes_nothing() {
    let workspace = TempDir::new("new-no-node");
    let output = Command::new(env!("CARGO_BIN_EXE_eventplug"))
        .args(["new", "project"])
        .current_dir(&workspace.0)
        .env("PATH", workspace.0.join("empty-path"))
        .output()
        .expect("run eventplug new");
    assert_eq!(output.status.code(), Some(2));
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("`node` is not installed or not on PATH") && stderr.contains("Node.js"),
        "{stderr}"
    );
    assert!(
        !workspace.0.join("project").exists(),
        "a project was half written"
    );
}

#[test]
fn fixtures_come_from_templates_with_fresh_ids_uids_and_times() {
    let workspace = TempDir::new("fixtures");
    let output = eventplug(&workspace.0, &["fixtures", "list-templates"]);
    assert!(output.status.success());
    let listing = text(&output.stdout);
    assert!(
        listing.contains("user-login")
            && listing.contains("eventplug fixtures generate user-login"),
        "{listing}"
    );

    std::fs::create_dir_all(workspace.0.join("fixtures")).expect("mkdir");
    std::fs::write(workspace.0.join("fixtures/7-old.json"), r#"{"event":"x"}"#).expect("write");
    let output = eventplug(
        &workspace.0,
        &["fixtures", "generate", "user-login", "failed"],
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).trim(), "fixtures/8-failed.json");
    let first: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace.0.join("fixtures/8-failed.json")).expect("written"),
    )
    .expect("JSON");
    assert_eq!(first["event"], "user.login");
    assert!(
        eventplug_runtime::pipeline::parse_rfc3339(first["time"].as_str().expect("time")).is_some()
    );
    let output = eventplug(
        &workspace.0,
        &["fixtures", "generate", "user-login", "second"],
    );
    assert!(output.status.success());
    let second: serde_json::Value = serde_json::from_slice(
        &std::fs::read(workspace.0.join("fixtures/9-second.json")).expect("written"),
    )
    .expect("JSON");
    assert_ne!(first["uid"], second["uid"], "each fixture gets its own uid");

    let output = eventplug(
        &workspace.0,
        &["fixtures", "generate", "no-such-template", "x"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains(r#"no template "no-such-template""#));
    let output = eventplug(
        &workspace.0,
        &["fixtures", "generate", "user-login", "../escape"],
    );
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("use letters, digits"));
}
