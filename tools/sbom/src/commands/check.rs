//! `qg-sbom check`: is a committed SBOM still what `generate` would write
//! for the workspace today? The SBOM's own settings (product name, spec
//! version, target platform, dev-dependencies) are reused, so the check
//! compares content, not options; timestamp and serial number are ignored.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::str::FromStr;

use cyclonedx_bom::models::bom::SpecVersion;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::generate::{build_bom, serialize, PROP_INCLUDE_DEV, PROP_TARGET};
use crate::error::{read_file, Error, Result};
use crate::workspace::{self, GraphOptions};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct CheckOptions {
    pub manifest_path: PathBuf,
    pub sbom: PathBuf,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            manifest_path: PathBuf::from("Cargo.toml"),
            sbom: PathBuf::from("SBOM.json"),
        }
    }
}

/// One component that differs.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ComponentDiff {
    pub bom_ref: String,
    pub name: String,
    pub version: String,
    /// For changed components: the fields that differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub sbom: PathBuf,
    /// True when the SBOM matches the workspace.
    pub current: bool,
    pub components: usize,
    /// In the workspace, missing from the SBOM.
    pub added: Vec<ComponentDiff>,
    /// In the SBOM, no longer in the workspace.
    pub removed: Vec<ComponentDiff>,
    /// In both, with different fields (version, hash, license, scope, ...).
    pub changed: Vec<ComponentDiff>,
    /// bom-refs whose dependency lists differ.
    pub dependencies_changed: Vec<String>,
    /// The product component (name, version, binaries) differs.
    pub metadata_changed: bool,
}

fn prop<'a>(meta: &'a Value, name: &str) -> Option<&'a str> {
    meta.get("properties")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some(name))?
        .get("value")?
        .as_str()
}

fn by_ref(doc: &Value, key: &str, id: &str) -> BTreeMap<String, Value> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| Some((c.get(id)?.as_str()?.to_string(), c.clone())))
                .collect()
        })
        .unwrap_or_default()
}

fn diff_entry(bom_ref: &str, c: &Value, fields: Vec<String>) -> ComponentDiff {
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    ComponentDiff {
        bom_ref: bom_ref.to_string(),
        name: s("name"),
        version: s("version"),
        fields,
    }
}

pub fn check(opts: &CheckOptions) -> Result<CheckResult> {
    let path = &opts.sbom;
    let committed: Value = serde_json::from_slice(&read_file(path)?)
        .map_err(|e| Error::bad_input(path, format!("not JSON (line {}): {e}", e.line())))?;
    if committed.get("bomFormat").and_then(Value::as_str) != Some("CycloneDX") {
        return Err(Error::bad_input(
            path,
            "not a CycloneDX JSON SBOM (no bomFormat CycloneDX)",
        ));
    }
    let spec_version = committed
        .get("specVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.5");
    let spec_version = SpecVersion::from_str(spec_version).map_err(|_| {
        Error::bad_input(
            path,
            format!("unsupported CycloneDX specVersion {spec_version}"),
        )
    })?;
    let meta = committed.get("metadata").cloned().unwrap_or(Value::Null);
    let name = meta
        .pointer("/component/name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_input(path, "metadata.component.name is missing"))?
        .to_string();
    let timestamp = meta
        .get("timestamp")
        .and_then(Value::as_str)
        .unwrap_or("1970-01-01T00:00:00Z")
        .to_string();
    let graph = workspace::resolve(&GraphOptions {
        manifest_path: opts.manifest_path.clone(),
        target: prop(&meta, PROP_TARGET).map(str::to_string),
        include_dev: prop(&meta, PROP_INCLUDE_DEV) == Some("true"),
    })?;
    let (fresh, _) = serialize(build_bom(&graph, &name, spec_version, &timestamp)?)?;
    let fresh: Value = serde_json::from_str(&fresh).map_err(|e| Error::Other(e.to_string()))?;

    let old = by_ref(&committed, "components", "bom-ref");
    let new = by_ref(&fresh, "components", "bom-ref");
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut changed = Vec::new();
    for (r, c) in &new {
        match old.get(r) {
            None => added.push(diff_entry(r, c, vec![])),
            Some(o) if o != c => {
                let keys: BTreeSet<&String> = c
                    .as_object()
                    .into_iter()
                    .chain(o.as_object())
                    .flat_map(|m| m.keys())
                    .collect();
                let fields = keys
                    .into_iter()
                    .filter(|k| o.get(k.as_str()) != c.get(k.as_str()))
                    .cloned()
                    .collect();
                changed.push(diff_entry(r, c, fields));
            }
            _ => {}
        }
    }
    for (r, c) in &old {
        if !new.contains_key(r) {
            removed.push(diff_entry(r, c, vec![]));
        }
    }
    let norm = |d: &Value| -> BTreeSet<String> {
        d.get("dependsOn")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_deps = by_ref(&committed, "dependencies", "ref");
    let new_deps = by_ref(&fresh, "dependencies", "ref");
    let refs: BTreeSet<&String> = old_deps.keys().chain(new_deps.keys()).collect();
    let dependencies_changed: Vec<String> = refs
        .into_iter()
        .filter(|r| old_deps.get(*r).map(norm) != new_deps.get(*r).map(norm))
        .cloned()
        .collect();
    let metadata_changed =
        committed.pointer("/metadata/component") != fresh.pointer("/metadata/component");
    let current = added.is_empty()
        && removed.is_empty()
        && changed.is_empty()
        && dependencies_changed.is_empty()
        && !metadata_changed;
    Ok(CheckResult {
        sbom: path.clone(),
        current,
        components: new.len(),
        added,
        removed,
        changed,
        dependencies_changed,
        metadata_changed,
    })
}
