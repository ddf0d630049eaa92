//! `qg-sbom generate`: a CycloneDX JSON SBOM of a Cargo workspace, built with
//! the `cyclonedx-bom` crate. Deterministic: the same workspace, options and
//! `SOURCE_DATE_EPOCH` give byte-identical output; the serial number is
//! derived from the content.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use cyclonedx_bom::external_models::date_time::DateTime;
use cyclonedx_bom::external_models::normalized_string::NormalizedString;
use cyclonedx_bom::external_models::spdx::SpdxExpression;
use cyclonedx_bom::external_models::uri::{Purl, Uri};
use cyclonedx_bom::models::bom::{Bom, SpecVersion, UrnUuid};
use cyclonedx_bom::models::component::{Classification, Component, Components, Scope};
use cyclonedx_bom::models::dependency::{Dependencies, Dependency};
use cyclonedx_bom::models::external_reference::{
    ExternalReference, ExternalReferenceType, ExternalReferences,
};
use cyclonedx_bom::models::hash::{Hash, HashAlgorithm, HashValue, Hashes};
use cyclonedx_bom::models::license::{License, LicenseChoice, Licenses};
use cyclonedx_bom::models::metadata::Metadata;
use cyclonedx_bom::models::property::{Properties, Property};
use cyclonedx_bom::models::tool::{Tool, Tools};
use cyclonedx_bom::validation::Validate;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{write_file, Error, Result};
use crate::workspace::{self, Graph, GraphOptions, Reach, Source};

/// Property names this tool writes (namespace `qg-sbom:`).
pub const PROP_TARGET: &str = "qg-sbom:target";
pub const PROP_INCLUDE_DEV: &str = "qg-sbom:include-dev";
pub const PROP_SOURCE: &str = "qg-sbom:source";
pub const PROP_KIND: &str = "qg-sbom:dependency-kind";
pub const PROP_MEMBER: &str = "qg-sbom:workspace-member";
pub const PROP_PACKAGE: &str = "qg-sbom:package";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct GenerateOptions {
    /// The workspace's `Cargo.toml`.
    pub manifest_path: PathBuf,
    /// Where to write the SBOM; None to only return it.
    pub output: Option<PathBuf>,
    /// CycloneDX spec version: 1.3, 1.4 or 1.5.
    pub spec_version: String,
    /// Also list dev-dependencies of workspace members (scope `excluded`).
    pub include_dev: bool,
    /// Target triple whose dependencies are compiled, `all`, or None for the host.
    pub target: Option<String>,
    /// Name of the metadata component (the product); default: the workspace folder's name.
    pub name: Option<String>,
    /// Timestamp (Unix seconds), normally from `SOURCE_DATE_EPOCH`; None for now.
    pub source_date_epoch: Option<i64>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            manifest_path: PathBuf::from("Cargo.toml"),
            output: None,
            spec_version: "1.5".into(),
            include_dev: false,
            target: None,
            name: None,
            source_date_epoch: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct GenerateResult {
    pub output: Option<PathBuf>,
    pub spec_version: String,
    pub serial_number: String,
    pub name: String,
    pub target: String,
    pub include_dev: bool,
    pub timestamp: String,
    /// Hex SHA-256 of the SBOM bytes.
    pub sha256: String,
    pub components: usize,
    /// Components by how they are reached: normal, build, dev.
    pub by_kind: BTreeMap<String, usize>,
    pub binaries: Vec<String>,
    pub dependency_edges: usize,
    /// Components without a SHA-256 (workspace members and git packages have no lockfile checksum).
    pub without_hash: Vec<String>,
    /// Components whose manifest declares no license.
    pub without_license: Vec<String>,
    /// The SBOM itself.
    #[serde(skip)]
    pub json: String,
}

fn ns(s: &str) -> NormalizedString {
    NormalizedString::new(s)
}

fn props(pairs: &[(&str, &str)]) -> Option<Properties> {
    Some(Properties(
        pairs.iter().map(|(k, v)| Property::new(*k, v)).collect(),
    ))
}

fn reach_name(r: Reach) -> &'static str {
    match r {
        Reach::Normal => "normal",
        Reach::Build => "build",
        Reach::Dev => "dev",
    }
}

fn licenses(p: &workspace::Package) -> Option<Licenses> {
    if let Some(l) = p.license.as_deref() {
        let choice = match SpdxExpression::parse_lax(l.to_string()) {
            Ok(expr) => LicenseChoice::Expression(expr),
            Err(_) => LicenseChoice::License(License::named_license(l)),
        };
        return Some(Licenses(vec![choice]));
    }
    p.license_file.as_deref().map(|f| {
        Licenses(vec![LicenseChoice::License(License::named_license(
            &format!("license file {f} in the package"),
        ))])
    })
}

