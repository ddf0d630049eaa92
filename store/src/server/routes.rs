//! The HTTP routes. Each handler names what it needs (namespace and role),
//! then calls the same library function as the matching CLI command, on the
//! blocking pool (point lookups: on the async worker), as the authenticated
//! user. Read-only handlers use [`App::read`], the others [`App::call`].

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use zeroize::Zeroizing;

use crate::commands::{branch, commit, diff, export, log, merge, query};
use crate::id::ObjectId;
use crate::rdf::{self, Format, Source};
use crate::server::app::{self, App, AppState, ServeOptions};
use crate::server::auth::{Caller, Need};
use crate::server::errors::ApiError;
use crate::server::metrics::NsLabels;
use crate::server::protect;
use crate::server::roles::{Principal, Role};
use crate::server::tokens;
use crate::storage::ApiTokenRow;
use crate::store::NamespaceOptions;
use crate::tree::Change;
use crate::{audit, refs};

// ---------- extractors that answer with the JSON error body ----------

/// A JSON request body: bad JSON → 400, too large → 413.
pub struct J<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for J<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::rejected(e.status(), "request body", e.body_text()))?;
        serde_json::from_slice(&bytes)
            .map(J)
            .map_err(|e| ApiError::bad_request(format!("bad JSON body: {e}")))
    }
}

/// Query parameters: malformed → 400.
pub struct Q<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(t)| Q(t))
            .map_err(|e| ApiError::rejected(e.status(), "query string", e.body_text()))
    }
}

/// Path parameters (percent-decoded, so `feature%2Fx` is branch `feature/x`): malformed → 400.
pub struct P<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for P<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(t)| P(t))
            .map_err(|e| ApiError::rejected(e.status(), "path", e.body_text()))
    }
}

// ---------- the router ----------

pub fn router(app: AppState, opts: &ServeOptions) -> Router {
    let v1 = Router::new()
        .route("/v1/whoami", get(whoami))
        .route("/v1/ns", get(list_namespaces).post(create_namespace))
        .route("/v1/ns/{ns}", axum::routing::delete(delete_namespace))
        .route(
            "/v1/ns/{ns}/branches",
            get(list_branches).post(create_branch),
        )
        .route(
            "/v1/ns/{ns}/branches/{branch}",
            axum::routing::delete(delete_branch),
        )
        .route(
            "/v1/ns/{ns}/branches/{branch}/protection",
            put(protect_branch).delete(unprotect_branch),
        )
        .route("/v1/ns/{ns}/tags", get(list_tags).post(create_tag))
        .route("/v1/ns/{ns}/commits", get(log_commits).post(create_commit))
        .route("/v1/ns/{ns}/commits/{reference}", get(show_commit))
        .route("/v1/ns/{ns}/diff", get(diff_refs))
        .route("/v1/ns/{ns}/merges", post(merge_refs))
        .route("/v1/ns/{ns}/export", get(export_ref))
        .route("/v1/ns/{ns}/query", get(query_pattern))
        .route("/v1/unlock", post(unlock))
        .route("/v1/audit", get(audit_log))
        .route("/v1/tokens", get(list_tokens).post(create_token))
        .route("/v1/tokens/{id}", axum::routing::delete(revoke_token));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi_json))
        .merge(v1)
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            app::track,
        ))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(opts.max_body_bytes))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            opts.request_timeout,
        ))
        .with_state(app)
}

async fn not_found(State(app): State<AppState>, req: Request) -> ApiError {
    let start = Instant::now();
    let e = ApiError::not_found(format!(
        "no route for {} {}",
        req.method(),
        req.uri().path()
    ));
    app::record(
        &app,
        req.method().as_str(),
        "unmatched",
        req.uri().path(),
        e.status,
        start,
    );
    e
}

// ---------- response and request bodies ----------

#[derive(Serialize, ToSchema)]
pub struct Health {
    /// `ok`
    pub status: String,
}

