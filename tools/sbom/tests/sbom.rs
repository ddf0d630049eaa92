//! generate / check / scan end to end: determinism, the CycloneDX 1.5 schema
//! (cyclonedx-python-lib), dependency classification on a small workspace,
//! stale-SBOM detection, and the trivy gate on a saved real trivy report.

mod common;

use std::fs;
use std::path::Path;

use common::*;
use serde_json::Value;

fn generate(dir: &Path, manifest: &Path, out: &str, extra: &[&str]) -> Run {
    expect(
        qg_sbom(dir)
            .arg("generate")
            .arg("--manifest-path")
            .arg(manifest)
            .args(["--output", out])
            .args(extra)
            .env("SOURCE_DATE_EPOCH", "1700000000"),
        0,
    )
}

fn load(path: &Path) -> Value {
    serde_json::from_slice(&fs::read(path).unwrap()).unwrap()
}

fn component<'a>(sbom: &'a Value, name: &str) -> Option<&'a Value> {
    sbom["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
}

fn prop<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["properties"]
        .as_array()?
        .iter()
        .find(|p| p["name"] == name)?["value"]
        .as_str()
}

#[test]
fn workspace_sbom_is_deterministic_complete_and_schema_valid() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let manifest = workspace_root().join("Cargo.toml");
    generate(d, &manifest, "a.json", &["--name", "quadgit"]);
    generate(d, &manifest, "b.json", &["--name", "quadgit"]);
    let a = fs::read(d.join("a.json")).unwrap();
    assert_eq!(
        a,
        fs::read(d.join("b.json")).unwrap(),
        "same inputs must give the same bytes"
    );

    let sbom = load(&d.join("a.json"));
    assert_eq!(sbom["specVersion"], "1.5");
    assert_eq!(sbom["metadata"]["timestamp"], "2023-11-14T22:13:20Z");
    assert!(sbom["serialNumber"]
        .as_str()
        .unwrap()
        .starts_with("urn:uuid:"));
    let bins: Vec<&str> = sbom["metadata"]["component"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(
        bins.contains(&"qg") && bins.contains(&"qg-sbom"),
        "{bins:?}"
    );

    // Registry crates: purl, SHA-256 from the lockfile, SPDX license, scope.
    let lock = fs::read_to_string(workspace_root().join("Cargo.lock")).unwrap();
    let serde = component(&sbom, "serde").expect("serde is listed");
    let version = serde["version"].as_str().unwrap();
    assert_eq!(serde["purl"], format!("pkg:cargo/serde@{version}"));
    assert_eq!(serde["hashes"][0]["alg"], "SHA-256");
    let sum = serde["hashes"][0]["content"].as_str().unwrap();
    assert!(
        lock.contains(&format!("checksum = \"{sum}\"")),
        "hash comes from Cargo.lock"
    );
    assert_eq!(serde["licenses"][0]["expression"], "MIT OR Apache-2.0");
    assert_eq!(serde["scope"], "required");
    assert_eq!(prop(serde, "qg-sbom:source"), Some("crates.io"));
    // Build-only (cc, for the bundled SQLite and zstd): listed, scope excluded.
    let cc = component(&sbom, "cc").expect("build dependency cc is listed");
    assert_eq!(cc["scope"], "excluded");
    assert_eq!(prop(cc, "qg-sbom:dependency-kind"), Some("build"));
    // dev-dependencies are not (tempfile is only a dev-dependency of qg-sbom,
    // but qg-store uses it normally, so check criterion instead).
    assert!(
        component(&sbom, "criterion").is_none(),
        "dev-only crates excluded by default"
    );
    // Workspace members: path purl relative to the root, no absolute paths anywhere.
    let store = component(&sbom, "qg-store").unwrap();
    assert_eq!(
        store["purl"],
        format!(
            "pkg:cargo/qg-store@{}?download_url=file://store",
            store["version"].as_str().unwrap()
        )
    );
    let text = String::from_utf8(a).unwrap();
    let root = workspace_root().display().to_string();
    assert!(!text.contains(&root), "the SBOM must not name {root}");
    // Every registry component has a hash and a license; every component is in the graph.
    for c in sbom["components"].as_array().unwrap() {
        if prop(c, "qg-sbom:source") == Some("crates.io") {
            assert!(c["hashes"].is_array(), "{} has no hash", c["name"]);
        }
        assert!(c["licenses"].is_array(), "{} has no license", c["name"]);
    }
    let refs: Vec<&str> = sbom["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["ref"].as_str().unwrap())
        .collect();
    for c in sbom["components"].as_array().unwrap() {
        assert!(refs.contains(&c["bom-ref"].as_str().unwrap()));
    }
    let store_ref = store["bom-ref"].as_str().unwrap();
    let store_deps = sbom["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["ref"] == store_ref)
        .unwrap();
    assert!(store_deps["dependsOn"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r.as_str().unwrap().starts_with("pkg:cargo/rusqlite@")));

    // Independent validation against the CycloneDX 1.5 JSON schema.
    let script = r#"
import sys
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
errors = JsonStrictValidator(SchemaVersion.V1_5).validate_str(open(sys.argv[1]).read())
if errors:
    print(errors); sys.exit(1)
print('valid')
"#;
    let r = python(script, &["a.json"], d);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("valid"));

    // The same schema check on 1.4, and a bad version is a usage error.
    generate(d, &manifest, "v14.json", &["--spec-version", "1.4"]);
    let r = python(&script.replace("V1_5", "V1_4"), &["v14.json"], d);
    assert_eq!(r.code, 0, "{r:?}");
    let r = expect(
        qg_sbom(d)
            .arg("generate")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--output", "x.json", "--spec-version", "2.0"]),
        2,
    );
    assert!(
        r.stderr.contains("not a supported CycloneDX version"),
        "{r:?}"
    );
}

#[test]
fn check_reports_differing_components_with_exit_1() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let manifest = workspace_root().join("Cargo.toml");
    generate(d, &manifest, "SBOM.json", &["--name", "quadgit"]);
    let check = |d: &Path| {
        run(qg_sbom(d)
            .arg("check")
            .arg("--manifest-path")
            .arg(&manifest)
            .args(["--sbom", "SBOM.json"]))
    };
    let r = check(d);
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("SBOM.json is current"), "{r:?}");

    // Drop a component, change a hash, add a stranger.
    let mut sbom = load(&d.join("SBOM.json"));
    let comps = sbom["components"].as_array_mut().unwrap();
    let idx = comps
        .iter()
        .position(|c| c["name"] == "serde_json")
        .unwrap();
    comps.remove(idx);
    let libc = comps.iter_mut().find(|c| c["name"] == "libc").unwrap();
    libc["hashes"][0]["content"] = Value::from("0".repeat(64));
    comps.push(serde_json::json!({"type": "library", "bom-ref": "pkg:cargo/left-pad@1.0.0", "name": "left-pad", "version": "1.0.0"}));
    fs::write(
        d.join("SBOM.json"),
        serde_json::to_vec_pretty(&sbom).unwrap(),
    )
    .unwrap();
    let r = check(d);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("+ serde_json "), "{r:?}");
    assert!(r.stdout.contains("- left-pad 1.0.0"), "{r:?}");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("~ libc ") && l.ends_with(": hashes")),
        "{r:?}"
    );
    assert!(r.stderr.contains("out of date"), "{r:?}");
    let r = run(qg_sbom(d)
        .args(["check", "--json", "--sbom", "SBOM.json", "--manifest-path"])
        .arg(&manifest));
    assert_eq!(r.code, 1);
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["current"], false);
    assert_eq!(j["added"][0]["name"], "serde_json");

    // Not an SBOM: exit 2 naming the file.
    fs::write(d.join("SBOM.json"), "{\"hello\": 1}").unwrap();
    let r = check(d);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("SBOM.json: not a CycloneDX JSON SBOM"),
        "{r:?}"
    );
}

