//! End-to-end tests of `qg serve`: the real binary on an ephemeral loopback
//! port, driven over HTTP with reqwest; real Prometheus, promtool and
//! schemathesis where the issue asks for them.

mod common;
use common::*;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// A running `qg serve` over a fresh store.
struct Server {
    q: Qg,
    child: Child,
    url: String,
    http: Client,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        Server::start_on(Qg::new(), args, &[])
    }

    fn start_on(q: Qg, args: &[&str], env: &[(&str, &str)]) -> Server {
        let stderr = std::fs::File::create(q.path("serve.log")).unwrap();
        let mut cmd = q.cmd(&["serve", "--listen", "127.0.0.1:0"]);
        cmd.args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut child = cmd.spawn().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("Listening on ")
            .unwrap_or_else(|| {
                let _ = child.kill();
                panic!(
                    "qg serve did not start: {line:?}\n{}",
                    std::fs::read_to_string(q.path("serve.log")).unwrap_or_default()
                )
            })
            .to_string();
        Server {
            q,
            child,
            url,
            http: Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap(),
        }
    }

    /// `qg token create` (the CLI), returning the token.
    fn token(&self, user: &str, role: &str, ns: Option<&str>) -> String {
        let mut args = vec!["token", "create", "--user", user, "--role", role];
        if let Some(ns) = ns {
            args.extend(["--ns", ns]);
        }
        let r = self.q.run(&args).ok();
        assert_eq!(r.stdout.lines().count(), 1, "only the token: {}", r.stdout);
        r.stdout.trim().to_string()
    }

    fn req(&self, method: reqwest::Method, token: &str, path: &str) -> RequestBuilder {
        let b = self.http.request(method, format!("{}{path}", self.url));
        if token.is_empty() {
            b
        } else {
            b.bearer_auth(token)
        }
    }

    fn get(&self, token: &str, path: &str) -> Response {
        self.req(reqwest::Method::GET, token, path).send().unwrap()
    }

    fn post(&self, token: &str, path: &str, body: Value) -> Response {
        self.req(reqwest::Method::POST, token, path)
            .json(&body)
            .send()
            .unwrap()
    }

    fn delete(&self, token: &str, path: &str) -> Response {
        self.req(reqwest::Method::DELETE, token, path)
            .send()
            .unwrap()
    }

    fn commit(&self, token: &str, ns: &str, body: Value) -> Response {
        self.post(token, &format!("/v1/ns/{ns}/commits"), body)
    }

    fn audit(&self, action: &str) -> Vec<Value> {
        let r = self.q.run(&["audit", "log", "--json"]).ok().json();
        r.as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == action)
            .cloned()
            .collect()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.q.path("serve.log")).unwrap_or_default()
    }

    fn sigterm(&self) {
        // SAFETY: signalling our own child process by pid.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
    }

    fn wait_exit(&mut self, within: Duration) -> i32 {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                start.elapsed() < within,
                "qg serve did not exit\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[track_caller]
fn expect(r: Response, status: u16) -> Value {
    let got = r.status().as_u16();
    let text = r.text().unwrap();
    assert_eq!(got, status, "body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

fn nq(i: usize) -> String {
    quads(i..i + 1)
}

#[test]
fn token_create_prints_only_the_token_and_stores_only_its_hash() {
    let q = Qg::new();
    let t = q
        .run(&[
            "token",
            "create",
            "--user",
            "ann",
            "--role",
            "writer",
            "--expires",
            "2h",
        ])
        .ok()
        .stdout;
    let t = t.trim();
    assert!(t.starts_with("qgt_") && t.len() == 68, "{t}");
    let hashes: Vec<Vec<u8>> = {
        let db = q.sqlite();
        let mut s = db.prepare("SELECT hash FROM api_tokens").unwrap();
        let rows = s.query_map([], |r| r.get(0)).unwrap();
        rows.collect::<Result<_, _>>().unwrap()
    };
    assert_eq!(hashes.len(), 1);
    assert_ne!(hashes[0], t.as_bytes());
    let db_bytes = std::fs::read(q.data().join("qg.sqlite")).unwrap();
    assert!(!db_bytes.windows(20).any(|w| w == &t.as_bytes()[4..24]));
    let list = q.run(&["token", "list", "--json"]).ok().json();
    assert_eq!(list[0]["user"], "ann");
    assert_eq!(list[0]["role"], "writer");
    assert!(list[0]["ns"].is_null(), "no --ns: every namespace");
    assert!(!list.to_string().contains(&t[4..]));
    q.run(&["token", "create", "--user", "x", "--role", "root"])
        .code(2);
    let r = q
        .run(&[
            "token", "create", "--user", "x", "--role", "reader", "--ns", "nope",
        ])
        .code(2);
    assert!(
        r.stderr.contains("namespace `nope` does not exist"),
        "{}",
        r.stderr
    );
    let audit = q.run(&["audit", "log", "--json"]).ok().stdout;
    assert!(audit.contains("token.create") && !audit.contains(&t[4..]));
}

#[test]
fn roles_allow_and_deny_and_refusals_are_audited() {
    let s = Server::start(&[]);
    s.q.run(&["ns", "create", "staging"]).ok();
    let reader = s.token("rita", "reader", None);
    let writer = s.token("will", "writer", Some("default"));
    let maint = s.token("mona", "maintainer", Some("default"));
    let admin = s.token("ada", "admin", None);
    let staging_only = s.token("sam", "admin", Some("staging"));

    // no token, a made-up token, a malformed header: 401 with WWW-Authenticate
    let r = s.get("", "/v1/ns/default/branches");
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().contains_key("www-authenticate"));
    expect(s.get(&format!("qgt_{}", "0".repeat(64)), "/v1/ns"), 401);
    expect(
        s.http
            .get(format!("{}/v1/ns", s.url))
            .header("Authorization", "Basic YWRhOnB3")
            .send()
            .unwrap(),
        401,
    );

    // reader: reads, no writes
    expect(s.get(&reader, "/v1/ns/default/branches"), 200);
    expect(s.get(&reader, "/v1/ns/default/commits"), 200);
    expect(s.get(&reader, "/v1/ns/default/query?s=%3Fs"), 200);
    let e = expect(
        s.commit(&reader, "default", json!({"message": "no", "add": nq(1)})),
        403,
    );
    assert!(
        e["message"].as_str().unwrap().contains("needs writer"),
        "{e}"
    );

    // writer: commits (as itself), no branches or merges
    let c = expect(
        s.commit(
            &writer,
            "default",
            json!({"message": "by will", "add": quads(0..5)}),
        ),
        201,
    );
    assert_eq!(c["added"], 5);
    assert_eq!(s.q.head("main"), c["commit"].as_str().unwrap());
    expect(
        s.post(
            &writer,
            "/v1/ns/default/branches",
            json!({"name": "feature"}),
        ),
        403,
    );
    expect(
        s.post(&writer, "/v1/ns/default/merges", json!({"source": "main"})),
        403,
    );
    // a namespace-scoped token sees nothing else
    expect(s.get(&writer, "/v1/ns/staging/branches"), 403);

    // maintainer: branches, tags, merges; no namespaces, tokens or audit
    expect(
        s.post(
            &maint,
            "/v1/ns/default/branches",
            json!({"name": "feature"}),
        ),
        201,
    );
    expect(
        s.post(
            &maint,
            "/v1/ns/default/tags",
            json!({"name": "v1", "ref": "main"}),
        ),
        201,
    );
    expect(
        s.commit(
            &writer,
            "default",
            json!({"message": "on feature", "branch": "feature", "add": nq(10)}),
        ),
        201,
    );
    let m = expect(
        s.post(
            &maint,
            "/v1/ns/default/merges",
            json!({"source": "feature"}),
        ),
        200,
    );
    assert_eq!(m["kind"], "fast-forward");
    expect(s.delete(&maint, "/v1/ns/default/branches/feature"), 200);
    expect(s.post(&maint, "/v1/ns", json!({"name": "x"})), 403);
    expect(s.get(&maint, "/v1/audit"), 403);
    expect(s.get(&maint, "/v1/tokens"), 403);

    // admin: namespaces, tokens, audit
    expect(s.post(&admin, "/v1/ns", json!({"name": "scratch"})), 201);
    expect(s.post(&admin, "/v1/ns", json!({"name": "scratch"})), 409);
    let names: Vec<String> = expect(s.get(&admin, "/v1/ns"), 200)
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["default", "scratch", "staging"]);
    expect(s.delete(&admin, "/v1/ns/scratch"), 200);
    let t = expect(
        s.post(
            &admin,
            "/v1/tokens",
            json!({"user": "tim", "role": "reader", "expires_in_secs": 60}),
        ),
        201,
    );
    let tim = t["token"].as_str().unwrap().to_string();
    assert_eq!(expect(s.get(&tim, "/v1/whoami"), 200)["user"], "tim");
    expect(
        s.delete(&admin, &format!("/v1/tokens/{}", t["id"].as_str().unwrap())),
        200,
    );
    let e = expect(s.get(&tim, "/v1/whoami"), 401);
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");

    // a namespace admin is admin there only
    let visible = expect(s.get(&staging_only, "/v1/ns"), 200);
    assert_eq!(visible.as_array().unwrap().len(), 1);
    expect(s.get(&staging_only, "/v1/audit?ns=staging"), 200);
    expect(s.get(&staging_only, "/v1/audit"), 403);
    expect(s.post(&staging_only, "/v1/ns", json!({"name": "y"})), 403);

    // audit: the commit's actor is the token's user; refusals are evidence
    let commits = s.audit("commit");
    assert_eq!(commits[0]["actor"], "will");
    let audit = expect(s.get(&admin, "/v1/audit"), 200);
    let failed: Vec<&Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth.failed")
        .collect();
    assert!(failed.iter().all(|e| e["outcome"] == "denied"));
    let statuses: Vec<i64> = failed
        .iter()
        .map(|e| e["detail"]["status"].as_i64().unwrap())
        .collect();
    assert!(
        statuses.iter().filter(|s| **s == 401).count() >= 4,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 403).count() >= 8,
        "{statuses:?}"
    );
    assert!(failed
        .iter()
        .any(|e| e["actor"] == "rita" && e["target"] == "POST /v1/ns/default/commits"));
    s.q.run(&["audit", "verify"]).ok();
}

