//! API tokens of `qg serve`.
//!
//! A token is `qgt_` followed by 64 hex digits (256 random bits). It is shown
//! once, when created; the store keeps only its SHA-256 hash with the user,
//! role, optional namespace and expiry, under a short public id that names the
//! token in listings, audit entries and revocation.

use std::time::Duration;

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::audit::{self, Event};
use crate::error::{Error, Result};
use crate::server::roles::{Principal, Role};
use crate::storage::{ApiTokenRow, Db};
use crate::store::Store;
use crate::{clock, refs};

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "qgt_";

/// What token to make.
#[derive(Debug, Clone)]
pub struct TokenOptions {
    pub user: String,
    pub role: Role,
    /// Limit the token to this namespace (None: every namespace).
    pub ns: Option<String>,
    /// Valid for this long (None: until revoked).
    pub expires: Option<Duration>,
}

/// A new token: the secret (shown once) and what the store keeps about it.
pub struct NewToken {
    pub token: Zeroizing<String>,
    pub info: ApiTokenRow,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn random_hex<const N: usize>() -> String {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    hex::encode(b)
}

/// Parse a lifetime: `90s`, `15m`, `12h`, `30d`.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("bad duration `{s}`: use e.g. 90s, 15m, 12h, 30d");
    let (n, unit) = s.split_at(s.char_indices().last().map_or(0, |(i, _)| i));
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        "d" => n.checked_mul(86400),
        _ => None,
    }
    .ok_or_else(bad)?;
    if secs == 0 {
        return Err("the duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

/// Create a token; audited as `token.create` (never with the token itself).
pub fn create_token(store: &Store, opts: &TokenOptions) -> Result<NewToken> {
    let user = opts.user.as_str();
    if user.is_empty() || user.chars().count() > 200 || user.chars().any(char::is_control) {
        return Err(Error::InvalidName {
            what: "user",
            name: opts.user.clone(),
            reason: "a user name is 1 to 200 characters without control characters",
        });
    }
    if let Some(ns) = &opts.ns {
        refs::validate_name("namespace", ns)?;
        store.default_branch(ns)?;
    }
    let token = Zeroizing::new(format!("{TOKEN_PREFIX}{}", random_hex::<32>()));
    let now = time::OffsetDateTime::now_utc();
    let expires = match opts.expires {
        Some(d) => {
            let bad = |reason: &str| Error::BadTime {
                value: format!("{} s", d.as_secs()),
                reason: reason.to_string(),
            };
            if d.is_zero() {
                return Err(bad("a token lifetime must be positive"));
            }
            let at = time::Duration::try_from(d)
                .ok()
                .and_then(|d| now.checked_add(d))
                .filter(|t| t.year() <= 9999)
                .ok_or_else(|| bad("the token would expire after the year 9999"))?;
            Some(clock::format(at))
        }
        None => None,
    };
    let info = ApiTokenRow {
        id: random_hex::<6>(),
        user: user.to_string(),
        role: opts.role.as_str().to_string(),
        ns: opts.ns.clone(),
        created: clock::format(now),
        expires,
        revoked: None,
    };
    store.db().write(|db| {
        db.ensure_server_tables()?;
        db.insert_api_token(&info, &hash(&token))?;
        audit::append(
            db,
            &Event::new(store.actor(), "token.create")
                .target(info.id.clone())
                .detail(serde_json::json!({
                    "id": info.id, "user": info.user, "role": info.role,
                    "ns": info.ns, "expires": info.expires,
                })),
        )?;
        Ok(())
    })?;
    Ok(NewToken { token, info })
}

/// Every token (never the secrets), oldest first.
pub fn list_tokens(store: &Store) -> Result<Vec<ApiTokenRow>> {
    if !store.db().has_server_tables()? {
        return Ok(Vec::new());
    }
    store.db().api_tokens()
}

/// Revoke a token by id; audited as `token.revoke`.
pub fn revoke_token(store: &Store, id: &str) -> Result<()> {
    store.db().write(|db| {
        db.ensure_server_tables()?;
        if !db.revoke_api_token(id, &clock::now())? {
            return Err(Error::UnknownToken(id.to_string()));
        }
        audit::append(
            db,
            &Event::new(store.actor(), "token.revoke").target(id.to_string()),
        )?;
        Ok(())
    })
}

/// Why a presented token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Unknown => "unknown",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
        }
    }

    /// The message a client sees.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::Missing => {
                "authentication required: send `Authorization: Bearer <token>` (tokens come from `qg token create`)"
            }
            Refusal::Malformed => "the bearer token is malformed",
            Refusal::Unknown => "the bearer token is not valid",
            Refusal::Revoked => "the bearer token has been revoked",
            Refusal::Expired => "the bearer token has expired",
        }
    }
}

