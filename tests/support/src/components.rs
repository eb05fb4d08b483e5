//! Real components for end-to-end tests: certificates from openssl, nginx as the fluentd stand-in
//! (TLS with client-certificate verification, logging every body it receives), the eventplug
//! sidecar as a process, and an emulator of Teleport's event-handler. Teleport's event-handler
//! itself is not available here; the emulator follows its documented delivery behaviour (one POST
//! per event in order, the cursor advanced only after a 200, 5 tries with backoff, then it "exits"
//! and resumes from its saved cursor).

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A loopback port that was free a moment ago: bound, then released. Another process can take it
/// before the child handed the number binds it, so a start that takes it must notice: [`Nginx`] and
/// [`crate::registry::Registry`] start again on a fresh port when theirs was taken;
/// [`SidecarProcess`] fails naming the refused address.
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

/// A CA, a server certificate for 127.0.0.1 (and any other addresses asked for) and a client
/// certificate, made with openssl.
pub struct Certificates {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Certificates {
    pub fn generate(dir: &Path) -> Self {
        Self::generate_for(dir, &[])
    }

    /// Like `generate`, with `addresses` in the server certificate's SANs beside 127.0.0.1 (a
    /// server that pods reach listens on the node's bridge address).
    pub fn generate_for(dir: &Path, addresses: &[Ipv4Addr]) -> Self {
        let p = |name: &str| dir.join(name);
        let sans: String = addresses.iter().map(|a| format!(",IP:{a}")).collect();
        let server_ext = format!(
            "subjectAltName=IP:127.0.0.1{sans},DNS:localhost\nextendedKeyUsage=serverAuth\n"
        );
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
            ("server", "/CN=127.0.0.1", server_ext.as_str()),
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

/// Whether something accepts connections on loopback `port` (a listener that never accepts fills
/// its queue and then holds a plain connect for minutes: hence the timeout).
fn accepts(port: u16) -> bool {
    accepts_on(Ipv4Addr::LOCALHOST, port)
}

/// `accepts` on another address.
fn accepts_on(host: Ipv4Addr, port: u16) -> bool {
    TcpStream::connect_timeout(&(host, port).into(), Duration::from_secs(1)).is_ok()
}

/// Waits up to 10 s for something to listen on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    crate::wait_until(
        &format!("{what} listens on port {port}"),
        Duration::from_secs(10),
        || accepts(port),
    );
}

/// How many ports a child that cannot be handed a bound socket tries before the test gives up.
pub(crate) const PORT_ATTEMPTS: usize = 5;

/// How a child that binds a port it was given started.
pub(crate) enum Started {
    /// It listens on the port.
    Listening(Child),
    /// Another process took the port first; the child's log says so.
    PortTaken(String),
}

/// Starts a server with `start(port)` on a free port, and again on another one when another process
/// took the port before the server bound it; the port and the running child.
pub(crate) fn on_a_free_port(what: &str, mut start: impl FnMut(u16) -> Started) -> (u16, Child) {
    for attempt in 1..=PORT_ATTEMPTS {
        let port = free_port();
        match start(port) {
            Started::Listening(child) => return (port, child),
            Started::PortTaken(log) => assert!(
                attempt < PORT_ATTEMPTS,
                "{what} found each of {PORT_ATTEMPTS} free ports taken: {log}"
            ),
        }
    }
    unreachable!("the last attempt returns or panics")
}

/// Statuses nginx answers instead of 200 for a request whose URI contains `status-<code>`
/// (`/session.status-413.log`, a quarantine tag `q.status-422`), so tests can make fluentd refuse.
pub const REFUSED_STATUSES: [u16; 11] = [400, 401, 403, 404, 408, 413, 415, 422, 429, 500, 503];

/// nginx standing in for fluentd's in_http: TLS, client certificates required, every received body
/// logged with its URI. One worker process, so requests are logged in the order they finish.
pub struct Nginx {
    dir: PathBuf,
    /// The address it listens on (loopback unless started with `start_on`).
    pub host: Ipv4Addr,
    pub port: u16,
    child: Option<Child>,
}

impl Nginx {
    /// Starts nginx on a free port, and again on another one if a process takes the port before
    /// nginx binds it.
    pub fn start(dir: &Path, certs: &Certificates) -> Self {
        Self::start_on(dir, certs, Ipv4Addr::LOCALHOST)
    }

    /// Like `start`, listening on `host` (an address of this machine; `certs` must name it, see
    /// [`Certificates::generate_for`]).
    pub fn start_on(dir: &Path, certs: &Certificates, host: Ipv4Addr) -> Self {
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("tmp")).expect("nginx dir");
        let mut nginx = Self {
            dir,
            host,
            port: 0,
            child: None,
        };
        let (port, child) = on_a_free_port("nginx", |port| {
            nginx.port = port;
            nginx.write_config(certs);
            nginx.spawn()
        });
        nginx.port = port;
        nginx.child = Some(child);
        nginx
    }