#[test]
fn compare_and_swap_and_merge_conflicts_are_409_with_details() {
    let s = Server::start(&[]);
    let w = s.token("w", "maintainer", None);
    let first = expect(
        s.commit(&w, "default", json!({"message": "a", "add": nq(1)})),
        201,
    );
    let parent = first["commit"].as_str().unwrap().to_string();
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "b", "add": nq(2), "expected_parent": parent}),
        ),
        201,
    );
    let head = s.q.head("main");
    let e = expect(
        s.commit(
            &w,
            "default",
            json!({"message": "stale", "add": nq(3), "expected_parent": parent}),
        ),
        409,
    );
    assert_eq!(e["error"], "conflict");
    assert_eq!(e["details"]["expected"], parent[..12]);
    assert_eq!(e["details"]["actual"], head[..12]);
    assert_eq!(s.q.head("main"), head, "nothing written");

    // both sides change <s0> <p> differently
    expect(
        s.post(&w, "/v1/ns/default/branches", json!({"name": "other"})),
        201,
    );
    let set = |branch: &str, v: &str| {
        json!({"message": v, "branch": branch, "remove": nq(0),
               "add": format!("<http://ex/s0> <http://ex/p> \"{v}\" <http://ex/g0> .\n")})
    };
    expect(s.commit(&w, "default", set("main", "ours")), 201);
    expect(s.commit(&w, "default", set("other", "theirs")), 201);
    let head = s.q.head("main");
    let e = expect(
        s.post(&w, "/v1/ns/default/merges", json!({"source": "other"})),
        409,
    );
    assert_eq!(e["error"], "merge_conflict");
    let c = &e["details"]["conflicts"][0];
    assert_eq!(c["subject"], "<http://ex/s0>");
    assert_eq!(c["ours"][0], "\"ours\"");
    assert_eq!(c["theirs"][0], "\"theirs\"");
    assert_eq!(s.q.head("main"), head);
    let m = expect(
        s.post(
            &w,
            "/v1/ns/default/merges",
            json!({"source": "other", "strategy": "theirs"}),
        ),
        200,
    );
    assert_eq!(m["kind"], "merged");
    assert_eq!(m["resolved_conflicts"], 1);
}