/// A small path-only workspace (no network): app -> lib (normal),
/// app -> gen (build), app -> testkit (dev).
fn mini_workspace(root: &Path) {
    let w = |p: &str, s: &str| {
        let path = root.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, s).unwrap();
    };
    w(
        "Cargo.toml",
        "[workspace]\nresolver = \"2\"\nmembers = [\"app\"]\n",
    );
    w(
        "app/Cargo.toml",
        "[package]\nname = \"app\"\nversion = \"1.2.3\"\nedition = \"2021\"\nlicense = \"Apache-2.0\"\n\n[dependencies]\nlib = { path = \"../lib\" }\n\n[build-dependencies]\ngen = { path = \"../gen\" }\n\n[dev-dependencies]\ntestkit = { path = \"../testkit\" }\n",
    );
    w("app/src/main.rs", "fn main() {}\n");
    w("app/build.rs", "fn main() {}\n");
    w(
        "lib/Cargo.toml",
        "[package]\nname = \"lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense = \"MIT/Apache-2.0\"\ndescription = \"a library\\tfor tests\"\n",
    );
    w("lib/src/lib.rs", "");
    w("gen/Cargo.toml", "[package]\nname = \"gen\"\nversion = \"0.1.0\"\nedition = \"2021\"\nlicense-file = \"LICENSE\"\n");
    w("gen/src/lib.rs", "");
    w("gen/LICENSE", "all rights reserved\n");
    w(
        "testkit/Cargo.toml",
        "[package]\nname = \"testkit\"\nversion = \"0.1.0\"\nedition = \"2021\"\n",
    );
    w("testkit/src/lib.rs", "");
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["generate-lockfile", "--offline"])
        .current_dir(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn dependency_kinds_licenses_and_include_dev_on_a_small_workspace() {
    let tmp = tempfile::tempdir().unwrap();
    let ws = tmp.path().join("ws");
    mini_workspace(&ws);
    let d = tmp.path();
    let manifest = ws.join("Cargo.toml");
    generate(d, &manifest, "plain.json", &[]);
    let sbom = load(&d.join("plain.json"));
    assert_eq!(
        sbom["metadata"]["component"]["name"], "ws",
        "defaults to the folder name"
    );
    assert_eq!(sbom["metadata"]["component"]["version"], "1.2.3");
    let lib = component(&sbom, "lib").unwrap();
    assert_eq!(lib["scope"], "required");
    assert_eq!(lib["licenses"][0]["expression"], "MIT OR Apache-2.0");
    assert_eq!(lib["description"], "a library for tests", "tabs normalised");
    assert_eq!(lib["purl"], "pkg:cargo/lib@0.1.0?download_url=file://lib");
    let gen = component(&sbom, "gen").unwrap();
    assert_eq!(gen["scope"], "excluded");
    assert_eq!(
        gen["licenses"][0]["license"]["name"],
        "license file LICENSE in the package"
    );
    assert!(component(&sbom, "testkit").is_none());
    let app_deps = sbom["dependencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ref"] == "pkg:cargo/app@1.2.3?download_url=file://app")
        .unwrap();
    assert_eq!(
        app_deps["dependsOn"],
        serde_json::json!([
            "pkg:cargo/gen@0.1.0?download_url=file://gen",
            "pkg:cargo/lib@0.1.0?download_url=file://lib"
        ])
    );

    generate(d, &manifest, "dev.json", &["--include-dev"]);
    let dev = load(&d.join("dev.json"));
    let testkit = component(&dev, "testkit").expect("--include-dev lists dev-dependencies");
    assert_eq!(testkit["scope"], "excluded");
    assert_eq!(prop(testkit, "qg-sbom:dependency-kind"), Some("dev"));
    // check reuses the SBOM's own settings (include-dev) and passes.
    fs::copy(d.join("dev.json"), d.join("SBOM.json")).unwrap();
    expect(
        qg_sbom(d).args(["check", "--manifest-path"]).arg(&manifest),
        0,
    );
    // A new dependency makes it stale.
    let app = ws.join("app/Cargo.toml");
    let text = fs::read_to_string(&app).unwrap();
    fs::write(
        &app,
        text.replace(
            "[dependencies]\n",
            "[dependencies]\ntestkit = { path = \"../testkit\" }\n",
        ),
    )
    .unwrap();
    let r = expect(
        qg_sbom(d).args(["check", "--manifest-path"]).arg(&manifest),
        1,
    );
    assert!(r.stdout.contains("~ testkit 0.1.0"), "{r:?}");

    // A manifest that is not there: exit 2.
    let r = expect(
        qg_sbom(d).args([
            "generate",
            "--manifest-path",
            "nope/Cargo.toml",
            "--output",
            "x.json",
        ]),
        2,
    );
    assert!(
        r.stderr.contains("nope/Cargo.toml: no such manifest"),
        "{r:?}"
    );
}

