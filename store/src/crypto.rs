//! Encryption at rest: envelope keys per namespace.
//!
//! The master key (KEK, `QUADGIT_MASTER_KEY`) wraps each encrypted
//! namespace's data keys (DEKs) with AES-256-GCM. A password-protected
//! namespace wraps each DEK first under Argon2id(password) and then under the
//! KEK, so both are needed to open it. Object bodies are sealed with the
//! current DEK; object addresses are HMAC-SHA-256 under a key derived from the
//! DEK, so an address says nothing about content. The namespace's `sys:crypto`
//! record (JSON in `namespaces.crypto`) holds the wrapped keys, their versions,
//! and the KDF parameters. Layout: `FORMAT.md`.

use std::collections::BTreeMap;

use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::id::ObjectId;
use crate::object::{Kind, Sealed, Sealer};

/// NIST SP 800-38D: at most 2^32 random-nonce encryptions under one key.
pub const MAX_SEALS_PER_KEY: u64 = 1 << 32;
/// We refuse a little before the limit, leaving room for one last large commit.
pub const SEAL_LIMIT: u64 = MAX_SEALS_PER_KEY - (1 << 24);

type HmacSha256 = Hmac<Sha256>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A 256-bit secret that is wiped from memory when dropped.
pub type Secret = Zeroizing<[u8; 32]>;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source works");
    b
}

/// Random bytes from the OS handed out 12 at a time: one system call per
/// 340 nonces instead of one per object sealed (a re-encryption seals every
/// object). The bytes are the OS's as they are, and the pool is per thread.
/// (A child process that went on sealing after a `fork` without `exec`
/// would repeat its parent's next nonces; nothing here forks without exec.)
fn nonce() -> [u8; 12] {
    const POOL: usize = 12 * 340;
    thread_local! {
        static NONCES: std::cell::RefCell<(usize, [u8; POOL])> =
            const { std::cell::RefCell::new((POOL, [0; POOL])) };
    }
    NONCES.with(|n| {
        let (pos, pool) = &mut *n.borrow_mut();
        if *pos + 12 > POOL {
            getrandom::fill(pool).expect("the OS random source works");
            *pos = 0;
        }
        let out: [u8; 12] = pool[*pos..*pos + 12].try_into().expect("12 bytes");
        *pos += 12;
        out
    })
}

/// The address of a sealed object with content hash `content` under address
/// key `key`. The 0xFF in front keeps these inputs apart from those of the
/// earlier scheme, `kind || payload`, whose first byte is a kind (1 or 2).
fn keyed_address(key: &[u8], content: &ObjectId) -> ObjectId {
    ObjectId(hmac(key, &[&[0xFF], &content.0]))
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

fn locked(ns: &str, reason: impl Into<String>) -> Error {
    Error::Locked {
        ns: ns.to_string(),
        reason: reason.into(),
    }
}

/// The key-encryption key.
pub struct MasterKey {
    key: Secret,
}

impl std::fmt::Debug for MasterKey {
    /// Shows the key id, never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey(id {})", self.id())
    }
}

impl MasterKey {
    /// Parse 32 bytes given as 64 hex digits or as base64.
    pub fn parse(text: &str) -> Result<MasterKey> {
        let text = text.trim();
        let mut key = Zeroizing::new([0u8; 32]);
        if text.len() == 64 && hex::decode_to_slice(text, &mut key[..]).is_ok() {
            return Ok(MasterKey { key });
        }
        let decoded = Zeroizing::new(B64.decode(text).map_err(|_| Error::BadKey {
            what: "master key".into(),
            reason: "expected 64 hex digits or base64 of 32 bytes".into(),
        })?);
        if decoded.len() != 32 {
            return Err(Error::BadKey {
                what: "master key".into(),
                reason: format!("it is {} bytes, a 256-bit key is 32", decoded.len()),
            });
        }
        key.copy_from_slice(&decoded);
        Ok(MasterKey { key })
    }