#[derive(Serialize, ToSchema)]
pub struct Ready {
    /// `ready` or `not ready`
    pub status: String,
    /// The store opens and is a QuadGit store of a supported format.
    pub store: bool,
    /// The data directory and database file are writable.
    pub writable: bool,
    /// The server's tables exist (migration done).
    pub migrated: bool,
    /// The server is shutting down.
    pub shutting_down: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceInfo {
    pub name: String,
    pub created: String,
    pub encrypted: bool,
    pub password_protected: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNamespace {
    /// Letters, digits and `._-/`.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Encrypt at rest under the server's master key.
    #[serde(default)]
    pub encrypted: bool,
    /// Also require this password (implies `encrypted`).
    #[serde(default)]
    pub password: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct NamespaceCreated {
    pub name: String,
    /// The root commit of its `main` branch.
    pub commit: String,
}

#[derive(Serialize, ToSchema)]
pub struct Deleted {
    pub deleted: String,
}

#[derive(Serialize, ToSchema)]
pub struct RefOut {
    pub name: String,
    /// Commit id (64 hex digits).
    pub target: String,
    /// The namespace's default branch.
    pub default: bool,
    /// Writers may not commit to it (always false for tags).
    pub protected: bool,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBranch {
    /// Letters, digits and `._-/`.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Ref to start from (default: the default branch).
    #[serde(default)]
    pub from: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTag {
    /// Letters, digits and `._-/`.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// Ref to tag (default: the default branch).
    #[serde(default, rename = "ref")]
    pub reference: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct BranchDeleted {
    pub deleted: String,
    /// Where it pointed.
    pub was: String,
}

#[derive(Serialize, ToSchema)]
pub struct Protection {
    pub ns: String,
    pub branch: String,
    pub protected: bool,
    /// False when it already was in that state.
    pub changed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CommitOut {
    pub id: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub author: String,
    pub time: String,
    pub message: String,
    pub quads: u64,
    pub generation: u64,
}

impl From<log::LogEntry> for CommitOut {
    fn from(e: log::LogEntry) -> Self {
        CommitOut {
            id: e.id.to_hex(),
            tree: e.commit.tree.to_hex(),
            parents: e.commit.parents.iter().map(ObjectId::to_hex).collect(),
            author: e.commit.author,
            time: e.commit.time,
            message: e.commit.message,
            quads: e.commit.quads,
            generation: e.commit.generation,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ShowOut {
    #[serde(flatten)]
    pub commit: CommitOut,
    /// Quads added relative to the first parent.
    pub added: u64,
    pub removed: u64,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// Where to start (default: the default branch).
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub reference: Option<String>,
    /// At most this many commits (default 100).
    #[param(minimum = 1, maximum = 1_000_000_000)]
    pub limit: Option<u32>,
}

/// RDF syntax of `add` and `remove`.
#[derive(Deserialize, ToSchema, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum RdfFormat {
    Nquads,
    Ntriples,
    Trig,
    Turtle,
}

impl From<RdfFormat> for Format {
    fn from(f: RdfFormat) -> Format {
        match f {
            RdfFormat::Nquads => Format::NQuads,
            RdfFormat::Ntriples => Format::NTriples,
            RdfFormat::Trig => Format::TriG,
            RdfFormat::Turtle => Format::Turtle,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Branch to commit on (default: the namespace's default branch).
    #[serde(default)]
    pub branch: Option<String>,
    pub message: String,
    /// Author (default: the token's user).
    #[serde(default)]
    pub author: Option<String>,
    /// Quads to add, as RDF text (N-Quads unless `format` says otherwise).
    #[serde(default)]
    pub add: String,
    /// Quads to remove, as RDF text.
    #[serde(default)]
    pub remove: String,
    #[serde(default)]
    pub format: Option<RdfFormat>,
    /// Compare-and-swap: fail with 409 unless the branch is at this commit (id, prefix or ref).
    #[serde(default)]
    pub expected_parent: Option<String>,
    /// Make a commit even when nothing changes.
    #[serde(default)]
    pub allow_empty: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CommitCreated {
    pub ns: String,
    pub branch: String,
    /// The new commit id.
    pub commit: String,
    pub parent: String,
    pub added: u64,
    pub removed: u64,
    /// Quads on the branch after the commit.
    pub quads: u64,
    pub objects_written: u64,
    pub bytes_written: u64,
    /// Failures of post-commit / post-receive hooks (the commit stands).
    pub hook_warnings: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DiffParams {
    pub from: String,
    pub to: String,
    /// Only counts, no quads.
    #[serde(default)]
    pub stat: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DiffChange {
    /// `+` added, `-` removed.
    pub op: String,
    /// The quad as an N-Quads line.
    pub quad: String,
}

#[derive(Serialize, ToSchema)]
pub struct DiffOut {
    pub from: String,
    pub to: String,
    pub added: u64,
    pub removed: u64,
    /// The changes in key order (absent with `stat=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<DiffChange>>,
}

/// How conflicting groups are settled.
#[derive(Deserialize, ToSchema, Clone, Copy, Default)]
#[serde(rename_all = "kebab-case")]
pub enum StrategyName {
    #[default]
    ThreeWay,
    Ours,
    Theirs,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MergeRequest {
    /// Ref to merge from.
    pub source: String,
    /// Branch to merge into (default: the default branch).
    #[serde(default)]
    pub into: Option<String>,
    #[serde(default)]
    pub strategy: Option<StrategyName>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MergeOut {
    pub ns: String,
    pub into: String,
    /// `up-to-date`, `fast-forward` or `merged`.
    pub kind: String,
    /// The target's new head.
    pub commit: String,
    pub base: Option<String>,
    pub added: u64,
    pub removed: u64,
    pub resolved_conflicts: u64,
    pub hook_warnings: Vec<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ExportParams {
    /// Ref to export (default: the default branch).
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub reference: Option<String>,
    /// Only this named graph (IRI).
    pub graph: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct QueryParams {
    /// Ref to query (default: the default branch).
    #[serde(rename = "ref")]
    #[param(rename = "ref")]
    pub reference: Option<String>,
    /// Subject: an N-Triples term, `?var` or `*` (default `*`).
    pub s: Option<String>,
    /// Predicate: an N-Triples term, `?var` or `*`.
    pub p: Option<String>,
    /// Object: an N-Triples term, `?var` or `*`.
    pub o: Option<String>,
    /// Graph: an IRI term, `?var` or `*`.
    pub g: Option<String>,
    /// Stop after this many matches.
    #[param(minimum = 1, maximum = 1_000_000_000)]
    pub limit: Option<u32>,
}

#[derive(Serialize, ToSchema)]
pub struct MatchOut {
    /// The quad as an N-Quads line (without the newline).
    pub quad: String,
    /// Variable name (without `?`) to term.
    pub bindings: BTreeMap<String, String>,
}

#[derive(Serialize, ToSchema)]
pub struct QueryOut {
    pub count: u64,
    pub matches: Vec<MatchOut>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only entries at or after this time: RFC 3339, YYYY-MM-DD, or an age like 24h.
    pub since: Option<String>,
    /// Only entries of this namespace (needed for namespace-scoped admin tokens).
    pub ns: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AuditEntryOut {
    pub seq: i64,
    pub time: String,
    pub actor: String,
    pub action: String,
    pub ns: Option<String>,
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub prev: String,
    pub hash: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UnlockRequest {
    pub ns: String,
    pub password: String,
    /// Token lifetime in seconds (default 900, at most 86400).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct UnlockOut {
    pub ns: String,
    /// Send as `X-QG-Unlock-Token` to open the namespace until it expires.
    pub token: String,
    pub expires_in_secs: u64,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Who the token acts as (no control characters).
    #[schema(min_length = 1, max_length = 200)]
    pub user: String,
    pub role: Role,
    /// Limit to this namespace (default: every namespace).
    #[serde(default)]
    pub ns: Option<String>,
    /// Lifetime in seconds (default: until revoked).
    #[serde(default, deserialize_with = "whole_number")]
    #[schema(minimum = 1, maximum = 3_153_600_000_u64)]
    pub expires_in_secs: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct TokenCreated {
    /// The token: shown once, never stored.
    pub token: String,
    #[serde(flatten)]
    pub info: ApiTokenRow,
}

/// A non-negative whole number, also when written `5.0` (JSON Schema's `integer` allows it).
fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n: Option<serde_json::Number> = Option::deserialize(d)?;
    match n {
        None => Ok(None),
        Some(n) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| {
                serde::de::Error::custom(format!("expected a non-negative whole number, found {n}"))
            }),
    }
}

/// Times a commit without `expected_parent` is retried after another writer moved the branch.
const COMMIT_RETRIES: u32 = 5;
/// Largest `limit` accepted (as documented).
const MAX_LIMIT: u64 = 1_000_000_000;
/// Longest token lifetime accepted over HTTP: 100 years.
const MAX_TOKEN_SECS: u64 = 3_153_600_000;

/// `limit` must be between 1 and [`MAX_LIMIT`] when given.
fn positive_limit<T: Copy + Into<u64>>(limit: Option<T>) -> Result<Option<T>, ApiError> {
    match limit {
        Some(l) if !(1..=MAX_LIMIT).contains(&l.into()) => Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        ))),
        l => Ok(l),
    }
}

// ---------- health, metrics, document ----------

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "The process is up", body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
    })
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready to serve", body = Ready),
        (status = 503, description = "Not ready", body = Ready)))]
pub async fn readyz(State(app): State<AppState>) -> (StatusCode, Json<Ready>) {
    let shutting_down = app.shutting_down.load(std::sync::atomic::Ordering::SeqCst);
    let probe = app
        .run_open(|store| {
            let migrated = store.db().has_server_tables()?;
            let writable = writable(store.dir()) && writable(store.db().path());
            Ok((migrated, writable))
        })
        .await;
    let ready = match probe {
        Ok((migrated, writable)) => Ready {
            status: String::new(),
            store: true,
            writable,
            migrated,
            shutting_down,
            error: None,
        },
        Err(e) => Ready {
            status: String::new(),
            store: false,
            writable: false,
            migrated: false,
            shutting_down,
            error: Some(e.message),
        },
    };
    let ok = ready.store && ready.writable && ready.migrated && !shutting_down;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Ready {
            status: if ok { "ready" } else { "not ready" }.into(),
            ..ready
        }),
    )
}

fn writable(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: access(2) on a NUL-terminated path.
    unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus metrics: OpenMetrics text when `Accept` asks for it, else the Prometheus text format",
        content((String = "text/plain"), (String = "application/openmetrics-text")))))]
pub async fn metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let open = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let m = app.metrics.clone();
    let text = app
        .run_open(move |store| {
            m.refresh_store_stats(store)?;
            Ok(if open {
                m.encode()
            } else {
                m.encode_prometheus()
            })
        })
        .await?;
    let content_type = if open {
        super::metrics::OPENMETRICS
    } else {
        super::metrics::PROMETHEUS_TEXT
    };
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))],
        text,
    )
        .into_response())
}

#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn openapi_json() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let doc = DOC.get_or_init(super::openapi::document);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc.clone(),
    )
        .into_response()
}