fn scan(dir: &Path, extra: &[&str]) -> Run {
    let report = fixtures().join("trivy/pip.json.golden");
    run(qg_sbom(dir)
        .args(["scan", "--trivy-json"])
        .arg(report)
        .args(extra))
}

#[test]
fn scan_gates_on_a_real_trivy_report() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let r = scan(d, &["--fail-on", "HIGH", "--summary", "summary.json"]);
    assert_eq!(r.code, 1, "{r:?}");
    assert!(
        r.stdout
            .contains("2 finding(s): CRITICAL 0, HIGH 1, MEDIUM 1"),
        "{r:?}"
    );
    assert!(
        r.stdout.lines().any(|l| l.starts_with("HIGH")
            && l.contains("Werkzeug")
            && l.contains("0.15.3")
            && l.contains("CVE-2019-14806")),
        "{r:?}"
    );
    assert!(r.stderr.contains("1 finding(s) at or above HIGH"), "{r:?}");
    let summary = load(&d.join("summary.json"));
    assert_eq!(summary["counts"]["HIGH"], 1);
    assert_eq!(summary["counts"]["MEDIUM"], 1);
    assert_eq!(summary["gate_failed"], true);
    assert_eq!(summary["findings"][0]["fixed_version"], "0.15.3");

    assert_eq!(scan(d, &["--fail-on", "CRITICAL"]).code, 0);
    assert_eq!(scan(d, &[]).code, 0, "no --fail-on: report only");
    assert_eq!(scan(d, &["--fail-on", "medium"]).code, 1);
    assert_eq!(scan(d, &["--fail-on", "severe"]).code, 2);

    // Ignore list: current entries suppress and are reported, expired ones do not.
    fs::write(
        d.join(".qg-sbom-ignore.yaml"),
        "ignore:\n  - id: CVE-2019-14806\n    package: Werkzeug\n    reason: the debugger is never enabled in production\n    expires: 2999-12-31\n  - id: CVE-2020-28724\n    reason: old waiver\n    expires: 2001-01-01\n  - id: CVE-2000-0001\n    reason: nothing matches this\n    expires: 2999-01-01\n",
    )
    .unwrap();
    let r = scan(d, &["--fail-on", "HIGH", "--json"]);
    assert_eq!(r.code, 0, "{r:?}");
    let j: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(j["ignored"][0]["id"], "CVE-2019-14806");
    assert_eq!(
        j["ignored"][0]["reason"],
        "the debugger is never enabled in production"
    );
    assert_eq!(j["expired_ignores"][0]["id"], "CVE-2020-28724");
    assert_eq!(j["unused_ignores"][0]["id"], "CVE-2000-0001");
    assert_eq!(j["findings"].as_array().unwrap().len(), 1);
    let r = scan(d, &["--fail-on", "MEDIUM"]);
    assert_eq!(r.code, 1, "the expired waiver no longer applies: {r:?}");
    assert!(
        r.stdout
            .contains("expired ignore entry (no longer applied): CVE-2020-28724"),
        "{r:?}"
    );
    assert!(
        r.stdout
            .contains("ignored: CVE-2019-14806 in Werkzeug until 2999-12-31"),
        "{r:?}"
    );

    // Entries need a reason and an expiry date.
    fs::write(
        d.join("bad.yaml"),
        "ignore:\n  - id: CVE-1\n    expires: 2999-01-01\n",
    )
    .unwrap();
    let r = scan(d, &["--ignore-file", "bad.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("bad.yaml") && r.stderr.contains("reason"),
        "{r:?}"
    );
    fs::write(
        d.join("bad.yaml"),
        "ignore:\n  - id: CVE-1\n    reason: x\n    expires: soon\n",
    )
    .unwrap();
    let r = scan(d, &["--ignore-file", "bad.yaml"]);
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("expires `soon` is not a date"), "{r:?}");

    // Not a trivy report.
    fs::write(d.join("junk.json"), "[1, 2").unwrap();
    let r = run(qg_sbom(d).args(["scan", "--trivy-json", "junk.json"]));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("junk.json: not a trivy JSON report"),
        "{r:?}"
    );
}

