//! A control plane of a fault test's own, started by hack/control-plane.sh in
//! a temporary folder (never the one `make test` shares), whose components the
//! test stops and starts by PID through the same script.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::support::{self, Cluster};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/hack/control-plane.sh");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
}

impl Component {
    pub const ALL: [Component; 3] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// Asks it to stop (the script KILLs it if it does not within its timeout).
    Term,
    /// A crash: no shutdown, no goodbye to clients.
    Kill,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Kill => "KILL",
        }
    }
}

pub struct ControlPlane {
    pub dir: PathBuf,
    env_file: PathBuf,
}

/// Runs hack/control-plane.sh with `args` and `env`; its whole output.
pub fn script(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(SCRIPT)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("running {SCRIPT}: {e}"))
}

fn checked(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A fresh, empty folder for one control plane.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(support::unique(&format!("teamaccess-faults-{name}")));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl ControlPlane {
    /// Starts one in a fresh folder; `apiserver_flags` are added to kube-apiserver's.
    pub fn up(name: &str, apiserver_flags: &str) -> ControlPlane {
        let dir = fresh_dir(name);
        let out = checked(
            "hack/control-plane.sh up",
            script(
                &["up", dir.to_str().unwrap()],
                &[("TEAMACCESS_APISERVER_FLAGS", apiserver_flags)],
            ),
        );
        let env_file = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
        ControlPlane { dir, env_file }
    }

    /// A variable of the env file the script wrote (`export NAME="value"`).
    pub fn var(&self, name: &str) -> String {
        let text = std::fs::read_to_string(&self.env_file).unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("export {name}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| panic!("{name} not in {}", self.env_file.display()))
    }

    pub async fn cluster(&self) -> Cluster {
        support::cluster_at(
            self.var("TEAMACCESS_TEST_KUBECONFIG").into(),
            self.var("TEAMACCESS_TEST_AUDIT_LOG").into(),
        )
        .await
    }

    pub fn stop(&self, component: Component, signal: Signal) {
        checked(
            &format!("stopping {}", component.as_str()),
            script(
                &[
                    "stop",
                    self.dir.to_str().unwrap(),
                    component.as_str(),
                    signal.as_str(),
                ],
                &[],
            ),
        );
    }

    /// Starts it again with its stored command line; returns once it serves.
    pub fn start(&self, component: Component) {
        checked(
            &format!("starting {}", component.as_str()),
            script(
                &["start", self.dir.to_str().unwrap(), component.as_str()],
                &[],
            ),
        );
    }

    /// Where kube-apiserver listens (the host its certificate names).
    pub fn apiserver_addr(&self) -> std::net::SocketAddr {
        let ports = std::fs::read_to_string(self.dir.join("ports")).unwrap();
        let port = (ports.lines())
            .find_map(|l| l.strip_prefix("api_port="))
            .expect("api_port in ports");
        format!("127.0.0.1:{}", port.trim()).parse().unwrap()
    }

    /// POSTs `body` to etcd's HTTP API (`/v3/kv/range`, `/v3/kv/compaction`):
    /// its JSON answer. Plain HTTP on loopback, as the rig starts etcd.
    pub async fn etcd(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let url = self.var("TEAMACCESS_TEST_ETCD");
        let host = url.strip_prefix("http://").expect("etcd over http");
        let mut stream = tokio::net::TcpStream::connect(host)
            .await
            .unwrap_or_else(|e| panic!("connecting to etcd at {host}: {e}"));
        let body = body.to_string();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        let (head, text) = response.split_once("\r\n\r\n").unwrap_or_default();
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "etcd {path}: {head}\n{text}"
        );
        serde_json::from_str(text).unwrap_or_else(|e| panic!("etcd {path}: {e}: {text}"))
    }

    /// etcd's current revision.
    pub async fn etcd_revision(&self) -> i64 {
        // any key: the header carries the store's revision
        let answer = self
            .etcd("/v3/kv/range", &serde_json::json!({"key": "Lw=="}))
            .await;
        let rev = &answer["header"]["revision"];
        (rev.as_str().and_then(|r| r.parse().ok()))
            .or(rev.as_i64())
            .unwrap_or_else(|| panic!("no revision in {answer}"))
    }

    /// Compacts etcd's history up to `revision`: a watch from an older one
    /// is answered 410 Gone.
    pub async fn compact(&self, revision: i64) {
        self.etcd(
            "/v3/kv/compaction",
            &serde_json::json!({"revision": revision.to_string(), "physical": true}),
        )
        .await;
    }

    /// The PID the script recorded for `component`.
    pub fn pid(&self, component: Component) -> u32 {
        let text = std::fs::read_to_string(self.dir.join("pids")).unwrap();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .filter(|(n, _)| *n == component.as_str())
            .map(|(_, p)| p.trim().parse().unwrap())
            .next_back()
            .unwrap_or_else(|| panic!("no PID for {}", component.as_str()))
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = script(&["down", self.dir.to_str().unwrap()], &[]);
        if std::thread::panicking() {
            eprintln!(
                "control plane state kept in {} (logs/, audit.log)",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Every live (not zombie) process whose command line names `dir`: what the
/// rig must leave behind after `down`, or after an `up` that failed.
pub fn processes_of(dir: &Path) -> Vec<(u32, String)> {
    let needle = format!("{}/", dir.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        if cmdline.contains(&needle) && !zombie {
            found.push((pid, cmdline));
        }
    }
    found
}

/// The command line of process `pid`, argument by argument.
pub fn cmdline(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|c| *c == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}
