//! A real Prometheus (Debian package `prometheus`) on a loopback port, for
//! the tests of every crate that need one (each includes this file with
//! `#[path]`). Stopped (SIGTERM, then reaped) when dropped.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Prometheus {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
    http: reqwest::blocking::Client,
}

/// A loopback port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config scraping `targets` (host:port) as job `quadgit` every second.
pub fn scrape_config(targets: &[&str], rule_files: &[&Path]) -> String {
    let mut c = String::from("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n");
    if !rule_files.is_empty() {
        c.push_str("rule_files:\n");
        for f in rule_files {
            c.push_str(&format!("  - '{}'\n", f.display()));
        }
    }
    c.push_str("scrape_configs:\n  - job_name: quadgit\n    static_configs:\n      - targets: [");
    let t: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
    c.push_str(&t.join(", "));
    c.push_str("]\n");
    c
}

impl Prometheus {
    /// Start with `config` (YAML) and its TSDB in `dir/tsdb` (which may
    /// already hold blocks), and wait until it answers queries.
    pub fn start(dir: &Path, config: &str, extra: &[&str]) -> Prometheus {
        std::fs::create_dir_all(dir).unwrap();
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("prometheus not found ({e}): install the Debian package `prometheus` (apt-get install prometheus)")
            });
        let p = Prometheus {
            child,
            port,
            dir: dir.to_path_buf(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        };
        p.wait_until(Duration::from_secs(60), "ready", |p| {
            p.http
                .get(format!("{}/-/ready", p.url()))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        p
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The `data` of an instant query at `time` (Unix seconds; None: now).
    pub fn query(&self, query: &str, time: Option<f64>) -> serde_json::Value {
        let mut params = vec![("query", query.to_string())];
        if let Some(t) = time {
            params.push(("time", format!("{t}")));
        }
        let v: serde_json::Value = self
            .http
            .get(format!("{}/api/v1/query", self.url()))
            .query(&params)
            .send()
            .unwrap()
            .json()
            .unwrap();
        assert_eq!(v["status"], "success", "{query}: {v}");
        v["data"].clone()
    }

    /// The single value of an instant query (None: empty result).
    pub fn value(&self, query: &str, time: Option<f64>) -> Option<f64> {
        let data = self.query(query, time);
        data["result"][0]["value"][1]
            .as_str()
            .map(|s| s.parse().unwrap())
    }

    /// Poll `ok` every 250 ms until it holds; panics with the log after `within`.
    pub fn wait_until(&self, within: Duration, what: &str, ok: impl Fn(&Prometheus) -> bool) {
        let start = Instant::now();
        while !ok(self) {
            assert!(
                start.elapsed() < within,
                "Prometheus: {what} not seen within {within:?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // SAFETY: signalling our own child by pid, then reaping it.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}
