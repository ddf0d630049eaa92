//! The running server: shared state, the pool of open stores, the request
//! path (rate limit → authenticate → authorize → run on the blocking pool,
//! or for small reads on the async worker itself), request metrics and logs,
//! and graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use zeroize::Zeroizing;

use crate::audit::{Event, Outcome};
use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::server::auth::{Caller, Limiter, Need};
use crate::server::errors::ApiError;
use crate::server::metrics::{HttpLabels, Metrics, ReasonLabels};
use crate::server::roles::{Principal, Role, Scope};
use crate::server::tokens::{self, Refusal};
use crate::store::{Keyring, NodeCache, Store};

/// How to run `qg serve`.
pub struct ServeOptions {
    pub data: PathBuf,
    pub listen: String,
    /// The master key (hex or base64), to open encrypted namespaces.
    pub master_key: Option<Zeroizing<String>>,
    pub hook_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    pub max_body_bytes: usize,
    /// A request taking longer is answered 503 (its store work still finishes or rolls back whole).
    pub request_timeout: Duration,
    /// Open stores kept for reuse.
    pub pool_size: usize,
    /// Authentication failures per client (or token) within `auth_failure_window` before 429.
    pub auth_failure_limit: usize,
    pub auth_failure_window: Duration,
    /// After SIGTERM, how long in-flight requests may take before the server exits anyway.
    pub shutdown_timeout: Duration,
    /// Worker threads for the async runtime (0: one per core).
    pub workers: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            data: PathBuf::from("./qg-data"),
            listen: "127.0.0.1:7878".into(),
            master_key: None,
            hook_timeout: crate::hooks::DEFAULT_TIMEOUT,
            max_body_bytes: 16 << 20,
            request_timeout: Duration::from_secs(120),
            pool_size: 32,
            auth_failure_limit: 10,
            auth_failure_window: Duration::from_secs(60),
            shutdown_timeout: Duration::from_secs(30),
            workers: 0,
        }
    }
}

/// State shared by every request.
pub struct App {
    pub data: PathBuf,
    master_key: Option<Zeroizing<String>>,
    hook_timeout: Duration,
    pool: Mutex<Vec<Store>>,
    pool_size: usize,
    /// Decoded tree nodes shared by every pooled store: the pool opens new
    /// connections under load, and each would otherwise decode the trees anew.
    nodes: NodeCache,
    pub metrics: Arc<Metrics>,
    limiter: Limiter,
    pub shutting_down: AtomicBool,
    /// One lock per (namespace, branch): commits and merges through this server take turns.
    branch_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

pub type AppState = Arc<App>;

impl App {
    fn new(opts: &ServeOptions) -> App {
        App {
            data: opts.data.clone(),
            master_key: opts.master_key.clone(),
            hook_timeout: opts.hook_timeout,
            pool: Mutex::new(Vec::new()),
            pool_size: opts.pool_size.max(1),
            nodes: NodeCache::default(),
            metrics: Arc::new(Metrics::new()),
            limiter: Limiter::new(opts.auth_failure_limit, opts.auth_failure_window),
            shutting_down: AtomicBool::new(false),
            branch_locks: Mutex::new(HashMap::new()),
        }
    }

    /// The lock that orders writes to one branch.
    pub fn branch_lock(&self, ns: &str, branch: &str) -> Arc<Mutex<()>> {
        let mut locks = self.branch_locks.lock().unwrap_or_else(|e| e.into_inner());
        if locks.len() > 4096 {
            // forget locks nobody holds (deleted branches, old namespaces)
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(format!("{ns}\0{branch}")).or_default().clone()
    }

    /// The server's master key, parsed afresh (it is kept only as zeroizing text).
    pub fn master_key_parsed(&self) -> Result<Option<MasterKey>> {
        self.master()
    }

    fn master(&self) -> Result<Option<MasterKey>> {
        self.master_key
            .as_ref()
            .map(|t| {
                MasterKey::parse(t).map_err(|e| match e {
                    Error::BadKey { reason, .. } => Error::BadKey {
                        what: "QUADGIT_MASTER_KEY".into(),
                        reason,
                    },
                    e => e,
                })
            })
            .transpose()
    }

    fn open_store(&self) -> Result<Store> {
        let mut store = Store::open(&self.data)?;
        store.set_hook_timeout(self.hook_timeout);
        let metrics = self.metrics.clone();
        store.set_hook_observer(Some(Arc::new(move |run| metrics.observe_hook(run))));
        store.set_keyring(Keyring {
            master: self.master()?,
            ..Default::default()
        });
        store.share_nodes(self.nodes.clone());
        Ok(store)
    }

    /// An open store from the pool (or a new one).
    pub fn checkout(&self) -> Result<Store> {
        let pooled = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match pooled {
            Some(s) => Ok(s),
            None => self.open_store(),
        }
    }

    /// Return a store to the pool. Stores that held a password or an unlock
    /// token are dropped, so no later request inherits opened keys.
    pub fn checkin(&self, store: Store) {
        // keys opened during the request (a namespace created with a password,
        // one opened by an unlock token) must not serve the next caller; the
        // decoded nodes may stay, as they are reachable only through the keys
        store.forget_data_keys();
        let (hits, misses) = store.db().cache_stats(true);
        self.metrics.add_cache_stats(hits, misses);
        let k = store.keyring();
        if k.password.is_some() || k.unlock_token.is_some() {
            return;
        }
        // a connection left inside a transaction would fail the next caller's writes
        if !store.db().conn.is_autocommit() {
            return;
        }
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < self.pool_size {
            pool.push(store);
        }
    }

    /// Run store work without authentication (probes, metrics) on the blocking pool.
    pub async fn run_open<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Store) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = app.checkout()?;
            let out = f(&store);
            app.checkin(store);
            out
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }

