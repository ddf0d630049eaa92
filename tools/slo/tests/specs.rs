//! `qg-slo validate` and `generate` end to end: the store's SLO set is
//! valid, every refusal the tool documents names file, line and field and
//! exits 2, and the committed rules are what `generate` writes.

mod common;
use common::*;

const GOOD: &str = r#"apiVersion: openslo/v1
kind: SLO
metadata:
  name: reads
spec:
  service: quadgit
  indicator:
    spec:
      ratioMetric:
        counter: true
        good:
          metricSource:
            type: Prometheus
            spec:
              query: qg_http_request_duration_seconds_bucket{method="GET",le="0.1"}
        total:
          metricSource:
            type: Prometheus
            spec:
              query: qg_http_request_duration_seconds_count{method="GET"}
  timeWindow:
    - duration: 28d
      isRolling: true
  budgetingMethod: Occurrences
  objectives:
    - target: 0.99
"#;

#[test]
fn the_store_slo_set_is_valid() {
    let r = run_in(&repo(), &["validate", "slo/", "--json"]).ok();
    let v = r.json();
    let names: Vec<&str> = v["slos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for want in [
        "read-availability",
        "write-availability",
        "read-latency",
        "commit-latency",
        "commit-success",
        "backup-freshness",
    ] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
}

/// Validate `text` as one spec file; returns the run.
fn validate(text: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.yaml"), text).unwrap();
    run_in(dir.path(), &["validate", "x.yaml"])
}

/// Checks that `text` is refused with exit 2 and one line `x.yaml:LINE:
/// FIELD: ...REASON...`; a mismatch is added to `bad`.
fn refused(bad: &mut Vec<String>, text: &str, line: usize, field: &str, reason: &str) {
    let r = validate(text);
    let want = format!("error: x.yaml:{line}: {field}: ");
    if r.code != 2
        || !r.stderr.starts_with(&want)
        || !r.stderr.contains(reason)
        || r.stderr.lines().count() != 1
    {
        bad.push(format!("want exit 2, `{want}...{reason}`; got {r:?}"));
    }
}

#[test]
fn a_good_spec_passes() {
    let r = validate(GOOD).ok();
    assert!(r.stdout.contains("ok reads (quadgit)"), "{}", r.stdout);
}

