//! Encryption of backups: where the key comes from, how per-backup keys are
//! derived, frame sealing (AES-256-GCM) and the manifest MAC (HMAC-SHA-256).
//!
//! The key is 256 bits from `QG_BACKUP_KEY` (64 hex digits) or a key file, or
//! is derived from a passphrase (`QG_BACKUP_PASSPHRASE` or a passphrase file)
//! with Argon2id. Never from a flag, never logged; every copy is zeroized.
//! Derivations are written down in `FORMAT.md`.

use std::cell::RefCell;
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac};
use qg_store::crypto::GcmKey;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Environment variable holding the raw backup key (64 hex digits).
pub const KEY_ENV: &str = "QG_BACKUP_KEY";
/// Environment variable holding a backup passphrase.
pub const PASSPHRASE_ENV: &str = "QG_BACKUP_PASSPHRASE";

/// Argon2id cost for passphrases: 19 MiB, 2 passes, 1 lane (OWASP's
/// recommendation; keeps a restore of a long chain under the memory budget).
pub const ARGON2_M_KIB: u32 = 19 * 1024;
pub const ARGON2_T: u32 = 2;
pub const ARGON2_P: u32 = 1;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// HKDF-SHA-256 (RFC 5869) for one 32-byte output block.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let prk = Zeroizing::new(hmac(salt, &[ikm]));
    let mut parts: Vec<&[u8]> = info.to_vec();
    parts.push(&[1u8]);
    Zeroizing::new(hmac(&prk[..], &parts))
}

/// Where the secret comes from, as the operator configured it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct KeyOptions {
    /// File holding the 256-bit key: 64 hex digits (whitespace ignored) or 32 raw bytes.
    pub key_file: Option<PathBuf>,
    /// File holding a passphrase (first line; Argon2id turns it into the key).
    pub passphrase_file: Option<PathBuf>,
}

/// The secret itself.
pub enum Secret {
    Key(Zeroizing<[u8; 32]>),
    Passphrase(Zeroizing<String>),
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Key(_) => "Secret::Key(..)",
            Secret::Passphrase(_) => "Secret::Passphrase(..)",
        })
    }
}

fn parse_key(text: &[u8], from: &str) -> Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    if text.len() == 32 && !text.iter().all(|b| b.is_ascii_hexdigit()) {
        key.copy_from_slice(text);
        return Ok(key);
    }
    let hexdigits: Zeroizing<Vec<u8>> = Zeroizing::new(
        text.iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect(),
    );
    if hexdigits.len() != 64 || hex::decode_to_slice(&hexdigits[..], &mut key[..]).is_err() {
        return Err(Error::usage(format!(
            "bad backup key in {from}: expected 64 hex digits (a 256-bit key, e.g. from `openssl rand -hex 32`)"
        )));
    }
    Ok(key)
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<Vec<u8>>> {
    std::fs::read(path)
        .map(Zeroizing::new)
        .map_err(|e| Error::usage(format!("cannot read key file {}: {e}", path.display())))
}

