//! Ref names and how a user-typed ref resolves to a commit.
//!
//! Branches are stored as `heads/NAME`, tags as `tags/NAME`. A ref spec is a
//! full ref name (`heads/NAME`, `tags/NAME`), a branch, a tag (a branch of the
//! same name wins), or a full or unique-prefix commit id, optionally followed
//! by `~N` (the N-th first-parent ancestor).

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::objects::ObjectSet;

pub const HEADS: &str = "heads/";
pub const TAGS: &str = "tags/";

pub fn branch(name: &str) -> String {
    format!("{HEADS}{name}")
}

pub fn tag(name: &str) -> String {
    format!("{TAGS}{name}")
}

/// Check a branch, tag or namespace name: letters, digits and `._-/`, no `..`,
/// not starting with `-` or `/`, not ending with `/`, at most 200 bytes.
pub fn validate_name(what: &'static str, name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            what,
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 200 {
        return bad("it is longer than 200 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/'))
    {
        return bad("only letters, digits and . _ - / are allowed");
    }
    if name.starts_with(['-', '/', '.'])
        || name.ends_with(['/', '.'])
        || name.contains("..")
        || name.contains("//")
    {
        return bad("it may not start with - / or ., end with / or ., or contain .. or //");
    }
    Ok(())
}

/// Resolve a ref spec in the namespace of `objs` to a commit id.
pub fn resolve(objs: &ObjectSet, spec: &str) -> Result<ObjectId> {
    let ns = objs.ns();
    let unknown = || Error::UnknownRef {
        ns: ns.to_string(),
        reference: spec.to_string(),
    };
    let (base, back) = match spec.rsplit_once('~') {
        Some((b, "")) => (b, 1),
        Some((b, n)) => (b, n.parse::<usize>().map_err(|_| unknown())?),
        None => (spec, 0),
    };
    let db = objs.db();
    let full = (base.starts_with(HEADS) || base.starts_with(TAGS)).then_some(base);
    let mut id = if let Some(id) = match full {
        Some(f) => db.get_ref(ns, f)?,
        None => None,
    } {
        id
    } else if let Some(id) = db.get_ref(ns, &branch(base))? {
        id
    } else if let Some(id) = db.get_ref(ns, &tag(base))? {
        id
    } else if base.len() >= 4 && base.len() <= 64 && base.chars().all(|c| c.is_ascii_hexdigit()) {
        let found = db.commits_with_prefix(ns, &base.to_ascii_lowercase(), 3)?;
        match found.len() {
            0 => return Err(unknown()),
            1 => found[0],
            _ => {
                return Err(Error::AmbiguousRef {
                    ns: ns.to_string(),
                    reference: spec.to_string(),
                    candidates: found
                        .iter()
                        .map(|i| i.short())
                        .collect::<Vec<_>>()
                        .join(", "),
                })
            }
        }
    } else {
        return Err(unknown());
    };
    for _ in 0..back {
        let c = Commit::load(objs, &id)?;
        id = *c.parents.first().ok_or_else(unknown)?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["main", "feature/x-1", "v1.0", "a_b"] {
            validate_name("branch", ok).unwrap();
        }
        for bad in ["", "-x", "a..b", "a b", "x/", "/x", "a~1", "a:b", ".hidden"] {
            assert!(validate_name("branch", bad).is_err(), "{bad}");
        }
    }
}