#[test]
fn concurrent_commits_without_expected_parent_all_land() {
    let s = Server::start(&[]);
    let w = s.token("w", "writer", None);
    // another process (the CLI) also commits while the server's writers run
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (url, w) = (s.url.clone(), w.clone());
            std::thread::spawn(move || {
                let http = Client::new();
                (0..4)
                    .map(|i| {
                        http.post(format!("{url}/v1/ns/default/commits"))
                            .bearer_auth(&w)
                            .json(&json!({"message": "c", "add": nq(100 * t + i)}))
                            .send()
                            .unwrap()
                            .status()
                            .as_u16()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for i in 0..3 {
        // the CLI reports a race as a conflict (exit 1); the server retried its side
        let mut tries = 0;
        while s
            .q
            .run_stdin(&["commit", "-m", "cli", "--add", "-"], &nq(5000 + i))
            .code
            != 0
        {
            tries += 1;
            assert!(tries < 50, "the CLI never got a turn");
        }
    }
    for t in threads {
        assert_eq!(t.join().unwrap(), vec![201; 4]);
    }
    let head = expect(s.get(&w, "/v1/ns/default/commits/main"), 200);
    assert_eq!(head["quads"], 35);
    assert_eq!(s.q.export("main").lines().count(), 35);
}

#[test]
fn a_failing_pre_commit_hook_is_422_with_its_stderr() {
    let s = Server::start(&[]);
    s.q.install_hook(
        "pre-commit",
        "#!/bin/sh\ngrep -q forbidden && { echo 'SHACL: ex:p must not be \"forbidden\"' >&2; exit 1; }\nexit 0\n",
    );
    let w = s.token("w", "writer", None);
    let head = s.q.head("main");
    let e = expect(
        s.commit(
            &w,
            "default",
            json!({"message": "bad", "add": "<http://ex/a> <http://ex/p> \"forbidden\" .\n"}),
        ),
        422,
    );
    assert_eq!(e["error"], "hook_rejected");
    assert_eq!(e["details"]["hook"], "pre-commit");
    assert!(
        e["details"]["stderr"]
            .as_str()
            .unwrap()
            .contains("SHACL: ex:p must not be"),
        "{e}"
    );
    assert_eq!(s.q.head("main"), head);
    let denied = s.audit("hook.pre-commit");
    assert_eq!(denied[0]["outcome"], "denied");
    assert_eq!(denied[0]["actor"], "w");
    expect(
        s.commit(&w, "default", json!({"message": "ok", "add": nq(1)})),
        201,
    );
}

#[test]
fn bad_input_is_400_413_404_never_500() {
    let s = Server::start(&["--max-body-mib", "1"]);
    let w = s.token("w", "admin", None);
    let path = "/v1/ns/default/commits";
    let raw = |body: &str| {
        s.req(reqwest::Method::POST, &w, path)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };
    let e = expect(raw("{\"message\": \"x\", "), 400);
    assert!(
        e["message"].as_str().unwrap().starts_with("bad JSON body"),
        "{e}"
    );
    expect(raw("[1,2]"), 400);
    expect(raw("{\"message\": \"x\", \"bogus\": 1}"), 400);
    let e = expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": "<http://ex/a> <http://ex/p> \"ok\" .\n<http://ex/a> <http://ex/p> .\n"}),
        ),
        400,
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("request body `add`:2:"),
        "{e}"
    );
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": "<a> <b> <c> <g> ."}),
        ),
        400,
    );
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": "", "remove": ""}),
        ),
        400,
    );
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": nq(1), "format": "rdfxml"}),
        ),
        400,
    );
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": nq(1), "branch": "a..b"}),
        ),
        400,
    );
    let big = "x".repeat(1_200_000);
    let e = expect(s.commit(&w, "default", json!({"message": big})), 413);
    assert_eq!(e["error"], "payload_too_large");
    expect(s.get(&w, "/v1/ns/nope/commits"), 404);
    expect(s.get(&w, "/v1/ns/default/commits/nosuch"), 404);
    expect(s.get(&w, "/v1/ns/default/query?s=%3Cunclosed"), 400);
    expect(s.get(&w, "/v1/ns/default/query?s=%22lit%22"), 400);
    expect(s.get(&w, "/v1/ns/default/query?limit=0"), 400);
    expect(s.get(&w, "/v1/ns/default/query?limit=many"), 400);
    expect(s.get(&w, "/v1/ns/default/diff?from=main"), 400);
    expect(s.get(&w, "/v1/audit?since=yesterday"), 400);
    expect(s.get(&w, "/v1/nothing/here"), 404);
    expect(s.post(&w, "/v1/ns", json!({"name": "-bad"})), 400);
    expect(s.delete(&w, "/v1/ns/default/branches/main"), 409);
    expect(
        s.post(&w, "/v1/tokens", json!({"user": "u", "role": "root"})),
        400,
    );
    expect(
        s.post(
            &w,
            "/v1/tokens",
            json!({"user": "u", "role": "reader", "expires_in_secs": 0}),
        ),
        400,
    );
    assert!(!s.log().contains("panicked"));
    s.q.run(&["fsck"]).ok();
}

