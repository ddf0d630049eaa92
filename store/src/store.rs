//! [`Store`]: an open QuadGit data directory.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::audit::{self, Event};
use crate::commit::Commit;
use crate::crypto::{self, CryptoRecord, KdfParams, MasterKey, NsSealer, Secret};
use crate::error::{Error, Result};
use crate::hooks::{Hook, HookRun, Hooks};
use crate::id::ObjectId;
use crate::objects::ObjectSet;
use crate::storage::Db;
use crate::{clock, refs, tree};

/// Name of the namespace `init` creates.
pub const DEFAULT_NAMESPACE: &str = "default";
/// Default branch of every new namespace.
pub const DEFAULT_BRANCH: &str = "main";

/// An open store: one data directory holding `qg.sqlite` and `hooks/`.
pub struct Store {
    dir: PathBuf,
    db: Db,
    actor: String,
    hooks: Hooks,
    keyring: Keyring,
    /// Unwrapped data keys of namespaces opened so far (zeroized on drop).
    opened: RefCell<HashMap<String, Arc<BTreeMap<u32, Secret>>>>,
    /// Decoded tree nodes per namespace, kept across operations on this
    /// handle (and on every handle sharing it: [`Store::share_nodes`]).
    nodes: NodeCache,
    /// Told about every hook run (the server counts them for `/metrics`).
    hook_observer: Option<HookObserver>,
    /// Refuse to move protected branches (`qg serve` sets it for writers).
    deny_protected: bool,
}

/// Decoded tree nodes per namespace, shareable between store handles.
pub type NodeCache = Arc<std::sync::Mutex<HashMap<String, crate::objects::SharedNodes>>>;

/// Called after every hook run (`qg serve` counts runs and failures).
pub type HookObserver = Arc<dyn Fn(&HookRun) + Send + Sync>;

/// The secrets that open encrypted namespaces. Binaries fill it from the
/// environment (`QUADGIT_MASTER_KEY`, `QG_PASSWORD`, `QG_UNLOCK_TOKEN`);
/// nothing here is ever logged or printed.
#[derive(Default)]
pub struct Keyring {
    pub master: Option<MasterKey>,
    pub password: Option<Zeroizing<String>>,
    pub unlock_token: Option<Zeroizing<String>>,
}

/// How to create a namespace.
#[derive(Default)]
pub struct NamespaceOptions {
    /// Encrypt it under a fresh data key wrapped by the master key.
    pub encrypted: bool,
    /// Also require this password (implies `encrypted`).
    pub password: Option<Zeroizing<String>>,
    /// Argon2id parameters for the password (default: RFC 9106's second recommendation).
    pub kdf: Option<KdfParams>,
}

/// Failed unlocks allowed per namespace within [`UNLOCK_WINDOW_SECS`].
pub const UNLOCK_ATTEMPTS: u64 = 5;
pub const UNLOCK_WINDOW_SECS: i64 = 60;