// ---------- who am I, namespaces ----------

#[utoipa::path(get, path = "/v1/whoami", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "The caller's token", body = Principal)))]
pub async fn whoami(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Principal>, ApiError> {
    app.call(caller, Need::any(), |_, p| Ok(Json(p.clone())))
        .await
}

#[utoipa::path(get, path = "/v1/ns", tag = "namespaces", security(("bearer" = [])),
    responses((status = 200, description = "Namespaces the token may see", body = [NamespaceInfo])))]
pub async fn list_namespaces(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<NamespaceInfo>>, ApiError> {
    app.call(caller, Need::any(), |store, p| {
        let mut out = Vec::new();
        for (name, created) in store.db().namespaces()? {
            if !p.sees(&name) {
                continue;
            }
            let rec = store.crypto_record(&name)?;
            out.push(NamespaceInfo {
                encrypted: rec.is_some(),
                password_protected: rec.is_some_and(|r| r.password.is_some()),
                name,
                created,
            });
        }
        Ok(Json(out))
    })
    .await
}

#[utoipa::path(post, path = "/v1/ns", tag = "namespaces", security(("bearer" = [])),
    request_body = CreateNamespace,
    responses((status = 201, description = "Created", body = NamespaceCreated),
        (status = 409, description = "It exists", body = super::errors::ErrorBody)))]
