//! `qg export`: a commit's quads as N-Quads or TriG.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::rdf::{self, Format};
use crate::refs;
use crate::store::Store;
use crate::tree::Scan;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ExportOptions {
    pub ns: String,
    /// Ref to export; the default branch when None.
    pub reference: Option<String>,
    /// Only this graph (an IRI, with or without angle brackets).
    pub graph: Option<String>,
    /// `NQuads` (default) or `TriG`.
    pub format: Option<Format>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExportResult {
    pub commit: ObjectId,
    pub quads: u64,
}

/// Write the quads of a ref to `out`.
pub fn export(store: &Store, opts: &ExportOptions, out: &mut dyn Write) -> Result<ExportResult> {
    let objs = store.objects(&opts.ns)?;
    let spec = match &opts.reference {
        Some(r) => r.clone(),
        None => store.default_branch(&opts.ns)?,
    };
    let id = refs::resolve(&objs, &spec)?;
    let commit = Commit::load(&objs, &id)?;
    let prefix = match &opts.graph {
        None => Vec::new(),
        Some(g) => {
            let iri = g.trim_start_matches('<').trim_end_matches('>');
            let node = oxrdf::NamedNode::new(iri).map_err(|e| Error::BadPattern {
                pattern: g.clone(),
                reason: format!("not an IRI: {e}"),
            })?;
            rdf::graph_prefix(Some(&node.to_string()))
        }
    };
    let mut n = 0u64;
    match opts.format.unwrap_or(Format::NQuads) {
        Format::NQuads | Format::NTriples => {
            let mut buf = Vec::with_capacity(1 << 16);
            for key in Scan::new(&objs, &commit.tree, &prefix)? {
                rdf::nquad_line(&key?, &mut buf);
                n += 1;
                if buf.len() >= 1 << 16 {
                    out.write_all(&buf)?;
                    buf.clear();
                }
            }
            out.write_all(&buf)?;
        }
        Format::TriG | Format::Turtle => {
            let mut ser = oxttl::TriGSerializer::new().for_writer(out);
            for key in Scan::new(&objs, &commit.tree, &prefix)? {
                ser.serialize_quad(&rdf::quad_of(&key?)?)?;
                n += 1;
            }
            ser.finish()?;
        }
    }
    Ok(ExportResult {
        commit: id,
        quads: n,
    })
}