/// Who acts when nobody says: `$QG_ACTOR`, else `$USER`, else `unknown`.
pub fn default_actor() -> String {
    std::env::var("QG_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into())
}

impl Store {
    /// Create a store in `dir` (created if missing) with the namespace `default`.
    /// Fails, changing nothing, when `dir` already holds a store.
    pub fn init(dir: &Path) -> Result<Store> {
        std::fs::create_dir_all(dir)?;
        let store_id = hex::encode(random_bytes::<16>());
        let db = Db::create(dir, &store_id, &clock::now())?;
        std::fs::create_dir_all(dir.join("hooks"))?;
        let store = Store::from_db(dir, db);
        store.db.write(|db| {
            audit::append(
                db,
                &Event::new(&store.actor, "store.init")
                    .target(dir.display().to_string())
                    .detail(serde_json::json!({ "store_id": store_id })),
            )?;
            Ok(())
        })?;
        store.create_namespace(DEFAULT_NAMESPACE)?;
        Ok(store)
    }

    /// Open the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store> {
        let db = Db::open(dir)?;
        Ok(Store::from_db(dir, db))
    }

    fn from_db(dir: &Path, db: Db) -> Store {
        Store {
            dir: dir.to_path_buf(),
            db,
            actor: default_actor(),
            hooks: Hooks::new(dir, crate::hooks::DEFAULT_TIMEOUT),
            keyring: Keyring::default(),
            opened: RefCell::new(HashMap::new()),
            nodes: NodeCache::default(),
            hook_observer: None,
            deny_protected: false,
        }
    }

    /// Call `observer` after every hook run.
    pub fn set_hook_observer(&mut self, observer: Option<HookObserver>) {
        self.hook_observer = observer;
    }

    /// When on, [`Store::land`] refuses to move a protected branch
    /// ([`Error::Protected`]), checked in the same transaction as the move.
    pub fn set_deny_protected(&mut self, on: bool) {
        self.deny_protected = on;
    }

    /// Use these secrets to open encrypted namespaces.
    ///
    /// A password or unlock token opens namespaces for one caller only: from
    /// here on this handle keeps its decoded nodes to itself, so plaintext of
    /// a password namespace never lands in a cache shared with other handles.
    pub fn set_keyring(&mut self, keyring: Keyring) {
        if keyring.password.is_some() || keyring.unlock_token.is_some() {
            self.nodes = NodeCache::default();
        }
        self.keyring = keyring;
        self.opened.borrow_mut().clear();
    }

    /// Keep decoded tree nodes in `cache`, shared with every handle given the
    /// same one (`qg serve`'s pool of connections). Safe to share: objects are
    /// immutable and content-addressed, and a namespace's nodes are reached
    /// only through [`Store::objects`], which opens the namespace's keys
    /// first, so a shared node is never readable by a handle that could not
    /// read it from the database.
    pub fn share_nodes(&mut self, cache: NodeCache) {
        if self.keyring.password.is_none() && self.keyring.unlock_token.is_none() {
            self.nodes = cache;
        }
    }

    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The master key, or a clear error saying how to provide it.
    pub fn master_key(&self) -> Result<&MasterKey> {
        self.keyring.master.as_ref().ok_or_else(|| Error::BadKey {
            what: "master key".into(),
            reason: "QUADGIT_MASTER_KEY is not set (or pass --master-key-file)".into(),
        })
    }

    /// The `sys:crypto` record of `ns` (None for a plaintext namespace).
    pub fn crypto_record(&self, ns: &str) -> Result<Option<CryptoRecord>> {
        self.default_branch(ns)?;
        match self.db.crypto_record(ns)? {
            Some(bytes) => Ok(Some(CryptoRecord::from_json(ns, &bytes)?)),
            None => Ok(None),
        }
    }

    pub fn is_encrypted(&self, ns: &str) -> Result<bool> {
        Ok(self.crypto_record(ns)?.is_some())
    }

    /// Forget unwrapped keys and decoded nodes (after a rotation changed them).
    pub fn forget_keys(&self) {
        self.forget_data_keys();
        self.nodes.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Forget unwrapped data keys, keeping decoded nodes: they are reachable
    /// again only once the keys are (see [`Store::share_nodes`]).
    pub fn forget_data_keys(&self) {
        self.opened.borrow_mut().clear();
    }

    /// Unwrap the data keys of an encrypted namespace with the keyring.
    pub fn namespace_keys(
        &self,
        ns: &str,
        rec: &CryptoRecord,
    ) -> Result<Arc<BTreeMap<u32, Secret>>> {
        if let Some(k) = self.opened.borrow().get(ns) {
            return Ok(k.clone());
        }
        let kek = self.keyring.master.as_ref().ok_or_else(|| Error::Locked {
            ns: ns.to_string(),
            reason: "it is encrypted and QUADGIT_MASTER_KEY is not set".into(),
        })?;
        if kek.id() != rec.kek_id {
            // a wrong master key is a failed authentication too, but not a password guess
            self.record(
                &Event::new(&self.actor, "auth.master_key")
                    .ns(ns)
                    .target(ns)
                    .outcome(audit::Outcome::Denied)
                    .detail(serde_json::json!({ "presented_kek_id": kek.id(), "expected_kek_id": rec.kek_id })),
            )?;
        }
        let (pw_key, from_token) = if rec.password.is_some() {
            let (k, t) = self.password_key_from(ns, rec)?;
            (Some(k), t)
        } else {
            (None, false)
        };
        let keys = match crypto::unwrap_keys(kek, ns, rec, pw_key.as_ref()) {
            Ok(k) => k,
            Err(e) if pw_key.is_some() && e.to_string().contains("wrong password") => {
                if from_token {
                    self.record(
                        &Event::new(&self.actor, "ns.unlock.token")
                            .ns(ns)
                            .target(ns)
                            .outcome(audit::Outcome::Denied)
                            .detail(
                                serde_json::json!({ "reason": "token predates a password change" }),
                            ),
                    )?;
                    return Err(Error::Locked {
                        ns: ns.to_string(),
                        reason: "the unlock token no longer opens it (the password changed since): run `qg ns unlock` again".into(),
                    });
                }
                self.record_failed_unlock(ns, "wrong password")?;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let keys = Arc::new(keys);
        self.opened
            .borrow_mut()
            .insert(ns.to_string(), keys.clone());
        Ok(keys)
    }

    /// The password layer's key from an unlock token or the password.
    pub fn password_key(&self, ns: &str, rec: &CryptoRecord) -> Result<Secret> {
        Ok(self.password_key_from(ns, rec)?.0)
    }

    /// The password layer's key, and whether it came from an unlock token.
    fn password_key_from(&self, ns: &str, rec: &CryptoRecord) -> Result<(Secret, bool)> {
        let kek = self.master_key()?;
        if let Some(token) = &self.keyring.unlock_token {
            if let Ok((_, key)) = crypto::check_token(kek, ns, token) {
                return Ok((key, true));
            }
        }
        let Some(password) = &self.keyring.password else {
            if let Some(token) = &self.keyring.unlock_token {
                crypto::check_token(kek, ns, token)?;
            }
            return Err(Error::Locked {
                ns: ns.to_string(),
                reason: "it is password-protected: set QG_PASSWORD, or QG_UNLOCK_TOKEN from `qg ns unlock`".into(),
            });
        };
        self.check_unlock_rate(ns)?;
        Ok((crypto::derive_password_key(ns, rec, password)?, false))
    }

    fn check_unlock_rate(&self, ns: &str) -> Result<()> {
        let since = clock::format(
            time::OffsetDateTime::now_utc() - time::Duration::seconds(UNLOCK_WINDOW_SECS),
        );
        let recent = audit::count(
            &self.db,
            "ns.unlock",
            audit::Outcome::Denied,
            Some(ns),
            &since,
        )?;
        if recent >= UNLOCK_ATTEMPTS {
            return Err(Error::RateLimited {
                ns: ns.to_string(),
                wait_secs: UNLOCK_WINDOW_SECS as u64,
            });
        }
        Ok(())
    }

    fn record_failed_unlock(&self, ns: &str, reason: &str) -> Result<()> {
        self.record(
            &Event::new(&self.actor, "ns.unlock")
                .ns(ns)
                .target(ns)
                .outcome(audit::Outcome::Denied)
                .detail(serde_json::json!({ "reason": reason })),
        )?;
        Ok(())
    }

    /// Check the password of `ns` and issue an unlock token valid for `ttl`.
    pub fn unlock(&self, ns: &str, ttl: Duration) -> Result<String> {
        let rec = self.crypto_record(ns)?.ok_or_else(|| Error::NotEncrypted {
            ns: ns.to_string(),
            hint: "there is nothing to unlock".into(),
        })?;
        if rec.password.is_none() {
            return Err(Error::NotEncrypted {
                ns: ns.to_string(),
                hint: "it is encrypted without a password; the master key alone opens it".into(),
            });
        }
        self.opened.borrow_mut().remove(ns);
        let kek = self.master_key()?;
        let password = self
            .keyring
            .password
            .as_ref()
            .ok_or_else(|| Error::Locked {
                ns: ns.to_string(),
                reason: "no password given (QG_PASSWORD or the prompt)".into(),
            })?;
        self.check_unlock_rate(ns)?;
        let pw_key = crypto::derive_password_key(ns, &rec, password)?;
        if crypto::unwrap_keys(kek, ns, &rec, Some(&pw_key)).is_err() {
            self.record_failed_unlock(ns, "wrong password")?;
            return Err(Error::Locked {
                ns: ns.to_string(),
                reason: "wrong password".into(),
            });
        }
        let token = crypto::issue_token(kek, ns, &self.actor, &pw_key, ttl)?;
        self.record(
            &Event::new(&self.actor, "ns.unlock")
                .ns(ns)
                .target(ns)
                .detail(serde_json::json!({ "ttl_secs": ttl.as_secs() })),
        )?;
        Ok(token)
    }

    /// Act as `actor` from now on (audit entries, reflog, default commit author).
    pub fn with_actor(mut self, actor: &str) -> Self {
        self.actor = actor.to_string();
        self
    }

    pub fn set_hook_timeout(&mut self, timeout: Duration) {
        self.hooks.timeout = timeout;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn actor(&self) -> &str {
        &self.actor
    }

    pub fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The store's unique id (set at init).
    pub fn id(&self) -> Result<String> {
        Ok(self.db.meta("store_id")?.unwrap_or_default())
    }

    /// Objects of an existing namespace, opened with the keyring when it is
    /// encrypted. Decoded nodes are shared with later operations on this handle.
    pub fn objects(&self, ns: &str) -> Result<ObjectSet<'_>> {
        let shared = self
            .nodes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(ns.to_string())
            .or_default()
            .clone();
        Ok(self.objects_uncached(ns)?.with_shared_nodes(shared))
    }

    /// Like [`Store::objects`], but every node is read from the database
    /// (`fsck` must see what is stored, not what was read earlier).
    pub fn objects_uncached(&self, ns: &str) -> Result<ObjectSet<'_>> {
        match self.crypto_record(ns)? {
            None => Ok(ObjectSet::new(&self.db, ns)),
            Some(rec) => {
                let keys = self.namespace_keys(ns, &rec)?;
                // unsealed objects are legitimate only while a plaintext namespace is being encrypted
                let allow_plain = rec.job.as_ref().is_some_and(|j| j.from.is_none());
                let sealer = NsSealer::new(ns, &keys, rec.current, allow_plain);
                Ok(ObjectSet::with_sealer(&self.db, ns, Box::new(sealer)))
            }
        }
    }

    /// The sealer of namespace `ns` with the keys of record `rec` (which
    /// need not be stored yet), sealing new objects under key version
    /// `sealing`: for a rebuild ([`crate::rotation`]).
    pub fn sealer_for(&self, ns: &str, rec: &CryptoRecord, sealing: u32) -> Result<NsSealer> {
        let keys = self.namespace_keys(ns, rec)?;
        Ok(NsSealer::new(ns, &keys, Some(sealing), true))
    }

    /// Put `new` (written by [`Db::copy_into`]) in place of this store's
    /// database ([`Db::replace_with`]); cached keys and nodes are dropped.
    pub(crate) fn replace_database(&mut self, new: Db) -> Result<()> {
        self.db.replace_with(new)?;
        self.forget_keys();
        Ok(())
    }

    /// The default branch of `ns`; errors when `ns` does not exist.
    pub fn default_branch(&self, ns: &str) -> Result<String> {
        self.db
            .namespace_default_branch(ns)?
            .ok_or_else(|| Error::NoNamespace(ns.to_string()))
    }

    /// Create a plaintext namespace whose `main` branch holds one empty root commit.
    pub fn create_namespace(&self, ns: &str) -> Result<ObjectId> {
        self.create_namespace_with(ns, &NamespaceOptions::default())
    }

    /// Create a namespace (encrypted, password-protected or plain).
    pub fn create_namespace_with(&self, ns: &str, opts: &NamespaceOptions) -> Result<ObjectId> {
        refs::validate_name("namespace", ns)?;
        if self.db.namespace_default_branch(ns)?.is_some() {
            return Err(Error::NamespaceExists(ns.to_string()));
        }
        let mut record = None;
        let objs = if opts.encrypted || opts.password.is_some() {
            let kek = self.master_key()?;
            let (password, pw_key) = match &opts.password {
                Some(p) => {
                    if p.is_empty() {
                        return Err(Error::BadKey {
                            what: "password".into(),
                            reason: "it is empty".into(),
                        });
                    }
                    let (rec, key) = crypto::new_password(ns, p, opts.kdf.unwrap_or_default())?;
                    (Some(rec), Some(key))
                }
                None => (None, None),
            };
            let nk = crypto::new_key(kek, ns, 1, pw_key.as_ref());
            let rec = CryptoRecord {
                format: 1,
                kek_id: kek.id(),
                current: Some(1),
                keys: vec![nk.wrapped],
                password,
                job: None,
                erase_pending: false,
            };
            let keys: BTreeMap<u32, Secret> = [(1, nk.dek)].into();
            let sealer = NsSealer::new(ns, &keys, Some(1), false);
            self.opened
                .borrow_mut()
                .insert(ns.to_string(), Arc::new(keys));
            record = Some(rec);
            ObjectSet::with_sealer(&self.db, ns, Box::new(sealer))
        } else {
            ObjectSet::new(&self.db, ns)
        };
        let now = clock::now();
        let root = Commit {
            tree: tree::empty(&objs)?,
            parents: vec![],
            author: self.actor.clone(),
            time: now.clone(),
            message: format!("Create namespace {ns}"),
            quads: 0,
            generation: 0,
        };
        let id = root.store(&objs)?;
        let branch = refs::branch(DEFAULT_BRANCH);
        self.db.write(|db| {
            if db.namespace_default_branch(ns)?.is_some() {
                return Err(Error::NamespaceExists(ns.to_string()));
            }
            db.insert_namespace(ns, &now, DEFAULT_BRANCH)?;
            if let Some(rec) = &record {
                db.set_crypto_record(ns, Some(&rec.to_json()))?;
            }
            objs.flush()?;
            db.set_ref(ns, &branch, &id)?;
            db.append_reflog(
                ns,
                &branch,
                None,
                Some(&id),
                &now,
                &self.actor,
                "namespace created",
            )?;
            audit::append(
                db,
                &Event::new(&self.actor, "ns.create")
                    .ns(ns)
                    .target(ns)
                    .detail(serde_json::json!({
                        "encrypted": record.is_some(),
                        "password": record.as_ref().is_some_and(|r| r.password.is_some()),
                        "kek_id": record.as_ref().map(|r| r.kek_id.clone()),
                    })),
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Delete a namespace with all its objects, refs and reflog.
    pub fn delete_namespace(&self, ns: &str) -> Result<()> {
        self.db.write(|db| {
            if db.namespace_default_branch(ns)?.is_none() {
                return Err(Error::NoNamespace(ns.to_string()));
            }
            let (objects, bytes) = db.object_stats(ns)?;
            db.delete_namespace(ns)?;
            self.opened.borrow_mut().remove(ns);
            self.nodes
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(ns);
            audit::append(
                db,
                &Event::new(&self.actor, "ns.delete")
                    .ns(ns)
                    .target(ns)
                    .detail(serde_json::json!({ "objects": objects, "bytes": bytes })),
            )?;
            Ok(())
        })
    }

    /// Names of all namespaces.
    pub fn namespaces(&self) -> Result<Vec<String>> {
        Ok(self.db.namespaces()?.into_iter().map(|(n, _)| n).collect())
    }

    /// Record an audit event in its own transaction.
    pub fn record(&self, event: &Event) -> Result<i64> {
        audit::record(&self.db, event)
    }

    /// A store-unique tag for one import's blank nodes.
    pub fn next_import_tag(&self) -> Result<String> {
        self.db.write(|db| {
            let n: u64 = db
                .meta("imports")?
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
                + 1;
            db.set_meta("imports", &n.to_string())?;
            Ok(n.to_string())
        })
    }

    /// Move `refname` from `expected` to `new`, writing the buffered objects of
    /// `objs`, a reflog entry and `event` in one transaction. If the ref no
    /// longer points at `expected`, nothing is written and a conflict is returned.
    /// Returns (objects, bytes) newly written.
    pub fn land(
        &self,
        objs: &ObjectSet,
        refname: &str,
        expected: Option<ObjectId>,
        new: ObjectId,
        reflog_message: &str,
        event: &Event,
    ) -> Result<(u64, u64)> {
        let ns = objs.ns();
        self.db.write(|db| {
            if db.namespace_default_branch(ns)?.is_none() {
                return Err(Error::NoNamespace(ns.to_string()));
            }
            // a key rotation may have switched keys since `objs` was opened
            let current = match db.crypto_record(ns)? {
                Some(b) => CryptoRecord::from_json(ns, &b)?.current,
                None => None,
            };
            if current != objs.sealing_version() {
                return Err(Error::Other(format!(
                    "the keys of namespace `{ns}` were rotated while this operation ran; nothing was written, retry"
                )));
            }
            if self.deny_protected {
                if let Some(branch) = refname.strip_prefix(refs::HEADS) {
                    if db.is_protected(ns, branch)? {
                        return Err(Error::Protected {
                            ns: ns.to_string(),
                            branch: branch.to_string(),
                        });
                    }
                }
            }
            let actual = db.get_ref(ns, refname)?;
            if actual != expected {
                return Err(Error::Conflict {
                    ns: ns.to_string(),
                    branch: refname.trim_start_matches(refs::HEADS).to_string(),
                    expected: expected
                        .map(|e| e.short())
                        .unwrap_or_else(|| "nothing".into()),
                    actual: actual
                        .map(|e| e.short())
                        .unwrap_or_else(|| "nothing (deleted)".into()),
                });
            }
            let written = objs.flush()?;
            db.set_ref(ns, refname, &new)?;
            db.append_reflog(
                ns,
                refname,
                expected.as_ref(),
                Some(&new),
                &clock::now(),
                &self.actor,
                reflog_message,
            )?;
            audit::append(db, event)?;
            Ok(written)
        })
    }

    /// Run a hook. A failing or timed-out `pre-*` hook becomes
    /// [`Error::HookRejected`] (and is audited); a failing `post-*` hook is
    /// audited and returned for the caller to report.
    pub fn run_hook(
        &self,
        hook: Hook,
        ns: &str,
        operation: &'static str,
        payload: &serde_json::Value,
    ) -> Result<Option<HookRun>> {
        let Some(run) = self.hooks.run(hook, ns, payload)? else {
            return Ok(None);
        };
        if let Some(observe) = &self.hook_observer {
            observe(&run);
        }
        if run.ok() {
            return Ok(Some(run));
        }
        let reason = run.failure(self.hooks.timeout);
        let outcome = if hook.is_pre() {
            audit::Outcome::Denied
        } else {
            audit::Outcome::Failure
        };
        self.record(
            &Event::new(&self.actor, &format!("hook.{}", hook.file_name()))
                .ns(ns)
                .target(operation)
                .outcome(outcome)
                .detail(serde_json::json!({ "code": run.code, "timed_out": run.timed_out, "stderr": reason })),
        )?;
        if hook.is_pre() {
            return Err(Error::HookRejected {
                hook: hook.file_name().to_string(),
                operation,
                stderr: reason,
            });
        }
        tracing::info!(hook = hook.file_name(), ns, "hook failed: {reason}");
        Ok(Some(run))
    }
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}