#[test]
fn scan_without_trivy_says_so_and_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    fs::write(d.join("SBOM.json"), "{}").unwrap();
    let r = run(qg_sbom(d)
        .args(["scan", "--fail-on", "HIGH", "--trivy"])
        .arg(d.join("no-such-trivy")));
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("trivy is not installed"), "{r:?}");
    assert!(r.stderr.contains("--trivy-json"), "{r:?}");

    // A trivy that runs and fails is exit 1 with its message; one that works is parsed.
    let fake = d.join("fake-trivy");
    fs::write(
        &fake,
        "#!/bin/sh\necho 'FATAL db download failed' >&2\nexit 1\n",
    )
    .unwrap();
    let ok = d.join("ok-trivy");
    let report = fixtures().join("trivy/pip.json.golden");
    fs::write(
        &ok,
        format!(
            "#!/bin/sh\n[ \"$1 $2 $3\" = 'sbom --format json' ] || exit 9\ncat '{}'\n",
            report.display()
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [&fake, &ok] {
            fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let r = run(qg_sbom(d).args(["scan", "--trivy"]).arg(&fake));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stderr.contains("FATAL db download failed"), "{r:?}");
    let r = run(qg_sbom(d)
        .args(["scan", "--fail-on", "HIGH", "--trivy"])
        .arg(&ok));
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("HIGH 1"), "{r:?}");
}

#[test]
fn help_documents_exit_codes_and_completions_work() {
    let tmp = tempfile::tempdir().unwrap();
    let r = expect(qg_sbom(tmp.path()).arg("--help"), 0);
    assert!(
        r.stdout.contains("Exit codes:") && r.stdout.contains("COSIGN_PASSWORD"),
        "{r:?}"
    );
    let r = expect(qg_sbom(tmp.path()).args(["completions", "bash"]), 0);
    assert!(r.stdout.contains("qg-sbom"));
    expect(qg_sbom(tmp.path()).arg("man"), 0);
    expect(qg_sbom(tmp.path()).arg("frobnicate"), 2);
}