    /// Read a key file (hex or base64 text).
    pub fn from_file(path: &std::path::Path) -> Result<MasterKey> {
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| Error::ReadFile {
            path: path.display().to_string(),
            source: e,
        })?);
        MasterKey::parse(&text).map_err(|e| match e {
            Error::BadKey { reason, .. } => Error::BadKey {
                what: format!("master key file {}", path.display()),
                reason,
            },
            e => e,
        })
    }

    /// A fresh random key, as hex (for `keygen`-style helpers and tests).
    pub fn generate_hex() -> Zeroizing<String> {
        Zeroizing::new(hex::encode(random::<32>()))
    }

    /// Public identifier of this key: names it in records and messages without revealing it.
    pub fn id(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"quadgit kek id v1");
        h.update(&self.key[..]);
        hex::encode(&h.finalize()[..8])
    }

    /// A key for another purpose (JWT signing, unlock tokens), derived one-way.
    pub fn derive(&self, label: &str) -> Secret {
        Zeroizing::new(hmac(
            &self.key[..],
            &[b"quadgit derive v1 ", label.as_bytes()],
        ))
    }

    fn wrap(&self, plain: &[u8], aad: &[u8]) -> Vec<u8> {
        seal_blob(&self.key, plain, aad)
    }

    fn unwrap(&self, blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_blob(&self.key, blob, aad)
    }
}

/// An AES-256-GCM key (`ring`'s implementation: the stitched AES-NI/CLMUL
/// and VAES code is several times faster than portable ones, and a key
/// rotation seals and opens every object of a namespace). The boxed copy of
/// its expanded round keys and GHASH table is wiped when it is dropped (the
/// copies building it moves through the stack are not, as with any key
/// type that is built by value).
pub struct GcmKey(Box<std::mem::MaybeUninit<ring::aead::LessSafeKey>>);

impl GcmKey {
    pub fn new(key: &[u8; 32]) -> GcmKey {
        let key = ring::aead::UnboundKey::new(&ring::aead::AES_256_GCM, key)
            .expect("32 bytes make an AES-256 key");
        GcmKey(Box::new(std::mem::MaybeUninit::new(
            ring::aead::LessSafeKey::new(key),
        )))
    }

    fn key(&self) -> &ring::aead::LessSafeKey {
        // SAFETY: initialised in `new`, and only dropped in `drop`.
        unsafe { self.0.assume_init_ref() }
    }

