//! The PromQL an SLI may name: one instant-vector selector
//! (`metric{label="v",other=~"re"}`), and for a gauge threshold also
//! `time() - selector` (an age). Parsed so that `validate` can check what a
//! query reads (a histogram's `le` bucket), `generate` can wrap it in
//! `rate(...)`, and `report --metrics-url` can evaluate it on a scrape
//! without a Prometheus.

use std::collections::BTreeMap;
use std::fmt;

use regex::Regex;

/// How a label matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchOp {
    Eq,
    Ne,
    Re,
    NotRe,
}

impl MatchOp {
    fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Ne => "!=",
            MatchOp::Re => "=~",
            MatchOp::NotRe => "!~",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub label: String,
    pub op: MatchOp,
    pub value: String,
    /// Anchored as Prometheus anchors label regexes (`^(?:re)$`).
    regex: Option<Regex>,
}

impl Matcher {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match (self.op, &self.regex) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Ne, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::NotRe, Some(re)) => !re.is_match(v),
            _ => false,
        }
    }
}

/// `metric{matchers}`.
#[derive(Debug, Clone)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<Matcher>,
}

impl Selector {
    /// The value of an equality matcher on `label`, if there is one.
    pub fn label_eq(&self, label: &str) -> Option<&str> {
        self.matchers
            .iter()
            .find(|m| m.label == label && m.op == MatchOp::Eq)
            .map(|m| m.value.as_str())
    }

    /// Does a sample with this name and these labels belong to the selector?
    pub fn matches(&self, metric: &str, labels: &BTreeMap<String, String>) -> bool {
        metric == self.metric
            && self
                .matchers
                .iter()
                .all(|m| m.matches(labels.get(&m.label).map(String::as_str)))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.metric)?;
        if !self.matchers.is_empty() {
            f.write_str("{")?;
            for (i, m) in self.matchers.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{}{}{}", m.label, m.op.as_str(), quote(&m.value))?;
            }
            f.write_str("}")?;
        }
        Ok(())
    }
}

/// A PromQL string literal.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// What a gauge threshold reads: the gauge itself or its age.
#[derive(Debug, Clone)]
pub enum GaugeQuery {
    Value(Selector),
    /// `time() - selector`: seconds since the timestamp the gauge holds.
    Age(Selector),
}

impl GaugeQuery {
    pub fn parse(text: &str) -> Result<GaugeQuery, String> {
        let t = text.trim();
        if let Some(rest) = t.strip_prefix("time()") {
            let rest = rest.trim_start();
            let Some(sel) = rest.strip_prefix('-') else {
                return Err(format!(
                    "`{t}`: expected `time() - metric{{...}}` or a selector"
                ));
            };
            return Ok(GaugeQuery::Age(parse(sel)?));
        }
        parse(t).map(GaugeQuery::Value)
    }

    pub fn selector(&self) -> &Selector {
        match self {
            GaugeQuery::Value(s) | GaugeQuery::Age(s) => s,
        }
    }
}

impl fmt::Display for GaugeQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GaugeQuery::Value(s) => write!(f, "{s}"),
            GaugeQuery::Age(s) => write!(f, "time() - {s}"),
        }
    }
}