pub async fn create_namespace(
    State(app): State<AppState>,
    caller: Caller,
    J(body): J<CreateNamespace>,
) -> Result<(StatusCode, Json<NamespaceCreated>), ApiError> {
    app.call(caller, Need::store(Role::Admin), move |store, _| {
        let opts = NamespaceOptions {
            encrypted: body.encrypted,
            password: body.password.map(Zeroizing::new),
            kdf: None,
        };
        let root = store.create_namespace_with(&body.name, &opts)?;
        Ok((
            StatusCode::CREATED,
            Json(NamespaceCreated {
                name: body.name,
                commit: root.to_hex(),
            }),
        ))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/ns/{ns}", tag = "namespaces", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, description = "Deleted with all its data", body = Deleted)))]
pub async fn delete_namespace(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
) -> Result<Json<Deleted>, ApiError> {
    app.call(caller, Need::ns(&ns, Role::Admin), move |store, _| {
        store.delete_namespace(&ns)?;
        Ok(Json(Deleted { deleted: ns }))
    })
    .await
}

// ---------- refs ----------

fn ref_out(
    store: &crate::Store,
    ns: &str,
    r: branch::RefInfo,
    branch: bool,
) -> crate::Result<RefOut> {
    let protected = branch && protect::protected(store, ns)?.contains(&r.name);
    Ok(RefOut {
        name: r.name,
        target: r.target.to_hex(),
        default: r.default,
        protected,
    })
}

#[utoipa::path(get, path = "/v1/ns/{ns}/branches", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, description = "Branches by name", body = [RefOut])))]
pub async fn list_branches(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
) -> Result<Json<Vec<RefOut>>, ApiError> {
    app.read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        let protected = protect::protected(store, &ns)?;
        Ok(Json(
            branch::branches(store, &ns)?
                .into_iter()
                .map(|r| RefOut {
                    protected: protected.contains(&r.name),
                    name: r.name,
                    target: r.target.to_hex(),
                    default: r.default,
                })
                .collect(),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/v1/ns/{ns}/branches", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    request_body = CreateBranch,
    responses((status = 201, description = "Created", body = RefOut),
        (status = 409, description = "It exists", body = super::errors::ErrorBody)))]
pub async fn create_branch(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    J(body): J<CreateBranch>,
) -> Result<(StatusCode, Json<RefOut>), ApiError> {
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let r = branch::create_branch(store, &ns, &body.name, body.from.as_deref())?;
        Ok((StatusCode::CREATED, Json(ref_out(store, &ns, r, true)?)))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/ns/{ns}/branches/{branch}", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"),
        ("branch" = String, Path, description = "Branch (encode `/` as %2F)")),
    responses((status = 200, description = "Deleted", body = BranchDeleted),
        (status = 409, description = "It is the default branch", body = super::errors::ErrorBody)))]
pub async fn delete_branch(
    State(app): State<AppState>,
    caller: Caller,
    P((ns, name)): P<(String, String)>,
) -> Result<Json<BranchDeleted>, ApiError> {
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let was = branch::delete_branch(store, &ns, &name)?;
        Ok(Json(BranchDeleted {
            deleted: name,
            was: was.to_hex(),
        }))
    })
    .await
}

#[utoipa::path(put, path = "/v1/ns/{ns}/branches/{branch}/protection", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"),
        ("branch" = String, Path, description = "Branch (encode `/` as %2F)")),
    responses((status = 200, description = "Protected: writers may no longer commit to it", body = Protection)))]
pub async fn protect_branch(
    State(app): State<AppState>,
    caller: Caller,
    P((ns, name)): P<(String, String)>,
) -> Result<Json<Protection>, ApiError> {
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let changed = protect::protect(store, &ns, &name)?;
        Ok(Json(Protection {
            ns,
            branch: name,
            protected: true,
            changed,
        }))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/ns/{ns}/branches/{branch}/protection", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"),
        ("branch" = String, Path, description = "Branch (encode `/` as %2F)")),
    responses((status = 200, description = "No longer protected", body = Protection)))]
