//! # QuadGit store
//!
//! A versioned, content-addressed store of RDF quads on SQLite: namespaces
//! hold branches and tags pointing at commits; each commit records the root
//! of a Prolly tree of quads, so history, diffs and merges are cheap.
//!
//! Every command is a function in [`commands`] taking `*Options` and
//! returning a typed result; the `qg` binary only parses arguments and prints.
//!
//! ```
//! use qg_store::commands::{commit::{commit, CommitOptions}, export::{export, ExportOptions}};
//! use qg_store::rdf::Source;
//! use qg_store::Store;
//!
//! let dir = tempfile::tempdir()?;
//! let store = Store::init(dir.path())?;
//! let done = commit(&store, &CommitOptions {
//!     ns: "default".into(),
//!     message: "first facts".into(),
//!     add: vec![Source::Text {
//!         name: "example".into(),
//!         text: "<http://ex/alice> <http://ex/knows> <http://ex/bob> .\n".into(),
//!     }],
//!     ..Default::default()
//! })?;
//! assert_eq!(done.added, 1);
//!
//! let mut out = Vec::new();
//! export(&store, &ExportOptions { ns: "default".into(), ..Default::default() }, &mut out)?;
//! assert_eq!(out, b"<http://ex/alice> <http://ex/knows> <http://ex/bob> .\n");
//! # Ok::<(), qg_store::Error>(())
//! ```

pub mod audit;
pub mod clock;
pub mod commands;
pub mod commit;
pub mod crypto;
pub mod error;
pub mod hooks;
pub mod id;
pub mod lock;
pub mod merge;
pub mod object;
pub mod objects;
pub mod parallel;
pub mod progress;
pub mod rdf;
pub mod refs;
pub mod rotation;
pub mod server;
pub mod snapshot;
pub mod sort;
pub mod storage;
pub mod store;
pub mod tree;
pub mod writeback;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::{Error, ErrorKind, Result};
pub use id::ObjectId;
pub use store::Store;