    fn write_config(&self, certs: &Certificates) {
        let (host, port) = (self.host, self.port);
        let d = self.dir.display();
        // The backend that answers is on a unix socket: no second port to find.
        let backend = self.dir.join("backend.sock");
        assert!(
            backend.as_os_str().len() < 100,
            "{} is too long for a unix socket; set TMPDIR to a shorter folder",
            backend.display()
        );
        let backend = backend.display();
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
    listen {host}:{port} ssl;
    ssl_certificate {server_cert};
    ssl_certificate_key {server_key};
    ssl_client_certificate {ca};
    ssl_verify_client on;
    client_max_body_size 32m;
    client_body_buffer_size 32m;
    location / {{
      access_log {d}/received.log bodies;
      proxy_pass http://unix:{backend};
    }}
  }}
  server {{
    listen unix:{backend};
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
        std::fs::write(self.dir.join("nginx.conf"), config).expect("nginx.conf");
    }

    /// Runs nginx and waits until it holds its port: nginx writes its pid file only after it bound
    /// every listening socket, and exits when one is taken (after trying for about 2.5 s).
    fn spawn(&self) -> Started {
        let pid_file = self.dir.join("nginx.pid");
        let startup = self.dir.join("startup.log");
        // What a killed nginx may leave behind.
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(self.dir.join("backend.sock"));
        let mut child = Command::new("nginx")
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(self.dir.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&startup).expect("nginx startup log"))
            .spawn()
            .expect("start nginx (Debian package nginx-light; scripts/setup.sh installs it)");
        let pid = child.id().to_string();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&startup).unwrap_or_default();
                if log.contains("Address already in use") {
                    return Started::PortTaken(log);
                }
                panic!("nginx exited with {status}: {log}");
            }
            if std::fs::read_to_string(&pid_file).is_ok_and(|p| p.trim() == pid) {
                break;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "nginx did not bind port {} within 20 s: {}",
                    self.port,
                    std::fs::read_to_string(&startup).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        crate::wait_until(
            &format!("nginx listens on {}:{}", self.host, self.port),
            Duration::from_secs(10),
            || accepts_on(self.host, self.port),
        );
        Started::Listening(child)
    }

    /// Starts nginx again on the same port (after `stop`). The sidecar under test knows that port,
    /// so a process that took it meanwhile is waited out for a while, not dodged.
    pub fn resume(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Started::Listening(child) => {
                    self.child = Some(child);
                    return;
                }
                Started::PortTaken(log) => assert!(
                    Instant::now() < deadline,
                    "another process holds nginx's port {} since it stopped: {log}",
                    self.port
                ),
            }
        }
    }

    /// Stops nginx (fast shutdown) and waits until its port is closed.
    pub fn stop(&mut self) {
        assert!(
            self.shut_down(),
            "port {} still accepts connections after nginx stopped: another process took it",
            self.port
        );
    }

    /// Stops nginx; whether its port is closed.
    fn shut_down(&mut self) -> bool {
        if let Some(mut child) = self.child.take() {
            // SIGTERM: the master stops its workers too (SIGKILL would leave a worker serving).
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
        // The master exits after its workers, so this holds at once unless the port was taken.
        crate::poll_until(Duration::from_secs(5), || !accepts_on(self.host, self.port))
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
    /// just after answering, so a reader can be a moment ahead of it); what there is after 10 s.
    pub fn wait_received(&self, count: usize) -> Vec<(String, String)> {
        let mut received = Vec::new();
        crate::poll_until(Duration::from_secs(10), || {
            received = self.received();
            received.len() >= count
        });
        received
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.host, self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.shut_down();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_notices_its_port_was_taken_and_starts_on_another() {
        let dir = crate::TempDir::new("nginx-port");
        let certs = Certificates::generate(&dir.0);
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
        let held = holder.local_addr().expect("address").port();
        let taken = Nginx {
            dir: dir.0.join("taken"),
            host: Ipv4Addr::LOCALHOST,
            port: held,
            child: None,
        };
        std::fs::create_dir_all(taken.dir.join("tmp")).expect("nginx dir");
        taken.write_config(&certs);
        match taken.spawn() {
            Started::PortTaken(log) => assert!(log.contains(&format!(":{held}")), "{log}"),
            Started::Listening(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("nginx claims port {held}, which another socket holds");
            }
        }
        let nginx = Nginx::start(&dir.0, &certs);
        assert_ne!(nginx.port, held);
        // Released first, so that dropping `taken` finds its port closed at once.
        drop(holder);
        drop(taken);
    }
}
