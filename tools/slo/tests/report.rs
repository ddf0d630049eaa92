//! `qg-slo report` against a real Prometheus scraping a real `qg serve`
//! under a known mix of good and bad requests, and against the server's
//! `/metrics` directly; HTML rendered in headless Chromium; the audit event.

mod common;
use common::prometheus::{scrape_config, Prometheus};
use common::serve::{qg, Serve};
use common::*;

use std::path::Path;
use std::time::Duration;

/// Two SLOs over the query route where the test decides what is bad: a
/// 401 (no token) counts as bad here. `lenient` (50%) holds with a quarter
/// bad; `strict` (90%) is breached.
fn spec(dir: &Path, which: &[&str]) -> std::path::PathBuf {
    let one = |name: &str, target: &str| {
        format!(
            r#"apiVersion: openslo/v1
kind: SLO
metadata:
  name: {name}
spec:
  service: quadgit
  indicator:
    spec:
      ratioMetric:
        counter: true
        bad:
          metricSource:
            type: Prometheus
            spec:
              query: qg_http_requests_total{{route="/v1/ns/:ns/query",status=~"4.."}}
        total:
          metricSource:
            type: Prometheus
            spec:
              query: qg_http_requests_total{{route="/v1/ns/:ns/query"}}
  timeWindow:
    - duration: 28d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - target: {target}
"#
        )
    };
    let mut docs = Vec::new();
    for w in which {
        docs.push(match *w {
            "lenient" => one("lenient", "0.5"),
            "strict" => one("strict", "0.9"),
            other => panic!("{other}"),
        });
    }
    let path = dir.join(format!("{}.yaml", which.join("-")));
    std::fs::write(&path, docs.join("---\n")).unwrap();
    path
}

