//! `qg branch` and `qg tag`: listing, creating and deleting refs.

use serde::Serialize;

use crate::audit::Event;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::refs;
use crate::store::Store;

/// A branch or tag.
#[derive(Debug, Clone, Serialize)]
pub struct RefInfo {
    pub name: String,
    pub target: ObjectId,
    /// True for the namespace's default branch.
    pub default: bool,
}

fn list(store: &Store, ns: &str, prefix: &str) -> Result<Vec<RefInfo>> {
    let default = store.default_branch(ns)?;
    Ok(store
        .db()
        .refs(ns, prefix)?
        .into_iter()
        .map(|(name, target)| {
            let short = name[prefix.len()..].to_string();
            RefInfo {
                default: prefix == refs::HEADS && short == default,
                name: short,
                target,
            }
        })
        .collect())
}

pub fn branches(store: &Store, ns: &str) -> Result<Vec<RefInfo>> {
    list(store, ns, refs::HEADS)
}

pub fn tags(store: &Store, ns: &str) -> Result<Vec<RefInfo>> {
    list(store, ns, refs::TAGS)
}

fn create(
    store: &Store,
    ns: &str,
    what: &'static str,
    name: &str,
    from: Option<&str>,
) -> Result<RefInfo> {
    refs::validate_name(what, name)?;
    let objs = store.objects(ns)?;
    let from = match from {
        Some(f) => f.to_string(),
        None => store.default_branch(ns)?,
    };
    let target = refs::resolve(&objs, &from)?;
    let (refname, exists) = if what == "branch" {
        (refs::branch(name), Error::BranchExists(name.to_string()))
    } else {
        (refs::tag(name), Error::TagExists(name.to_string()))
    };
    if store.db().get_ref(ns, &refname)?.is_some() {
        return Err(exists);
    }
    let event = Event::new(store.actor(), &format!("{what}.create"))
        .ns(ns)
        .target(refname.clone())
        .detail(serde_json::json!({ "target": target, "from": from }));
    store
        .land(
            &objs,
            &refname,
            None,
            target,
            &format!("{what} created from {from}"),
            &event,
        )
        .map_err(|e| match e {
            Error::Conflict { .. } => exists,
            e => e,
        })?;
    Ok(RefInfo {
        name: name.to_string(),
        target,
        default: false,
    })
}

/// Create branch `name` at `from` (default: the default branch).
pub fn create_branch(store: &Store, ns: &str, name: &str, from: Option<&str>) -> Result<RefInfo> {
    create(store, ns, "branch", name, from)
}

/// Create tag `name` at `at` (default: the default branch).
pub fn create_tag(store: &Store, ns: &str, name: &str, at: Option<&str>) -> Result<RefInfo> {
    create(store, ns, "tag", name, at)
}

/// Delete a branch (not the default one). Its reflog keeps its commits from `gc`.
pub fn delete_branch(store: &Store, ns: &str, name: &str) -> Result<ObjectId> {
    if store.default_branch(ns)? == name {
        return Err(Error::DeleteDefaultBranch(name.to_string()));
    }
    let refname = refs::branch(name);
    store.db().write(|db| {
        let Some(target) = db.get_ref(ns, &refname)? else {
            return Err(Error::UnknownRef {
                ns: ns.to_string(),
                reference: name.to_string(),
            });
        };
        db.delete_ref(ns, &refname)?;
        db.append_reflog(
            ns,
            &refname,
            Some(&target),
            None,
            &crate::clock::now(),
            store.actor(),
            "branch deleted",
        )?;
        crate::audit::append(
            db,
            &Event::new(store.actor(), "branch.delete")
                .ns(ns)
                .target(refname.clone())
                .detail(serde_json::json!({ "target": target })),
        )?;
        Ok(target)
    })
}