/// Parse one instant-vector selector; the error says what is wrong and where.
pub fn parse(text: &str) -> Result<Selector, String> {
    let t = text.trim();
    let chars: Vec<char> = t.chars().collect();
    let mut i = 0;
    let ident = |i: &mut usize, metric: bool| -> String {
        let start = *i;
        while *i < chars.len() {
            let c = chars[*i];
            let ok = c.is_ascii_alphabetic()
                || c == '_'
                || (metric && c == ':')
                || (*i > start && c.is_ascii_digit());
            if !ok {
                break;
            }
            *i += 1;
        }
        chars[start..*i].iter().collect()
    };
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    let expected = |what: &str, i: usize| {
        format!(
            "`{t}` is not a Prometheus selector `metric{{label=\"value\",...}}`: expected {what} at character {}",
            i + 1
        )
    };
    let metric = ident(&mut i, true);
    if metric.is_empty() {
        return Err(expected("a metric name", i));
    }
    let mut matchers = Vec::new();
    skip_ws(&mut i);
    if i < chars.len() && chars[i] == '{' {
        i += 1;
        loop {
            skip_ws(&mut i);
            if i < chars.len() && chars[i] == '}' {
                i += 1;
                break;
            }
            let label = ident(&mut i, false);
            if label.is_empty() {
                return Err(expected("a label name or `}`", i));
            }
            skip_ws(&mut i);
            let op = match (chars.get(i), chars.get(i + 1)) {
                (Some('='), Some('~')) => MatchOp::Re,
                (Some('!'), Some('=')) => MatchOp::Ne,
                (Some('!'), Some('~')) => MatchOp::NotRe,
                (Some('='), _) => MatchOp::Eq,
                _ => return Err(expected("one of = != =~ !~", i)),
            };
            i += if op == MatchOp::Eq { 1 } else { 2 };
            skip_ws(&mut i);
            let quote_char = match chars.get(i) {
                Some(&q @ ('"' | '\'')) => q,
                _ => return Err(expected("a quoted value", i)),
            };
            i += 1;
            let mut value = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(expected("the closing quote", i)),
                    Some('\\') => {
                        let esc = chars.get(i + 1).ok_or_else(|| expected("an escape", i))?;
                        value.push(match esc {
                            'n' => '\n',
                            't' => '\t',
                            c => *c,
                        });
                        i += 2;
                    }
                    Some(&c) if c == quote_char => {
                        i += 1;
                        break;
                    }
                    Some(&c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
            let regex = match op {
                MatchOp::Re | MatchOp::NotRe => {
                    Some(Regex::new(&format!("^(?:{value})$")).map_err(|e| {
                        format!("`{t}`: label {label}: bad regular expression `{value}`: {e}")
                    })?)
                }
                _ => None,
            };
            matchers.push(Matcher {
                label,
                op,
                value,
                regex,
            });
            skip_ws(&mut i);
            match chars.get(i) {
                Some(',') => i += 1,
                Some('}') => {
                    i += 1;
                    break;
                }
                _ => return Err(expected("`,` or `}`", i)),
            }
        }
    }
    skip_ws(&mut i);
    if i < chars.len() {
        return Err(format!(
            "`{t}`: only a selector `metric{{...}}` is supported here (qg-slo wraps it in rate/increase itself); unexpected `{}` at character {}",
            chars[i..].iter().collect::<String>(),
            i + 1
        ));
    }
    Ok(Selector { metric, matchers })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_matches_and_prints_selectors() {
        let s = parse(r#"qg_http_requests_total{route=~"/v1/ns/:ns/(query|export)", status!~"5..",method="GET"}"#).unwrap();
        assert_eq!(s.metric, "qg_http_requests_total");
        assert_eq!(s.label_eq("method"), Some("GET"));
        let labels = |status: &str, route: &str| {
            BTreeMap::from([
                ("method".to_string(), "GET".to_string()),
                ("route".to_string(), route.to_string()),
                ("status".to_string(), status.to_string()),
            ])
        };
        assert!(s.matches("qg_http_requests_total", &labels("200", "/v1/ns/:ns/query")));
        assert!(!s.matches("qg_http_requests_total", &labels("503", "/v1/ns/:ns/query")));
        assert!(!s.matches(
            "qg_http_requests_total",
            &labels("200", "/v1/ns/:ns/query2")
        ));
        assert_eq!(
            s.to_string(),
            r#"qg_http_requests_total{route=~"/v1/ns/:ns/(query|export)",status!~"5..",method="GET"}"#
        );
        assert_eq!(parse("up").unwrap().to_string(), "up");
        for bad in [
            "",
            "rate(x[5m])",
            "x{a}",
            "x{a=b}",
            "x{a=\"b\"",
            "x{a=~\"(\"}",
            "sum(x)",
            "x > 1",
        ] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
        assert!(matches!(
            GaugeQuery::parse("time() - qg_backup_last_success_timestamp_seconds").unwrap(),
            GaugeQuery::Age(_)
        ));
    }
}
