//! `qg query`: match a quad pattern against a commit.
//!
//! A pattern is three or four terms (subject, predicate, object, optional
//! graph) in N-Triples syntax, where any position may be `?name` (a variable:
//! equal names must match equal terms) or `*` (anything). Example:
//! `?s <http://xmlns.com/foaf/0.1/name> ?name`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::{Error, Result};
use crate::rdf::{self, SEP};
use crate::refs;
use crate::store::Store;
use crate::tree::Scan;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct QueryOptions {
    pub ns: String,
    /// Commit to query; the default branch when None.
    pub at: Option<String>,
    pub pattern: String,
    /// Stop after this many matches.
    pub limit: Option<u64>,
}

/// One matching quad.
#[derive(Debug, Clone, Serialize)]
pub struct Match {
    /// The quad as an N-Quads line (without the newline).
    pub quad: String,
    /// Variable name (without `?`) to term.
    pub bindings: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Any,
    Var(String),
    Term(String),
}

/// A parsed pattern in key order: graph, subject, predicate, object.
#[derive(Debug, Clone)]
pub struct Pattern {
    slots: [Slot; 4],
}

fn tokens(pattern: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        match chars[i] {
            '<' => {
                while i < chars.len() && chars[i] != '>' {
                    i += 1;
                }
                if i == chars.len() {
                    return Err("an IRI is missing its closing `>`".into());
                }
                i += 1;
            }
            '"' => {
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    i += if chars[i] == '\\' { 2 } else { 1 };
                }
                if i >= chars.len() {
                    return Err("a literal is missing its closing quote".into());
                }
                i += 1;
                // language tag or datatype
                if i < chars.len() && chars[i] == '^' {
                    while i < chars.len() && chars[i] != '>' {
                        i += 1;
                    }
                    i = (i + 1).min(chars.len());
                } else {
                    while i < chars.len() && !chars[i].is_whitespace() {
                        i += 1;
                    }
                }
            }
            _ => {
                while i < chars.len() && !chars[i].is_whitespace() {
                    i += 1;
                }
            }
        }
        out.push(chars[start..i].iter().collect());
    }
    Ok(out)
}

/// Canonical N-Triples form of one term, checked by the real parser.
fn canonical(term: &str, position: &str) -> std::result::Result<String, String> {
    // Fast path for the common `<iri>` made only of URI characters: for it
    // the parser does nothing but check `Iri::parse`, as `NamedNode::new`
    // does, and prints it back unchanged. Anything else (escapes, non-ASCII,
    // an invalid IRI: the parser words the error) takes the parser.
    if let Some(iri) = term.strip_prefix('<').and_then(|t| t.strip_suffix('>')) {
        let uri_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b);
        if iri.bytes().all(uri_char) {
            if let Ok(iri) = oxrdf::NamedNode::new(iri) {
                return Ok(iri.to_string());
            }
        }
    }
    let line = match position {
        "subject" => format!("{term} <urn:qg:p> <urn:qg:o> ."),
        "predicate" => format!("<urn:qg:s> {term} <urn:qg:o> ."),
        "object" => format!("<urn:qg:s> <urn:qg:p> {term} ."),
        _ => format!("<urn:qg:s> <urn:qg:p> <urn:qg:o> {term} ."),
    };
    let q = oxttl::NQuadsParser::new()
        .for_slice(line.as_bytes())
        .next()
        .ok_or("empty term")?
        .map_err(|e| format!("`{term}` is not a valid {position}: {}", e))?;
    Ok(match position {
        "subject" => q.subject.to_string(),
        "predicate" => q.predicate.to_string(),
        "object" => q.object.to_string(),
        _ => q.graph_name.to_string(),
    })
}