    /// Authenticate and authorize `caller` for `need`, then run `f` on the
    /// blocking pool with a store acting as the caller's user.
    pub async fn call<T: Send + 'static>(
        self: &Arc<Self>,
        caller: Caller,
        need: Need,
        f: impl FnOnce(&mut Store, &Principal) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.dispatch(caller, need, Work::Writes, f).await
    }

    /// Like [`App::call`], for handlers that only read the namespace named by
    /// `need`: when it is plaintext, the token check and the handler's reads
    /// share one SQLite read transaction (see [`Snapshot`]).
    pub async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        caller: Caller,
        need: Need,
        f: impl FnOnce(&mut Store, &Principal) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.dispatch(caller, need, Work::Reads, f).await
    }

    /// Run a small read on the async worker itself, skipping the blocking
    /// pool: its two thread hand-offs cost a point lookup about a third of
    /// its CPU. Only what is cheap and cannot write qualifies: a plaintext
    /// namespace (reading an encrypted one may derive keys or write audit
    /// entries), a pooled connection (opening one is file I/O), no unlock
    /// token, and an authorized caller (refusals are audited, a write). `f`
    /// must bound its own work and return `Ok(None)` when the read turns out
    /// big. Whenever this returns None nothing was answered and nothing
    /// recorded: the caller runs the request through [`App::read`].
    pub fn read_inline<T>(
        &self,
        caller: &Caller,
        need: &Need,
        f: impl FnOnce(&mut Store, &Principal) -> Result<Option<T>, ApiError>,
    ) -> Option<Result<T, ApiError>> {
        if caller.unlock.is_some()
            || self
                .limiter
                .blocked(&format!("ip {}", caller.client))
                .is_some()
        {
            return None;
        }
        let store = self.pool.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        let mut snapshot = Snapshot::begin(&store, need);
        let principal = match snapshot.open {
            true => match authorize(&store, caller, need) {
                Ok(Ok(p)) => Some(p),
                _ => None,
            },
            false => None,
        };
        let Some(principal) = principal else {
            snapshot.end(&store);
            self.checkin(store);
            return None;
        };
        let mut store = store.with_actor(&principal.user);
        store.set_deny_protected(principal.role < Role::Maintainer);
        let out = f(&mut store, &principal);
        snapshot.end(&store);
        self.checkin(store);
        out.transpose()
    }

    async fn dispatch<T: Send + 'static>(
        self: &Arc<Self>,
        caller: Caller,
        need: Need,
        work: Work,
        f: impl FnOnce(&mut Store, &Principal) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let ip_key = format!("ip {}", caller.client);
        if let Some(wait) = self.limiter.blocked(&ip_key) {
            self.count_auth_failure("rate_limited");
            // not audited: the failures that tripped the limit were
            if caller.bearer.is_none() {
                return Err(ApiError::unauthorized(Refusal::Missing.message()));
            }
            return Err(ApiError::too_many(
                format!(
                    "too many failed authentication attempts from {}; try again in {wait} s",
                    caller.client
                ),
                wait,
            ));
        }
        let app = self.clone();
        tokio::task::spawn_blocking(move || {
            let store = app.checkout()?;
            let mut snapshot = match work {
                Work::Reads => Snapshot::begin(&store, &need),
                Work::Writes => Snapshot::none(),
            };
            let (store, out) = app.call_blocking(store, &mut snapshot, caller, need, f);
            snapshot.end(&store);
            app.checkin(store);
            out
        })
        .await
        .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }

    /// Authorize and run `f`; gives the store back for check-in.
    fn call_blocking<T>(
        &self,
        store: Store,
        snapshot: &mut Snapshot,
        caller: Caller,
        need: Need,
        f: impl FnOnce(&mut Store, &Principal) -> Result<T, ApiError>,
    ) -> (Store, Result<T, ApiError>) {
        let principal = match authorize(&store, &caller, &need) {
            Ok(Ok(p)) => p,
            Ok(Err(denied)) => {
                // the audit entry is a write: it cannot go inside the snapshot
                snapshot.end(&store);
                self.refuse(
                    &store,
                    &caller,
                    denied.principal.as_ref(),
                    denied.status,
                    denied.reason,
                    &denied.message,
                );
                return (store, Err(denied.error));
            }
            Err(e) => return (store, Err(e)),
        };
        let mut store = store.with_actor(&principal.user);
        store.set_deny_protected(principal.role < Role::Maintainer);
        if caller.unlock.is_some() {
            match self.master() {
                Ok(master) => store.set_keyring(Keyring {
                    master,
                    password: None,
                    unlock_token: caller.unlock.clone(),
                }),
                Err(e) => return (store, Err(e.into())),
            }
        }
        let out = f(&mut store, &principal);
        if let Err(e) = &out {
            if e.code == "protected_branch" {
                snapshot.end(&store);
                self.refuse(
                    &store,
                    &caller,
                    Some(&principal),
                    403,
                    "protected branch",
                    &e.message,
                );
            }
        }
        (store, out)
    }

    /// Audit, count and rate-limit a refused request.
    fn refuse(
        &self,
        store: &Store,
        caller: &Caller,
        principal: Option<&Principal>,
        status: u16,
        reason: &str,
        message: &str,
    ) {
        self.count_auth_failure(reason);
        let key = match (status, principal) {
            (403, Some(p)) => format!("token {}", p.token_id),
            _ => format!("ip {}", caller.client),
        };
        let tripped = self.limiter.record(&key);
        let actor = principal.map(|p| p.user.as_str()).unwrap_or("anonymous");
        let event = Event::new(actor, "auth.failed")
            .target(format!("{} {}", caller.method, caller.path))
            .outcome(Outcome::Denied)
            .detail(serde_json::json!({
                "status": status, "reason": reason, "message": message,
                "client": caller.client.to_string(),
                "token_id": principal.map(|p| p.token_id.clone()),
                "rate_limited": tripped,
            }));
        if let Err(e) = store.record(&event) {
            tracing::error!("cannot audit a refused request: {e}");
        }
    }

    fn count_auth_failure(&self, reason: &str) {
        self.metrics
            .auth_failures
            .get_or_create(&ReasonLabels {
                reason: reason.to_string(),
            })
            .inc();
    }
}

