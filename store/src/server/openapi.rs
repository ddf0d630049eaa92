//! The OpenAPI 3.1 document served at `/openapi.json`, generated from the
//! handlers' annotations and the request/response types they (de)serialise.

use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi as Doc, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::errors::ErrorBody;
use super::roles::{Principal, Role};
use super::routes::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "QuadGit",
        description = "HTTP/JSON API of `qg serve`: namespaces, refs, commits, merges, export and query of a versioned RDF quad store. \
                       Authenticate with `Authorization: Bearer <token>` (tokens from `qg token create`). \
                       Path segments that contain `/` (namespaces, branches) are percent-encoded (`%2F`).",
        license(name = "Apache-2.0")
    ),
    paths(
        healthz, readyz, metrics, openapi_json, whoami,
        list_namespaces, create_namespace, delete_namespace,
        list_branches, create_branch, delete_branch, protect_branch, unprotect_branch,
        list_tags, create_tag,
        log_commits, show_commit, create_commit, diff_refs, merge_refs,
        export_ref, query_pattern,
        unlock, audit_log, create_token, list_tokens, revoke_token,
    ),
    components(schemas(ErrorBody, Role, Principal)),
    modifiers(&Security, &ErrorResponses),
    tags(
        (name = "operations", description = "Health, readiness, metrics, this document"),
        (name = "auth", description = "Tokens, unlocking password-protected namespaces"),
        (name = "namespaces"), (name = "refs"), (name = "commits"), (name = "data"), (name = "audit"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, doc: &mut Doc) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("An API token from `qg token create` (`qgt_…`)"))
                    .build(),
            ),
        );
    }
}

/// Every operation documents the errors any request can meet; secured ones
/// also 401/403/423/429, and those with a body 413.
struct ErrorResponses;

fn error_response(description: &str) -> RefOr<Response> {
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build(),
    )
}

fn add(op: &mut Operation, status: &str, description: &str) {
    op.responses
        .responses
        .entry(status.to_string())
        .or_insert_with(|| error_response(description));
}

impl Modify for ErrorResponses {
    fn modify(&self, doc: &mut Doc) {
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                if secured {
                    add(
                        op,
                        "400",
                        "Bad input: malformed JSON, RDF, name, ref or pattern",
                    );
                    add(
                        op,
                        "401",
                        "Missing, unknown, revoked or expired token (audited)",
                    );
                    add(op, "403", "The token's role does not allow this (audited), or the branch is protected");
                    add(op, "404", "No such namespace, ref or token");
                    add(
                        op,
                        "423",
                        "The namespace is encrypted and locked (send `X-QG-Unlock-Token`)",
                    );
                    add(
                        op,
                        "429",
                        "Too many failed authentications (or unlocks); see `Retry-After`",
                    );
                    add(
                        op,
                        "503",
                        "The store is unavailable or busy, or the request timed out",
                    );
                    if op.request_body.is_some() {
                        add(
                            op,
                            "413",
                            "The request body is larger than the server accepts",
                        );
                    }
                }
                add(op, "500", "Internal error (the store is left as it was)");
            }
        }
    }
}

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
}
