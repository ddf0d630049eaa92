//! The GitHub workflows parse as YAML, use only known real actions, and have
//! the jobs and steps the release process relies on. (actionlint is not
//! installable here: its PyPI wrapper downloads the binary at build time.)

mod common;

use std::fs;

use serde_yaml_ng::Value;

fn workflow(name: &str) -> (String, Value) {
    let path = common::workspace_root()
        .join(".github/workflows")
        .join(name);
    let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let doc: Value = serde_yaml_ng::from_str(&text)
        .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()));
    (text, doc)
}

fn steps<'a>(doc: &'a Value, job: &str) -> &'a Vec<Value> {
    doc["jobs"][job]["steps"]
        .as_sequence()
        .unwrap_or_else(|| panic!("job {job} has no steps"))
}

fn runs(steps: &[Value]) -> String {
    steps
        .iter()
        .filter_map(|s| s["run"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn uses(steps: &[Value]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| s["uses"].as_str().map(str::to_string))
        .collect()
}

/// Actions we know exist, with the major versions we pin.
const KNOWN: &[&str] = &[
    "actions/checkout@v4",
    "actions/setup-python@v5",
    "actions/upload-artifact@v4",
    "dtolnay/rust-toolchain@stable",
    "softprops/action-gh-release@v2",
    "aquasecurity/trivy-action@0.28.0",
];

#[test]
fn every_workflow_is_yaml_with_known_actions_and_jobs_on_ubuntu() {
    let dir = common::workspace_root().join(".github/workflows");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["ci.yml", "release.yml", "security.yml"]);
    for name in &names {
        let (_, doc) = workflow(name);
        assert!(doc["name"].is_string(), "{name}: no name");
        assert!(doc["on"].is_mapping(), "{name}: no `on` triggers");
        let jobs = doc["jobs"].as_mapping().expect("jobs");
        assert!(!jobs.is_empty());
        for (job, body) in jobs {
            assert_eq!(body["runs-on"], "ubuntu-latest", "{name}/{job:?}");
            for s in body["steps"].as_sequence().expect("steps") {
                assert!(
                    s["run"].is_string() ^ s["uses"].is_string(),
                    "{name}/{job:?}: a step needs exactly one of run/uses: {s:?}"
                );
                if let Some(u) = s["uses"].as_str() {
                    assert!(KNOWN.contains(&u), "{name}: unknown action {u}");
                }
            }
        }
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let (_, doc) = workflow("ci.yml");
    assert!(doc["on"]["pull_request"].is_null() || doc["on"]["pull_request"].is_mapping());
    assert!(doc["on"].as_mapping().unwrap().contains_key("pull_request"));
    let s = steps(&doc, "test");
    assert_eq!(uses(s)[0], "actions/checkout@v4");
    assert!(runs(s).contains("bash .ci/run"));
}

#[test]
fn release_builds_signs_attests_verifies_and_uploads_on_tags() {
    let (text, doc) = workflow("release.yml");
    assert_eq!(doc["on"]["push"]["tags"][0], "v*");
    assert_eq!(doc["permissions"]["contents"], "write");
    let s = steps(&doc, "release");
    let run = runs(s);
    for needle in [
        "cargo build --release --locked",
        "SOURCE_DATE_EPOCH=",
        "\"$QG_SBOM\" check --sbom SBOM.json",
        "generate --name quadgit",
        "sign \"$f\" --key",
        "--bundle",
        "provenance \"${args[@]}\"",
        "verify \"$f\" --key dist/cosign.pub --signature",
        "openssl dgst -sha256 -verify",
        "verify-provenance",
        "rm -f \"$RUNNER_TEMP/cosign.key\"",
    ] {
        assert!(run.contains(needle), "release.yml does not run `{needle}`");
    }
    let u = uses(s);
    assert!(u.contains(&"actions/upload-artifact@v4".to_string()));
    assert!(u.contains(&"softprops/action-gh-release@v2".to_string()));
    // Secrets only through the environment of the steps that need them.
    assert!(text.contains("COSIGN_PASSWORD: ${{ secrets.COSIGN_PASSWORD }}"));
    assert!(text.contains("COSIGN_PRIVATE_KEY: ${{ secrets.COSIGN_PRIVATE_KEY }}"));
    assert!(
        !run.contains("${{ secrets."),
        "secrets must not be interpolated into scripts"
    );
    let cleanup = s
        .iter()
        .find(|st| {
            st["run"]
                .as_str()
                .is_some_and(|r| r.contains("rm -f \"$RUNNER_TEMP/cosign.key\""))
        })
        .unwrap();
    assert_eq!(cleanup["if"], "always()");
}

#[test]
fn security_scans_daily_and_on_prs_with_the_high_gate() {
    let (_, doc) = workflow("security.yml");
    let on = doc["on"].as_mapping().unwrap();
    assert!(on.contains_key("pull_request"));
    let cron = doc["on"]["schedule"][0]["cron"].as_str().unwrap();
    let fields: Vec<&str> = cron.split_whitespace().collect();
    assert_eq!(fields.len(), 5, "cron `{cron}`");
    assert_eq!(&fields[2..], ["*", "*", "*"], "daily");
    let s = steps(&doc, "scan");
    let trivy = s
        .iter()
        .find(|st| {
            st["uses"]
                .as_str()
                .is_some_and(|u| u.starts_with("aquasecurity/trivy-action@"))
        })
        .expect("trivy fs step");
    assert_eq!(trivy["with"]["scan-type"], "fs");
    assert_eq!(trivy["with"]["exit-code"], "1");
    let run = runs(s);
    assert!(
        run.contains("qg-sbom scan --sbom sbom-ci.cdx.json --fail-on HIGH"),
        "{run}"
    );
}