/// What a handler does with the store.
#[derive(Clone, Copy)]
enum Work {
    Writes,
    Reads,
}

/// A refused request: what the client gets and what the audit log records.
struct Denied {
    error: ApiError,
    status: u16,
    reason: &'static str,
    message: String,
    principal: Option<Principal>,
}

/// Check `caller`'s token and role for `need`: `Ok(Err(_))` is a refusal,
/// which the caller audits. Only reads, so it may run inside a [`Snapshot`].
fn authorize(
    store: &Store,
    caller: &Caller,
    need: &Need,
) -> Result<Result<Principal, Denied>, ApiError> {
    let checked = match caller.bearer.as_deref() {
        None => Err((Refusal::Missing, None)),
        Some(t) => tokens::authenticate(store.db(), t)?,
    };
    let principal = match checked {
        Ok(p) => p,
        Err((r, p)) => {
            return Ok(Err(Denied {
                error: ApiError::unauthorized(r.message()),
                status: 401,
                reason: r.as_str(),
                message: r.message().to_string(),
                principal: p,
            }))
        }
    };
    let scope = match &need.ns {
        Some(ns) => Scope::Ns(ns),
        None => Scope::Store,
    };
    // Need::any(): any valid token
    let any = need.ns.is_none() && need.role == Role::Reader;
    if !any && !principal.allows(scope, need.role) {
        let message = match &need.ns {
            Some(ns) if principal.sees(ns) => format!(
                "user `{}` is {} in namespace `{ns}`; this needs {}",
                principal.user, principal.role, need.role
            ),
            Some(ns) => format!(
                "user `{}`'s token does not grant access to namespace `{ns}`",
                principal.user
            ),
            None => format!(
                "user `{}`'s token is not a store-wide {} token; this needs one",
                principal.user, need.role
            ),
        };
        return Ok(Err(Denied {
            error: ApiError::forbidden(message.clone()),
            status: 403,
            reason: "forbidden",
            message,
            principal: Some(principal),
        }));
    }
    Ok(Ok(principal))
}