impl KeyOptions {
    /// The configured secret: `key_file`, `passphrase_file`, then
    /// `QG_BACKUP_KEY`, then `QG_BACKUP_PASSPHRASE`. `None` when none is set.
    pub fn secret(&self) -> Result<Option<Secret>> {
        if self.key_file.is_some() && self.passphrase_file.is_some() {
            return Err(Error::usage(
                "give either --key-file or --passphrase-file, not both",
            ));
        }
        if let Some(path) = &self.key_file {
            let bytes = read_secret_file(path)?;
            return Ok(Some(Secret::Key(parse_key(
                &bytes,
                &path.display().to_string(),
            )?)));
        }
        if let Some(path) = &self.passphrase_file {
            let bytes = read_secret_file(path)?;
            let text = Zeroizing::new(String::from_utf8_lossy(&bytes).into_owned());
            let line = Zeroizing::new(text.lines().next().unwrap_or("").to_string());
            if line.is_empty() {
                return Err(Error::usage(format!(
                    "passphrase file {} is empty",
                    path.display()
                )));
            }
            return Ok(Some(Secret::Passphrase(line)));
        }
        if let Some(v) = std::env::var_os(KEY_ENV) {
            let v = Zeroizing::new(v.into_encoded_bytes());
            return Ok(Some(Secret::Key(parse_key(&v, KEY_ENV)?)));
        }
        if let Some(v) = std::env::var_os(PASSPHRASE_ENV) {
            let v = Zeroizing::new(String::from_utf8_lossy(&v.into_encoded_bytes()).into_owned());
            if v.is_empty() {
                return Err(Error::usage(format!("{PASSPHRASE_ENV} is empty")));
            }
            return Ok(Some(Secret::Passphrase(v)));
        }
        Ok(None)
    }
}

/// Argon2id parameters recorded with a passphrase-encrypted backup.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Argon2Params {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

/// How a backup is encrypted; stored in its header and manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EncryptionInfo {
    /// Always `aes-256-gcm`.
    pub cipher: String,
    /// `key` (raw 256-bit key) or `argon2id` (passphrase).
    pub kdf: String,
    /// 16 random bytes, hex: HKDF salt, and Argon2id salt for passphrases.
    pub salt: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argon2: Option<Argon2Params>,
    /// First 8 bytes of HMAC(master, "qg-backup/v1/key-id"), hex: tells a
    /// wrong key from a damaged backup.
    pub key_id: String,
}

/// The 256-bit master secret of one backup (raw key or Argon2id output).
pub struct Master(Zeroizing<[u8; 32]>);

impl Master {
    fn derive(secret: &Secret, salt: &[u8], argon: Option<Argon2Params>) -> Result<Master> {
        match secret {
            Secret::Key(k) => Ok(Master(Zeroizing::new(**k))),
            Secret::Passphrase(p) => {
                let a = argon.ok_or_else(|| {
                    Error::usage("this backup was encrypted with a raw key, not a passphrase: set QG_BACKUP_KEY or --key-file")
                })?;
                let params = argon2::Params::new(a.m_kib, a.t, a.p, Some(32))
                    .map_err(|e| Error::usage(format!("bad Argon2id parameters: {e}")))?;
                let argon = argon2::Argon2::new(
                    argon2::Algorithm::Argon2id,
                    argon2::Version::V0x13,
                    params,
                );
                let mut out = Zeroizing::new([0u8; 32]);
                argon
                    .hash_password_into(p.as_bytes(), salt, &mut out[..])
                    .map_err(|e| {
                        Error::usage(format!("cannot derive the key from the passphrase: {e}"))
                    })?;
                Ok(Master(out))
            }
        }
    }

    fn key_id(&self) -> String {
        hex::encode(&hmac(&self.0[..], &[b"qg-backup/v1/key-id"])[..8])
    }