    /// `plain` encrypted, then the 16-byte tag (encrypted in the buffer it
    /// is returned in: no copy of the plaintext is left behind).
    pub fn seal(&self, nonce: [u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(plain.len() + 16);
        sealed.extend_from_slice(plain);
        let tag = self.seal_detached(nonce, aad, &mut sealed);
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Encrypt `in_out` in place; the 16-byte tag.
    pub fn seal_detached(&self, nonce: [u8; 12], aad: &[u8], in_out: &mut [u8]) -> [u8; 16] {
        let tag = self
            .key()
            .seal_in_place_separate_tag(
                ring::aead::Nonce::assume_unique_for_key(nonce),
                ring::aead::Aad::from(aad),
                in_out,
            )
            .expect("AES-GCM seals any message under 64 GiB");
        tag.as_ref().try_into().expect("a 16-byte tag")
    }

    /// Decrypt ciphertext-and-tag `in_out` in place; the plaintext's length,
    /// or None when it does not authenticate.
    pub fn open(&self, nonce: &[u8], aad: &[u8], in_out: &mut [u8]) -> Option<usize> {
        let nonce = ring::aead::Nonce::try_assume_unique_for_key(nonce).ok()?;
        self.key()
            .open_in_place(nonce, ring::aead::Aad::from(aad), in_out)
            .ok()
            .map(|plain| plain.len())
    }
}

impl Drop for GcmKey {
    fn drop(&mut self) {
        // SAFETY: the key was initialised in `new` and is dropped only here;
        // ring keeps the expanded key inline (no heap, no drop of its own),
        // so wiping the box's bytes afterwards wipes all of it. MaybeUninit
        // makes the wiped bytes no longer a value anything may read.
        unsafe {
            self.0.assume_init_drop();
            zeroize::Zeroize::zeroize(std::slice::from_raw_parts_mut(
                self.0.as_mut_ptr().cast::<u8>(),
                std::mem::size_of::<ring::aead::LessSafeKey>(),
            ));
        }
    }
}

/// AES-256-GCM: nonce || ciphertext+tag.
fn seal_blob(key: &[u8; 32], plain: &[u8], aad: &[u8]) -> Vec<u8> {
    let nonce = random::<12>();
    let mut out = nonce.to_vec();
    out.extend_from_slice(&GcmKey::new(key).seal(nonce, aad, plain));
    out
}

fn open_blob(key: &[u8; 32], blob: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if blob.len() < 12 + 16 {
        return None;
    }
    let mut plain = Zeroizing::new(blob[12..].to_vec());
    let n = GcmKey::new(key).open(&blob[..12], aad, &mut plain)?;
    plain.truncate(n);
    Some(plain)
}

/// Argon2id parameters of a password-protected namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    fn default() -> Self {
        KdfParams {
            m_kib: 64 * 1024,
            t: 3,
            p: 4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PasswordRecord {
    pub kdf: String,
    #[serde(flatten)]
    pub params: KdfParams,
    /// Base64 salt (16 random bytes).
    pub salt: String,
}

/// One version of a namespace's data key, wrapped.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WrappedKey {
    pub version: u32,
    pub created: String,
    /// Base64 of nonce || AES-GCM(KEK, inner); inner is the DEK, or for
    /// password namespaces nonce || AES-GCM(Argon2id(password), DEK).
    pub wrapped: String,
}

/// A re-encryption in progress (`qg-rotate-keys dek|encrypt`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RekeyJob {
    /// `dek` or `encrypt`.
    pub kind: String,
    /// Key version objects are moving from (None: plaintext).
    pub from: Option<u32>,
    /// Key version objects are moving to.
    pub to: u32,
    pub started: String,
}

/// The `sys:crypto` record of a namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CryptoRecord {
    pub format: u32,
    /// Id of the master key that wraps the keys below.
    pub kek_id: String,
    /// Version sealing new objects (None while a plaintext namespace is being encrypted).
    pub current: Option<u32>,
    pub keys: Vec<WrappedKey>,
    pub password: Option<PasswordRecord>,
    pub job: Option<RekeyJob>,
    /// A re-encryption switched keys but its final rewrite of the file (which
    /// leaves no old bytes in free pages) has not finished; the next run of
    /// the same command finishes it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub erase_pending: bool,
}

impl CryptoRecord {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("record serialises")
    }

    pub fn from_json(ns: &str, bytes: &[u8]) -> Result<CryptoRecord> {
        serde_json::from_slice(bytes)
            .map_err(|e| locked(ns, format!("its sys:crypto record is unreadable: {e}")))
    }

    pub fn newest_version(&self) -> u32 {
        self.keys.iter().map(|k| k.version).max().unwrap_or(0)
    }
}

fn key_aad(ns: &str, version: u32) -> Vec<u8> {
    format!("quadgit dek ns={ns} v={version}").into_bytes()
}

fn password_key(ns: &str, password: &str, rec: &PasswordRecord) -> Result<Secret> {
    let salt = B64
        .decode(&rec.salt)
        .map_err(|_| locked(ns, "its password salt is not base64"))?;
    let params = argon2::Params::new(rec.params.m_kib, rec.params.t, rec.params.p, Some(32))
        .map_err(|e| locked(ns, format!("bad Argon2id parameters: {e}")))?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(password.as_bytes(), &salt, &mut out[..])
        .map_err(|e| locked(ns, format!("Argon2id failed: {e}")))?;
    Ok(out)
}

/// What unlocks a password namespace: the password, or the Argon2id output
/// carried (sealed) by an unlock token.
pub enum Unlock<'a> {
    None,
    Password(&'a str),
    PasswordKey(Secret),
}

/// Everything needed to create or rewrap keys of a namespace.
pub struct NewKey {
    pub dek: Secret,
    pub wrapped: WrappedKey,
}

