//! Real components for end-to-end tests: certificates from openssl, nginx as the fluentd stand-in
//! (TLS with client-certificate verification, logging every body it receives), the eventplug
//! sidecar as a process, and an emulator of Teleport's event-handler. Teleport's event-handler
//! itself is not available here; the emulator follows its documented delivery behaviour (one POST
//! per event in order, the cursor advanced only after a 200, 5 tries with backoff, then it "exits"
//! and resumes from its saved cursor).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run(command: &mut Command) {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    pub fn generate(dir: &Path) -> Self {
        let p = |name: &str| dir.join(name);
        run(Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=eventplug test CA",
            ])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")));
        for (name, subject, ext) in [
            (
                "server",
                "/CN=127.0.0.1",
                "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "/CN=event-handler",
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            std::fs::write(p(&format!("{name}.ext")), ext).expect("write ext");
            run(Command::new("openssl")
                .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj", subject])
                .arg("-keyout")
                .arg(p(&format!("{name}.key")))
                .arg("-out")
                .arg(p(&format!("{name}.csr"))));
            run(Command::new("openssl")
                .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
                .arg("-in")
                .arg(p(&format!("{name}.csr")))
                .arg("-CA")
                .arg(p("ca.crt"))
                .arg("-CAkey")
                .arg(p("ca.key"))
                .arg("-extfile")
                .arg(p(&format!("{name}.ext")))
                .arg("-out")
                .arg(p(&format!("{name}.crt"))));
        }
        Self {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

/// Waits up to 10 s for something to listen on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on port {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Statuses nginx answers instead of 200 for a request whose URI contains `status-<code>`
/// (`/session.status-413.log`, a quarantine tag `q.status-422`), so tests can make fluentd refuse.
pub const REFUSED_STATUSES: [u16; 11] = [400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503];

/// nginx standing in for fluentd's in_http: TLS, client certificates required, every received body
/// logged with its URI.
pub struct Nginx {
    dir: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    pub fn start(dir: &Path, certs: &Certificates) -> Self {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx dir");
        let port = free_port();
        let backend = free_port();
        let d = dir.display();
        let config = format!(
            r#"worker_processes 1;
user root;
error_log {d}/error.log warn;
pid {d}/nginx.pid;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  log_format bodies escape=json '{{"uri":"$request_uri","body":"$request_body"}}';
  server {{
    listen 127.0.0.1:{port} ssl;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_client_certificate {ca};
    ssl_verify_client on;
    client_max_body_size 32m;
    client_body_buffer_size 32m;
    location / {{
      access_log {d}/received.log bodies;
      proxy_pass http://127.0.0.1:{backend};
    }}
  }}
  server {{
    listen 127.0.0.1:{backend};
{refusals}    location / {{ return 200 "ok"; }}
  }}
}}
"#,
            refusals = REFUSED_STATUSES
                .iter()
                .map(|code| format!(
                    "    location ~ \"status-{code}\" {{ return {code} \"refused\"; }}\n"
                ))
                .collect::<String>(),
            server_cert = certs.server_cert.display(),
            server_key = certs.server_key.display(),
            ca = certs.ca.display(),
        );
        std::fs::write(dir.join("nginx.conf"), config).expect("nginx.conf");
        let mut nginx = Self {
            dir,
            port,
            child: None,
        };
        nginx.resume();
        nginx
    }

    /// Starts nginx again on the same port (after `stop`).
    pub fn resume(&mut self) {
        let child = Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start nginx (Debian package nginx-light; scripts/setup.sh installs it)");
        self.child = Some(child);
        wait_for_port(self.port, "nginx");
    }

    /// Stops nginx (fast shutdown) and waits until its port is closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master stops its workers too (SIGKILL would leave a worker serving).
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        // The worker may outlive the master briefly.
        let deadline = Instant::now() + Duration::from_secs(5);
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `(uri, body)` of every request received, in order.
    pub fn received(&self) -> Vec<(String, String)> {
        let text = std::fs::read_to_string(self.dir.join("received.log")).unwrap_or_default();
        text.lines()
            .map(|line| {
                let entry: serde_json::Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("nginx log line {line:?}: {e}"));
                (
                    entry["uri"].as_str().unwrap_or_default().to_string(),
                    entry["body"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// What was received, once at least `count` requests are in the log (nginx writes its log line
    /// just after answering, so a reader can be a moment ahead of it).
    pub fn wait_received(&self, count: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let received = self.received();
            if received.len() >= count || Instant::now() > deadline {
                return received;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The eventplug sidecar as a process (`eventplug serve --config`). Its config should ask for
/// port 0 on both listeners: the sidecar binds them and writes the ports it got to its
/// `--addresses-file`, so no port is probed and released.
pub struct SidecarProcess {
    /// The ingest port (events).
    pub port: u16,
    /// The admin port (`/healthz`, `/readyz`, `/metrics`, `/status`).
    pub admin_port: u16,
    pub child: Child,
    pub log: PathBuf,
}

impl SidecarProcess {
    /// Starts `binary serve --config config` (the `eventplug` binary under test) and waits until
    /// it listens.
    pub fn start(binary: &Path, config: &Path, cache: &Path) -> Self {
        Self::start_with_env(binary, config, cache, &[])
    }

    /// Like `start`, with more environment variables for the process.
    pub fn start_with_env(
        binary: &Path,
        config: &Path,
        cache: &Path,
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Self {
        let log = config.with_extension("log");
        let addresses = config.with_extension("addresses.json");
        let _ = std::fs::remove_file(&addresses);
        let mut child = Command::new(binary)
            .args(["serve", "--config"])
            .arg(config)
            .arg("--addresses-file")
            .arg(&addresses)
            .envs(env.iter().copied())
            .env("EVENTPLUG_CACHE_DIR", cache)
            .env("EVENTPLUG_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("sidecar log"))
            .spawn()
            .expect("start eventplug serve");
        let deadline = Instant::now() + Duration::from_secs(30);
        let bound = loop {
            if let Ok(text) = std::fs::read_to_string(&addresses) {
                break serde_json::from_str::<serde_json::Value>(&text)
                    .expect("the addresses file is JSON");
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "eventplug serve exited ({status}) before listening: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "eventplug serve did not listen within 30 s: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let port_of = |key: &str| {
            bound[key]
                .as_str()
                .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
                .map(|a| a.port())
                .unwrap_or_else(|| panic!("no {key} address in {bound}"))
        };
        Self {
            port: port_of("listen"),
            admin_port: port_of("admin"),
            child,
            log,
        }
    }

    /// A GET on the admin listener.
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.admin_port, "GET", path, b"").expect("sidecar answers")
    }

    /// A POST on the ingest listener.
    pub fn post(&self, path: &str, body: &[u8]) -> (u16, String) {
        http(self.port, "POST", path, body).expect("sidecar answers")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the process; returns its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        run(Command::new("kill").args(["-TERM", &self.child.id().to_string()]));
        self.child.wait().ok().and_then(|s| s.code())
    }
}

impl Drop for SidecarProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request on a fresh connection; `(status, body)`.
pub fn http(port: u16, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_with_headers(port, method, path, &[], body)
}

/// `http` with more request headers.
pub fn http_with_headers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(35)))?;
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// Teleport's event-handler as far as delivery goes.
pub struct EventHandlerEmulator {
    pub port: u16,
    /// `(path, body)` in the order event-handler reads them.
    pub events: Vec<(String, Vec<u8>)>,
    /// The saved cursor: events before it were acknowledged.
    pub cursor: usize,
    pub posts: usize,
    pub failures: usize,
    pub restarts: usize,
    pub backoff: Duration,
    /// Pause after each acknowledged event (event-handler reads events in pages, not all at once).
    pub pace: Duration,
}

impl EventHandlerEmulator {
    pub fn new(port: u16, events: Vec<(String, Vec<u8>)>) -> Self {
        Self {
            port,
            events,
            cursor: 0,
            posts: 0,
            failures: 0,
            restarts: 0,
            backoff: Duration::from_millis(20),
            pace: Duration::ZERO,
        }
    }

    /// Delivers events until all are acknowledged or `limit` passes; panics on the limit.
    pub fn run(&mut self, limit: Duration) {
        self.run_while(limit, |_| {});
    }

    /// Like `run`, calling `between(delivered)` after each acknowledged event.
    pub fn run_while(&mut self, limit: Duration, mut between: impl FnMut(usize)) {
        let deadline = Instant::now() + limit;
        while self.cursor < self.events.len() {
            assert!(
                Instant::now() < deadline,
                "event-handler emulator: stuck at event {} of {} after {limit:?}",
                self.cursor,
                self.events.len()
            );
            let (path, body) = &self.events[self.cursor];
            let mut delivered = false;
            let mut backoff = self.backoff;
            for _ in 0..5 {
                self.posts += 1;
                match http(self.port, "POST", path, body) {
                    Ok((200, _)) => {
                        delivered = true;
                        break;
                    }
                    _ => {
                        self.failures += 1;
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(self.backoff * 10);
                    }
                }
            }
            if delivered {
                self.cursor += 1;
                std::thread::sleep(self.pace);
                between(self.cursor);
            } else {
                // The job fails; the process restarts and resumes from its saved cursor.
                self.restarts += 1;
            }
        }
    }
}
