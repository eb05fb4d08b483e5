//! A real OCI registry for tests: Debian's `docker-registry` (distribution 2.8) on loopback, with
//! filesystem storage in the test's folder; plain HTTP, or htpasswd auth over TLS with a test CA.

use crate::components::{Certificates, free_port, wait_for_port};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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

    fn start(dir: &Path, auth: Option<(&str, &str)>) -> Self {
        let dir = dir.join(format!("registry-{}", free_port()));
        std::fs::create_dir_all(&dir).expect("registry folder");
        let root = dir.join("storage");
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
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
        let config_path = dir.join("config.yml");
        std::fs::write(&config_path, config).expect("registry config");
        let mut registry = Self {
            port,
            root,
            ca,
            config: config_path,
            log: dir.join("registry.log"),
            child: None,
        };
        registry.resume();
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

    /// Starts the registry again on the same port and storage (after [`Registry::stop`]).
    pub fn resume(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start docker-registry (bash scripts/setup.sh installs it): {e}")
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("docker-registry exited with {status}: {}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {}: {}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        wait_for_port(self.port, "docker-registry");
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