/// Make a fresh DEK of `version`, wrapped for `ns` under `kek` (and the password key).
pub fn new_key(kek: &MasterKey, ns: &str, version: u32, pw_key: Option<&Secret>) -> NewKey {
    let dek: Secret = Zeroizing::new(random::<32>());
    let wrapped = wrap_key(kek, ns, version, &dek, pw_key);
    NewKey { dek, wrapped }
}

/// Wrap `dek` as version `version` of `ns`.
pub fn wrap_key(
    kek: &MasterKey,
    ns: &str,
    version: u32,
    dek: &Secret,
    pw_key: Option<&Secret>,
) -> WrappedKey {
    let aad = key_aad(ns, version);
    let inner = match pw_key {
        Some(pk) => Zeroizing::new(seal_blob(pk, &dek[..], &aad)),
        None => Zeroizing::new(dek.to_vec()),
    };
    WrappedKey {
        version,
        created: crate::clock::now(),
        wrapped: B64.encode(kek.wrap(&inner, &aad)),
    }
}

/// A fresh password record (random salt) and the key it derives.
pub fn new_password(
    ns: &str,
    password: &str,
    params: KdfParams,
) -> Result<(PasswordRecord, Secret)> {
    let rec = PasswordRecord {
        kdf: "argon2id".into(),
        params,
        salt: B64.encode(random::<16>()),
    };
    let key = password_key(ns, password, &rec)?;
    Ok((rec, key))
}

/// Derive the password layer's key of a namespace (runs Argon2id).
pub fn derive_password_key(ns: &str, rec: &CryptoRecord, password: &str) -> Result<Secret> {
    let p = rec
        .password
        .as_ref()
        .ok_or_else(|| locked(ns, "it is not password-protected"))?;
    password_key(ns, password, p)
}

/// Unwrap every DEK version of a namespace.
pub fn unwrap_keys(
    kek: &MasterKey,
    ns: &str,
    rec: &CryptoRecord,
    pw_key: Option<&Secret>,
) -> Result<BTreeMap<u32, Secret>> {
    if kek.id() != rec.kek_id {
        return Err(locked(
            ns,
            format!(
                "its keys are wrapped by master key {} but QUADGIT_MASTER_KEY is key {}",
                rec.kek_id,
                kek.id()
            ),
        ));
    }
    if rec.password.is_some() && pw_key.is_none() {
        return Err(locked(
            ns,
            "it is password-protected: set QG_PASSWORD or QG_UNLOCK_TOKEN (from `qg ns unlock`)",
        ));
    }
    let mut out = BTreeMap::new();
    for k in &rec.keys {
        let aad = key_aad(ns, k.version);
        let blob = B64
            .decode(&k.wrapped)
            .map_err(|_| locked(ns, format!("key version {} is not base64", k.version)))?;
        let inner = kek.unwrap(&blob, &aad).ok_or_else(|| {
            locked(
                ns,
                format!(
                    "key version {} does not open with the master key",
                    k.version
                ),
            )
        })?;
        let dek = match pw_key {
            Some(pk) if rec.password.is_some() => {
                open_blob(pk, &inner, &aad).ok_or_else(|| locked(ns, "wrong password"))?
            }
            _ => inner,
        };
        if dek.len() != 32 {
            return Err(locked(
                ns,
                format!("key version {} has the wrong length", k.version),
            ));
        }
        let mut key = Zeroizing::new([0u8; 32]);
        key.copy_from_slice(&dek);
        out.insert(k.version, key);
    }
    Ok(out)
}

/// Rewrap every key of a record from `old` to `new` master key: only the
/// outer layer changes, so no password is needed and no object is touched.
pub fn rewrap_master(
    old: &MasterKey,
    new: &MasterKey,
    ns: &str,
    rec: &CryptoRecord,
) -> Result<CryptoRecord> {
    if old.id() != rec.kek_id {
        return Err(locked(
            ns,
            format!(
                "its keys are wrapped by master key {} but the old key given is {}",
                rec.kek_id,
                old.id()
            ),
        ));
    }
    let mut out = rec.clone();
    for k in &mut out.keys {
        let aad = key_aad(ns, k.version);
        let blob = B64
            .decode(&k.wrapped)
            .map_err(|_| locked(ns, format!("key version {} is not base64", k.version)))?;
        let inner = old.unwrap(&blob, &aad).ok_or_else(|| {
            locked(
                ns,
                format!(
                    "key version {} does not open with the old master key",
                    k.version
                ),
            )
        })?;
        k.wrapped = B64.encode(new.wrap(&inner, &aad));
    }
    out.kek_id = new.id();
    Ok(out)
}

