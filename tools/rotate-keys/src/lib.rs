//! # qg-rotate-keys
//!
//! Key rotation for QuadGit stores, as run from security runbooks: rewrap
//! every data key under a new master key, change a namespace password, rotate
//! a namespace's data key (re-encrypting its objects), and migrate a
//! plaintext namespace to an encrypted one. Re-encryption rebuilds the
//! database file, so it needs the store to itself; it is crash-safe: a killed
//! run leaves the store as it was, and running it again does the job (see
//! `qg_store::rotation`). Every command writes an audit event.
//!
//! ```
//! use qg_rotate_keys::commands::{encrypt, status};
//! use qg_store::store::Keyring;
//! use qg_store::crypto::MasterKey;
//!
//! let dir = tempfile::tempdir()?;
//! let mut store = qg_store::Store::init(dir.path())?;
//! store.set_keyring(Keyring {
//!     master: Some(MasterKey::parse(&"42".repeat(32))?),
//!     ..Default::default()
//! });
//! let report = encrypt::run(&mut store, &encrypt::EncryptOptions { ns: "default".into(), ..Default::default() },
//!                           &qg_store::progress::NoProgress)?;
//! assert_eq!(report.to_version, 1);
//! let st = status::run(&store)?;
//! assert!(st.namespaces[0].encrypted);
//! # Ok::<(), qg_store::Error>(())
//! ```

pub mod commands;