pub async fn unprotect_branch(
    State(app): State<AppState>,
    caller: Caller,
    P((ns, name)): P<(String, String)>,
) -> Result<Json<Protection>, ApiError> {
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let changed = protect::unprotect(store, &ns, &name)?;
        Ok(Json(Protection {
            ns,
            branch: name,
            protected: false,
            changed,
        }))
    })
    .await
}

#[utoipa::path(get, path = "/v1/ns/{ns}/tags", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    responses((status = 200, description = "Tags by name", body = [RefOut])))]
pub async fn list_tags(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
) -> Result<Json<Vec<RefOut>>, ApiError> {
    app.read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        Ok(Json(
            branch::tags(store, &ns)?
                .into_iter()
                .map(|r| RefOut {
                    name: r.name,
                    target: r.target.to_hex(),
                    default: false,
                    protected: false,
                })
                .collect(),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/v1/ns/{ns}/tags", tag = "refs", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    request_body = CreateTag,
    responses((status = 201, description = "Created", body = RefOut),
        (status = 409, description = "It exists", body = super::errors::ErrorBody)))]
pub async fn create_tag(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    J(body): J<CreateTag>,
) -> Result<(StatusCode, Json<RefOut>), ApiError> {
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let r = branch::create_tag(store, &ns, &body.name, body.reference.as_deref())?;
        Ok((StatusCode::CREATED, Json(ref_out(store, &ns, r, false)?)))
    })
    .await
}

// ---------- commits ----------

#[utoipa::path(get, path = "/v1/ns/{ns}/commits", tag = "commits", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"), LogParams),
    responses((status = 200, description = "History, newest first", body = [CommitOut])))]
pub async fn log_commits(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    Q(q): Q<LogParams>,
) -> Result<Json<Vec<CommitOut>>, ApiError> {
    let limit = positive_limit(q.limit)?.unwrap_or(100) as usize;
    app.read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        let entries = log::log(
            store,
            &log::LogOptions {
                ns,
                reference: q.reference,
                limit: Some(limit),
            },
        )?;
        Ok(Json(entries.into_iter().map(CommitOut::from).collect()))
    })
    .await
}

#[utoipa::path(get, path = "/v1/ns/{ns}/commits/{reference}", tag = "commits", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"),
        ("reference" = String, Path, description = "Branch, tag, commit id or prefix, optionally `~N`")),
    responses((status = 200, description = "One commit", body = ShowOut)))]
pub async fn show_commit(
    State(app): State<AppState>,
    caller: Caller,
    P((ns, reference)): P<(String, String)>,
) -> Result<Json<ShowOut>, ApiError> {
    app.read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        let r = log::show(store, &log::ShowOptions { ns, reference })?;
        Ok(Json(ShowOut {
            commit: r.entry.into(),
            added: r.added,
            removed: r.removed,
        }))
    })
    .await
}

#[utoipa::path(post, path = "/v1/ns/{ns}/commits", tag = "commits", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    request_body = CommitRequest,
    responses((status = 201, description = "Committed", body = CommitCreated,
            headers(("location" = String, description = "The new commit"))),
        (status = 409, description = "The branch is not at `expected_parent`", body = super::errors::ErrorBody),
        (status = 422, description = "The pre-commit hook rejected it (its stderr in `details.stderr`)", body = super::errors::ErrorBody)))]
pub async fn create_commit(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    J(body): J<CommitRequest>,
) -> Result<Response, ApiError> {
    let metrics = app.metrics.clone();
    let locks = app.clone();
    app.call(caller, Need::ns(&ns, Role::Writer), move |store, _| {
        let branch = match body.branch {
            Some(b) => b,
            None => store.default_branch(&ns)?,
        };
        let expected_parent = match &body.expected_parent {
            Some(spec) => Some(refs::resolve(&store.objects(&ns)?, spec)?),
            None => None,
        };
        let source = |name: &str, text: String| {
            if text.is_empty() {
                vec![]
            } else {
                vec![Source::Text {
                    name: name.into(),
                    text,
                }]
            }
        };
        let opts = commit::CommitOptions {
            ns: ns.clone(),
            branch: Some(branch.clone()),
            message: body.message,
            author: body.author,
            add: source("request body `add`", body.add),
            remove: source("request body `remove`", body.remove),
            format: body.format.map(Format::from),
            expected_parent,
            allow_empty: body.allow_empty,
        };
        // Commits through this server to one branch take turns, so they never
        // conflict with each other; a commit that did not ask for a
        // compare-and-swap is retried when another process moved the branch.
        let lock = locks.branch_lock(&ns, &branch);
        let _turn = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut attempt = 0;
        let r = loop {
            match commit::commit(store, &opts) {
                Err(crate::Error::Conflict { .. })
                    if opts.expected_parent.is_none() && attempt < COMMIT_RETRIES =>
                {
                    attempt += 1;
                }
                r => break r?,
            }
        };
        metrics
            .commits
            .get_or_create(&NsLabels { ns: ns.clone() })
            .inc();
        let location = format!(
            "/v1/ns/{}/commits/{}",
            encode_segment(&ns),
            r.commit.to_hex()
        );
        let out = CommitCreated {
            ns: r.ns,
            branch: r.branch,
            commit: r.commit.to_hex(),
            parent: r.parent.to_hex(),
            added: r.added,
            removed: r.removed,
            quads: r.quads,
            objects_written: r.objects_written,
            bytes_written: r.bytes_written,
            hook_warnings: r.hook_warnings,
        };
        let mut resp = (StatusCode::CREATED, Json(out)).into_response();
        if let Ok(v) = HeaderValue::from_str(&location) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        Ok(resp)
    })
    .await
}

