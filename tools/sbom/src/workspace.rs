//! The resolved dependency graph of a Cargo workspace, from `cargo metadata`
//! (filtered to one target platform) and `Cargo.lock`: which packages are
//! compiled, how each is reached (normal, build-only, dev-only), their
//! sources, checksums, licenses and edges. Everything is relative to the
//! workspace root, so the same checkout gives the same graph anywhere.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};

use cargo_metadata::{DependencyKind, MetadataCommand, PackageId, TargetKind};

use crate::error::{Error, Result};
use crate::lockfile::Lockfile;

pub const CRATES_IO: &str = "registry+https://github.com/rust-lang/crates.io-index";
pub const CRATES_IO_SPARSE: &str = "sparse+https://index.crates.io/";

/// How a package is reached from the workspace members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// Through normal dependencies: linked into (or, for proc-macros, used to
    /// compile) the shipped binaries.
    Normal,
    /// Only through build dependencies: compiled and run at build time.
    Build,
    /// Only through dev-dependencies of workspace members (tests, benches).
    Dev,
}

/// Where a package comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Source {
    Registry {
        url: String,
    },
    Git {
        url: String,
        rev: String,
    },
    /// Relative to the workspace root (`.` for the root package).
    Path {
        path: String,
    },
}

impl Source {
    /// A short human label: `crates.io`, the registry or git URL, `path:DIR`.
    pub fn label(&self) -> String {
        match self {
            Source::Registry { url } if is_crates_io(url) => "crates.io".into(),
            Source::Registry { url } => url.clone(),
            Source::Git { url, rev } => format!("git+{url}#{rev}"),
            Source::Path { path } => format!("path:{path}"),
        }
    }
}

fn is_crates_io(url: &str) -> bool {
    url == "https://github.com/rust-lang/crates.io-index" || url == "https://index.crates.io/"
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub source: Source,
    /// Hex SHA-256 of the `.crate` archive (registry packages).
    pub checksum: Option<String>,
    /// The `license` field as written (SPDX, possibly the old `A/B` form).
    pub license: Option<String>,
    /// The `license-file` field, relative to the package.
    pub license_file: Option<String>,
    pub description: Option<String>,
    pub reach: Reach,
    pub member: bool,
    /// Binary targets (workspace members only).
    pub bins: Vec<String>,
    /// purls of the packages this one depends on (within the selection).
    pub deps: BTreeSet<String>,
    pub purl: String,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub root: PathBuf,
    /// The platform the graph was filtered for, or `all`.
    pub target: String,
    pub include_dev: bool,
    /// By purl, which is also each component's bom-ref.
    pub packages: BTreeMap<String, Package>,
}

/// What to resolve.
#[derive(Debug, Clone, Default)]
pub struct GraphOptions {
    pub manifest_path: PathBuf,
    /// Target triple, `all`, or None for the host (`rustc -vV`).
    pub target: Option<String>,
    pub include_dev: bool,
}

/// The host triple, from `rustc -vV`.
pub fn host_triple() -> Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = std::process::Command::new(&rustc)
        .arg("-vV")
        .output()
        .map_err(|e| {
            Error::MissingTool(format!(
                "cannot run `{} -vV` to find the host platform: {e}; pass --target TRIPLE",
                rustc.to_string_lossy()
            ))
        })?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(|s| s.trim().to_string()))
        .ok_or_else(|| Error::Tool {
            program: "rustc -vV".into(),
            reason: "it printed no `host:` line".into(),
        })
}

/// Percent-encode a purl qualifier value (keeps unreserved characters, `/` and `:`).
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The package URL of a Cargo package.
pub fn purl(name: &str, version: &str, source: &Source) -> String {
    let base = format!("pkg:cargo/{name}@{}", pct(version));
    match source {
        Source::Registry { url } if is_crates_io(url) => base,
        Source::Registry { url } => format!("{base}?repository_url={}", pct(url)),
        Source::Git { url, rev } => format!("{base}?vcs_url={}", pct(&format!("git+{url}@{rev}"))),
        Source::Path { path } => format!("{base}?download_url={}", pct(&format!("file://{path}"))),
    }
}

fn parse_source(repr: Option<&str>, manifest: &Path, root: &Path) -> Result<Source> {
    let Some(repr) = repr else {
        let dir = manifest.parent().unwrap_or(root);
        let rel = dir.strip_prefix(root).map_err(|_| {
            Error::Workspace(format!(
                "path dependency {} is outside the workspace root {}; an SBOM cannot name it portably",
                dir.display(),
                root.display()
            ))
        })?;
        let path = rel.to_string_lossy().replace('\\', "/");
        return Ok(Source::Path {
            path: if path.is_empty() { ".".into() } else { path },
        });
    };
    if let Some(url) = repr
        .strip_prefix("registry+")
        .or_else(|| repr.strip_prefix("sparse+"))
    {
        return Ok(Source::Registry {
            url: url.to_string(),
        });
    }
    if let Some(rest) = repr.strip_prefix("git+") {
        let (url, rev) = rest.split_once('#').unwrap_or((rest, ""));
        let url = url.split('?').next().unwrap_or(url);
        return Ok(Source::Git {
            url: url.to_string(),
            rev: rev.to_string(),
        });
    }
    Err(Error::Workspace(format!(
        "unknown package source `{repr}` in cargo metadata"
    )))
}

