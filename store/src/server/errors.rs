//! The one place where store errors become HTTP statuses, and the JSON error body.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::{Error, ErrorKind};

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Short machine-readable code: `bad_request`, `unauthorized`, `forbidden`,
    /// `not_found`, `conflict`, `merge_conflict`, `hook_rejected`, `locked`, ...
    pub error: String,
    /// One sentence naming what went wrong and where (the CLI's error text).
    pub message: String,
    /// Specifics: the conflict list of a merge, the hook's stderr, the branch heads of a CAS failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// An error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<serde_json::Value>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn too_many(message: impl Into<String>, wait_secs: u64) -> Self {
        let mut e = Self::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
        e.retry_after = Some(wait_secs.max(1));
        e
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A rejection of axum's body or query extraction (status kept: 413 stays 413).
    pub fn rejected(status: StatusCode, what: &str, text: String) -> Self {
        match status {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                status,
                "payload_too_large",
                format!("the request body is larger than this server accepts ({text})"),
            ),
            s if s.is_server_error() => Self::internal(format!("cannot read the {what}: {text}")),
            _ => Self::bad_request(format!("bad {what}: {text}")),
        }
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        use Error::*;
        let message = err.to_string();
        let (status, code, details) = match &err {
            NoNamespace(_) | UnknownRef { .. } | UnknownToken(_) => {
                (StatusCode::NOT_FOUND, "not_found", None)
            }
            NamespaceExists(_) | BranchExists(_) | TagExists(_) | DeleteDefaultBranch(_) => {
                (StatusCode::CONFLICT, "conflict", None)
            }
            Conflict {
                ns,
                branch,
                expected,
                actual,
            } => (
                StatusCode::CONFLICT,
                "conflict",
                Some(serde_json::json!({
                    "ns": ns, "branch": branch, "expected": expected, "actual": actual,
                })),
            ),
            MergeConflict {
                source_ref,
                target,
                conflicts,
            } => (
                StatusCode::CONFLICT,
                "merge_conflict",
                Some(serde_json::json!({
                    "source": source_ref, "into": target, "conflicts": conflicts,
                })),
            ),
            HookRejected {
                hook,
                operation,
                stderr,
            } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "hook_rejected",
                Some(serde_json::json!({"hook": hook, "operation": operation, "stderr": stderr})),
            ),
            Locked { ns, .. } => (
                StatusCode::LOCKED,
                "locked",
                Some(serde_json::json!({ "ns": ns })),
            ),
            RateLimited { wait_secs, .. } => {
                let mut e = ApiError::too_many(message, *wait_secs);
                e.details = Some(serde_json::json!({ "retry_after_secs": wait_secs }));
                return e;
            }
            Protected { ns, branch } => (
                StatusCode::FORBIDDEN,
                "protected_branch",
                Some(serde_json::json!({"ns": ns, "branch": branch})),
            ),
            EmptyCommit(_) => (StatusCode::BAD_REQUEST, "empty_commit", None),
            NoStore { .. } | NotAStore { .. } | UnsupportedVersion { .. } => {
                (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", None)
            }
            KeyExhausted { .. } => (StatusCode::SERVICE_UNAVAILABLE, "key_exhausted", None),
            Sqlite(rusqlite::Error::SqliteFailure(e, _))
                if matches!(
                    e.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                (StatusCode::SERVICE_UNAVAILABLE, "busy", None)
            }
            e if e.kind() == ErrorKind::Usage => (StatusCode::BAD_REQUEST, "bad_request", None),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal", None),
        };
        if status.is_server_error() {
            tracing::error!(status = status.as_u16(), "{message}");
        }
        ApiError {
            status,
            code,
            message,
            details,
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.code.to_string(),
            message: self.message,
            details: self.details,
        };
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"quadgit\""),
            );
        }
        resp
    }
}
