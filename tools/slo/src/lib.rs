//! # qg-slo
//!
//! Service-level objectives for QuadGit, as a library (the `qg-slo` binary
//! is a thin shell over it): OpenSLO v1 specs ([`spec`]), checked by
//! [`validate()`]; Prometheus recording and multi-window, multi-burn-rate
//! alerting rules with Sloth's names ([`generate()`]); and error-budget
//! reports from a Prometheus or from a server's `/metrics` ([`report()`],
//! rendered by [`render`]). Nothing here prints or exits.
//!
//! ```
//! use qg_slo::spec;
//!
//! let yaml = r#"
//! apiVersion: openslo/v1
//! kind: SLO
//! metadata:
//!   name: read-availability
//! spec:
//!   service: quadgit
//!   indicator:
//!     spec:
//!       ratioMetric:
//!         counter: true
//!         bad:
//!           metricSource:
//!             type: Prometheus
//!             spec:
//!               query: qg_http_requests_total{method="GET",status=~"5.."}
//!         total:
//!           metricSource:
//!             type: Prometheus
//!             spec:
//!               query: qg_http_requests_total{method="GET"}
//!   timeWindow:
//!     - duration: 28d
//!       isRolling: true
//!   budgetingMethod: Occurrences
//!   objectives:
//!     - target: 0.999
//! "#;
//! let slos = spec::load_str("read.yaml".as_ref(), yaml)?;
//! assert_eq!(slos[0].name, "read-availability");
//! assert!((slos[0].error_budget() - 0.001).abs() < 1e-12);
//! let (rules, ..) = qg_slo::generate::rules_yaml(&slos)?;
//! assert!(rules.contains("record: slo:sli_error:ratio_rate5m"));
//! # Ok::<(), qg_slo::Error>(())
//! ```

pub mod audit;
pub mod burn;
pub mod calendar;
pub mod duration;
pub mod error;
pub mod generate;
pub mod promql;
pub mod render;
pub mod report;
pub mod selector;
pub mod source;
pub mod spec;
pub mod validate;

pub use error::{Error, Result};
pub use generate::{generate, GenerateOptions, Generated};
pub use report::{report, Report, ReportOptions, Source};
pub use validate::{validate, ValidateOptions, Validated};
