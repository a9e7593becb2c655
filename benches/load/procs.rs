//! The processes under test: the gate (the real release binary) and the floor, each pinned
//! to the server core with `taskset`, with their CPU time and memory read from /proc.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::http::http_status;

pub struct Server {
    child: Child,
    pub port: u16,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn pinned(core: &str, binary: &Path) -> Command {
    let mut command = Command::new("taskset");
    command.arg("-c").arg(core).arg(binary);
    command
}

fn log_file(logs: &Path, name: &str) -> Stdio {
    std::fs::File::create(logs.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

impl Server {
    /// The floor server; ready once it accepts a connection.
    pub async fn floor(binary: &Path, core: &str, logs: &Path) -> Self {
        let port = free_port();
        let child = pinned(core, binary)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(log_file(logs, "floor"))
            .spawn()
            .expect("start the floor server (taskset installed?)");
        let server = Self { child, port };
        server
            .wait(|| async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_ok()
            })
            .await;
        server
    }

    /// `redmine-authz serve` on `database_url` with extra flags; ready when /readyz says so.
    pub async fn gate(
        binary: &Path,
        core: &str,
        database_url: &str,
        flags: &[String],
        logs: &Path,
        name: &str,
    ) -> Self {
        let port = free_port();
        let admin = free_port();
        let child = pinned(core, binary)
            .arg("serve")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
            .args(["--database-url", database_url])
            .args(flags)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log_file(logs, name))
            .spawn()
            .expect("start redmine-authz (taskset installed?)");
        let server = Self { child, port };
        server
            .wait(|| async move { http_status(admin, "/readyz").await == Some(200) })
            .await;
        server
    }

    async fn wait<F, Fut>(&self, ready: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let started = Instant::now();
        while !ready().await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "server {} did not become ready",
                self.pid()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or(0)
    }

    /// User plus system CPU time so far.
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.pid())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, i.e. 11 and 12 after the name.
    let total = ticks(11) + ticks(12);
    Duration::from_millis(total * 1000 / clock_ticks())
}

fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}

/// The first `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}
