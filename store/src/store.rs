//! [`Store`]: an open QuadGit data directory.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::audit::{self, Event};
use crate::commit::Commit;
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
}

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
        }
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

    /// Objects of an existing namespace.
    pub fn objects(&self, ns: &str) -> Result<ObjectSet<'_>> {
        self.default_branch(ns)?;
        Ok(ObjectSet::new(&self.db, ns))
    }

    /// The default branch of `ns`; errors when `ns` does not exist.
    pub fn default_branch(&self, ns: &str) -> Result<String> {
        self.db
            .namespace_default_branch(ns)?
            .ok_or_else(|| Error::NoNamespace(ns.to_string()))
    }

    /// Create a namespace whose `main` branch holds one empty root commit.
    pub fn create_namespace(&self, ns: &str) -> Result<ObjectId> {
        refs::validate_name("namespace", ns)?;
        if self.db.namespace_default_branch(ns)?.is_some() {
            return Err(Error::NamespaceExists(ns.to_string()));
        }
        let objs = ObjectSet::new(&self.db, ns);
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
            audit::append(db, &Event::new(&self.actor, "ns.create").ns(ns).target(ns))?;
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