#[test]
fn export_negotiates_n_quads_and_trig() {
    let s = Server::start(&[]);
    let w = s.token("w", "writer", None);
    expect(
        s.commit(&w, "default", json!({"message": "x", "add": quads(0..6)})),
        201,
    );
    let get = |accept: Option<&str>, q: &str| {
        let mut b = s.req(
            reqwest::Method::GET,
            &w,
            &format!("/v1/ns/default/export{q}"),
        );
        if let Some(a) = accept {
            b = b.header("accept", a);
        }
        b.send().unwrap()
    };
    let r = get(None, "");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/n-quads");
    assert_eq!(sorted_lines(&r.text().unwrap()), sorted_lines(&quads(0..6)));
    let r = get(
        Some("application/trig, application/n-quads;q=0.5"),
        "?ref=main",
    );
    assert_eq!(r.headers()["content-type"], "application/trig");
    let trig = r.text().unwrap();
    assert!(trig.contains("<http://ex/g0> {"), "{trig}");
    let r = get(Some("application/n-quads"), "?graph=http://ex/g1");
    assert_eq!(r.text().unwrap().lines().count(), 2);
    expect(get(Some("text/html"), ""), 406);
    // export of an older commit through the API matches the CLI
    let cli = s.q.export("main");
    assert_eq!(get(Some("*/*"), "?ref=main").text().unwrap(), cli);
    // query: variables bind, the result is the CLI's
    let r = expect(
        s.get(
            &w,
            "/v1/ns/default/query?p=%3Chttp://ex/p%3E&o=%3Fo&g=%3Chttp://ex/g2%3E",
        ),
        200,
    );
    assert_eq!(r["count"], 2);
    assert_eq!(r["matches"][0]["bindings"]["o"], "\"v2\"");
    let d = expect(s.get(&w, "/v1/ns/default/diff?from=main~1&to=main"), 200);
    assert_eq!(d["added"], 6);
    assert_eq!(d["changes"].as_array().unwrap().len(), 6);
}

