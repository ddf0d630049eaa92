//! # qg-backup
//!
//! Streaming full and incremental backups of a QuadGit store to a directory,
//! standard output or S3-compatible object storage; restore to a point in
//! time, verification and retention.
//!
//! One module per command, each taking typed `*Options` and returning a typed
//! result; nothing here prints or exits (the `qg-backup` binary does). Long
//! work reports through [`qg_store::progress::Progress`].
//!
//! - [`full`]: every object, ref, reflog and audit entry at one point in time.
//! - [`incremental`]: only objects not in the chain it builds on (content
//!   addressing makes that exact), plus refs, namespace records, reflog and
//!   audit entries since then; a new commit of a plaintext namespace goes as
//!   the quads it added and removed ([`delta`]) when that is smaller than the
//!   tree nodes the change rewrote.
//! - [`restore`]: rebuild a store from a chain, verified object by object and
//!   checked like `qg fsck` before it is moved into place.
//! - [`verify`], [`list`], [`prune`]: check, show and thin out a target.
//!
//! The stream format is specified in `FORMAT.md` beside this crate. The store
//! is read through [`qg_store::snapshot`], one read transaction per backup, so
//! a backup is one point in time while writers keep committing.
//!
//! ```
//! use qg_backup::full::{full, FullOptions};
//! use qg_backup::restore::{restore, RestoreOptions};
//! use qg_store::progress::NoProgress;
//!
//! let tmp = tempfile::tempdir().unwrap();
//! qg_store::Store::init(&tmp.path().join("data"))?;
//! let target = tmp.path().join("backups").display().to_string();
//! let b = full(&FullOptions { data: tmp.path().join("data"), to: target.clone(), ..Default::default() }, &NoProgress)?;
//! let r = restore(&RestoreOptions { from: target, to: tmp.path().join("restored"), ..Default::default() }, &NoProgress)?;
//! assert_eq!(r.id, b.id);
//! # Ok::<(), qg_backup::Error>(())
//! ```

pub(crate) mod audit;
pub mod backup;
pub mod catalog;
pub mod check;
pub mod delta;
pub mod error;
pub mod format;
pub mod full;
pub mod incremental;
pub mod index;
pub mod keys;
pub mod list;
pub mod manifest;
pub mod prune;
pub mod restore;
pub mod target;
pub mod verify;

pub use error::{Error, Result};
