//! Where a report's numbers come from: a Prometheus HTTP API (instant and
//! range queries of the same PromQL the rules use), or samples of a server's
//! `/metrics` taken over a while, from which counter deltas are computed.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::selector::{GaugeQuery, Selector};

/// A Prometheus server's HTTP API.
pub struct Prometheus {
    base: String,
    http: reqwest::blocking::Client,
}

impl Prometheus {
    pub fn new(url: &str) -> Result<Prometheus> {
        let base = url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::BadInput(format!(
                "--prometheus {url}: expected an http:// or https:// URL"
            )));
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(StdDuration::from_secs(60))
            .build()
            .map_err(|e| Error::Source {
                url: base.clone(),
                reason: e.to_string(),
            })?;
        Ok(Prometheus { base, http })
    }

    fn get(&self, path: &str, params: &[(&str, String)]) -> Result<Value> {
        let url = format!("{}{path}", self.base);
        let fail = |reason: String| Error::Source {
            url: url.clone(),
            reason,
        };
        let resp = self
            .http
            .get(&url)
            .query(params)
            .send()
            .map_err(|e| fail(format!("cannot reach Prometheus: {e}")))?;
        let status = resp.status();
        let body: Value = resp.json().map_err(|e| {
            fail(format!(
                "answered HTTP {status} with a body that is not JSON: {e}"
            ))
        })?;
        if body["status"] != "success" {
            let query = params
                .iter()
                .find(|(k, _)| *k == "query")
                .map(|(_, q)| format!(" to `{q}`"))
                .unwrap_or_default();
            return Err(fail(format!(
                "answered {}{query}: {}",
                body["errorType"].as_str().unwrap_or("an error"),
                body["error"].as_str().unwrap_or("(no message)")
            )));
        }
        Ok(body["data"].clone())
    }

    /// The single value of an instant query at `time` (None: empty result).
    pub fn scalar(&self, query: &str, time: i64) -> Result<Option<f64>> {
        let data = self.get(
            "/api/v1/query",
            &[("query", query.to_string()), ("time", time.to_string())],
        )?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        if result.len() > 1 {
            return Err(Error::Source {
                url: self.base.clone(),
                reason: format!(
                    "`{query}` returned {} series, expected at most one",
                    result.len()
                ),
            });
        }
        Ok(result
            .first()
            .and_then(|r| r["value"][1].as_str())
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|v| v.is_finite()))
    }

    /// `(time, value)` of a range query (the single series; empty: none).
    pub fn range(&self, query: &str, start: i64, end: i64, step: i64) -> Result<Vec<(i64, f64)>> {
        let data = self.get(
            "/api/v1/query_range",
            &[
                ("query", query.to_string()),
                ("start", start.to_string()),
                ("end", end.to_string()),
                ("step", step.to_string()),
            ],
        )?;
        let result = data["result"].as_array().cloned().unwrap_or_default();
        let Some(series) = result.first() else {
            return Ok(Vec::new());
        };
        Ok(series["values"]
            .as_array()
            .map(|vs| {
                vs.iter()
                    .filter_map(|v| {
                        let t = v[0].as_f64()? as i64;
                        let x = v[1].as_str()?.parse::<f64>().ok()?;
                        x.is_finite().then_some((t, x))
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// One scrape of `/metrics`: every series by name and labels.
#[derive(Debug, Clone)]
pub struct Scrape {
    /// Unix time of the scrape, in seconds (fractional).
    pub at: f64,
    pub series: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Parse the Prometheus text format; histogram buckets become
    /// `NAME_bucket{le="..."}` series spelled as the server spells them.
    pub fn parse(text: &str, at: f64) -> Result<Scrape> {
        let parsed = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .map_err(|e| Error::Source {
                url: "/metrics".into(),
                reason: format!("not the Prometheus text format: {e}"),
            })?;
        let mut series = Vec::new();
        for s in parsed.samples {
            let labels: BTreeMap<String, String> = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => series.push((s.metric, labels, v)),
                prometheus_parse::Value::Histogram(buckets) => {
                    for b in buckets {
                        let mut l = labels.clone();
                        let le = if b.less_than.is_infinite() {
                            "+Inf".to_string()
                        } else {
                            crate::spec::le_label(b.less_than)
                        };
                        l.insert("le".into(), le);
                        series.push((format!("{}_bucket", s.metric), l, b.count));
                    }
                }
                prometheus_parse::Value::Summary(_) => {}
            }
        }
        Ok(Scrape { at, series })
    }

    fn key(name: &str, labels: &BTreeMap<String, String>) -> String {
        let mut k = name.to_string();
        for (a, b) in labels {
            k.push('\u{0}');
            k.push_str(a);
            k.push('=');
            k.push_str(b);
        }
        k
    }

    /// The sum over matching series of each one's value.
    pub fn sum(&self, sel: &Selector) -> Option<f64> {
        let mut any = false;
        let mut total = 0.0;
        for (name, labels, v) in &self.series {
            if sel.matches(name, labels) {
                any = true;
                total += v;
            }
        }
        any.then_some(total)
    }

    /// The largest (`max`) or smallest value of the series `sel` matches.
    pub fn extreme(&self, sel: &Selector, max: bool) -> Option<f64> {
        self.series
            .iter()
            .filter(|(name, labels, _)| sel.matches(name, labels))
            .map(|s| s.2)
            .reduce(|a, b| if (a < b) == max { b } else { a })
    }

    /// The gauge query as the rules aggregate it (see `promql`): the age of
    /// the newest timestamp, else the value at its worst for `upper` bounds.
    pub fn gauge(&self, q: &GaugeQuery, upper: bool) -> Option<f64> {
        match q {
            GaugeQuery::Age(s) => self.extreme(s, true).map(|v| self.at - v),
            GaugeQuery::Value(s) => self.extreme(s, upper),
        }
    }
}

/// The increase of the counters `sel` matches across consecutive scrapes,
/// counting a drop as a restart from zero (as Prometheus' `increase` does).
pub fn increase(scrapes: &[Scrape], sel: &Selector) -> Option<f64> {
    let mut prev: BTreeMap<String, f64> = BTreeMap::new();
    let mut seen = false;
    let mut total = 0.0;
    for (i, s) in scrapes.iter().enumerate() {
        for (name, labels, v) in &s.series {
            if !sel.matches(name, labels) {
                continue;
            }
            seen = true;
            let key = Scrape::key(name, labels);
            match prev.get(&key) {
                Some(p) if v >= p => total += v - p,
                Some(_) => total += v, // counter reset
                // a series first seen after the first scrape started from zero in between
                None if i > 0 => total += v,
                None => {}
            }
            prev.insert(key, *v);
        }
    }
    seen.then_some(total)
}

/// Take `/metrics` from `url` every `interval` for `duration`.
pub fn sample(url: &str, duration: StdDuration, interval: StdDuration) -> Result<Vec<Scrape>> {
    let http = reqwest::blocking::Client::builder()
        .timeout(StdDuration::from_secs(30))
        .build()
        .map_err(|e| Error::Source {
            url: url.into(),
            reason: e.to_string(),
        })?;
    let fetch = || -> Result<Scrape> {
        let fail = |reason: String| Error::Source {
            url: url.into(),
            reason,
        };
        let resp = http
            .get(url)
            .send()
            .map_err(|e| fail(format!("cannot scrape: {e}")))?;
        if !resp.status().is_success() {
            return Err(fail(format!("answered HTTP {}", resp.status())));
        }
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        let text = resp.text().map_err(|e| fail(e.to_string()))?;
        Scrape::parse(&text, at)
    };
    let start = std::time::Instant::now();
    let mut out = vec![fetch()?];
    let mut next = interval;
    while next <= duration {
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
        out.push(fetch()?);
        next += interval;
    }
    Ok(out)
}