#[test]
fn protected_branches_reject_writers_but_not_maintainers() {
    let s = Server::start(&[]);
    let w = s.token("w", "writer", None);
    let m = s.token("m", "maintainer", None);
    let r = s.q.run(&["branch", "protect", "main"]).ok();
    assert!(r.stdout.contains("now protected"), "{}", r.stdout);
    s.q.run(&["branch", "feature"]).ok();
    let head = s.q.head("main");
    let e = expect(
        s.commit(&w, "default", json!({"message": "x", "add": nq(1)})),
        403,
    );
    assert_eq!(e["error"], "protected_branch");
    assert_eq!(s.q.head("main"), head);
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "x", "add": nq(1), "branch": "feature"}),
        ),
        201,
    );
    expect(
        s.commit(&m, "default", json!({"message": "x", "add": nq(2)})),
        201,
    );
    let branches = expect(s.get(&w, "/v1/ns/default/branches"), 200);
    let main = branches
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "main")
        .unwrap();
    assert_eq!(main["protected"], true);
    // protection over HTTP (maintainers), then writers may commit again
    expect(
        s.req(
            reqwest::Method::PUT,
            &w,
            "/v1/ns/default/branches/feature/protection",
        )
        .send()
        .unwrap(),
        403,
    );
    let p = expect(s.delete(&m, "/v1/ns/default/branches/main/protection"), 200);
    assert_eq!(p["changed"], true);
    expect(
        s.commit(&w, "default", json!({"message": "y", "add": nq(3)})),
        201,
    );
    let denied: Vec<Value> = s
        .audit("auth.failed")
        .into_iter()
        .filter(|e| e["detail"]["reason"] == "protected branch")
        .collect();
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["actor"], "w");
    s.q.run(&["branch", "unprotect", "main"]).ok();
    assert_eq!(s.audit("branch.protect").len(), 1);
}

/// Point lookups (graph and subject fixed) take a faster path: no blocking
/// pool, tree nodes decoded once for the whole server. They must still see
/// every commit at once, refuse revoked and expired tokens, audit refusals,
/// and return big answers whole.
#[test]
fn point_lookups_see_commits_at_once_and_check_the_token_every_time() {
    let s = Server::start(&[]);
    let w = s.token("w", "writer", None);
    let reader = s.token("rita", "reader", Some("default"));
    let lookup = |token: &str, g: &str, subject: &str, extra: &str| {
        s.get(
            token,
            &format!(
                "/v1/ns/default/query?g=%3Chttp://ex/{g}%3E&s=%3Chttp://ex/{subject}%3E{extra}"
            ),
        )
    };
    expect(
        s.commit(&w, "default", json!({"message": "x", "add": quads(0..6)})),
        201,
    );
    for _ in 0..3 {
        let r = expect(lookup(&reader, "g1", "s1", ""), 200);
        assert_eq!(r["count"], 1);
        assert_eq!(r["matches"][0]["quad"], nq(1).trim_end());
    }
    // a commit is visible to the very next lookup, and history stays readable
    let more = "<http://ex/s1> <http://ex/q> \"new\" <http://ex/g1> .\n";
    expect(
        s.commit(&w, "default", json!({"message": "more", "add": more})),
        201,
    );
    assert_eq!(expect(lookup(&reader, "g1", "s1", ""), 200)["count"], 2);
    assert_eq!(
        expect(lookup(&reader, "g1", "s1", "&ref=main~1"), 200)["count"],
        1
    );
    expect(
        s.commit(&w, "default", json!({"message": "less", "remove": nq(1)})),
        201,
    );
    let r = expect(lookup(&reader, "g1", "s1", "&p=%3Fp"), 200);
    assert_eq!(r["count"], 1);
    assert_eq!(r["matches"][0]["bindings"]["p"], "<http://ex/q>");

    // a subject with more matches than the fast path takes comes back whole
    let hub: String = (0..300)
        .map(|i| format!("<http://ex/hub> <http://ex/p{i:03}> \"{i}\" <http://ex/g0> .\n"))
        .collect();
    expect(
        s.commit(&w, "default", json!({"message": "hub", "add": hub})),
        201,
    );
    let r = expect(lookup(&reader, "g0", "hub", ""), 200);
    assert_eq!(r["count"], 300);
    assert_eq!(r["matches"].as_array().unwrap().len(), 300);
    assert_eq!(
        r["matches"][299]["quad"],
        "<http://ex/hub> <http://ex/p299> \"299\" <http://ex/g0> ."
    );
    for limit in [5, 256, 257, 258] {
        let r = expect(
            lookup(&reader, "g0", "hub", &format!("&limit={limit}")),
            200,
        );
        assert_eq!(r["count"], limit, "limit {limit}");
    }
    let r = expect(lookup(&reader, "g0", "hub", "&o=%3Fx&p=%3Fx"), 200);
    assert_eq!(r["count"], 0, "a repeated variable still filters");

    // refusals on this path are refused, audited and counted like any other
    let before = s.audit("auth.failed").len();
    expect(
        lookup(&format!("qgt_{}", "2".repeat(64)), "g1", "s1", ""),
        401,
    );
    s.q.run(&["ns", "create", "staging"]).ok();
    let staging = s.token("sam", "reader", Some("staging"));
    expect(lookup(&staging, "g1", "s1", ""), 403);
    let failed = s.audit("auth.failed");
    assert_eq!(failed.len(), before + 2, "{failed:?}");
    assert!(failed
        .iter()
        .any(|e| e["target"] == "GET /v1/ns/default/query" && e["detail"]["status"] == 403));

    // a token revoked by another process is refused at once, after many good lookups
    let list = s.q.run(&["token", "list", "--json"]).ok().json();
    let id = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["user"] == "rita")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    expect(lookup(&reader, "g1", "s1", ""), 200);
    s.q.run(&["token", "revoke", &id]).ok();
    let e = expect(lookup(&reader, "g1", "s1", ""), 401);
    assert!(e["message"].as_str().unwrap().contains("revoked"), "{e}");
    // and an expired one once its time is up
    let brief =
        s.q.run(&[
            "token",
            "create",
            "--user",
            "bo",
            "--role",
            "reader",
            "--expires",
            "1s",
        ])
        .ok()
        .stdout
        .trim()
        .to_string();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let r = lookup(&brief, "g1", "s1", "");
        if r.status() == 401 {
            let e = expect(r, 401);
            assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
            return;
        }
        expect(r, 200);
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("a token that expired after 1 s was still accepted after 3 s");
}