/// Resolve the workspace at `opts.manifest_path`.
pub fn resolve(opts: &GraphOptions) -> Result<Graph> {
    let manifest = &opts.manifest_path;
    if !manifest.is_file() {
        return Err(Error::bad_input(
            manifest,
            "no such manifest (pass --manifest-path path/to/Cargo.toml)",
        ));
    }
    let target = match opts.target.as_deref() {
        None | Some("host") => host_triple()?,
        Some(t) => t.to_string(),
    };
    let mut cmd = MetadataCommand::new();
    cmd.manifest_path(manifest);
    let mut other = vec!["--locked".to_string()];
    if target != "all" {
        other.push("--filter-platform".into());
        other.push(target.clone());
    }
    cmd.other_options(other);
    tracing::debug!(manifest = %manifest.display(), %target, "running cargo metadata");
    let meta = cmd.exec().map_err(|e| match e {
        cargo_metadata::Error::CargoMetadata { stderr } => Error::Workspace(format!(
            "`cargo metadata` failed for {}: {}",
            manifest.display(),
            stderr.trim()
        )),
        other => Error::Workspace(format!(
            "cannot run `cargo metadata` for {}: {other}",
            manifest.display()
        )),
    })?;
    let root = PathBuf::from(meta.workspace_root.as_std_path());
    let lock_path = root.join("Cargo.lock");
    let lock = Lockfile::read(&lock_path)?;
    let checksums = lock.checksums();
    let resolve = meta.resolve.as_ref().ok_or_else(|| {
        Error::Workspace("`cargo metadata` returned no dependency resolution".into())
    })?;
    let nodes: BTreeMap<&PackageId, &cargo_metadata::Node> =
        resolve.nodes.iter().map(|n| (&n.id, n)).collect();
    let members: BTreeSet<&PackageId> = meta.workspace_members.iter().collect();

    // Edges by kind, keeping only those cargo says apply to this platform
    // (`--filter-platform` already dropped the others).
    let edges = |id: &PackageId, kinds: &[DependencyKind]| -> Vec<PackageId> {
        nodes
            .get(id)
            .map(|n| {
                n.deps
                    .iter()
                    .filter(|d| d.dep_kinds.iter().any(|k| kinds.contains(&k.kind)))
                    .map(|d| d.pkg.clone())
                    .collect()
            })
            .unwrap_or_default()
    };
    let closure = |start: Vec<PackageId>, kinds: &[DependencyKind]| -> BTreeSet<PackageId> {
        let mut seen: BTreeSet<PackageId> = BTreeSet::new();
        let mut queue: VecDeque<PackageId> = start.into();
        while let Some(id) = queue.pop_front() {
            if seen.insert(id.clone()) {
                queue.extend(edges(&id, kinds));
            }
        }
        seen
    };
    let member_ids: Vec<PackageId> = members.iter().map(|m| (*m).clone()).collect();
    // Roots: members no other member depends on (path dependencies inside the
    // workspace folder are members too, but one used only as a build- or
    // dev-dependency must not count as shipped). Members caught in a cycle
    // with no root above them become roots themselves.
    let all_kinds = [
        DependencyKind::Normal,
        DependencyKind::Build,
        DependencyKind::Development,
    ];
    let depended_on: BTreeSet<PackageId> = member_ids
        .iter()
        .flat_map(|m| edges(m, &all_kinds))
        .filter(|d| members.contains(d))
        .collect();
    let mut roots: Vec<PackageId> = member_ids
        .iter()
        .filter(|m| !depended_on.contains(*m))
        .cloned()
        .collect();
    let reachable = closure(roots.clone(), &all_kinds);
    roots.extend(
        member_ids
            .iter()
            .filter(|m| !reachable.contains(*m))
            .cloned(),
    );
    let normal = closure(roots.clone(), &[DependencyKind::Normal]);
    // Build dependencies of anything compiled, and everything they pull in.
    let mut compiled = normal.clone();
    loop {
        let starts: Vec<PackageId> = compiled
            .iter()
            .flat_map(|id| edges(id, &[DependencyKind::Build]))
            .filter(|id| !compiled.contains(id))
            .collect();
        if starts.is_empty() {
            break;
        }
        let more = closure(starts, &[DependencyKind::Normal, DependencyKind::Build]);
        compiled.extend(more);
    }
    let mut dev = BTreeSet::new();
    if opts.include_dev {
        let starts: Vec<PackageId> = member_ids
            .iter()
            .flat_map(|m| edges(m, &[DependencyKind::Development]))
            .filter(|id| !compiled.contains(id))
            .collect();
        dev = closure(starts, &[DependencyKind::Normal, DependencyKind::Build]);
        dev.retain(|id| !compiled.contains(id));
    }
    let selected: BTreeSet<&PackageId> = compiled.iter().chain(dev.iter()).collect();

    let mut purls: BTreeMap<PackageId, String> = BTreeMap::new();
    let mut packages: BTreeMap<String, Package> = BTreeMap::new();
    for p in meta.packages.iter().filter(|p| selected.contains(&p.id)) {
        let source = parse_source(
            p.source.as_ref().map(|s| s.repr.as_str()),
            p.manifest_path.as_std_path(),
            &root,
        )?;
        let name = p.name.to_string();
        let version = p.version.to_string();
        let purl = purl(&name, &version, &source);
        let checksum = p.source.as_ref().and_then(|s| {
            checksums
                .get(&(name.clone(), version.clone(), s.repr.clone()))
                .cloned()
        });
        if matches!(source, Source::Registry { .. }) && checksum.is_none() {
            return Err(Error::Workspace(format!(
                "{name} {version} from {} has no checksum in {}; run `cargo generate-lockfile`?",
                source.label(),
                lock_path.display()
            )));
        }
        let member = members.contains(&p.id);
        let reach = if normal.contains(&p.id) {
            Reach::Normal
        } else if compiled.contains(&p.id) {
            Reach::Build
        } else {
            Reach::Dev
        };
        let mut bins: Vec<String> = if member {
            p.targets
                .iter()
                .filter(|t| t.is_kind(TargetKind::Bin))
                .map(|t| t.name.clone())
                .collect()
        } else {
            Vec::new()
        };
        bins.sort();
        purls.insert(p.id.clone(), purl.clone());
        packages.insert(
            purl.clone(),
            Package {
                name,
                version,
                source,
                checksum,
                license: p.license.clone(),
                license_file: p.license_file.as_ref().map(|f| {
                    // cargo reports it relative to the package, or absolute; keep the file name.
                    f.file_name().unwrap_or(f.as_str()).to_string()
                }),
                description: p.description.clone(),
                reach,
                member,
                bins,
                deps: BTreeSet::new(),
                purl,
            },
        );
    }
    if purls.len() != packages.len() {
        return Err(Error::Workspace(
            "two packages in the graph share a package URL (same name, version and source)".into(),
        ));
    }
    for (id, purl) in &purls {
        let mut kinds = vec![DependencyKind::Normal, DependencyKind::Build];
        if opts.include_dev && members.contains(id) {
            kinds.push(DependencyKind::Development);
        }
        let deps: BTreeSet<String> = edges(id, &kinds)
            .iter()
            .filter_map(|d| purls.get(d).cloned())
            .collect();
        if let Some(p) = packages.get_mut(purl) {
            p.deps = deps;
        }
    }
    Ok(Graph {
        root,
        target,
        include_dev: opts.include_dev,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purls_follow_the_cargo_purl_type() {
        let reg = Source::Registry {
            url: "https://github.com/rust-lang/crates.io-index".into(),
        };
        assert_eq!(purl("serde", "1.0.1", &reg), "pkg:cargo/serde@1.0.1");
        let git = Source::Git {
            url: "https://github.com/o/r".into(),
            rev: "abc".into(),
        };
        assert_eq!(
            purl("r", "0.1.0", &git),
            "pkg:cargo/r@0.1.0?vcs_url=git%2Bhttps://github.com/o/r%40abc"
        );
        let path = Source::Path {
            path: "tools/sbom".into(),
        };
        assert_eq!(
            purl("qg-sbom", "0.1.0", &path),
            "pkg:cargo/qg-sbom@0.1.0?download_url=file://tools/sbom"
        );
        assert_eq!(
            purl("x", "1.0.0+build.1", &reg),
            "pkg:cargo/x@1.0.0%2Bbuild.1"
        );
    }

    #[test]
    fn sources_parse() {
        let root = Path::new("/w");
        assert_eq!(
            parse_source(
                Some("git+https://github.com/o/r?branch=main#abc123"),
                Path::new("/x/Cargo.toml"),
                root
            )
            .unwrap(),
            Source::Git {
                url: "https://github.com/o/r".into(),
                rev: "abc123".into()
            }
        );
        assert_eq!(
            parse_source(None, Path::new("/w/store/Cargo.toml"), root).unwrap(),
            Source::Path {
                path: "store".into()
            }
        );
        assert_eq!(
            parse_source(None, Path::new("/w/Cargo.toml"), root).unwrap(),
            Source::Path { path: ".".into() }
        );
        assert!(parse_source(None, Path::new("/elsewhere/Cargo.toml"), root).is_err());
    }
}
