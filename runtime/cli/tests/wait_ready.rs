//! `eventplug wait-ready` against a real `eventplug serve`, a closed port and a listener that never
//! answers: it returns 0 only once `/readyz` answers 200, and 1 within its timeout otherwise,
//! printing the last answer.

mod common;

use common::TempDir;
use common::components::SidecarProcess;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn eventplug() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_eventplug"))
}

fn wait_ready(address: &str, timeout: &str) -> Command {
    let mut command = Command::new(eventplug());
    command
        .args(["wait-ready", "--address", address, "--timeout", timeout])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn run(mut command: Command) -> (Output, Duration) {
    let started = Instant::now();
    let output = command.output().expect("run eventplug wait-ready");
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A sidecar whose one plugin's module is not there yet: it listens, and `/readyz` answers 503.
fn unready_sidecar(dir: &TempDir) -> (SidecarProcess, std::path::PathBuf) {
    let module = dir.0.join("annotate.wasm");
    let config = dir.0.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: eventplug.dev/v1alpha1\nkind: SidecarConfig\nlisten:\n  address: 127.0.0.1:0\nadmin:\n  address: 127.0.0.1:0\nupstream:\n  auditUrl: http://127.0.0.1:9/test.log\ndelivery:\n  reloadInterval: 100ms\n  shutdownGrace: 0s\nplugins:\n  - name: annotate\n    module: {}\n",
            module.display()
        ),
    )
    .expect("write config");
    let sidecar = SidecarProcess::start(eventplug(), &config, &dir.0.join("cache"));
    let (status, body) = sidecar.get("/readyz");
    assert_eq!(status, 503, "no module yet, yet /readyz says {body}");
    (sidecar, module)
}

fn wait_for_exit(mut child: Child, within: Duration) -> Output {
    let ended = common::poll_until(within, || child.try_wait().ok().flatten().is_some());
    if !ended {
        let _ = child.kill();
    }
    let output = child.wait_with_output().expect("wait-ready's output");
    assert!(
        ended,
        "wait-ready did not exit within {within:?}: {output:?}"
    );
    output
}

#[test]
fn waits_through_503_until_the_sidecar_is_ready() {
    let dir = TempDir::new("wait-ready");
    let (sidecar, module) = unready_sidecar(&dir);
    let address = format!("127.0.0.1:{}", sidecar.admin_port);

    // Not ready within the timeout: exit 1, naming the last answer (503 and the sidecar's reason).
    let (output, took) = run(wait_ready(&address, "1s"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "gave up after {took:?}, not after about 1 s"
    );
    let said = stderr(&output);
    assert!(
        said.contains("did not answer 200 within 1s")
            && said.contains("503")
            && said.contains("annotate"),
        "{said}"
    );

    // Waiting while the module is missing; it exits 0 once the module arrives and loads.
    let mut waiting = wait_ready(&address, "30s")
        .spawn()
        .expect("spawn wait-ready");
    assert_eq!(sidecar.get("/readyz").0, 503);
    assert!(
        waiting.try_wait().expect("wait-ready's state").is_none(),
        "wait-ready ended while the sidecar answered 503"
    );
    std::fs::write(
        &module,
        wat::parse_str(common::constant_plugin(&Default::default())).expect("WAT"),
    )
    .expect("write module");
    let output = wait_for_exit(waiting, Duration::from_secs(30));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}; sidecar log:\n{}",
        stderr(&output),
        sidecar.logs()
    );
    assert!(
        stderr(&output).contains("is ready after"),
        "{}",
        stderr(&output)
    );
    assert_eq!(sidecar.get("/readyz").0, 200);
}

#[test]
fn a_closed_port_fails_within_the_timeout() {
    let port = common::components::free_port();
    let (output, took) = run(wait_ready(&format!("127.0.0.1:{port}"), "1500ms"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(5),
        "gave up after {took:?}, not after about 1.5 s"
    );
    assert!(
        stderr(&output).contains("cannot connect"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn a_listener_that_never_answers_fails_within_the_timeout() {
    // Connections are accepted by the kernel (the backlog) and never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let address = silent.local_addr().expect("address").to_string();
    let (output, took) = run(wait_ready(&address, "1s"));
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "gave up after {took:?}, not after about 1 s"
    );
    assert!(
        stderr(&output).contains("did not answer in time"),
        "{}",
        stderr(&output)
    );
}