/// Percent-encode a path segment (namespaces may contain `/`).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[utoipa::path(get, path = "/v1/ns/{ns}/diff", tag = "commits", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"), DiffParams),
    responses((status = 200, description = "Quads that differ", body = DiffOut)))]
pub async fn diff_refs(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    Q(q): Q<DiffParams>,
) -> Result<Json<DiffOut>, ApiError> {
    app.read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        let mut changes = Vec::new();
        let mut line = Vec::new();
        let s = diff::diff(
            store,
            &diff::DiffOptions {
                ns,
                from: q.from,
                to: q.to,
            },
            |c| {
                if !q.stat {
                    line.clear();
                    rdf::nquad_line(c.key(), &mut line);
                    changes.push(DiffChange {
                        op: if matches!(c, Change::Added(_)) {
                            "+"
                        } else {
                            "-"
                        }
                        .into(),
                        quad: String::from_utf8_lossy(&line).trim_end().to_string(),
                    });
                }
                Ok(())
            },
        )?;
        Ok(Json(DiffOut {
            from: s.from.map(|i| i.to_hex()).unwrap_or_default(),
            to: s.to.map(|i| i.to_hex()).unwrap_or_default(),
            added: s.added,
            removed: s.removed,
            changes: (!q.stat).then_some(changes),
        }))
    })
    .await
}

#[utoipa::path(post, path = "/v1/ns/{ns}/merges", tag = "commits", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace")),
    request_body = MergeRequest,
    responses((status = 200, description = "Merged (or fast-forwarded, or already up to date)", body = MergeOut),
        (status = 409, description = "Conflicts (listed in `details.conflicts`); nothing changed", body = super::errors::ErrorBody),
        (status = 422, description = "The pre-merge hook rejected it", body = super::errors::ErrorBody)))]
pub async fn merge_refs(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    J(body): J<MergeRequest>,
) -> Result<Json<MergeOut>, ApiError> {
    let metrics = app.metrics.clone();
    let locks = app.clone();
    app.call(caller, Need::ns(&ns, Role::Maintainer), move |store, _| {
        let strategy = match body.strategy.unwrap_or_default() {
            StrategyName::ThreeWay => crate::merge::Strategy::ThreeWay,
            StrategyName::Ours => crate::merge::Strategy::Ours,
            StrategyName::Theirs => crate::merge::Strategy::Theirs,
        };
        let into = match body.into {
            Some(b) => b,
            None => store.default_branch(&ns)?,
        };
        let lock = locks.branch_lock(&ns, &into);
        let _turn = lock.lock().unwrap_or_else(|e| e.into_inner());
        let r = merge::merge(
            store,
            &merge::MergeOptions {
                ns: ns.clone(),
                source: body.source,
                into: Some(into.clone()),
                strategy,
                message: body.message,
                author: body.author,
            },
        )?;
        if r.kind != merge::MergeKind::UpToDate {
            metrics.merges.get_or_create(&NsLabels { ns }).inc();
        }
        let kind = serde_json::to_value(r.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        Ok(Json(MergeOut {
            ns: r.ns,
            into: r.into,
            kind,
            commit: r.commit.to_hex(),
            base: r.base.map(|b| b.to_hex()),
            added: r.added,
            removed: r.removed,
            resolved_conflicts: r.resolved_conflicts,
            hook_warnings: r.hook_warnings,
        }))
    })
    .await
}

// ---------- data ----------

const NQUADS: &str = "application/n-quads";
const TRIG: &str = "application/trig";

/// Pick the offered media type the `Accept` header likes best (None: 406).
fn negotiate(headers: &HeaderMap, offers: &[&'static str]) -> Option<&'static str> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return offers.first().copied();
    };
    let mut best: Option<(f32, usize, &'static str)> = None;
    for part in accept.split(',') {
        let mut fields = part.split(';');
        let range = fields.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = fields
            .filter_map(|f| f.trim().strip_prefix("q="))
            .find_map(|v| v.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        for (i, offer) in offers.iter().enumerate() {
            let matches = range == *offer
                || range == "*/*"
                || range
                    .strip_suffix("/*")
                    .is_some_and(|t| offer.starts_with(&format!("{t}/")));
            // higher q wins; on a tie, the earlier offer
            let better = match best {
                None => true,
                Some((bq, bi, _)) => q > bq || (q == bq && i < bi),
            };
            if matches && better {
                best = Some((q, i, offer));
            }
        }
    }
    best.map(|(_, _, o)| o)
}

#[utoipa::path(get, path = "/v1/ns/{ns}/export", tag = "data", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"), ExportParams),
    responses((status = 200, description = "The ref's quads; `Accept` picks N-Quads (default) or TriG",
            content((String = "application/n-quads"), (String = "application/trig"))),
        (status = 406, description = "Neither N-Quads nor TriG is acceptable", body = super::errors::ErrorBody)))]
pub async fn export_ref(
    State(app): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    P(ns): P<String>,
    Q(q): Q<ExportParams>,
) -> Result<Response, ApiError> {
    let Some(media) = negotiate(&headers, &[NQUADS, TRIG]) else {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            format!("export is available as {NQUADS} or {TRIG}"),
        ));
    };
    let body = app
        .read(caller, Need::ns(&ns, Role::Reader), move |store, _| {
            let mut out = Vec::new();
            export::export(
                store,
                &export::ExportOptions {
                    ns,
                    reference: q.reference,
                    graph: q.graph,
                    format: Some(if media == TRIG {
                        Format::TriG
                    } else {
                        Format::NQuads
                    }),
                },
                &mut out,
            )?;
            Ok(out)
        })
        .await?;
    Ok((
        [(header::CONTENT_TYPE, HeaderValue::from_static(media))],
        body,
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/ns/{ns}/query", tag = "data", security(("bearer" = [])),
    params(("ns" = String, Path, description = "Namespace"), QueryParams),
    responses((status = 200, description = "Matching quads in key order", body = QueryOut)))]