impl Pattern {
    pub fn parse(pattern: &str) -> Result<Pattern> {
        let bad = |reason: String| Error::BadPattern {
            pattern: pattern.to_string(),
            reason,
        };
        let toks = tokens(pattern).map_err(bad)?;
        if toks.len() != 3 && toks.len() != 4 {
            return Err(bad(format!(
                "expected 3 or 4 terms (subject predicate object [graph]), found {}",
                toks.len()
            )));
        }
        let positions = ["subject", "predicate", "object", "graph"];
        let mut slots = [Slot::Any, Slot::Any, Slot::Any, Slot::Any];
        for (i, tok) in toks.iter().enumerate() {
            let slot = if tok == "*" {
                Slot::Any
            } else if let Some(name) = tok.strip_prefix('?') {
                if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
                    return Err(bad(format!("bad variable name `{tok}`")));
                }
                Slot::Var(name.to_string())
            } else {
                Slot::Term(canonical(tok, positions[i]).map_err(bad)?)
            };
            // key order is graph, subject, predicate, object
            slots[(i + 1) % 4] = slot;
        }
        Ok(Pattern { slots })
    }

    /// The longest key prefix fixed by the pattern.
    fn prefix(&self) -> Vec<u8> {
        let mut p = Vec::new();
        for slot in &self.slots[..3] {
            match slot {
                Slot::Term(t) => {
                    p.extend_from_slice(t.as_bytes());
                    p.push(SEP);
                }
                _ => break,
            }
        }
        p
    }

    fn matches(&self, key: &[u8]) -> Option<BTreeMap<String, String>> {
        let terms = rdf::split_key(key);
        let mut bindings = BTreeMap::new();
        for (slot, term) in self.slots.iter().zip(terms) {
            match slot {
                Slot::Any => {}
                Slot::Term(t) if t == term => {}
                Slot::Term(_) => return None,
                Slot::Var(v) => match bindings.get(v) {
                    Some(b) if b != term => return None,
                    Some(_) => {}
                    None => {
                        bindings.insert(v.clone(), term.to_string());
                    }
                },
            }
        }
        Some(bindings)
    }
}

/// Stream matches into `sink`; returns how many there were.
pub fn query(
    store: &Store,
    opts: &QueryOptions,
    mut sink: impl FnMut(Match) -> Result<()>,
) -> Result<u64> {
    let pattern = Pattern::parse(&opts.pattern)?;
    let objs = store.objects(&opts.ns)?;
    let spec = match &opts.at {
        Some(r) => r.clone(),
        None => store.default_branch(&opts.ns)?,
    };
    let id = refs::resolve(&objs, &spec)?;
    let tree = Commit::load(&objs, &id)?.tree;
    let mut n = 0;
    let mut line = Vec::new();
    for key in Scan::new(&objs, &tree, &pattern.prefix())? {
        let key = key?;
        if let Some(bindings) = pattern.matches(&key) {
            line.clear();
            rdf::nquad_line(&key, &mut line);
            let quad = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            sink(Match { quad, bindings })?;
            n += 1;
            if opts.limit.is_some_and(|l| n >= l) {
                break;
            }
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::parse("?s <http://p> \"a b\"@en").unwrap();
        assert_eq!(p.slots[0], Slot::Any);
        assert_eq!(p.slots[3], Slot::Term("\"a b\"@en".into()));
        let p = Pattern::parse(
            "<http://s> * \"1\"^^<http://www.w3.org/2001/XMLSchema#integer> <http://g>",
        )
        .unwrap();
        assert_eq!(p.prefix(), b"<http://g>\0<http://s>\0".to_vec());
        for bad in [
            "?s ?p",
            "?s <http://p> ?o ?g ?x",
            "\"lit\" <http://p> ?o",
            "?s <http://p ?o",
            "? <http://p> ?o",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad}");
        }
        // the fast path for plain IRIs gives what the parser gives, in every position
        for term in [
            "<http://ex.org/a/b?c=d&e=f#g>",
            "<urn:x:y>",
            "<http://ex.org/%41>",
            "<http://[::1]:80/p>",
            "<relative>",
            "<http://ex.org/a b>",
            "<http://ex.org/\\u0041>",
            "<http://ex.org/é>",
            "<>",
        ] {
            for position in ["subject", "predicate", "object", "graph"] {
                let line = format!("{term} <urn:qg:p> <urn:qg:o> <urn:qg:g> .");
                let parser = oxttl::NQuadsParser::new()
                    .for_slice(line.as_bytes())
                    .next()
                    .unwrap()
                    .map(|q| q.subject.to_string())
                    .map_err(|_| ());
                assert_eq!(
                    canonical(term, position).map_err(|_| ()),
                    parser,
                    "{term} as {position}"
                );
            }
        }
        let p = Pattern::parse("?x <http://p> ?x").unwrap();
        assert!(p.matches(b"\0<http://a>\0<http://p>\0<http://a>").is_some());
        assert!(p.matches(b"\0<http://a>\0<http://p>\0<http://b>").is_none());
    }
}
