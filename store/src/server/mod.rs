//! `qg serve`: the store as a multi-user HTTP/JSON service.
//!
//! The parts every build has (the `qg token` and `qg branch protect` commands
//! use them): [`tokens`] (API tokens: created once, stored only as a SHA-256
//! hash), [`roles`] (reader < writer < maintainer < admin, per namespace) and
//! [`protect`] (protected branches). With the `server` feature: the axum
//! application ([`serve`]), its routes, authentication middleware, error
//! mapping, Prometheus metrics and the OpenAPI document.
//!
//! Every handler calls the same library functions as the CLI
//! ([`crate::commands`], [`crate::Store`]); store work runs on tokio's
//! blocking pool with one [`crate::Store`] (one SQLite connection) per task,
//! taken from a small pool whose stores share decoded tree nodes. Point
//! lookups (graph and subject fixed, few matches) on plaintext namespaces run
//! on the async worker instead, skipping the hand-off to the blocking pool.

pub mod protect;
pub mod roles;
pub mod tokens;

#[cfg(feature = "server")]
mod app;
#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
mod errors;
#[cfg(feature = "server")]
mod metrics;
#[cfg(feature = "server")]
pub mod openapi;
#[cfg(feature = "server")]
mod routes;

#[cfg(feature = "server")]
pub use app::{serve, ServeOptions};
/// The latency histogram's bucket bounds (`qg-slo` checks latency SLIs against them).
#[cfg(feature = "server")]
pub use metrics::LATENCY_BUCKETS;
