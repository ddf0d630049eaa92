//! RDF in and out: parsing files into sorted quad keys and keys back into RDF.
//!
//! A quad is stored as its key: the graph, subject, predicate and object in
//! canonical N-Triples syntax, joined by NUL (the default graph is the empty
//! string). N-Triples escapes every control character, so NUL never occurs
//! inside a term, and keys sort by graph, then subject, predicate, object.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::Path;

use oxrdf::{BlankNode, GraphName, NamedOrBlankNode, Quad, Term};
use oxttl::{NQuadsParser, NTriplesParser, TriGParser, TurtleParseError, TurtleParser};

use crate::error::{Error, Result};

/// Separator between the terms of a key.
pub const SEP: u8 = 0;

/// An RDF syntax the store reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    NQuads,
    NTriples,
    TriG,
    Turtle,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::NQuads => "N-Quads",
            Format::NTriples => "N-Triples",
            Format::TriG => "TriG",
            Format::Turtle => "Turtle",
        }
    }

    /// `nquads`, `ntriples`, `trig`, `turtle` (and the usual file extensions).
    pub fn from_name(name: &str) -> Option<Format> {
        match name.to_ascii_lowercase().as_str() {
            "nquads" | "nq" | "n-quads" => Some(Format::NQuads),
            "ntriples" | "nt" | "n-triples" => Some(Format::NTriples),
            "trig" => Some(Format::TriG),
            "turtle" | "ttl" => Some(Format::Turtle),
            _ => None,
        }
    }

    /// The format a file's extension names.
    pub fn from_path(path: &Path) -> Option<Format> {
        path.extension()
            .and_then(|e| e.to_str())
            .and_then(Format::from_name)
    }
}

/// Gives the blank nodes of one import labels no other import uses:
/// `_:b<import>_<n>`, numbered in order of first appearance. The import tag
/// is asked for only when the first blank node shows up, so imports without
/// blank nodes cost no extra write.
pub struct BlankNodes<'a> {
    import: Option<String>,
    alloc: Box<dyn FnMut() -> Result<String> + 'a>,
    seen: HashMap<String, BlankNode>,
}

impl<'a> BlankNodes<'a> {
    /// Label with a fixed import tag.
    pub fn new(import: &str) -> Self {
        let tag = import.to_string();
        Self::lazy(move || Ok(tag.clone()))
    }

    /// Label with a tag from `alloc` (e.g. `Store::next_import_tag`), called at most once.
    pub fn lazy(alloc: impl FnMut() -> Result<String> + 'a) -> Self {
        BlankNodes {
            import: None,
            alloc: Box::new(alloc),
            seen: HashMap::new(),
        }
    }

    fn map(&mut self, b: &BlankNode) -> Result<BlankNode> {
        if let Some(l) = self.seen.get(b.as_str()) {
            return Ok(l.clone());
        }
        if self.import.is_none() {
            self.import = Some((self.alloc)()?);
        }
        let label = BlankNode::new_unchecked(format!(
            "b{}_{}",
            self.import.as_deref().expect("set above"),
            self.seen.len()
        ));
        self.seen.insert(b.as_str().to_string(), label.clone());
        Ok(label)
    }

    fn relabel(&mut self, q: Quad) -> Result<Quad> {
        let subject = match q.subject {
            NamedOrBlankNode::BlankNode(b) => NamedOrBlankNode::BlankNode(self.map(&b)?),
            s => s,
        };
        let object = match q.object {
            Term::BlankNode(b) => Term::BlankNode(self.map(&b)?),
            o => o,
        };
        let graph_name = match q.graph_name {
            GraphName::BlankNode(b) => GraphName::BlankNode(self.map(&b)?),
            g => g,
        };
        Ok(Quad::new(subject, q.predicate, object, graph_name))
    }
}

/// The key of a quad.
pub fn key_of(q: &Quad) -> Vec<u8> {
    let mut k = Vec::with_capacity(128);
    match &q.graph_name {
        GraphName::DefaultGraph => {}
        g => write!(k, "{g}").expect("write to vec"),
    }
    k.push(SEP);
    write!(k, "{}", q.subject).expect("write to vec");
    k.push(SEP);
    write!(k, "{}", q.predicate).expect("write to vec");
    k.push(SEP);
    write!(k, "{}", q.object).expect("write to vec");
    k
}