    /// Fresh encryption settings for a new backup, and its master secret.
    pub fn new_backup(secret: &Secret) -> Result<(EncryptionInfo, Master)> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt)
            .map_err(|e| Error::CheckFailed(format!("no OS randomness: {e}")))?;
        let (kdf, argon) = match secret {
            Secret::Key(_) => ("key", None),
            Secret::Passphrase(_) => (
                "argon2id",
                Some(Argon2Params {
                    m_kib: ARGON2_M_KIB,
                    t: ARGON2_T,
                    p: ARGON2_P,
                }),
            ),
        };
        let master = Master::derive(secret, &salt, argon)?;
        let info = EncryptionInfo {
            cipher: "aes-256-gcm".into(),
            kdf: kdf.into(),
            salt: hex::encode(salt),
            argon2: argon,
            key_id: master.key_id(),
        };
        Ok((info, master))
    }

    /// The master secret of an existing backup; a clear error when the
    /// secret is not the one the backup was made with.
    pub fn open(secret: &Secret, info: &EncryptionInfo, backup: &str) -> Result<Master> {
        if info.cipher != "aes-256-gcm" {
            return Err(Error::damaged(
                backup,
                format!("unknown cipher `{}`", info.cipher),
            ));
        }
        let salt = hex::decode(&info.salt)
            .map_err(|_| Error::damaged(backup, "its encryption salt is not hex"))?;
        let argon = match (info.kdf.as_str(), secret) {
            ("key", Secret::Key(_)) => None,
            ("argon2id", Secret::Passphrase(_)) => Some(info.argon2.ok_or_else(|| {
                Error::damaged(backup, "its Argon2id parameters are missing")
            })?),
            ("key", Secret::Passphrase(_)) => {
                return Err(Error::usage(format!(
                    "backup {backup} was encrypted with a raw key, not a passphrase: set {KEY_ENV} or --key-file"
                )))
            }
            ("argon2id", Secret::Key(_)) => {
                return Err(Error::usage(format!(
                    "backup {backup} was encrypted with a passphrase: set {PASSPHRASE_ENV} or --passphrase-file"
                )))
            }
            (other, _) => {
                return Err(Error::damaged(backup, format!("unknown key derivation `{other}`")))
            }
        };
        let master = Master::derive(secret, &salt, argon)?;
        let id = master.key_id();
        if id != info.key_id {
            return Err(Error::usage(format!(
                "wrong key for backup {backup}: it was encrypted under key id {}, the given {} has key id {id}",
                info.key_id,
                if argon.is_some() { "passphrase" } else { "key" }
            )));
        }
        Ok(master)
    }

    fn subkey(&self, info: &EncryptionInfo, backup: &str, purpose: &[u8]) -> Zeroizing<[u8; 32]> {
        let salt = hex::decode(&info.salt).unwrap_or_default();
        hkdf(&salt, &self.0[..], &[purpose, backup.as_bytes()])
    }

    /// The frame cipher of backup `backup`.
    pub fn frames(&self, info: &EncryptionInfo, backup: &str) -> FrameCipher {
        let key = self.subkey(info, backup, b"qg-backup/v1/frames/");
        FrameCipher {
            aead: GcmKey::new(&key),
            backup: backup.as_bytes().to_vec(),
        }
    }

    /// HMAC-SHA-256 of a manifest's canonical bytes, hex.
    pub fn manifest_mac(&self, info: &EncryptionInfo, backup: &str, bytes: &[u8]) -> String {
        let key = self.subkey(info, backup, b"qg-backup/v1/manifest/");
        hex::encode(hmac(&key[..], &[bytes]))
    }
}

/// Seals and opens the records of one backup stream. Nonce: 4 zero bytes and
/// the record's index (big-endian u64); associated data: record type, backup
/// id and index. The key is unique per backup, so nonces never repeat.
pub struct FrameCipher {
    aead: GcmKey,
    backup: Vec<u8>,
}

/// Bytes the AES-GCM tag adds to a sealed record body.
pub const TAG_LEN: usize = 16;

impl FrameCipher {
    fn nonce(index: u64) -> [u8; 12] {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&index.to_be_bytes());
        n
    }

    fn aad(&self, kind: u8, index: u64) -> Vec<u8> {
        let mut aad = Vec::with_capacity(1 + self.backup.len() + 8);
        aad.push(kind);
        aad.extend_from_slice(&self.backup);
        aad.extend_from_slice(&index.to_le_bytes());
        aad
    }

    pub fn seal(&self, kind: u8, index: u64, plain: &[u8]) -> Vec<u8> {
        self.aead
            .seal(Self::nonce(index), &self.aad(kind, index), plain)
    }

    /// `None` when the record does not authenticate.
    pub fn open(&self, kind: u8, index: u64, sealed: &[u8]) -> Option<Vec<u8>> {
        let mut plain = sealed.to_vec();
        let n = self
            .aead
            .open(&Self::nonce(index), &self.aad(kind, index), &mut plain)?;
        plain.truncate(n);
        Some(plain)
    }
}