/// Check a presented token. `Ok(Err(_))` is a refusal (with the token's
/// principal when it exists but is revoked or expired).
pub fn authenticate(
    db: &Db,
    token: &str,
) -> Result<std::result::Result<Principal, (Refusal, Option<Principal>)>> {
    let Some(hexpart) = token.strip_prefix(TOKEN_PREFIX) else {
        return Ok(Err((Refusal::Malformed, None)));
    };
    if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Err((Refusal::Malformed, None)));
    }
    let Some(row) = db.api_token_by_hash(&hash(token))? else {
        return Ok(Err((Refusal::Unknown, None)));
    };
    let principal = Principal {
        token_id: row.id.clone(),
        user: row.user.clone(),
        role: Role::from_name(&row.role).unwrap_or(Role::Reader),
        ns: row.ns.clone(),
    };
    if row.revoked.is_some() {
        return Ok(Err((Refusal::Revoked, Some(principal))));
    }
    if row
        .expires
        .as_deref()
        .is_some_and(|e| e <= clock::now().as_str())
    {
        return Ok(Err((Refusal::Expired, Some(principal))));
    }
    Ok(Ok(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hashed_checked_and_revoked() {
        let d = tempfile::tempdir().unwrap();
        let store = Store::init(d.path()).unwrap();
        let t = create_token(
            &store,
            &TokenOptions {
                user: "alice".into(),
                role: Role::Writer,
                ns: Some("default".into()),
                expires: None,
            },
        )
        .unwrap();
        assert!(t.token.starts_with(TOKEN_PREFIX) && t.token.len() == 68);
        let p = authenticate(store.db(), &t.token).unwrap().unwrap();
        assert_eq!((p.user.as_str(), p.role), ("alice", Role::Writer));
        // only the hash is stored
        let rows: Vec<Vec<u8>> = {
            let mut s = store
                .db()
                .conn
                .prepare("SELECT hash FROM api_tokens")
                .unwrap();
            s.query_map([], |r| r.get(0))
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap()
        };
        assert_eq!(rows, vec![hash(&t.token).to_vec()]);
        let mut wrong = t.token.to_string();
        wrong.replace_range(10..11, if &wrong[10..11] == "0" { "1" } else { "0" });
        assert_eq!(
            authenticate(store.db(), &wrong).unwrap().unwrap_err().0,
            Refusal::Unknown
        );
        assert_eq!(
            authenticate(store.db(), "nope").unwrap().unwrap_err().0,
            Refusal::Malformed
        );
        revoke_token(&store, &t.info.id).unwrap();
        assert_eq!(
            authenticate(store.db(), &t.token).unwrap().unwrap_err().0,
            Refusal::Revoked
        );
        assert!(revoke_token(&store, &t.info.id).is_err());
        assert!(create_token(
            &store,
            &TokenOptions {
                user: "bob".into(),
                role: Role::Reader,
                ns: Some("nosuch".into()),
                expires: None
            }
        )
        .is_err());
        assert_eq!(parse_duration("30d").unwrap().as_secs(), 30 * 86400);
        assert!(parse_duration("0s").is_err() && parse_duration("3w").is_err());
    }
}