#[test]
fn every_refusal_names_file_line_and_field() {
    let mut bad = Vec::new();
    // unknown field, with serde's own line
    refused(
        &mut bad,
        &GOOD.replace(
            "  budgetingMethod:",
            "  budgetingMetod: x\n  budgetingMethod:",
        ),
        24,
        "spec",
        "unknown field `budgetingMetod`",
    );
    // a field of the wrong type
    refused(
        &mut bad,
        &GOOD.replace("target: 0.99", "target: high"),
        26,
        "spec.objectives[0].target",
        "invalid type",
    );
    // target outside (0, 1)
    refused(
        &mut bad,
        &GOOD.replace("target: 0.99", "target: 1.5"),
        26,
        "spec.objectives[0].target",
        "1.5 is outside (0, 1)",
    );
    refused(
        &mut bad,
        &GOOD.replace("target: 0.99", "targetPercent: 100"),
        26,
        "spec.objectives[0].targetPercent",
        "outside (0, 1) once divided by 100",
    );
    // a latency threshold that is not a bucket, and one spelled unlike the server
    refused(
        &mut bad,
        &GOOD.replace("le=\"0.1\"", "le=\"0.2\""),
        15,
        "spec.indicator.spec.ratioMetric.good.metricSource.spec.query",
        "le=\"0.2\" is not a bucket boundary of qg_http_request_duration_seconds",
    );
    refused(
        &mut bad,
        &GOOD.replace("le=\"0.1\"", "le=\"1\""),
        15,
        "spec.indicator.spec.ratioMetric.good.metricSource.spec.query",
        "the server spells it le=\"1.0\"",
    );
    // a window shorter than the longest alert window (unscaled windows)
    refused(
        &mut bad,
        &GOOD.replace("duration: 28d", "duration: 2d").replace(
            "  name: reads\n",
            "  name: reads\n  annotations:\n    qg-slo/scale-windows: \"false\"\n",
        ),
        24,
        "spec.timeWindow[0].duration",
        "the period 2d is shorter than the longest alert window 3d",
    );
    // duplicate SLO names across documents
    refused(
        &mut bad,
        &format!("{GOOD}---\n{GOOD}"),
        31,
        "metadata.name",
        "duplicate SLO name `reads` (first defined at x.yaml:4)",
    );
    // unsupported parts of OpenSLO are refused, not ignored
    refused(
        &mut bad,
        &GOOD.replace("kind: SLO", "kind: Service"),
        2,
        "kind",
        "`Service` is not supported",
    );
    refused(
        &mut bad,
        &format!("{GOOD}  alertPolicies: []\n"),
        27,
        "spec.alertPolicies",
        "is not supported",
    );
    refused(
        &mut bad,
        &GOOD.replace("apiVersion: openslo/v1", "apiVersion: openslo/v2alpha"),
        1,
        "apiVersion",
        "only openslo/v1",
    );
    refused(
        &mut bad,
        &GOOD.replace("timeZone", "x").replace(
            "    - duration: 28d\n      isRolling: true",
            "    - duration: 1M\n      isRolling: false\n      calendar:\n        startTime: \"2026-01-01 00:00:00\"\n        timeZone: Europe/Paris",
        ),
        26,
        "spec.timeWindow[0].calendar.timeZone",
        "calendar periods are in UTC",
    );
    refused(
        &mut bad,
        &GOOD.replace("  indicator:\n", "  indicatorRef: nowhere\n  indicator:\n"),
        7,
        "spec.indicatorRef",
        "not both",
    );
    refused(
        &mut bad,
        &GOOD.replace(
            "query: qg_http_request_duration_seconds_count{method=\"GET\"}",
            "query: sum(rate(qg_http_requests_total[5m]))",
        ),
        20,
        "spec.indicator.spec.ratioMetric.total.metricSource.spec.query",
        "only a selector",
    );
    refused(
        &mut bad,
        &GOOD.replace(
            "  name: reads\n",
            "  name: reads\n  annotations:\n    qg-slo/paging: \"true\"\n",
        ),
        6,
        "metadata.annotations.qg-slo/paging",
        "unknown qg-slo annotation",
    );
    assert!(bad.is_empty(), "{}", bad.join("\n\n"));
    // malformed YAML
    let r = validate("apiVersion: openslo/v1\nkind: [SLO\n").code(2);
    assert!(r.stderr.starts_with("error: x.yaml:"), "{}", r.stderr);
}

#[test]
fn the_committed_rules_are_what_generate_writes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rules.yaml");
    let spec = repo().join("slo");
    run_in(
        &repo(),
        &[
            "generate",
            "--spec",
            spec.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ],
    )
    .ok();
    let fresh = std::fs::read(&out).unwrap();
    let committed = std::fs::read(repo().join("dashboards/prometheus/slo.rules.yaml")).unwrap();
    assert!(
        fresh == committed,
        "dashboards/prometheus/slo.rules.yaml is stale: run `qg-slo generate --spec slo/ --output dashboards/prometheus/`"
    );
    // and the same specs give the same bytes again
    let again = run_in(&repo(), &["generate", "--spec", "slo/", "--output", "-"]).ok();
    assert_eq!(again.stdout.as_bytes(), &fresh[..]);
}

#[test]
fn promtool_accepts_the_rules_and_their_unit_tests_pass() {
    let dir = repo().join("dashboards/prometheus");
    let r = tool(
        "promtool",
        &["check", "rules", "slo.rules.yaml", "alerts.yaml"],
        &dir,
    );
    assert_eq!(r.code, 0, "{r:?}");
    let mut tests: Vec<String> = std::fs::read_dir(dir.join("tests"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .map(|p| format!("tests/{}", p.file_name().unwrap().to_string_lossy()))
        .collect();
    tests.sort();
    assert!(tests.len() >= 2, "{tests:?}");
    let mut args = vec!["test", "rules"];
    args.extend(tests.iter().map(String::as_str));
    let r = tool("promtool", &args, &dir);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!r.stdout.contains("FAILED"), "{r:?}");
}
