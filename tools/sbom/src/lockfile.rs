//! The parts of `Cargo.lock` an SBOM and a provenance need: every package
//! with its source and checksum (SHA-256 of the `.crate` archive).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::error::{read_file, Error, Result};

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct LockedPackage {
    pub name: String,
    pub version: String,
    /// `registry+URL`, `sparse+URL`, `git+URL?…#rev`; None for path packages.
    pub source: Option<String>,
    /// Hex SHA-256 of the `.crate` file, for registry packages.
    pub checksum: Option<String>,
}

#[derive(Deserialize)]
struct LockDoc {
    version: Option<u32>,
    #[serde(default)]
    package: Vec<LockedPackage>,
}

#[derive(Debug, Clone, Default)]
pub struct Lockfile {
    pub version: Option<u32>,
    pub packages: Vec<LockedPackage>,
}

impl Lockfile {
    pub fn read(path: &Path) -> Result<Lockfile> {
        let bytes = read_file(path)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Error::bad_input(path, "Cargo.lock is not UTF-8"))?;
        Self::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<Lockfile> {
        let doc: LockDoc = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .unwrap_or(0);
            Error::bad_input(path, format!("line {line}: {}", e.message()))
        })?;
        if let Some(p) = doc.package.iter().find(|p| {
            p.checksum
                .as_deref()
                .is_some_and(|c| c.len() != 64 || !c.bytes().all(|b| b.is_ascii_hexdigit()))
        }) {
            return Err(Error::bad_input(
                path,
                format!("package {} {} has a malformed checksum", p.name, p.version),
            ));
        }
        Ok(Lockfile {
            version: doc.version,
            packages: doc.package,
        })
    }

    /// Checksums by (name, version, source).
    pub fn checksums(&self) -> BTreeMap<(String, String, String), String> {
        self.packages
            .iter()
            .filter_map(|p| {
                Some((
                    (p.name.clone(), p.version.clone(), p.source.clone()?),
                    p.checksum.clone()?,
                ))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sources_and_checksums() {
        let text = r#"
version = 4

[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde"]

[[package]]
name = "serde"
version = "1.0.0"
source = "registry+https://github.com/rust-lang/crates.io-index"
checksum = "0000000000000000000000000000000000000000000000000000000000000000"
"#;
        let lock = Lockfile::parse(text, Path::new("Cargo.lock")).unwrap();
        assert_eq!(lock.version, Some(4));
        assert_eq!(lock.packages.len(), 2);
        assert_eq!(lock.checksums().len(), 1);
        let bad = text.replace(
            "000000000000000000000000000000000000000000000000000000000000000\"",
            "zz\"",
        );
        let err = Lockfile::parse(&bad, Path::new("Cargo.lock")).unwrap_err();
        assert!(
            err.to_string()
                .contains("serde 1.0.0 has a malformed checksum"),
            "{err}"
        );
        let err =
            Lockfile::parse("[[package]]\nname = 1\n", Path::new("x/Cargo.lock")).unwrap_err();
        assert!(err.to_string().starts_with("x/Cargo.lock: line "), "{err}");
    }
}