#[test]
fn failed_auth_is_rate_limited_per_client() {
    let s = Server::start(&["--auth-failure-limit", "3"]);
    let good = s.token("g", "reader", None);
    let bad = format!("qgt_{}", "1".repeat(64));
    for _ in 0..3 {
        expect(s.get(&bad, "/v1/ns"), 401);
    }
    let r = s.get(&bad, "/v1/ns");
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&wait), "{wait}");
    // even a valid token waits: the client is blocked, not the token
    expect(s.get(&good, "/v1/ns"), 429);
    expect(s.get("", "/v1/ns"), 401);
    let failed = s.audit("auth.failed");
    assert_eq!(
        failed.len(),
        3,
        "the blocked attempts are not audited one by one"
    );
    assert_eq!(failed[2]["detail"]["rate_limited"], true);
    // health and metrics need no token and are never blocked
    expect(s.get("", "/healthz"), 200);
    let metrics = s.get("", "/metrics").text().unwrap();
    assert!(
        metrics.contains("qg_auth_failures_total{reason=\"rate_limited\"} 3"),
        "{metrics}"
    );
}

#[test]
fn health_readiness_openapi_and_json_logs() {
    let s = Server::start(&["--log-format", "json"]);
    assert_eq!(expect(s.get("", "/healthz"), 200)["status"], "ok");
    let r = expect(s.get("", "/readyz"), 200);
    assert_eq!(r["status"], "ready");
    assert_eq!(r["migrated"], true);
    let doc = expect(s.get("", "/openapi.json"), 200);
    assert_eq!(doc["openapi"], "3.1.0");
    for p in [
        "/healthz",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/v1/ns/{ns}/commits",
        "/v1/ns/{ns}/export",
        "/v1/ns/{ns}/query",
        "/v1/unlock",
        "/v1/ns/{ns}/merges",
        "/v1/audit",
    ] {
        assert!(doc["paths"][p].is_object(), "{p} missing from the document");
    }
    let commit = &doc["paths"]["/v1/ns/{ns}/commits"]["post"];
    for status in ["201", "400", "401", "403", "409", "413", "422", "423"] {
        assert!(commit["responses"][status].is_object(), "commit {status}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // the JSON request log
    std::thread::sleep(Duration::from_millis(200));
    let line = s
        .log()
        .lines()
        .find(|l| l.contains("/readyz"))
        .map(str::to_string)
        .expect("a request log line");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["fields"]["status"], 200);
    assert_eq!(v["fields"]["route"], "/readyz");
    assert!(v["fields"]["latency_ms"].is_number());
    // a store that is not there: serve refuses to start, exit 2
    let q = Qg::empty();
    let r = q.run(&["serve", "--listen", "127.0.0.1:0"]).code(2);
    assert!(r.stderr.contains("no QuadGit store"), "{}", r.stderr);
    let q = Qg::new();
    let r = q.run(&["serve", "--listen", "nonsense"]).code(2);
    assert!(r.stderr.contains("listen address"), "{}", r.stderr);
}

#[test]
fn sigterm_lets_in_flight_requests_finish() {
    let mut s = Server::start(&[]);
    s.q.install_hook(
        "pre-commit",
        "#!/bin/sh\ncat >/dev/null\nsleep 1.5\nexit 0\n",
    );
    let w = s.token("w", "writer", None);
    let url = s.url.clone();
    let slow = std::thread::spawn(move || {
        let r = Client::new()
            .post(format!("{url}/v1/ns/default/commits"))
            .bearer_auth(w)
            .json(&json!({"message": "slow", "add": quads(0..3)}))
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    });
    std::thread::sleep(Duration::from_millis(500));
    s.sigterm();
    let (status, body) = slow.join().unwrap();
    assert_eq!(status, 201, "{body}");
    assert_eq!(s.wait_exit(Duration::from_secs(20)), 0, "{}", s.log());
    let commit: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s.q.head("main"), commit["commit"].as_str().unwrap());
    assert!(s.log().contains("shutting down"), "{}", s.log());
    s.q.run(&["fsck"]).ok();
    s.q.run(&["audit", "verify"]).ok();
}