fn component(p: &workspace::Package) -> Result<Component> {
    let mut c = Component::new(
        Classification::Library,
        &p.name,
        &p.version,
        Some(p.purl.clone()),
    );
    c.purl =
        Some(Purl::from_str(&p.purl).map_err(|_| Error::Other(format!("bad purl {}", p.purl)))?);
    c.scope = Some(match p.reach {
        Reach::Normal => Scope::Required,
        Reach::Build | Reach::Dev => Scope::Excluded,
    });
    c.hashes = p.checksum.as_ref().map(|h| {
        Hashes(vec![Hash {
            alg: HashAlgorithm::SHA_256,
            content: HashValue(h.clone()),
        }])
    });
    c.licenses = licenses(p);
    c.description = p.description.as_deref().map(ns);
    c.external_references = match &p.source {
        Source::Registry { .. } if p.source.label() == "crates.io" => {
            Some(ExternalReferences(vec![ExternalReference::new(
                ExternalReferenceType::Distribution,
                Uri::new(&format!(
                    "https://crates.io/api/v1/crates/{}/{}/download",
                    p.name, p.version
                )),
            )]))
        }
        Source::Git { url, .. } => Some(ExternalReferences(vec![ExternalReference::new(
            ExternalReferenceType::Vcs,
            Uri::new(url),
        )])),
        _ => None,
    };
    let label = p.source.label();
    let mut pairs = vec![
        (PROP_SOURCE, label.as_str()),
        (PROP_KIND, reach_name(p.reach)),
    ];
    if p.member {
        pairs.push((PROP_MEMBER, "true"));
    }
    c.properties = props(&pairs);
    Ok(c)
}

fn spec(version: &str) -> Result<SpecVersion> {
    SpecVersion::from_str(version).map_err(|_| Error::BadInput {
        path: "--spec-version".into(),
        reason: format!("`{version}` is not a supported CycloneDX version (1.3, 1.4, 1.5)"),
    })
}

/// Build the BOM for a resolved graph.
pub fn build_bom(
    graph: &Graph,
    name: &str,
    spec_version: SpecVersion,
    timestamp: &str,
) -> Result<Bom> {
    let members: Vec<&workspace::Package> = graph.packages.values().filter(|p| p.member).collect();
    // The product's version: that of the members shipping binaries (else of
    // all members), when they agree.
    let shipping: Vec<&&workspace::Package> = if members.iter().any(|p| !p.bins.is_empty()) {
        members.iter().filter(|p| !p.bins.is_empty()).collect()
    } else {
        members.iter().collect()
    };
    let mut versions: Vec<&str> = shipping.iter().map(|p| p.version.as_str()).collect();
    versions.sort();
    versions.dedup();
    let app_version = if versions.len() == 1 { versions[0] } else { "" };
    let app_ref = format!("app:{name}");

    let mut bins = Vec::new();
    let mut deps = Vec::new();
    let mut bin_refs = Vec::new();
    for p in &members {
        for b in &p.bins {
            let bref = format!("bin:{b}@{}", p.version);
            let mut c = Component::new(
                Classification::Application,
                b,
                &p.version,
                Some(bref.clone()),
            );
            c.properties = props(&[(PROP_PACKAGE, &p.name)]);
            bins.push(c);
            deps.push(Dependency {
                dependency_ref: bref.clone(),
                dependencies: vec![p.purl.clone()],
            });
            bin_refs.push(bref);
        }
    }
    let mut app = Component::new(
        Classification::Application,
        name,
        app_version,
        Some(app_ref.clone()),
    );
    if app_version.is_empty() {
        app.version = None;
    }
    if !bins.is_empty() {
        app.components = Some(Components(bins));
    }
    deps.insert(
        0,
        Dependency {
            dependency_ref: app_ref,
            dependencies: bin_refs,
        },
    );

    let components = graph
        .packages
        .values()
        .map(component)
        .collect::<Result<Vec<_>>>()?;
    for p in graph.packages.values() {
        deps.push(Dependency {
            dependency_ref: p.purl.clone(),
            dependencies: p.deps.iter().cloned().collect(),
        });
    }

    let tool_version = env!("CARGO_PKG_VERSION");
    let tools = if spec_version >= SpecVersion::V1_5 {
        Tools::Object {
            services: None,
            components: Some(Components(vec![Component::new(
                Classification::Application,
                "qg-sbom",
                tool_version,
                None,
            )])),
        }
    } else {
        Tools::List(vec![Tool::new("QuadGit", "qg-sbom", tool_version)])
    };
    let include_dev = graph.include_dev.to_string();
    let metadata = Metadata {
        timestamp: Some(
            DateTime::try_from(timestamp.to_string())
                .map_err(|e| Error::Other(format!("timestamp {timestamp}: {e:?}")))?,
        ),
        tools: Some(tools),
        component: Some(app),
        properties: props(&[
            (PROP_TARGET, graph.target.as_str()),
            (PROP_INCLUDE_DEV, include_dev.as_str()),
        ]),
        ..Default::default()
    };
    Ok(Bom {
        version: 1,
        serial_number: None,
        metadata: Some(metadata),
        components: Some(Components(components)),
        dependencies: Some(Dependencies(deps)),
        spec_version,
        ..Default::default()
    })
}

