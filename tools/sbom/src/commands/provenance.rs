//! `qg-sbom provenance` / `qg-sbom verify-provenance`: an in-toto Statement
//! v1 whose predicate is SLSA provenance v1, in a DSSE envelope signed with
//! the cosign key, one envelope per line (`.intoto.jsonl`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use zeroize::Zeroizing;

use super::sign::{load_private_key, load_public_key};
use crate::dsse::{self, Envelope, IN_TOTO_PAYLOAD_TYPE};
use crate::error::{read_file, write_file, Error, Result};
use crate::lockfile::Lockfile;

pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// What our buildType URI names: `cargo build --release --locked` of a
/// workspace at a git commit, with the parameters in `externalParameters`
/// (see FORMAT.md).
pub const BUILD_TYPE: &str = "https://example.invalid/quadgit/qg-sbom/cargo-release/v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ProvenanceOptions {
    /// The built files (subjects).
    pub artifacts: Vec<PathBuf>,
    /// cosign encrypted private key.
    pub key: PathBuf,
    pub output: PathBuf,
    /// The workspace manifest; its `Cargo.lock` gives resolvedDependencies.
    pub manifest_path: PathBuf,
    pub build_type: String,
    /// Who built it (a URI); the binary defaults it from GitHub Actions' environment.
    pub builder_id: String,
    pub invocation_id: Option<String>,
    /// Source repository URI; default: `git remote get-url origin`.
    pub repository: Option<String>,
    /// Source commit; default: `git rev-parse HEAD` in the workspace.
    pub git_commit: Option<String>,
    /// Source ref (tag or branch), e.g. `refs/tags/v1.2.0`.
    pub git_ref: Option<String>,
    pub profile: String,
    /// Target triple the artifacts were built for.
    pub target: Option<String>,
    /// Unix seconds; default: now.
    pub started_on: Option<i64>,
    pub finished_on: Option<i64>,
}

