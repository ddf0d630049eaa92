//! Protected branches (`qg branch protect NAME`): writers may not move them;
//! maintainers and admins may. The check runs in the commit's own transaction
//! ([`crate::Store::set_deny_protected`]), so it cannot race a protect.

use crate::audit::{self, Event};
use crate::error::{Error, Result};
use crate::refs;
use crate::store::Store;

/// Protect branch `branch` of `ns`; returns false when it already was.
pub fn protect(store: &Store, ns: &str, branch: &str) -> Result<bool> {
    change(store, ns, branch, true)
}

/// Lift the protection of `branch`; returns false when it was not protected.
pub fn unprotect(store: &Store, ns: &str, branch: &str) -> Result<bool> {
    change(store, ns, branch, false)
}

fn change(store: &Store, ns: &str, branch: &str, on: bool) -> Result<bool> {
    store.default_branch(ns)?;
    refs::validate_name("branch", branch)?;
    store.db().write(|db| {
        db.ensure_server_tables()?;
        if on && db.get_ref(ns, &refs::branch(branch))?.is_none() {
            return Err(Error::UnknownRef {
                ns: ns.to_string(),
                reference: branch.to_string(),
            });
        }
        let changed = if on {
            db.protect_branch(ns, branch, &crate::clock::now(), store.actor())?
        } else {
            db.unprotect_branch(ns, branch)?
        };
        if changed {
            audit::append(
                db,
                &Event::new(
                    store.actor(),
                    if on {
                        "branch.protect"
                    } else {
                        "branch.unprotect"
                    },
                )
                .ns(ns)
                .target(refs::branch(branch)),
            )?;
        }
        Ok(changed)
    })
}

/// Protected branches of `ns`, by name.
pub fn protected(store: &Store, ns: &str) -> Result<Vec<String>> {
    store.default_branch(ns)?;
    if !store.db().has_server_tables()? {
        return Ok(Vec::new());
    }
    store.db().protected_branches(ns)
}