/// One SQLite read transaction around a read-only request on a plaintext
/// namespace: its half a dozen statements (token, namespace, ref, commit,
/// nodes not yet decoded) take the WAL read lock once instead of once each,
/// and see one consistent state. Only plaintext: reading an encrypted
/// namespace may write (audit entries for a wrong master key or a failed
/// unlock), and no write can start inside a read transaction. The check runs
/// inside the snapshot, so the handler sees the namespace as checked.
struct Snapshot {
    open: bool,
}

impl Snapshot {
    fn none() -> Snapshot {
        Snapshot { open: false }
    }

    /// A snapshot when `need` names a plaintext namespace (else none).
    fn begin(store: &Store, need: &Need) -> Snapshot {
        let Some(ns) = &need.ns else {
            return Snapshot::none();
        };
        let conn = &store.db().conn;
        if !conn.is_autocommit() || conn.execute_batch("BEGIN DEFERRED").is_err() {
            return Snapshot::none();
        }
        let mut snapshot = Snapshot { open: true };
        if !matches!(store.db().crypto_record(ns), Ok(None)) {
            snapshot.end(store);
        }
        snapshot
    }

    /// Release the snapshot (a read transaction has nothing to commit).
    fn end(&mut self, store: &Store) {
        if std::mem::take(&mut self.open) {
            let conn = &store.db().conn;
            if let Err(e) = conn.execute_batch("COMMIT") {
                tracing::error!("cannot end a read transaction: {e}");
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
    }
}

/// Route-level middleware: request metrics and one structured log line per request.
pub async fn track(
    State(app): State<AppState>,
    matched: Option<MatchedPath>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    // route templates as `/v1/ns/:ns/commits`: braces inside label values trip naive parsers
    let route = matched
        .map(|m| m.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".into());
    let path = req.uri().path().to_string();
    app.metrics.in_flight.inc();
    let resp = next.run(req).await;
    app.metrics.in_flight.dec();
    record(&app, &method, &route, &path, resp.status(), start);
    resp
}

pub fn record(
    app: &App,
    method: &str,
    route: &str,
    path: &str,
    status: StatusCode,
    start: Instant,
) {
    let secs = start.elapsed().as_secs_f64();
    let labels = HttpLabels {
        method: method.to_string(),
        route: route.to_string(),
        status: status.as_u16().to_string(),
    };
    app.metrics.requests.get_or_create(&labels).inc();
    app.metrics.latency.get_or_create(&labels).observe(secs);
    tracing::info!(
        target: "qg::http",
        method,
        route,
        path,
        status = status.as_u16(),
        latency_ms = (secs * 1e6).round() / 1e3,
        "request"
    );
}

/// Run the server until SIGTERM or SIGINT. `on_ready` gets the bound address.
pub fn serve(opts: ServeOptions, on_ready: impl FnOnce(SocketAddr) + Send + 'static) -> Result<()> {
    // Open once up front: a missing or foreign store, or a bad master key, fails here (exit 2).
    let app = Arc::new(App::new(&opts));
    {
        let store = app.open_store()?;
        store.db().write(|db| db.ensure_server_tables())?;
        app.checkin(store);
    }
    let addr: SocketAddr = opts.listen.parse().map_err(|e| Error::InvalidName {
        what: "listen address",
        name: format!("{} ({e})", opts.listen),
        reason: "expected IP:PORT, e.g. 127.0.0.1:7878",
    })?;
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all().thread_name("qg-serve");
    if opts.workers > 0 {
        rt.worker_threads(opts.workers);
    }
    let rt = rt.build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            Error::Other(format!("cannot listen on {addr}: {e}"))
        })?;
        let bound = listener.local_addr()?;
        let router = super::routes::router(app.clone(), &opts);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
        });
        tracing::info!(target: "qg::http", %bound, data = %opts.data.display(), "listening");
        on_ready(bound);
        let signal = shutdown_signal().await?;
        tracing::info!(target: "qg::http", signal, "shutting down: finishing in-flight requests");
        app.shutting_down.store(true, Ordering::SeqCst);
        let _ = stop_tx.send(());
        match tokio::time::timeout(opts.shutdown_timeout, server).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Io(e)),
            Ok(Err(e)) => Err(Error::Other(format!("the server task failed: {e}"))),
            Err(_) => Err(Error::Other(format!(
                "requests were still running {} s after {signal}; exiting without them (SQLite rolls back unfinished transactions)",
                opts.shutdown_timeout.as_secs()
            ))),
        }
    })?;
    // Blocking tasks still running (abandoned requests) must not hold up exit forever.
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Wait for SIGTERM or SIGINT; returns its name.
async fn shutdown_signal() -> Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let t2 = tx.clone();
    tokio::spawn(async move {
        term.recv().await;
        let _ = tx.send("SIGTERM").await;
    });
    tokio::spawn(async move {
        int.recv().await;
        let _ = t2.send("SIGINT").await;
    });
    Ok(rx.recv().await.unwrap_or("shutdown"))
}
