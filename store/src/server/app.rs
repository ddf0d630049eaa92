//! The running server: shared state, the pool of open stores, the request
//! path (rate limit → authenticate → authorize → run on the blocking pool),
//! request metrics and logs, and graceful shutdown.

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
use crate::store::{Keyring, Store};

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
        // one opened by an unlock token) must not serve the next caller
        store.forget_keys();
        let (hits, misses) = store.db().cache_stats(true);
        self.metrics.add_cache_stats(hits, misses);
        let k = store.keyring();
        if k.password.is_some() || k.unlock_token.is_some() {
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
        tokio::task::spawn_blocking(move || app.call_blocking(caller, need, f))
            .await
            .map_err(|e| ApiError::internal(format!("the request's worker failed: {e}")))?
    }

    fn call_blocking<T>(
        &self,
        caller: Caller,
        need: Need,
        f: impl FnOnce(&mut Store, &Principal) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let store = self.checkout()?;
        let principal = match self.authorize(&store, &caller, &need) {
            Ok(p) => p,
            Err(e) => {
                self.checkin(store);
                return Err(e);
            }
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
                Err(e) => {
                    self.checkin(store);
                    return Err(e.into());
                }
            }
        }
        let out = f(&mut store, &principal);
        if let Err(e) = &out {
            if e.code == "protected_branch" {
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
        self.checkin(store);
        out
    }

    fn authorize(
        &self,
        store: &Store,
        caller: &Caller,
        need: &Need,
    ) -> Result<Principal, ApiError> {
        let refusal = match caller.bearer.as_deref() {
            None => Err((Refusal::Missing, None)),
            Some(t) => tokens::authenticate(store.db(), t)?,
        };
        let principal = match refusal {
            Ok(p) => p,
            Err((r, p)) => {
                self.refuse(store, caller, p.as_ref(), 401, r.as_str(), r.message());
                return Err(ApiError::unauthorized(r.message()));
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
            self.refuse(store, caller, Some(&principal), 403, "forbidden", &message);
            return Err(ApiError::forbidden(message));
        }
        Ok(principal)
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
