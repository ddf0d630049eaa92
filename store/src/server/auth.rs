//! Who is calling: the bearer token, the unlock token for password
//! namespaces, the client address; and the limiter that slows down clients
//! whose requests keep failing authentication.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use zeroize::Zeroizing;

use crate::server::roles::Role;

/// Header carrying an unlock token (from `POST /v1/unlock` or `qg ns unlock`)
/// that opens a password-protected namespace for this request.
pub const UNLOCK_HEADER: &str = "x-qg-unlock-token";

/// The caller of one request, as its headers and connection say.
pub struct Caller {
    /// The bearer token (None: no `Authorization` header; Some("") when it is not `Bearer …`).
    pub bearer: Option<Zeroizing<String>>,
    pub unlock: Option<Zeroizing<String>>,
    pub client: IpAddr,
    pub method: String,
    pub path: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let bearer = parts.headers.get(header::AUTHORIZATION).map(|v| {
            let v = v.to_str().unwrap_or("").trim();
            let token = match v.split_once(' ') {
                Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
                _ => "",
            };
            Zeroizing::new(token.to_string())
        });
        let unlock = parts
            .headers
            .get(UNLOCK_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| Zeroizing::new(v.trim().to_string()))
            .filter(|v| !v.is_empty());
        let client = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip())
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Ok(Caller {
            bearer,
            unlock,
            client,
            method: parts.method.to_string(),
            path: parts.uri.path().to_string(),
        })
    }
}

/// What an operation needs from the caller.
#[derive(Debug, Clone)]
pub struct Need {
    /// None: the whole store; Some: one namespace.
    pub ns: Option<String>,
    pub role: Role,
}

impl Need {
    pub fn ns(ns: &str, role: Role) -> Need {
        Need {
            ns: Some(ns.to_string()),
            role,
        }
    }

    pub fn store(role: Role) -> Need {
        Need { ns: None, role }
    }

    /// Any valid token (listing namespaces, whoami).
    pub fn any() -> Need {
        Need {
            ns: None,
            role: Role::Reader,
        }
    }
}

/// Sliding-window counter of authentication failures per key (client
/// address, or token id for authorization failures). A key with `max`
/// failures within `window` is refused outright until the oldest one ages out.
pub struct Limiter {
    max: usize,
    window: Duration,
    seen: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(max: usize, window: Duration) -> Limiter {
        Limiter {
            max: max.max(1),
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Seconds until `key` may try again, if it is blocked now.
    pub fn blocked(&self, key: &str) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let q = seen.get_mut(key)?;
        let now = Instant::now();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        if q.len() >= self.max {
            let oldest = *q.front().expect("non-empty");
            let wait = self.window.saturating_sub(now.duration_since(oldest));
            return Some(wait.as_secs() + 1);
        }
        None
    }

    /// Count a failure; true when this one reaches the limit.
    pub fn record(&self, key: &str) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if seen.len() > 10_000 {
            let window = self.window;
            seen.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < window));
        }
        let q = seen.entry(key.to_string()).or_default();
        while q
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            q.pop_front();
        }
        q.push_back(now);
        q.len() == self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_blocks_after_max_and_keys_are_separate() {
        let l = Limiter::new(3, Duration::from_secs(60));
        assert!(!l.record("a") && !l.record("a"));
        assert!(l.blocked("a").is_none());
        assert!(l.record("a"));
        assert!(l.blocked("a").is_some_and(|w| w <= 60));
        assert!(l.blocked("b").is_none());
        let short = Limiter::new(1, Duration::from_millis(50));
        short.record("x");
        assert!(short.blocked("x").is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(short.blocked("x").is_none());
    }
}