#[test]
fn password_namespaces_unlock_over_http() {
    let key = "42".repeat(32);
    let q = Qg::new();
    let s = Server::start_on(q, &[], &[("QUADGIT_MASTER_KEY", &key)]);
    let admin = s.token("ada", "admin", None);
    expect(
        s.post(
            &admin,
            "/v1/ns",
            json!({"name": "vault", "password": "s3cret pass"}),
        ),
        201,
    );
    let info = expect(s.get(&admin, "/v1/ns"), 200);
    assert!(info
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["name"] == "vault" && n["password_protected"] == true));
    let e = expect(s.get(&admin, "/v1/ns/vault/query"), 423);
    assert_eq!(e["error"], "locked");
    expect(
        s.post(
            &admin,
            "/v1/unlock",
            json!({"ns": "vault", "password": "wrong"}),
        ),
        423,
    );
    let t = expect(
        s.post(
            &admin,
            "/v1/unlock",
            json!({"ns": "vault", "password": "s3cret pass", "ttl_secs": 60}),
        ),
        200,
    );
    let unlock = t["token"].as_str().unwrap().to_string();
    let with = |b: RequestBuilder| b.header("x-qg-unlock-token", &unlock).send().unwrap();
    expect(
        with(
            s.req(reqwest::Method::POST, &admin, "/v1/ns/vault/commits")
                .json(&json!({"message": "secret", "add": nq(7)})),
        ),
        201,
    );
    let r = expect(
        with(s.req(reqwest::Method::GET, &admin, "/v1/ns/vault/query")),
        200,
    );
    assert_eq!(r["count"], 1);
    let point = "/v1/ns/vault/query?g=%3Chttp://ex/g1%3E&s=%3Chttp://ex/s7%3E";
    let r = expect(with(s.req(reqwest::Method::GET, &admin, point)), 200);
    assert_eq!(r["count"], 1);
    // the pool must not hand the opened keys (or what they decoded) to the next request
    expect(s.get(&admin, "/v1/ns/vault/query"), 423);
    expect(s.get(&admin, point), 423);
    let unlocks = s.audit("ns.unlock");
    assert!(unlocks
        .iter()
        .any(|e| e["outcome"] == "denied" && e["actor"] == "ada"));
    assert!(unlocks.iter().any(|e| e["outcome"] == "success"));
}

fn scrape(s: &Server) -> prometheus_parse::Scrape {
    let text = s.get("", "/metrics").text().unwrap();
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap()
}