/// Opens backups with the configured secret, deriving each backup's master
/// once (Argon2id is slow on purpose) and caching it by salt.
pub struct Keyring {
    secret: Option<Secret>,
    cache: RefCell<Vec<(String, std::rc::Rc<Master>)>>,
}

impl Keyring {
    pub fn new(secret: Option<Secret>) -> Keyring {
        Keyring {
            secret,
            cache: RefCell::new(Vec::new()),
        }
    }

    /// Load the secret named by `opts` or the environment.
    pub fn from_options(opts: &KeyOptions) -> Result<Keyring> {
        Ok(Keyring::new(opts.secret()?))
    }

    pub fn secret(&self) -> Option<&Secret> {
        self.secret.as_ref()
    }

    pub fn has_secret(&self) -> bool {
        self.secret.is_some()
    }

    /// The master of an encrypted backup, or a usage error naming what to set.
    pub fn master(&self, info: &EncryptionInfo, backup: &str) -> Result<std::rc::Rc<Master>> {
        let secret = self.secret.as_ref().ok_or_else(|| {
            Error::usage(format!(
                "backup {backup} is encrypted: set {KEY_ENV} (or --key-file) or {PASSPHRASE_ENV} (or --passphrase-file)"
            ))
        })?;
        let cache_key = format!("{}/{}", info.salt, info.key_id);
        if let Some((_, m)) = self.cache.borrow().iter().find(|(k, _)| *k == cache_key) {
            return Ok(m.clone());
        }
        let m = std::rc::Rc::new(Master::open(secret, info, backup)?);
        self.cache.borrow_mut().push((cache_key, m.clone()));
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Secret {
        Secret::Key(Zeroizing::new([b; 32]))
    }

    #[test]
    fn frames_round_trip_and_bind_index_and_type() {
        let (info, m) = Master::new_backup(&key(7)).unwrap();
        let c = m.frames(&info, "b1");
        let sealed = c.seal(10, 5, b"hello");
        assert_eq!(sealed.len(), 5 + TAG_LEN);
        assert_eq!(c.open(10, 5, &sealed).unwrap(), b"hello");
        assert!(c.open(10, 6, &sealed).is_none(), "moved record");
        assert!(c.open(11, 5, &sealed).is_none(), "retyped record");
        assert!(
            m.frames(&info, "b2").open(10, 5, &sealed).is_none(),
            "other backup"
        );
    }

    #[test]
    fn wrong_key_is_named() {
        let (info, _) = Master::new_backup(&key(1)).unwrap();
        assert!(Master::open(&key(1), &info, "b").is_ok());
        let err = Master::open(&key(2), &info, "b").err().unwrap();
        assert!(err.to_string().contains("wrong key"), "{err}");
        assert_eq!(err.kind(), qg_store::ErrorKind::Usage);
    }

    #[test]
    fn passphrase_derives_the_same_master() {
        let p = Secret::Passphrase(Zeroizing::new("correct horse".into()));
        let (info, m) = Master::new_backup(&p).unwrap();
        assert_eq!(info.kdf, "argon2id");
        let again = Master::open(&p, &info, "b").unwrap();
        assert_eq!(m.key_id(), again.key_id());
        let wrong = Secret::Passphrase(Zeroizing::new("wrong horse".into()));
        assert!(Master::open(&wrong, &info, "b").is_err());
    }

    #[test]
    fn key_parsing() {
        assert!(parse_key(
            b"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n",
            "x"
        )
        .is_ok());
        assert!(parse_key(b"0011", "x").is_err());
        assert!(parse_key(&[0xffu8; 32], "x").is_ok());
    }
}