pub async fn query_pattern(
    State(app): State<AppState>,
    caller: Caller,
    P(ns): P<String>,
    Q(q): Q<QueryParams>,
) -> Result<Json<QueryOut>, ApiError> {
    positive_limit(q.limit)?;
    let need = Need::ns(&ns, Role::Reader);
    if q.is_point_lookup() {
        // at most INLINE_MATCHES + 1 keys scanned: each key of the range is a match
        let limit = q
            .limit
            .map_or(INLINE_MATCHES + 1, |l| l.min(INLINE_MATCHES + 1));
        let answered = app.read_inline(&caller, &need, |store, _| {
            let out = run_query(store, &ns, &q, Some(limit))?;
            Ok((out.count <= u64::from(INLINE_MATCHES) || q.limit == Some(limit)).then_some(out))
        });
        if let Some(out) = answered {
            return out.map(Json);
        }
    }
    app.read(caller, need, move |store, _| {
        run_query(store, &ns, &q, q.limit).map(Json)
    })
    .await
}

/// Point lookups with at most this many matches are answered without the
/// blocking pool ([`App::read_inline`]).
const INLINE_MATCHES: u32 = 256;

impl QueryParams {
    /// Whether the pattern fixes graph and subject (the first two terms of
    /// the key order), fixes no term after a free one, and repeats no
    /// variable: then its scan is one key range whose every key matches, so
    /// a match limit also bounds the keys read.
    fn is_point_lookup(&self) -> bool {
        // key order: graph, subject, predicate, object
        let slots =
            [&self.g, &self.s, &self.p, &self.o].map(|t| match t.as_deref().map(str::trim) {
                None | Some("") | Some("*") => (false, None),
                Some(v) if v.starts_with('?') => (false, Some(v)),
                Some(_) => (true, None),
            });
        let fixed = slots.iter().take_while(|(fixed, _)| *fixed).count();
        let vars: Vec<_> = slots.iter().filter_map(|(_, v)| *v).collect();
        let distinct = vars.iter().collect::<std::collections::HashSet<_>>().len() == vars.len();
        fixed >= 2 && slots[fixed..].iter().all(|(fixed, _)| !fixed) && distinct
    }
}

/// The quads of `q`'s pattern, at most `limit`.
fn run_query(
    store: &crate::store::Store,
    ns: &str,
    q: &QueryParams,
    limit: Option<u32>,
) -> Result<QueryOut, ApiError> {
    let term = |t: &Option<String>| match t.as_deref().map(str::trim) {
        None | Some("") => "*".to_string(),
        Some(t) => t.to_string(),
    };
    let pattern = format!(
        "{} {} {} {}",
        term(&q.s),
        term(&q.p),
        term(&q.o),
        term(&q.g)
    );
    let mut matches = Vec::new();
    let count = query::query(
        store,
        &query::QueryOptions {
            ns: ns.to_string(),
            at: q.reference.clone(),
            pattern,
            limit: limit.map(u64::from),
        },
        |m| {
            matches.push(MatchOut {
                quad: m.quad,
                bindings: m.bindings,
            });
            Ok(())
        },
    )?;
    Ok(QueryOut { count, matches })
}

// ---------- unlock, audit, tokens ----------

#[utoipa::path(post, path = "/v1/unlock", tag = "auth", security(("bearer" = [])),
    request_body = UnlockRequest,
    responses((status = 200, description = "An unlock token for the namespace", body = UnlockOut),
        (status = 423, description = "Wrong password, or the namespace has no password", body = super::errors::ErrorBody)))]