/// The four terms of a key: graph ("" for the default graph), subject, predicate, object.
pub fn split_key(key: &[u8]) -> [&str; 4] {
    let s = std::str::from_utf8(key).unwrap_or("");
    let mut it = s.splitn(4, SEP as char);
    let mut out = [""; 4];
    for slot in out.iter_mut() {
        *slot = it.next().unwrap_or("");
    }
    out
}

/// Key prefix selecting a graph (`None`: the default graph).
pub fn graph_prefix(graph: Option<&str>) -> Vec<u8> {
    let mut p = graph.unwrap_or("").as_bytes().to_vec();
    p.push(SEP);
    p
}

/// Key prefix selecting (graph, subject, predicate): the unit merges reason about.
pub fn gsp_prefix(key: &[u8]) -> &[u8] {
    let mut seps = 0;
    for (i, b) in key.iter().enumerate() {
        if *b == SEP {
            seps += 1;
            if seps == 3 {
                return &key[..=i];
            }
        }
    }
    key
}

/// A key as one N-Quads line (with the trailing newline).
pub fn nquad_line(key: &[u8], out: &mut Vec<u8>) {
    let [g, s, p, o] = split_key(key);
    out.extend_from_slice(s.as_bytes());
    out.push(b' ');
    out.extend_from_slice(p.as_bytes());
    out.push(b' ');
    out.extend_from_slice(o.as_bytes());
    if !g.is_empty() {
        out.push(b' ');
        out.extend_from_slice(g.as_bytes());
    }
    out.extend_from_slice(b" .\n");
}

/// A key as an RDF quad.
pub fn quad_of(key: &[u8]) -> Result<Quad> {
    let mut line = Vec::with_capacity(key.len() + 4);
    nquad_line(key, &mut line);
    NQuadsParser::new()
        .for_slice(&line)
        .next()
        .ok_or_else(|| Error::Other("empty stored quad".into()))?
        .map_err(|e| Error::Other(format!("stored quad does not parse: {e}")))
}

/// Parse RDF from `input` and hand each quad's key to `sink`.
///
/// `source` names the input in errors. With `blank_nodes`, blank nodes get
/// import-unique labels; without, labels are kept (removals name stored nodes).
/// Returns the number of quads read.
pub fn parse(
    input: impl BufRead,
    format: Format,
    source: &str,
    mut blank_nodes: Option<&mut BlankNodes<'_>>,
    mut sink: impl FnMut(Vec<u8>) -> Result<()>,
) -> Result<u64> {
    let mut n = 0u64;
    let mut handle = |item: std::result::Result<Quad, TurtleParseError>| -> Result<()> {
        let q = item.map_err(|e| syntax_error(e, format, source))?;
        let q = match blank_nodes.as_deref_mut() {
            Some(b) => b.relabel(q)?,
            None => q,
        };
        n += 1;
        sink(key_of(&q))
    };
    match format {
        Format::NQuads => {
            for q in NQuadsParser::new().for_reader(input) {
                handle(q)?;
            }
        }
        Format::TriG => {
            for q in TriGParser::new().for_reader(input) {
                handle(q)?;
            }
        }
        Format::NTriples => {
            for t in NTriplesParser::new().for_reader(input) {
                handle(t.map(|t| t.in_graph(GraphName::DefaultGraph)))?;
            }
        }
        Format::Turtle => {
            for t in TurtleParser::new().for_reader(input) {
                handle(t.map(|t| t.in_graph(GraphName::DefaultGraph)))?;
            }
        }
    }
    Ok(n)
}

fn syntax_error(e: TurtleParseError, format: Format, source: &str) -> Error {
    match e {
        TurtleParseError::Syntax(s) => {
            let loc = s.location();
            Error::Syntax {
                path: source.to_string(),
                format: format.name(),
                line: loc.start.line + 1,
                column: loc.start.column + 1,
                message: s.message().to_string(),
            }
        }
        TurtleParseError::Io(e) => Error::ReadFile {
            path: source.to_string(),
            source: e,
        },
    }
}

/// Where RDF to import comes from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A file; its format comes from its extension unless given.
    Path(std::path::PathBuf),
    /// Standard input (N-Quads unless a format is given).
    Stdin,
    /// Text in memory, `name` used in errors (the server's request bodies).
    Text { name: String, text: String },
}