#[test]
fn metrics_cover_requests_commits_hooks_auth_and_the_store() {
    let s = Server::start(&[]);
    // a successful backup in the audit log, written through the store API as the backup tool does
    {
        let store = qg_store::Store::open(&s.q.data()).unwrap();
        store
            .record(
                &qg_store::audit::Event::new("backup", "backup.full").detail(json!({"objects": 1})),
            )
            .unwrap();
    }
    s.q.install_hook("post-commit", "#!/bin/sh\nexit 3\n");
    let w = s.token("w", "maintainer", None);
    expect(
        s.commit(&w, "default", json!({"message": "a", "add": quads(0..20)})),
        201,
    );
    expect(
        s.post(&w, "/v1/ns/default/branches", json!({"name": "f"})),
        201,
    );
    expect(
        s.commit(
            &w,
            "default",
            json!({"message": "b", "add": nq(30), "branch": "f"}),
        ),
        201,
    );
    expect(
        s.post(&w, "/v1/ns/default/merges", json!({"source": "f"})),
        200,
    );
    expect(s.get("", "/v1/ns"), 401);
    expect(s.get(&w, "/v1/ns/default/query?s=%3Fs"), 200);

    let m = scrape(&s);
    let families: std::collections::HashSet<&str> =
        m.samples.iter().map(|x| x.metric.as_str()).collect();
    for f in [
        "qg_http_requests_total",
        "qg_http_request_duration_seconds",
        "qg_http_requests_in_flight",
        "qg_commits_total",
        "qg_merges_total",
        "qg_hook_runs_total",
        "qg_hook_failures_total",
        "qg_auth_failures_total",
        "qg_store_size_bytes",
        "qg_store_objects",
        "qg_sqlite_cache_hit_ratio",
        "qg_backup_last_success_timestamp_seconds",
    ] {
        assert!(families.contains(f), "{f} missing: {families:?}");
    }
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        m.samples
            .iter()
            .filter(|x| x.metric == name)
            .filter(|x| label.map_or(true, |(k, v)| x.labels.get(k) == Some(v)))
            .map(|x| match x.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(value("qg_commits_total", Some(("ns", "default"))), 2.0);
    assert_eq!(value("qg_merges_total", Some(("ns", "default"))), 1.0);
    // post-commit ran twice and failed twice; post-merge is not installed
    assert_eq!(
        value("qg_hook_runs_total", Some(("hook", "post-commit"))),
        2.0
    );
    assert_eq!(
        value("qg_hook_failures_total", Some(("hook", "post-commit"))),
        2.0
    );
    assert_eq!(
        value("qg_auth_failures_total", Some(("reason", "missing"))),
        1.0
    );
    assert_eq!(
        value(
            "qg_http_requests_total",
            Some(("route", "/v1/ns/:ns/commits"))
        ),
        2.0
    );
    assert_eq!(
        value("qg_http_requests_total", Some(("status", "401"))),
        1.0
    );
    assert!(value("qg_store_size_bytes", None) > 10_000.0);
    assert!(value("qg_store_objects", None) >= 4.0);
    let ratio = value("qg_sqlite_cache_hit_ratio", None);
    assert!(ratio > 0.0 && ratio <= 1.0, "{ratio}");
    let backup = value("qg_backup_last_success_timestamp_seconds", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - backup).abs() < 120.0, "{backup} vs {now}");
    let hist = m
        .samples
        .iter()
        .find(|x| {
            x.metric == "qg_http_request_duration_seconds"
                && x.labels.get("route") == Some("/v1/ns/:ns/query")
        })
        .expect("latency histogram of the query route");
    assert!(matches!(hist.value, prometheus_parse::Value::Histogram(_)));

    // promtool (Debian package `prometheus`) accepts the exposition
    let text = s.get("", "/metrics").text().unwrap();
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("promtool not found ({e}): install the Debian package `prometheus` (apt-get install prometheus)")
        });
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // OpenMetrics for clients that ask for it (Prometheus does)
    let r = s
        .req(reqwest::Method::GET, "", "/metrics")
        .header("accept", "application/openmetrics-text;version=1.0.0")
        .send()
        .unwrap();
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    assert!(r.text().unwrap().ends_with("# EOF\n"));
}

#[test]
fn a_real_prometheus_scrapes_the_server() {
    let s = Server::start(&[]);
    let w = s.token("w", "writer", None);
    expect(
        s.commit(&w, "default", json!({"message": "a", "add": nq(1)})),
        201,
    );
    let target = s.url.trim_start_matches("http://").to_string();
    let dir = tempfile::tempdir().unwrap();
    let prom =
        prometheus::Prometheus::start(dir.path(), &prometheus::scrape_config(&[&target], &[]), &[]);
    prom.wait_until(Duration::from_secs(60), "qg_http_requests_total", |p| {
        p.value("sum(qg_http_requests_total{job=\"quadgit\"})", None)
            .is_some_and(|n| n >= 1.0)
    });
    // and the scrape target is healthy
    let t: Value = Client::new()
        .get(format!("{}/api/v1/targets", prom.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(t["data"]["activeTargets"][0]["health"], "up", "{t}");
}

#[test]
fn schemathesis_finds_nothing_against_the_openapi_document() {
    let s = Server::start(&["--auth-failure-limit", "100000"]);
    let admin = s.token("fuzz", "admin", None);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/schemathesis.sh");
    let cwd = tempfile::tempdir().unwrap();
    let out = Command::new("bash")
        .current_dir(cwd.path())
        .arg(script)
        .arg(&s.url)
        .env("QG_FUZZ_TOKEN", &admin)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
    assert!(!s.log().contains("panicked"), "{}", s.log());
}
