//! Roles and what they allow. A token grants one role, either in one
//! namespace or (no namespace) in all of them; store-wide operations
//! (creating namespaces, managing tokens, the whole audit log) need a
//! store-wide admin token.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Roles, weakest first: each includes everything the ones before it may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub enum Role {
    /// Read: log, show, diff, export, query, refs.
    Reader,
    /// Commit to branches that are not protected.
    Writer,
    /// Merge, create and delete branches and tags, protect branches, commit to protected branches.
    Maintainer,
    /// Namespaces, tokens, the audit log.
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Reader, Role::Writer, Role::Maintainer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Reader => "reader",
            Role::Writer => "writer",
            Role::Maintainer => "maintainer",
            Role::Admin => "admin",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Parse a role name, with an error listing the valid ones.
    pub fn parse(name: &str) -> Result<Role> {
        Role::from_name(name).ok_or_else(|| Error::InvalidName {
            what: "role",
            name: name.to_string(),
            reason: "roles are reader, writer, maintainer and admin",
        })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request acts as: the holder of one API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Principal {
    /// Public id of the token.
    pub token_id: String,
    pub user: String,
    pub role: Role,
    /// The namespace the token is limited to (None: every namespace).
    pub ns: Option<String>,
}

/// Where an operation acts.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The whole store (namespace create, tokens, the full audit log).
    Store,
    /// One namespace.
    Ns(&'a str),
}

impl Principal {
    /// The role this principal holds in `ns` (None: the token is for another namespace).
    pub fn role_in(&self, ns: &str) -> Option<Role> {
        match &self.ns {
            Some(n) if n != ns => None,
            _ => Some(self.role),
        }
    }

    /// May this principal do something needing `need` in `scope`?
    pub fn allows(&self, scope: Scope, need: Role) -> bool {
        match scope {
            Scope::Store => self.ns.is_none() && self.role >= need,
            Scope::Ns(ns) => self.role_in(ns).is_some_and(|r| r >= need),
        }
    }

    /// May this principal see namespace `ns` at all?
    pub fn sees(&self, ns: &str) -> bool {
        self.role_in(ns).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(role: Role, ns: Option<&str>) -> Principal {
        Principal {
            token_id: "t".into(),
            user: "u".into(),
            role,
            ns: ns.map(str::to_string),
        }
    }

    #[test]
    fn roles_nest_and_scopes_bind() {
        assert!(Role::Admin > Role::Maintainer && Role::Maintainer > Role::Writer);
        let w = p(Role::Writer, Some("a"));
        assert!(w.allows(Scope::Ns("a"), Role::Reader));
        assert!(w.allows(Scope::Ns("a"), Role::Writer));
        assert!(!w.allows(Scope::Ns("a"), Role::Maintainer));
        assert!(!w.allows(Scope::Ns("b"), Role::Reader));
        let ns_admin = p(Role::Admin, Some("a"));
        assert!(!ns_admin.allows(Scope::Store, Role::Admin));
        assert!(p(Role::Admin, None).allows(Scope::Store, Role::Admin));
        assert!(!p(Role::Maintainer, None).allows(Scope::Store, Role::Admin));
        assert_eq!(Role::parse("writer").unwrap(), Role::Writer);
        assert!(Role::parse("root")
            .unwrap_err()
            .to_string()
            .contains("reader"));
    }
}