/// Rewrap every key of a password namespace under a new password (fresh salt).
pub fn rewrap_password(
    kek: &MasterKey,
    ns: &str,
    rec: &CryptoRecord,
    old_pw_key: &Secret,
    password: &str,
    params: KdfParams,
) -> Result<CryptoRecord> {
    let deks = unwrap_keys(kek, ns, rec, Some(old_pw_key))?;
    let (prec, new_key) = new_password(ns, password, params)?;
    let mut out = rec.clone();
    for k in &mut out.keys {
        let rewrapped = wrap_key(kek, ns, k.version, &deks[&k.version], Some(&new_key));
        k.wrapped = rewrapped.wrapped;
    }
    out.password = Some(prec);
    Ok(out)
}

/// The keys of one version: sealing key and address key.
struct VersionKeys {
    cipher: GcmKey,
    addr: Secret,
}

/// Seals and addresses the objects of an encrypted namespace.
pub struct NsSealer {
    ns: String,
    keys: BTreeMap<u32, VersionKeys>,
    /// Version sealing new objects; None writes plaintext (migration in progress).
    sealing: Option<u32>,
    /// Whether unsealed objects may be read (only while a plaintext namespace is being encrypted).
    allow_plain: bool,
}

impl NsSealer {
    pub fn new(
        ns: &str,
        deks: &BTreeMap<u32, Secret>,
        sealing: Option<u32>,
        allow_plain: bool,
    ) -> NsSealer {
        let keys = deks
            .iter()
            .map(|(v, dek)| {
                (
                    *v,
                    VersionKeys {
                        cipher: GcmKey::new(dek),
                        addr: Zeroizing::new(hmac(&dek[..], &[b"quadgit address key v1"])),
                    },
                )
            })
            .collect();
        NsSealer {
            ns: ns.to_string(),
            keys,
            sealing,
            allow_plain,
        }
    }

    fn aad(&self, id: &ObjectId) -> Vec<u8> {
        let mut aad = id.0.to_vec();
        aad.extend_from_slice(self.ns.as_bytes());
        aad
    }

    fn version(&self, v: u32) -> Result<&VersionKeys> {
        self.keys.get(&v).ok_or_else(|| {
            locked(
                &self.ns,
                format!(
                    "an object is sealed under key version {v}, which this namespace no longer has"
                ),
            )
        })
    }
}

impl Sealer for NsSealer {
    fn address_of(&self, content: &ObjectId) -> ObjectId {
        match self.sealing {
            Some(v) => keyed_address(&self.keys[&v].addr[..], content),
            None => *content,
        }
    }

    fn hashed_address_for(&self, key_version: u32, content: &ObjectId) -> Result<ObjectId> {
        Ok(keyed_address(&self.version(key_version)?.addr[..], content))
    }

    fn address_for(
        &self,
        key_version: Option<u32>,
        kind: Kind,
        payload: &[u8],
    ) -> Result<ObjectId> {
        match key_version {
            Some(v) => Ok(ObjectId(hmac(
                &self.version(v)?.addr[..],
                &[&[kind as u8], payload],
            ))),
            None if self.allow_plain => Ok(ObjectId::hash(kind as u8, payload)),
            None => Err(Error::Other(format!(
                "an unsealed object sits in encrypted namespace `{}`",
                self.ns
            ))),
        }
    }

    fn seal(&self, id: &ObjectId, body: &mut [u8]) -> Result<Option<Sealed>> {
        let Some(v) = self.sealing else {
            return Ok(None);
        };
        let nonce = nonce();
        let tag = self.keys[&v]
            .cipher
            .seal_detached(nonce, &self.aad(id), body);
        Ok(Some(Sealed {
            key_version: v,
            nonce,
            tag,
        }))
    }