pub async fn unlock(
    State(app): State<AppState>,
    caller: Caller,
    J(body): J<UnlockRequest>,
) -> Result<Json<UnlockOut>, ApiError> {
    let ttl = body.ttl_secs.unwrap_or(900);
    if !(1..=86400).contains(&ttl) {
        return Err(ApiError::bad_request(
            "ttl_secs must be between 1 and 86400",
        ));
    }
    let ns = body.ns.clone();
    let master = app.clone();
    app.call(caller, Need::ns(&ns, Role::Reader), move |store, _| {
        let keyring = crate::store::Keyring {
            master: master_key(&master)?,
            password: Some(Zeroizing::new(body.password)),
            unlock_token: None,
        };
        store.set_keyring(keyring);
        let token = store.unlock(&body.ns, Duration::from_secs(ttl))?;
        Ok(Json(UnlockOut {
            ns: body.ns,
            token,
            expires_in_secs: ttl,
        }))
    })
    .await
}

fn master_key(app: &Arc<App>) -> Result<Option<crate::crypto::MasterKey>, ApiError> {
    app.master_key_parsed().map_err(ApiError::from)
}

#[utoipa::path(get, path = "/v1/audit", tag = "audit", security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "Audit entries, oldest first", body = [AuditEntryOut])))]
pub async fn audit_log(
    State(app): State<AppState>,
    caller: Caller,
    Q(q): Q<AuditParams>,
) -> Result<Json<Vec<AuditEntryOut>>, ApiError> {
    let need = match &q.ns {
        Some(ns) => Need::ns(ns, Role::Admin),
        None => Need::store(Role::Admin),
    };
    app.call(caller, need, move |store, _| {
        let since = match &q.since {
            Some(s) => Some(crate::clock::format(crate::clock::parse_since(s)?)),
            None => None,
        };
        let entries = audit::list(store.db(), since.as_deref())?;
        Ok(Json(
            entries
                .into_iter()
                .filter(|e| q.ns.is_none() || e.ns == q.ns)
                .map(|e| AuditEntryOut {
                    seq: e.seq,
                    time: e.time,
                    actor: e.actor,
                    action: e.action,
                    ns: e.ns,
                    target: e.target,
                    outcome: e.outcome.as_str().to_string(),
                    detail: e.detail,
                    prev: e.prev,
                    hash: e.hash,
                })
                .collect(),
        ))
    })
    .await
}

#[utoipa::path(post, path = "/v1/tokens", tag = "auth", security(("bearer" = [])),
    request_body = CreateTokenRequest,
    responses((status = 201, description = "The new token, shown once", body = TokenCreated)))]
pub async fn create_token(
    State(app): State<AppState>,
    caller: Caller,
    J(body): J<CreateTokenRequest>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    if body
        .expires_in_secs
        .is_some_and(|s| !(1..=MAX_TOKEN_SECS).contains(&s))
    {
        return Err(ApiError::bad_request(format!(
            "expires_in_secs must be between 1 and {MAX_TOKEN_SECS}"
        )));
    }
    app.call(caller, Need::store(Role::Admin), move |store, _| {
        let t = tokens::create_token(
            store,
            &tokens::TokenOptions {
                user: body.user,
                role: body.role,
                ns: body.ns,
                expires: body.expires_in_secs.map(Duration::from_secs),
            },
        )?;
        Ok((
            StatusCode::CREATED,
            Json(TokenCreated {
                token: t.token.to_string(),
                info: t.info,
            }),
        ))
    })
    .await
}

#[utoipa::path(get, path = "/v1/tokens", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Every token (never the secrets)", body = [ApiTokenRow])))]
pub async fn list_tokens(
    State(app): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<ApiTokenRow>>, ApiError> {
    app.call(caller, Need::store(Role::Admin), |store, _| {
        Ok(Json(tokens::list_tokens(store)?))
    })
    .await
}

#[utoipa::path(delete, path = "/v1/tokens/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = String, Path, description = "Token id")),
    responses((status = 200, description = "Revoked", body = Deleted)))]
pub async fn revoke_token(
    State(app): State<AppState>,
    caller: Caller,
    P(id): P<String>,
) -> Result<Json<Deleted>, ApiError> {
    app.call(caller, Need::store(Role::Admin), move |store, _| {
        tokens::revoke_token(store, &id)?;
        Ok(Json(Deleted { deleted: id }))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_negotiation() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            m
        };
        let offers = [NQUADS, TRIG];
        assert_eq!(negotiate(&HeaderMap::new(), &offers), Some(NQUADS));
        assert_eq!(negotiate(&h("application/trig"), &offers), Some(TRIG));
        assert_eq!(negotiate(&h("*/*"), &offers), Some(NQUADS));
        assert_eq!(
            negotiate(&h("application/n-quads;q=0.5, application/trig"), &offers),
            Some(TRIG)
        );
        assert_eq!(negotiate(&h("application/*"), &offers), Some(NQUADS));
        assert_eq!(negotiate(&h("text/turtle"), &offers), None);
        assert_eq!(negotiate(&h("application/trig;q=0"), &offers), None);
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
