//! Long windows for real: 35 days of synthetic request counters with known
//! good and bad counts (a day without traffic, a counter reset), written as
//! OpenMetrics, backfilled with `promtool tsdb create-blocks-from
//! openmetrics`, served by a real Prometheus; the 28-day and calendar-month
//! figures `qg-slo report` prints must be the ones computed from the counts.

mod common;
use common::prometheus::Prometheus;
use common::*;

/// 2026-12-01T00:00:00Z: the end of the data.
const END: i64 = 1_796_083_200;
/// 2026-11-01T00:00:00Z
const NOVEMBER: i64 = 1_793_491_200;
const STEP: i64 = 300;
const DAYS: i64 = 35;

/// Good and bad requests in the step ending at `t`.
fn increments(t: i64) -> (u64, u64) {
    let day = (END - t) / 86_400; // 0 = the last day
    match day {
        9 => (0, 0),                     // a day without traffic
        2 | 3 => (120, 3),               // two bad days in the last week
        16 => (100, 1),                  // a day a little worse
        _ if t % 3_600 == 0 => (100, 1), // one bad request an hour
        _ => (100, 0),
    }
}

/// The reset: the server restarts at this step (counters start again from 0).
const RESET: i64 = END - 20 * 86_400 + 12 * 3_600;

#[test]
fn budgets_over_28_days_and_a_calendar_month_match_the_generated_counts() {
    let tmp = tempfile::tempdir().unwrap();
    let start = END - DAYS * 86_400;
    // the counters, and the expected counts over (from, END]
    let mut om = String::from("# TYPE qg_http_requests counter\n");
    let (mut good_series, mut bad_series) = (Vec::new(), Vec::new());
    let (mut good, mut bad) = (0u64, 0u64);
    let mut t = start;
    while t <= END {
        let (g, b) = if t == start { (0, 0) } else { increments(t) };
        if t == RESET {
            good = 0;
            bad = 0;
        }
        good += g;
        bad += b;
        good_series.push(format!(
            "qg_http_requests_total{{job=\"quadgit\",method=\"GET\",route=\"/v1/ns/:ns/query\",status=\"200\"}} {good} {t}\n"
        ));
        bad_series.push(format!(
            "qg_http_requests_total{{job=\"quadgit\",method=\"GET\",route=\"/v1/ns/:ns/query\",status=\"500\"}} {bad} {t}\n"
        ));
        t += STEP;
    }
    om.extend(good_series);
    om.extend(bad_series);
    om.push_str("# EOF\n");
    let input = tmp.path().join("series.om");
    std::fs::write(&input, om).unwrap();
    let expected = |from: i64| -> (f64, f64) {
        let (mut total, mut b) = (0u64, 0u64);
        let mut t = from + STEP;
        while t <= END {
            let (gi, bi) = increments(t);
            total += gi + bi;
            b += bi;
            t += STEP;
        }
        (total as f64, b as f64)
    };

    let prom_dir = tmp.path().join("prom");
    let tsdb = prom_dir.join("tsdb");
    std::fs::create_dir_all(&tsdb).unwrap();
    let r = tool(
        "promtool",
        &[
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            "--quiet",
            input.to_str().unwrap(),
            tsdb.to_str().unwrap(),
        ],
        tmp.path(),
    );
    assert_eq!(r.code, 0, "{r:?}");
    let prom = Prometheus::start(
        &prom_dir,
        "global:\n  evaluation_interval: 1m\nscrape_configs: []\n",
        &["--storage.tsdb.retention.time=3650d"],
    );
    prom.wait_until(
        std::time::Duration::from_secs(60),
        "the backfilled series",
        |p| p.value("count(qg_http_requests_total)", Some(END as f64)) == Some(2.0),
    );

    let spec = repo().join("slo/availability.yaml");
    let url = prom.url();
    let report = |extra: &[&str]| -> (i32, serde_json::Value) {
        let mut args = vec![
            "report",
            "--spec",
            spec.to_str().unwrap(),
            "--prometheus",
            &url,
            "--json",
        ];
        args.extend_from_slice(extra);
        let r = run_in(tmp.path(), &args);
        assert!(r.code == 0 || r.code == 1, "{r:?}");
        (r.code, r.json())
    };
    let check = |v: &serde_json::Value, from: i64, what: &str| -> bool {
        let slo = v["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "read-availability")
            .unwrap();
        let (total, bad) = expected(from);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        let got_total = slo["events_total"].as_f64().unwrap();
        let got_bad = slo["events_bad"].as_f64().unwrap();
        assert!(
            close(got_total, total),
            "{what}: total {got_total} vs {total}"
        );
        assert!(close(got_bad, bad), "{what}: bad {got_bad} vs {bad}");
        let allowed = 0.001 * total;
        let b = &slo["budget"];
        assert!(
            close(b["events_total"].as_f64().unwrap(), allowed),
            "{what}: {b}"
        );
        assert!(
            close(b["events_remaining"].as_f64().unwrap(), allowed - bad),
            "{what}: {b}"
        );
        assert!(
            close(b["remaining_ratio"].as_f64().unwrap(), 1.0 - bad / allowed),
            "{what}: {b}"
        );
        let window = (END - from) as f64;
        assert!(
            close(b["seconds_total"].as_f64().unwrap(), 0.001 * window),
            "{what}: {b}"
        );
        assert!(
            close(slo["sli"].as_f64().unwrap(), 1.0 - bad / total),
            "{what}: {slo}"
        );
        let breached = 1.0 - bad / total < 0.999;
        assert_eq!(slo["breached"], breached, "{what}");
        // the write SLO has no series at all: no SLI, not breached
        let write = v["slos"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "write-availability")
            .unwrap();
        assert_eq!(write["sli"], serde_json::Value::Null);
        breached
    };

    // the SLO's own 28-day window ending at the end of the data
    let (code, v) = report(&["--at", &END.to_string()]);
    let breached = check(&v, END - 28 * 86_400, "28d");
    assert_eq!(code, i32::from(breached));
    // calendar November 2026 (the reset and the day without traffic are in it)
    let (code, v) = report(&["--calendar", "2026-11", "--at", &END.to_string()]);
    let breached_nov = check(&v, NOVEMBER, "2026-11");
    assert_eq!(code, i32::from(breached_nov));
    assert_eq!(v["slos"][0]["window"], "calendar 2026-11");
    // the two windows differ in what they count, so the test tells them apart
    assert_ne!(expected(NOVEMBER), expected(END - 28 * 86_400));
    const { assert!(RESET > NOVEMBER && END - 9 * 86_400 > NOVEMBER) };
}