impl Source {
    /// `-` is stdin, anything else a path.
    pub fn from_arg(arg: &str) -> Source {
        if arg == "-" {
            Source::Stdin
        } else {
            Source::Path(arg.into())
        }
    }

    /// How errors name this source.
    pub fn name(&self) -> String {
        match self {
            Source::Path(p) => p.display().to_string(),
            Source::Stdin => "<stdin>".into(),
            Source::Text { name, .. } => name.clone(),
        }
    }

    /// The format to parse with: `explicit`, else the extension, else N-Quads for streams.
    pub fn format(&self, explicit: Option<Format>) -> Result<Format> {
        if let Some(f) = explicit {
            return Ok(f);
        }
        match self {
            Source::Path(p) => {
                Format::from_path(p).ok_or_else(|| Error::UnknownFormat(p.display().to_string()))
            }
            _ => Ok(Format::NQuads),
        }
    }

    /// Parse the source, giving each key to `sink`; returns the quad count.
    pub fn parse(
        &self,
        explicit: Option<Format>,
        blank_nodes: Option<&mut BlankNodes<'_>>,
        sink: impl FnMut(Vec<u8>) -> Result<()>,
    ) -> Result<u64> {
        let format = self.format(explicit)?;
        let name = self.name();
        match self {
            Source::Path(p) => {
                let f = std::fs::File::open(p).map_err(|e| Error::ReadFile {
                    path: name.clone(),
                    source: e,
                })?;
                parse(
                    std::io::BufReader::with_capacity(1 << 20, f),
                    format,
                    &name,
                    blank_nodes,
                    sink,
                )
            }
            Source::Stdin => parse(std::io::stdin().lock(), format, &name, blank_nodes, sink),
            Source::Text { text, .. } => parse(text.as_bytes(), format, &name, blank_nodes, sink),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(text: &str, format: Format) -> Result<Vec<Vec<u8>>> {
        let mut out = Vec::new();
        let mut b = BlankNodes::new("7");
        parse(text.as_bytes(), format, "in.nq", Some(&mut b), |k| {
            out.push(k);
            Ok(())
        })?;
        Ok(out)
    }

    #[test]
    fn key_round_trips_to_nquads() {
        let text = "<http://s> <http://p> \"a\\tb\\u0000c\"@en <http://g> .\n<http://s> <http://p> \"1\"^^<http://www.w3.org/2001/XMLSchema#integer> .\n";
        let ks = keys(text, Format::NQuads).unwrap();
        let mut out = Vec::new();
        for k in &ks {
            assert_eq!(k.iter().filter(|b| **b == SEP).count(), 3);
            nquad_line(k, &mut out);
        }
        let again = keys(std::str::from_utf8(&out).unwrap(), Format::NQuads).unwrap();
        assert_eq!(ks, again);
        assert_eq!(key_of(&quad_of(&ks[0]).unwrap()), ks[0]);
    }

    #[test]
    fn blank_nodes_get_import_labels() {
        let ks = keys(
            "_:x <http://p> _:y .\n_:y <http://p> _:x .\n",
            Format::NTriples,
        )
        .unwrap();
        let [_, s, _, o] = split_key(&ks[0]);
        assert_eq!((s, o), ("_:b7_0", "_:b7_1"));
        let [_, s, _, o] = split_key(&ks[1]);
        assert_eq!((s, o), ("_:b7_1", "_:b7_0"));
    }

    #[test]
    fn syntax_error_names_file_and_line() {
        let err = keys(
            "<http://s> <http://p> <http://o> .\n<http://s> <http://p> .\n",
            Format::NQuads,
        )
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("in.nq:2:"), "{err}");
    }

    #[test]
    fn turtle_and_trig() {
        let ks = keys(
            "@prefix e: <http://e/> . e:a e:b e:c , e:d .",
            Format::Turtle,
        )
        .unwrap();
        assert_eq!(ks.len(), 2);
        let ks = keys("@prefix e: <http://e/> . e:g { e:a e:b e:c }", Format::TriG).unwrap();
        assert_eq!(split_key(&ks[0])[0], "<http://e/g>");
    }
}