    fn open(
        &self,
        id: &ObjectId,
        key_version: u32,
        nonce: &[u8],
        sealed: &mut [u8],
    ) -> Result<usize> {
        if nonce.len() != 12 {
            return Err(Error::CorruptObject {
                ns: self.ns.clone(),
                id: *id,
                reason: format!("nonce of {} bytes", nonce.len()),
            });
        }
        self.version(key_version)?
            .cipher
            .open(nonce, &self.aad(id), sealed)
            .ok_or_else(|| Error::CorruptObject {
                ns: self.ns.clone(),
                id: *id,
                reason: format!("does not authenticate under key version {key_version} (tampered, or moved from another namespace)"),
            })
    }

    fn sealing_version(&self) -> Option<u32> {
        self.sealing
    }
}

/// Claims of an unlock token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnlockClaims {
    /// Who unlocked.
    pub sub: String,
    /// The namespace it opens.
    pub ns: String,
    pub iat: i64,
    pub exp: i64,
    /// The password layer's key, sealed under a key derived from the KEK.
    pub k: String,
}

/// Issue an unlock token (JWT, HS256 under a key derived from the KEK) that
/// opens `ns` for `ttl` without the password.
pub fn issue_token(
    kek: &MasterKey,
    ns: &str,
    actor: &str,
    pw_key: &Secret,
    ttl: std::time::Duration,
) -> Result<String> {
    use jwt::SignWithKey;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let sealed = seal_blob(&kek.derive("unlock token key"), &pw_key[..], ns.as_bytes());
    let claims = UnlockClaims {
        sub: actor.to_string(),
        ns: ns.to_string(),
        iat: now,
        exp: now + ttl.as_secs() as i64,
        k: B64.encode(sealed),
    };
    let key = <HmacSha256 as Mac>::new_from_slice(&kek.derive("jwt signing key")[..])
        .expect("any key length");
    claims
        .sign_with_key(&key)
        .map_err(|e| Error::Other(format!("cannot sign token: {e}")))
}