fn token(data: &Path) -> String {
    let o = qg(
        data,
        &["token", "create", "--user", "load", "--role", "reader"],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

/// `good` reads with the token (200) and `bad` without (401).
fn load(http: &reqwest::blocking::Client, url: &str, token: &str, good: usize, bad: usize) {
    let q = format!("{url}/v1/ns/default/query?s=%3Fs");
    for _ in 0..good {
        let r = http.get(&q).bearer_auth(token).send().unwrap();
        assert_eq!(r.status(), 200);
    }
    for _ in 0..bad {
        let r = http.get(&q).send().unwrap();
        assert_eq!(r.status(), 401);
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn report_from_prometheus_equals_prometheus_own_ratio_and_a_breach_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Serve::start(&data, &tmp.path().join("serve.log"));
    let token = token(&data);
    let prom = Prometheus::start(
        &tmp.path().join("prom"),
        &scrape_config(&[&server.target()], &[]),
        &[],
    );
    let http = reqwest::blocking::Client::new();
    // a first scrape before any query request, so every series starts in Prometheus from its first value
    load(&http, &server.url, &token, 1, 1);
    let route = r#"qg_http_requests_total{route="/v1/ns/:ns/query"}"#;
    prom.wait_until(Duration::from_secs(60), "the first requests", |p| {
        p.value(&format!("sum({route})"), None) == Some(2.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    load(&http, &server.url, &token, 29, 9);
    prom.wait_until(Duration::from_secs(60), "all 40 requests", |p| {
        p.value(&format!("sum({route})"), None) == Some(40.0)
    });
    std::thread::sleep(Duration::from_secs(2));
    let at = now();

    let lenient = spec(tmp.path(), &["lenient"]);
    let r = run_in(
        tmp.path(),
        &[
            "report",
            "--spec",
            lenient.to_str().unwrap(),
            "--prometheus",
            &prom.url(),
            "--window",
            "10m",
            "--at",
            &at.to_string(),
            "--json",
        ],
    )
    .ok();
    let report = r.json();
    assert_eq!(report["schema"], "qg-slo-report/v1");
    let slo = &report["slos"][0];
    let sli = slo["sli"].as_f64().unwrap();
    // the same SLI, written independently, asked of Prometheus itself
    let expected = prom
        .value(
            r#"sum(increase(qg_http_requests_total{route="/v1/ns/:ns/query",status!~"4.."}[10m])) / sum(increase(qg_http_requests_total{route="/v1/ns/:ns/query"}[10m]))"#,
            Some(at as f64),
        )
        .unwrap();
    assert!(
        (sli - expected).abs() < 1e-9,
        "report {sli} vs Prometheus {expected}"
    );
    // and the known mix: 10 of 40 bad (increase() extrapolates a little)
    assert!((sli - 0.75).abs() < 0.05, "{sli}");
    // the event count is Prometheus' own increase(), extrapolation included: how far it
    // strays from the 40 requests sent depends on scrape timing, so it is compared with
    // the same query asked of Prometheus, not with 40
    let total = slo["events_total"].as_f64().unwrap();
    let expected_total = prom
        .value(
            r#"sum(increase(qg_http_requests_total{route="/v1/ns/:ns/query"}[10m]))"#,
            Some(at as f64),
        )
        .unwrap();
    assert!(
        (total - expected_total).abs() < 1e-9,
        "report {total} vs Prometheus {expected_total}"
    );
    assert!(total > 30.0 && total < 80.0, "{total}");
    assert_eq!(slo["breached"], false);
    let b = &slo["budget"];
    let allowed = b["events_total"].as_f64().unwrap();
    assert!((allowed - 0.5 * total).abs() < 1e-9);
    assert!(
        (b["events_remaining"].as_f64().unwrap() - (allowed - slo["events_bad"].as_f64().unwrap()))
            .abs()
            < 1e-9
    );
    assert!(
        (b["seconds_total"].as_f64().unwrap() - 300.0).abs() < 1e-9,
        "{b}"
    );
    assert_eq!(slo["burn_rates"].as_array().unwrap().len(), 7);
    assert!(report["breached"].as_array().unwrap().is_empty());

    // a breached SLO exits 1 and is named; the report is still written
    let both = spec(tmp.path(), &["lenient", "strict"]);
    let html = tmp.path().join("report.html");
    let r = run_in(
        tmp.path(),
        &[
            "report",
            "--spec",
            both.to_str().unwrap(),
            "--prometheus",
            &prom.url(),
            "--window",
            "10m",
            "--at",
            &at.to_string(),
            "--format",
            "html",
            "--output",
            html.to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
        ],
    )
    .code(1);
    assert!(r.stderr.contains("SLO breached: strict"), "{}", r.stderr);
    let text = std::fs::read_to_string(&html).unwrap();
    assert!(
        text.contains("<svg") && text.contains("breached: strict"),
        "{text}"
    );
    assert!(
        !text.contains("http://") || !text.contains("src=\"http"),
        "external assets"
    );
    for external in ["<script src", "<link ", "url(http", "@import"] {
        assert!(
            !text.contains(external),
            "external asset `{external}` in the HTML"
        );
    }
    chromium::render_and_check(&html);

    // the run is in the store's audit log
    let o = qg(&data, &["audit", "log", "--json"]);
    let log: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let ev = log
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["action"] == "slo.report")
        .unwrap_or_else(|| panic!("no slo.report event: {log}"));
    assert_eq!(ev["outcome"], "failure");
    assert_eq!(ev["detail"]["breached"][0], "strict");
    let o = qg(&data, &["audit", "verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // markdown for the review document
    let r = run_in(
        tmp.path(),
        &[
            "report",
            "--spec",
            lenient.to_str().unwrap(),
            "--prometheus",
            &prom.url(),
            "--window",
            "10m",
            "--at",
            &at.to_string(),
        ],
    )
    .ok();
    assert!(
        r.stdout.starts_with("# Error-budget report"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("| lenient | quadgit |"), "{}", r.stdout);

    // the store's own SLO set reports on the same Prometheus (no reads failed)
    let r = run_in(
        &repo(),
        &[
            "report",
            "--spec",
            "slo/",
            "--prometheus",
            &prom.url(),
            "--window",
            "10m",
            "--json",
        ],
    );
    let v = r.json();
    let read = v["slos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "read-availability")
        .unwrap();
    assert_eq!(read["sli"], 1.0, "{read}");

    // an unreachable Prometheus is an operation failure (1), not a breach
    let r = run_in(
        tmp.path(),
        &[
            "report",
            "--spec",
            lenient.to_str().unwrap(),
            "--prometheus",
            "http://127.0.0.1:9",
        ],
    )
    .code(1);
    assert!(r.stderr.contains("cannot reach Prometheus"), "{}", r.stderr);
}

#[test]
fn report_from_metrics_samples_counts_exact_deltas() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let server = Serve::start(&data, &tmp.path().join("serve.log"));
    let token = token(&data);
    let http = reqwest::blocking::Client::new();
    load(&http, &server.url, &token, 5, 5); // before sampling: not counted
    let lenient = spec(tmp.path(), &["lenient"]);
    let child = qg_slo()
        .current_dir(tmp.path())
        .args([
            "report",
            "--spec",
            lenient.to_str().unwrap(),
            "--metrics-url",
            &format!("{}/metrics", server.url),
            "--duration",
            "6s",
            "--interval",
            "1s",
            "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    load(&http, &server.url, &token, 6, 2);
    let r: Run = child.wait_with_output().unwrap().into();
    let r = r.ok();
    let slo = &r.json()["slos"][0];
    assert_eq!(slo["events_total"], 8.0, "{slo}");
    assert_eq!(slo["events_bad"], 2.0, "{slo}");
    assert_eq!(slo["sli"], 0.75, "{slo}");
    assert_eq!(slo["breached"], false);
    assert!(slo["series"].as_array().unwrap().len() >= 5, "{slo}");
}