impl Default for ProvenanceOptions {
    fn default() -> Self {
        ProvenanceOptions {
            artifacts: Vec::new(),
            key: PathBuf::from("cosign.key"),
            output: PathBuf::from("provenance.intoto.jsonl"),
            manifest_path: PathBuf::from("Cargo.toml"),
            build_type: BUILD_TYPE.into(),
            builder_id: "urn:qg-sbom:builder:local".into(),
            invocation_id: None,
            repository: None,
            git_commit: None,
            git_ref: None,
            profile: "release".into(),
            target: None,
            started_on: None,
            finished_on: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Subject {
    pub name: String,
    pub sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProvenanceResult {
    pub output: PathBuf,
    pub subjects: Vec<Subject>,
    pub builder_id: String,
    pub git_commit: Option<String>,
    pub resolved_dependencies: usize,
    pub key_id: String,
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !s.is_empty()).then_some(s)
}

fn subject_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// The in-toto statement (unsigned).
pub fn statement(opts: &ProvenanceOptions) -> Result<(Value, Vec<Subject>, Option<String>, usize)> {
    if opts.artifacts.is_empty() {
        return Err(Error::BadInput {
            path: "--artifact".into(),
            reason: "give at least one artifact (the files the provenance is about)".into(),
        });
    }
    let mut subjects = Vec::new();
    for a in &opts.artifacts {
        let digest = crate::sha256_file(a)?;
        subjects.push(Subject {
            name: subject_name(a),
            sha256: hex::encode(digest),
        });
    }
    let root = opts
        .manifest_path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let lock = Lockfile::read(&root.join("Cargo.lock"))?;
    let commit = opts
        .git_commit
        .clone()
        .or_else(|| git(&root, &["rev-parse", "HEAD"]));
    let repository = opts
        .repository
        .clone()
        .or_else(|| git(&root, &["remote", "get-url", "origin"]));

    let mut resolved = Vec::new();
    if let Some(c) = &commit {
        let mut src = json!({ "name": "source", "digest": { "gitCommit": c } });
        if let Some(r) = &repository {
            let uri = match &opts.git_ref {
                Some(gr) => format!("git+{r}@{gr}"),
                None => format!("git+{r}"),
            };
            src["uri"] = json!(uri);
        }
        resolved.push(src);
    }
    for p in &lock.packages {
        let Some(source) = &p.source else { continue };
        let purl = format!("pkg:cargo/{}@{}", p.name, p.version);
        if let Some(sum) = &p.checksum {
            resolved.push(json!({ "name": p.name, "uri": purl, "digest": { "sha256": sum } }));
        } else if let Some(rest) = source.strip_prefix("git+") {
            let (url, rev) = rest.split_once('#').unwrap_or((rest, ""));
            let url = url.split('?').next().unwrap_or(url);
            resolved.push(json!({ "name": p.name, "uri": format!("git+{url}@{rev}"), "digest": { "gitCommit": rev } }));
        }
    }
    let n_resolved = resolved.len();
    let now = crate::now_unix();
    let mut external = json!({
        "manifest": opts.manifest_path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        "profile": opts.profile,
        "locked": true,
    });
    if let Some(t) = &opts.target {
        external["target"] = json!(t);
    }
    if let Some(r) = &repository {
        let mut source = json!({ "uri": format!("git+{r}") });
        if let Some(c) = &commit {
            source["digest"] = json!({ "gitCommit": c });
        }
        if let Some(gr) = &opts.git_ref {
            source["ref"] = json!(gr);
        }
        external["source"] = source;
    }
    let mut metadata = json!({
        "startedOn": crate::rfc3339(opts.started_on.unwrap_or(now))?,
        "finishedOn": crate::rfc3339(opts.finished_on.unwrap_or(now))?,
    });
    if let Some(id) = &opts.invocation_id {
        metadata["invocationId"] = json!(id);
    }
    let stmt = json!({
        "_type": STATEMENT_TYPE,
        "subject": subjects.iter().map(|s| json!({ "name": s.name, "digest": { "sha256": s.sha256 } })).collect::<Vec<_>>(),
        "predicateType": SLSA_PROVENANCE_V1,
        "predicate": {
            "buildDefinition": {
                "buildType": opts.build_type,
                "externalParameters": external,
                "internalParameters": { "generator": format!("qg-sbom {}", env!("CARGO_PKG_VERSION")) },
                "resolvedDependencies": resolved,
            },
            "runDetails": {
                "builder": { "id": opts.builder_id },
                "metadata": metadata,
            }
        }
    });
    Ok((stmt, subjects, commit, n_resolved))
}

pub fn provenance(
    opts: &ProvenanceOptions,
    password: &Zeroizing<String>,
) -> Result<ProvenanceResult> {
    if opts.builder_id.trim().is_empty() {
        return Err(Error::BadInput {
            path: "--builder-id".into(),
            reason: "the builder id is empty".into(),
        });
    }
    let key = load_private_key(&opts.key, password)?;
    let (stmt, subjects, git_commit, resolved_dependencies) = statement(opts)?;
    let payload = serde_json::to_vec(&stmt).map_err(|e| Error::Other(e.to_string()))?;
    let envelope = dsse::sign(&key, IN_TOTO_PAYLOAD_TYPE, &payload)?;
    let mut line = serde_json::to_string(&envelope).map_err(|e| Error::Other(e.to_string()))?;
    line.push('\n');
    write_file(&opts.output, line.as_bytes())?;
    Ok(ProvenanceResult {
        output: opts.output.clone(),
        subjects,
        builder_id: opts.builder_id.clone(),
        git_commit,
        resolved_dependencies,
        key_id: crate::cosign::key_id(key.verifying_key())?,
    })
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyProvenanceOptions {
    pub provenance: PathBuf,
    /// PEM public key.
    pub key: PathBuf,
    /// Files that must be subjects (by SHA-256 and file name).
    pub artifacts: Vec<PathBuf>,
    /// If set, the builder id must be exactly this.
    pub builder_id: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyProvenanceResult {
    pub provenance: PathBuf,
    pub verified: bool,
    /// Everything that is wrong (empty when verified).
    pub problems: Vec<String>,
    pub envelopes: usize,
    pub subjects: Vec<Subject>,
    pub builder_ids: Vec<String>,
    pub artifacts_checked: Vec<Subject>,
}

pub fn verify_provenance(opts: &VerifyProvenanceOptions) -> Result<VerifyProvenanceResult> {
    if opts.artifacts.is_empty() {
        return Err(Error::BadInput {
            path: "--artifact".into(),
            reason: "give at least one artifact to check against the provenance's subjects".into(),
        });
    }
    let key = load_public_key(&opts.key)?;
    let text = String::from_utf8(read_file(&opts.provenance)?)
        .map_err(|_| Error::bad_input(&opts.provenance, "not UTF-8 text"))?;
    let mut problems = Vec::new();
    let mut subjects = Vec::new();
    let mut builder_ids = Vec::new();
    let mut envelopes = 0;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        envelopes += 1;
        let at = format!("line {}", i + 1);
        let env: Envelope = serde_json::from_str(line).map_err(|e| {
            Error::bad_input(&opts.provenance, format!("{at}: not a DSSE envelope: {e}"))
        })?;
        if env.payload_type != IN_TOTO_PAYLOAD_TYPE {
            problems.push(format!(
                "{at}: payloadType is `{}`, expected `{IN_TOTO_PAYLOAD_TYPE}`",
                env.payload_type
            ));
        }
        let payload = match dsse::verify(&env, &key) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("{at}: {e}"));
                continue;
            }
        };
        let stmt: Value = match serde_json::from_slice(&payload) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{at}: the signed payload is not JSON: {e}"));
                continue;
            }
        };
        if stmt.get("_type").and_then(Value::as_str) != Some(STATEMENT_TYPE) {
            problems.push(format!("{at}: _type is not {STATEMENT_TYPE}"));
        }
        let pt = stmt
            .get("predicateType")
            .and_then(Value::as_str)
            .unwrap_or("");
        if pt != SLSA_PROVENANCE_V1 {
            problems.push(format!(
                "{at}: predicateType is `{pt}`, expected `{SLSA_PROVENANCE_V1}`"
            ));
        }
        if let Some(id) = stmt
            .pointer("/predicate/runDetails/builder/id")
            .and_then(Value::as_str)
        {
            builder_ids.push(id.to_string());
        } else {
            problems.push(format!("{at}: no predicate.runDetails.builder.id"));
        }
        for s in stmt
            .get("subject")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let name = s.get("name").and_then(Value::as_str).unwrap_or("");
            let sha = s
                .pointer("/digest/sha256")
                .and_then(Value::as_str)
                .unwrap_or("");
            subjects.push(Subject {
                name: name.into(),
                sha256: sha.to_ascii_lowercase(),
            });
        }
    }
    if envelopes == 0 {
        return Err(Error::bad_input(
            &opts.provenance,
            "no DSSE envelope in the file",
        ));
    }
    if let Some(want) = &opts.builder_id {
        if !builder_ids.iter().all(|b| b == want) {
            problems.push(format!(
                "builder id is {}, expected {want}",
                builder_ids.join(", ")
            ));
        }
    }
    let mut checked = Vec::new();
    for a in &opts.artifacts {
        let digest = hex::encode(crate::sha256_file(a)?);
        let name = subject_name(a);
        match subjects.iter().find(|s| s.sha256 == digest) {
            Some(s) if s.name == name => {}
            Some(s) => problems.push(format!(
                "{}: its SHA-256 matches subject `{}` but the names differ",
                a.display(),
                s.name
            )),
            None => problems.push(format!(
                "{}: no subject has its SHA-256 {digest} (changed, or not in this provenance)",
                a.display()
            )),
        }
        checked.push(Subject {
            name,
            sha256: digest,
        });
    }
    Ok(VerifyProvenanceResult {
        provenance: opts.provenance.clone(),
        verified: problems.is_empty(),
        problems,
        envelopes,
        subjects,
        builder_ids,
        artifacts_checked: checked,
    })
}
