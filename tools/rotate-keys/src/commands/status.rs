//! `qg-rotate-keys status`: what protects each namespace.

use serde::Serialize;

use qg_store::{Result, Store};

/// One key version of a namespace.
#[derive(Debug, Clone, Serialize)]
pub struct KeyVersion {
    pub version: u32,
    pub created: String,
    pub age_days: Option<i64>,
    /// Objects sealed under this version so far (the AES-GCM budget is 2^32).
    pub sealed_objects: u64,
    pub current: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct NamespaceStatus {
    pub name: String,
    pub encrypted: bool,
    pub password: bool,
    /// Argon2id parameters of the password (memory in KiB, iterations, lanes).
    pub kdf: Option<qg_store::crypto::KdfParams>,
    pub kek_id: Option<String>,
    pub current_version: Option<u32>,
    pub versions: Vec<KeyVersion>,
    /// An unfinished re-encryption (`dek` or `encrypt`) of an earlier
    /// version, which rewrote the live database, to be redone, or `erase`:
    /// one that switched keys but did not finish rewriting the file.
    pub unfinished_job: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// Id of the master key in the environment, if one is set.
    pub master_key_id: Option<String>,
    /// A `dek` or `encrypt` run was killed while it wrote the new database
    /// file: the store is as it was before, and running the same command
    /// again does the job (it discards the partial file).
    pub interrupted_rebuild: bool,
    pub namespaces: Vec<NamespaceStatus>,
}

/// Needs no key: everything reported is public metadata.
pub fn run(store: &Store) -> Result<Status> {
    let now = std::time::SystemTime::now();
    let mut namespaces = Vec::new();
    for name in store.namespaces()? {
        let (objects, bytes) = store.db().object_stats(&name)?;
        let usage: std::collections::HashMap<u32, u64> =
            store.db().key_usage(&name)?.into_iter().collect();
        let st = match store.crypto_record(&name)? {
            None => NamespaceStatus {
                name,
                encrypted: false,
                password: false,
                kdf: None,
                kek_id: None,
                current_version: None,
                versions: vec![],
                unfinished_job: None,
                objects,
                bytes,
            },
            Some(rec) => NamespaceStatus {
                versions: rec
                    .keys
                    .iter()
                    .map(|k| KeyVersion {
                        version: k.version,
                        created: k.created.clone(),
                        age_days: qg_store::clock::parse(&k.created).and_then(|t| {
                            let created: std::time::SystemTime = t.into();
                            now.duration_since(created)
                                .ok()
                                .map(|d| (d.as_secs() / 86_400) as i64)
                        }),
                        sealed_objects: usage.get(&k.version).copied().unwrap_or(0),
                        current: rec.current == Some(k.version),
                    })
                    .collect(),
                name,
                encrypted: rec.current.is_some(),
                password: rec.password.is_some(),
                kdf: rec.password.as_ref().map(|p| p.params),
                kek_id: Some(rec.kek_id.clone()),
                current_version: rec.current,
                unfinished_job: rec
                    .job
                    .as_ref()
                    .map(|j| j.kind.clone())
                    .or_else(|| rec.erase_pending.then(|| "erase".to_string())),
                objects,
                bytes,
            },
        };
        namespaces.push(st);
    }
    Ok(Status {
        master_key_id: store.keyring().master.as_ref().map(|k| k.id()),
        interrupted_rebuild: store.dir().join(qg_store::rotation::REBUILD_FILE).exists(),
        namespaces,
    })
}
