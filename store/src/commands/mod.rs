//! One module per command. Each takes typed `*Options` and returns a typed
//! result; none prints. The `qg` binary is a thin shell over these.

pub mod branch;
pub mod bulk_load;
pub mod commit;
pub mod diff;
pub mod export;
pub mod fsck;
pub mod gc;
pub mod log;
pub mod merge;
pub mod query;

use crate::error::Result;
use crate::rdf;
use crate::tree::Change;

/// Hooks get the changed quads inline up to this many per side; beyond, a file path.
const HOOK_INLINE_QUADS: usize = 10_000;

/// The added/removed part of a hook document. The returned temp files must
/// live until the hook has run.
pub(crate) fn hook_changes(
    changes: &[Change],
) -> Result<(serde_json::Value, Vec<tempfile::NamedTempFile>)> {
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let (mut na, mut nr) = (0usize, 0usize);
    for c in changes {
        match c {
            Change::Added(k) => {
                na += 1;
                rdf::nquad_line(k, &mut added);
            }
            Change::Removed(k) => {
                nr += 1;
                rdf::nquad_line(k, &mut removed);
            }
        }
    }
    let mut files = Vec::new();
    let mut side = |n: usize, text: Vec<u8>| -> Result<(serde_json::Value, serde_json::Value)> {
        if n <= HOOK_INLINE_QUADS {
            Ok((
                String::from_utf8_lossy(&text).into_owned().into(),
                serde_json::Value::Null,
            ))
        } else {
            let mut f = tempfile::Builder::new()
                .prefix("qg-hook-")
                .suffix(".nq")
                .tempfile()?;
            std::io::Write::write_all(&mut f, &text)?;
            let path = f.path().display().to_string();
            files.push(f);
            Ok((serde_json::Value::Null, path.into()))
        }
    };
    let (added_inline, added_file) = side(na, added)?;
    let (removed_inline, removed_file) = side(nr, removed)?;
    Ok((
        serde_json::json!({
            "added_count": na,
            "removed_count": nr,
            "added": added_inline,
            "removed": removed_inline,
            "added_file": added_file,
            "removed_file": removed_file,
        }),
        files,
    ))
}

/// A branch to write to: its name (the namespace's default when None), full
/// ref name, and current head.
pub(crate) struct Target {
    pub branch: String,
    pub refname: String,
    pub head: crate::id::ObjectId,
}

pub(crate) fn target_branch(
    store: &crate::store::Store,
    ns: &str,
    branch: Option<&str>,
) -> Result<Target> {
    let branch = match branch {
        Some(b) => b.to_string(),
        None => store.default_branch(ns)?,
    };
    crate::refs::validate_name("branch", &branch)?;
    let refname = crate::refs::branch(&branch);
    let head =
        store
            .db()
            .get_ref(ns, &refname)?
            .ok_or_else(|| crate::error::Error::UnknownRef {
                ns: ns.to_string(),
                reference: branch.clone(),
            })?;
    Ok(Target {
        branch,
        refname,
        head,
    })
}

/// A new commit on its way to becoming a branch head.
pub(crate) struct Publish<'s, 'o, 'a> {
    pub store: &'s crate::store::Store,
    pub objs: &'o crate::objects::ObjectSet<'a>,
    /// Names the operation in hook errors and audit entries: `commit`, `merge`, ...
    pub operation: &'static str,
    /// The hook that may veto (`pre-commit`, `pre-merge`) and the one told after.
    pub pre: crate::hooks::Hook,
    pub post: crate::hooks::Hook,
    /// The hook document, without its `hook` field.
    pub doc: serde_json::Value,
    pub refname: &'s str,
    pub parent: crate::id::ObjectId,
    pub commit: crate::id::ObjectId,
    pub reflog: String,
    pub event: crate::audit::Event,
}

/// Run the pre-hook (a failure aborts), land objects, ref, reflog and audit
/// entry in one transaction, then run the post hooks and `post-receive`.
/// Returns (objects, bytes) written and the post hooks' failures.
pub(crate) fn publish(p: Publish) -> Result<((u64, u64), Vec<String>)> {
    let ns = p.objs.ns();
    let with_hook =
        |h: crate::hooks::Hook| extend(p.doc.clone(), serde_json::json!({"hook": h.file_name()}));
    p.store
        .run_hook(p.pre, ns, p.operation, &with_hook(p.pre))?;
    let written = p.store.land(
        p.objs,
        p.refname,
        Some(p.parent),
        p.commit,
        &p.reflog,
        &p.event,
    )?;
    let mut warnings = Vec::new();
    for hook in [p.post, crate::hooks::Hook::PostReceive] {
        if let Some(run) = p.store.run_hook(hook, ns, p.operation, &with_hook(hook))? {
            if !run.ok() {
                warnings.push(format!(
                    "{} hook failed: {}",
                    hook.file_name(),
                    run.failure(p.store.hooks().timeout)
                ));
            }
        }
    }
    Ok((written, warnings))
}

/// A commit message as audit entries and the reflog may show it: encrypted
/// namespaces keep their messages inside sealed commits only.
pub(crate) fn loggable(objs: &crate::objects::ObjectSet, message: &str) -> Option<String> {
    (!objs.is_sealed()).then(|| message.lines().next().unwrap_or("").to_string())
}

/// Merge `extra` (a JSON object) into `base` (a JSON object).
pub(crate) fn extend(mut base: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    if let (Some(b), serde_json::Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}