/// Check an unlock token for `ns`; returns its claims and the password key.
pub fn check_token(kek: &MasterKey, ns: &str, token: &str) -> Result<(UnlockClaims, Secret)> {
    use jwt::VerifyWithKey;
    let key = <HmacSha256 as Mac>::new_from_slice(&kek.derive("jwt signing key")[..])
        .expect("any key length");
    let claims: UnlockClaims = token
        .verify_with_key(&key)
        .map_err(|_| locked(ns, "the unlock token is invalid (bad signature or format)"))?;
    if claims.ns != ns {
        return Err(locked(
            ns,
            format!("the unlock token is for namespace `{}`", claims.ns),
        ));
    }
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    if claims.exp <= now {
        return Err(locked(
            ns,
            "the unlock token has expired: run `qg ns unlock` again",
        ));
    }
    let blob = B64
        .decode(&claims.k)
        .map_err(|_| locked(ns, "the unlock token is malformed"))?;
    let pk = open_blob(&kek.derive("unlock token key"), &blob, ns.as_bytes())
        .ok_or_else(|| locked(ns, "the unlock token does not open"))?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&pk[..32.min(pk.len())]);
    Ok((claims, key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_do_not_repeat_across_pool_refills_or_threads() {
        let take = || (0..1000).map(|_| nonce()).collect::<Vec<_>>();
        let mut all = take();
        all.extend(std::thread::spawn(take).join().unwrap());
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 2000, "a nonce repeated");
    }

    fn kek() -> MasterKey {
        MasterKey::parse(&"11".repeat(32)).unwrap()
    }

    fn small() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        }
    }

    #[test]
    fn master_key_forms() {
        let hexed = MasterKey::parse(&"ab".repeat(32)).unwrap();
        let b64 = MasterKey::parse(&B64.encode([0xabu8; 32])).unwrap();
        assert_eq!(hexed.id(), b64.id());
        assert!(MasterKey::parse("abcd").is_err());
        let err = MasterKey::parse(&B64.encode([1u8; 16]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("16 bytes"), "{err}");
    }

    #[test]
    fn wrap_unwrap_with_and_without_password() {
        let k = kek();
        let nk = new_key(&k, "ns", 1, None);
        let rec = CryptoRecord {
            format: 1,
            kek_id: k.id(),
            current: Some(1),
            keys: vec![nk.wrapped.clone()],
            password: None,
            job: None,
            erase_pending: false,
        };
        assert_eq!(*unwrap_keys(&k, "ns", &rec, None).unwrap()[&1], *nk.dek);
        // another namespace's record cannot be swapped in: the AAD binds the name
        assert!(unwrap_keys(&k, "other", &rec, None).is_err());
        let other = MasterKey::parse(&"22".repeat(32)).unwrap();
        let err = unwrap_keys(&other, "ns", &rec, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("master key"), "{err}");

        let (pw, pk) = new_password("ns", "correct horse", small()).unwrap();
        let nk = new_key(&k, "ns", 1, Some(&pk));
        let rec = CryptoRecord {
            password: Some(pw),
            keys: vec![nk.wrapped.clone()],
            ..rec
        };
        assert!(unwrap_keys(&k, "ns", &rec, None).is_err());
        let wrong = derive_password_key("ns", &rec, "wrong").unwrap();
        assert!(unwrap_keys(&k, "ns", &rec, Some(&wrong))
            .unwrap_err()
            .to_string()
            .contains("wrong password"));
        let right = derive_password_key("ns", &rec, "correct horse").unwrap();
        assert_eq!(
            *unwrap_keys(&k, "ns", &rec, Some(&right)).unwrap()[&1],
            *nk.dek
        );
    }

    #[test]
    fn sealed_objects_round_trip_and_hide_content() {
        let deks: BTreeMap<u32, Secret> = [(1, Zeroizing::new([7u8; 32]))].into();
        let s = NsSealer::new("ns", &deks, Some(1), false);
        let payload = b"<http://example.org/secret> <http://p> \"classified literal\"".repeat(4);
        let (id, bytes) = crate::object::encode(&s, Kind::Node, &payload).unwrap();
        assert_ne!(
            id,
            ObjectId::hash(Kind::Node as u8, &payload),
            "address must not be the plain hash"
        );
        assert!(!bytes.windows(10).any(|w| w == b"classified"));
        let (_, back) = crate::object::decode(&s, "ns", &id, &bytes).unwrap();
        assert_eq!(back, payload);
        // the same bytes under another namespace name do not open
        let s2 = NsSealer::new("other", &deks, Some(1), false);
        assert!(crate::object::decode(&s2, "other", &id, &bytes).is_err());
        // a plaintext object is refused in an encrypted namespace
        let (pid, pbytes) =
            crate::object::encode(&crate::object::Plain, Kind::Node, &payload).unwrap();
        assert!(crate::object::decode(&s, "ns", &pid, &pbytes).is_err());
    }

    #[test]
    fn tokens_expire_and_bind_the_namespace() {
        let k = kek();
        let pk: Secret = Zeroizing::new([9u8; 32]);
        let t = issue_token(&k, "ns", "alice", &pk, std::time::Duration::from_secs(60)).unwrap();
        let (claims, back) = check_token(&k, "ns", &t).unwrap();
        assert_eq!((claims.sub.as_str(), *back), ("alice", [9u8; 32]));
        assert!(check_token(&k, "other", &t).is_err());
        let expired =
            issue_token(&k, "ns", "alice", &pk, std::time::Duration::from_secs(0)).unwrap();
        assert!(check_token(&k, "ns", &expired)
            .unwrap_err()
            .to_string()
            .contains("expired"));
        let mut forged = t.clone();
        forged.pop();
        assert!(check_token(&k, "ns", &forged).is_err());
        let other = MasterKey::parse(&"33".repeat(32)).unwrap();
        assert!(check_token(&other, "ns", &t).is_err());
    }
}
