//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on loopback, with
//! filesystem storage in the test's folder; plain HTTP, htpasswd auth over TLS with a test CA, or
//! the bearer token flow with a token server of its own (JWTs signed by openssl).

use crate::components::{Certificates, Started, on_a_free_port, wait_for_port};
use base64::Engine as _;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A number no other call in this process gets (for folder names and token ids).
fn unique() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A running `docker-registry serve CONFIG`.
pub struct Registry {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The storage root.
    pub root: PathBuf,
    /// The CA that signed its certificate, when it serves TLS.
    pub ca: Option<PathBuf>,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Registry {
    /// A registry over plain HTTP without auth, storing under `dir`.
    pub fn start_plain(dir: &Path) -> Self {
        Self::start(dir, None)
    }

    /// A registry over TLS (a test CA made with openssl) that requires `user`/`password`
    /// (htpasswd, bcrypt).
    pub fn start_with_auth(dir: &Path, user: &str, password: &str) -> Self {
        Self::start(dir, Some((user, password)))
    }

    /// A registry over plain HTTP that requires bearer tokens, with a token server on loopback that
    /// issues them (RS256, signed with openssl) to `user`/`password` for whatever scope is asked.
    pub fn start_with_token_auth(dir: &Path, user: &str, password: &str) -> Self {
        let token_dir = dir.join(format!("token-{}", unique()));
        std::fs::create_dir_all(&token_dir).expect("token folder");
        let key = token_dir.join("token.key");
        let cert = token_dir.join("token.crt");
        let der = token_dir.join("token.der");
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
                "/CN=eventplug test token signer",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert));
        run(Command::new("openssl")
            .args(["x509", "-outform", "DER", "-in"])
            .arg(&cert)
            .arg("-out")
            .arg(&der));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("token server port");
        let token_port = listener.local_addr().expect("address").port();
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let x5c =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&der).expect("der"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve_token(stream, &expected, &x5c, &key);
            }
        });
        let auth = format!(
            "auth:\n  token:\n    realm: http://127.0.0.1:{token_port}/token\n    service: eventplug-test-registry\n    issuer: eventplug-test-issuer\n    rootcertbundle: {}\n",
            cert.display()
        );
        Self::start_with(dir, None, Some(auth))
    }

    fn start(dir: &Path, auth: Option<(&str, &str)>) -> Self {
        Self::start_with(dir, auth, None)
    }

    fn start_with(dir: &Path, auth: Option<(&str, &str)>, extra: Option<String>) -> Self {
        let dir = dir.join(format!("registry-{}", unique()));
        std::fs::create_dir_all(&dir).expect("registry folder");
        let root = dir.join("storage");
        // Level info: the registry says "listening on" once it holds its port. `{port}` is filled
        // in per attempt.
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{{port}}\n",
            root.display()
        );
        let mut ca = None;
        if let Some((user, password)) = auth {
            let certs = Certificates::generate(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                certs.server_cert.display(),
                certs.server_key.display()
            ));
            let hash = bcrypt::hash(password, 5).expect("bcrypt");
            let htpasswd = dir.join("htpasswd");
            std::fs::write(&htpasswd, format!("{user}:{hash}\n")).expect("htpasswd");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: eventplug-test\n    path: {}\n",
                htpasswd.display()
            ));
            ca = Some(certs.ca);
        }
        if let Some(extra) = extra {
            config.push_str(&extra);
        }
        let mut registry = Self {
            port: 0,
            root,
            ca,
            config: dir.join("config.yml"),
            log: dir.join("registry.log"),
            child: None,
        };
        // Another process can take the free port before the registry binds it: then again on
        // another one.
        let (port, child) = on_a_free_port("docker-registry", |port| {
            registry.port = port;
            let config = config.replace("{port}", &port.to_string());
            std::fs::write(&registry.config, config).expect("registry config");
            registry.spawn()
        });
        registry.port = port;
        registry.child = Some(child);
        registry
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts the registry again on the same port and storage (after [`Registry::stop`]). The code
    /// under test knows that port, so a process that took it meanwhile is waited out for a while,
    /// not dodged.
    pub fn resume(&mut self) {
        if self.child.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.spawn() {
                Started::Listening(child) => {
                    self.child = Some(child);
                    return;
                }
                Started::PortTaken(log) => assert!(
                    Instant::now() < deadline,
                    "another process holds the registry's port {} since it stopped: {log}",
                    self.port
                ),
            }
        }
    }

    /// Runs the registry and waits until it holds its port: it logs "listening on" once bound, and
    /// exits when the port is taken.
    fn spawn(&self) -> Started {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("registry log");
        // The log is kept across restarts: only what this run writes counts.
        let from = self.logs().len();
        let mut child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start docker-registry (bash scripts/setup.sh installs it): {e}")
            });
        let listening = format!("listening on 127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let run = self.logs().get(from..).unwrap_or_default().to_string();
            if run.contains(&listening) {
                break;
            }
            if let Ok(Some(status)) = child.try_wait() {
                if run.contains("address already in use") {
                    return Started::PortTaken(run);
                }
                panic!("docker-registry exited with {status}: {run}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "docker-registry did not listen on {} within 20 s: {run}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        wait_for_port(self.port, "docker-registry");
        Started::Listening(child)
    }

    /// Stops the registry (its storage stays).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The file holding the blob with `digest` in the registry's storage.
    pub fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.root
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
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

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Answers one token request: 401 without the right basic credentials, else a JWT granting the
/// scopes asked for.
fn serve_token(
    stream: std::net::TcpStream,
    expected: &str,
    x5c: &str,
    key: &Path,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut authorized = false;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("authorization")
            && value.trim() == expected
        {
            authorized = true;
        }
    }
    let mut stream = stream;
    if !authorized {
        let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#;
        return write!(
            stream,
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    let query = request_line
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.split_once('?'))
        .map(|(_, q)| q.to_string())
        .unwrap_or_default();
    let mut access = Vec::new();
    for pair in query.split('&') {
        if let Some(scope) = pair.strip_prefix("scope=") {
            for scope in percent_decode(scope).split(' ') {
                let parts: Vec<&str> = scope.splitn(3, ':').collect();
                if let [kind, name, actions] = parts[..] {
                    let actions: Vec<&str> = actions.split(',').collect();
                    access
                        .push(serde_json::json!({"type": kind, "name": name, "actions": actions}));
                }
            }
        }
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let url = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = serde_json::json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
    let claims = serde_json::json!({
        "iss": "eventplug-test-issuer", "sub": "ci", "aud": "eventplug-test-registry",
        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{}", unique()),
        "access": access,
    });
    let signing_input = format!(
        "{}.{}",
        url(header.to_string().as_bytes()),
        url(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(signing_input.as_bytes()))
        .transpose()?;
    let signature = child.wait_with_output()?.stdout;
    let token = format!("{signing_input}.{}", url(&signature));
    let body =
        serde_json::json!({"token": token, "access_token": token, "expires_in": 300}).to_string();
    write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_notices_its_port_was_taken() {
        let dir = crate::TempDir::new("registry-port");
        let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("a port to hold");
        let held = holder.local_addr().expect("address").port();
        let registry = Registry {
            port: held,
            root: dir.0.join("storage"),
            ca: None,
            config: dir.0.join("config.yml"),
            log: dir.0.join("registry.log"),
            child: None,
        };
        std::fs::write(
            &registry.config,
            format!(
                "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{held}\n",
                registry.root.display()
            ),
        )
        .expect("config");
        match registry.spawn() {
            Started::PortTaken(log) => assert!(log.contains(&format!(":{held}")), "{log}"),
            Started::Listening(mut child) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("docker-registry claims port {held}, which another socket holds");
            }
        }
        let registry = Registry::start_plain(&dir.0);
        assert_ne!(registry.port, held);
    }
}