/// Serialise, deriving the serial number from the content (a UUID in the
/// RFC 9562 "custom" version 8 from the SHA-256 of the serial-less BOM).
pub fn serialize(mut bom: Bom) -> Result<(String, String)> {
    let version = bom.spec_version;
    let validation = bom.validate();
    if !validation.passed() {
        return Err(Error::Other(format!(
            "the generated SBOM does not pass CycloneDX validation: {:?}",
            validation
        )));
    }
    bom.serial_number = None;
    let mut first = Vec::new();
    bom.clone()
        .output_as_json(&mut first, version)
        .map_err(|e| Error::Other(format!("writing JSON: {e:?}")))?;
    let h = Sha256::digest(&first);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x80;
    b[8] = (b[8] & 0x3f) | 0x80;
    let x = hex::encode(b);
    let serial = format!(
        "urn:uuid:{}-{}-{}-{}-{}",
        &x[0..8],
        &x[8..12],
        &x[12..16],
        &x[16..20],
        &x[20..32]
    );
    bom.serial_number =
        Some(UrnUuid::new(serial.clone()).map_err(|e| Error::Other(format!("{e:?}")))?);
    let mut out = Vec::new();
    bom.output_as_json(&mut out, version)
        .map_err(|e| Error::Other(format!("writing JSON: {e:?}")))?;
    out.push(b'\n');
    let json = String::from_utf8(out).map_err(|e| Error::Other(e.to_string()))?;
    Ok((json, serial))
}

/// Default product name: the workspace folder's name.
pub fn default_name(graph: &Graph) -> String {
    graph
        .root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "workspace".into())
}

pub fn generate(opts: &GenerateOptions) -> Result<GenerateResult> {
    let spec_version = spec(&opts.spec_version)?;
    let graph = workspace::resolve(&GraphOptions {
        manifest_path: opts.manifest_path.clone(),
        target: opts.target.clone(),
        include_dev: opts.include_dev,
    })?;
    let name = opts.name.clone().unwrap_or_else(|| default_name(&graph));
    if name.trim().is_empty() {
        return Err(Error::BadInput {
            path: "--name".into(),
            reason: "the product name is empty".into(),
        });
    }
    let epoch = opts.source_date_epoch.unwrap_or_else(crate::now_unix);
    let timestamp = crate::rfc3339(epoch)?;
    let bom = build_bom(&graph, &name, spec_version, &timestamp)?;
    let (json, serial_number) = serialize(bom)?;
    if let Some(out) = &opts.output {
        write_file(out, json.as_bytes())?;
    }
    let mut by_kind = BTreeMap::new();
    for p in graph.packages.values() {
        *by_kind.entry(reach_name(p.reach).to_string()).or_insert(0) += 1;
    }
    let label = |p: &workspace::Package| format!("{} {}", p.name, p.version);
    Ok(GenerateResult {
        output: opts.output.clone(),
        spec_version: spec_version.to_string(),
        serial_number,
        name,
        target: graph.target.clone(),
        include_dev: graph.include_dev,
        timestamp,
        sha256: hex::encode(Sha256::digest(json.as_bytes())),
        components: graph.packages.len(),
        by_kind,
        binaries: graph
            .packages
            .values()
            .flat_map(|p| p.bins.iter().cloned())
            .collect(),
        dependency_edges: graph.packages.values().map(|p| p.deps.len()).sum(),
        without_hash: graph
            .packages
            .values()
            .filter(|p| p.checksum.is_none())
            .map(label)
            .collect(),
        without_license: graph
            .packages
            .values()
            .filter(|p| p.license.is_none() && p.license_file.is_none())
            .map(label)
            .collect(),
        json,
    })
}
