//! The object codec: how an immutable object is framed on disk.
//!
//! The byte layout is specified in `FORMAT.md` beside this file. The header
//! already carries the key version and nonce so per-namespace encryption can
//! seal bodies without a format change: a [`Sealer`] decides addresses and
//! seals bodies; [`Plain`] is the unencrypted one (SHA-256 addresses).

use crate::error::{Error, Result};
use crate::id::ObjectId;

/// First three bytes of every stored object.
pub const MAGIC: &[u8; 3] = b"QGO";
/// Current object format version.
pub const FORMAT_VERSION: u8 = 1;
/// Header flag: the body is zstd-compressed.
pub const FLAG_ZSTD: u8 = 0b01;
/// Header flag: the body is sealed (AES-256-GCM).
pub const FLAG_SEALED: u8 = 0b10;
/// Header flag (sealed objects only): the sealed body starts with the
/// object's content hash and tag ([`CONTENT_PREFIX`] bytes), and its address
/// is the sealer's keyed hash of that content hash ([`Sealer::address_of`]).
/// A re-encryption then re-addresses an object without decompressing and
/// hashing its payload. Objects sealed by earlier versions lack it; their
/// address is a keyed hash of the payload itself ([`Sealer::address_for`]).
pub const FLAG_HASHED: u8 = 0b100;
/// Content hash (32 bytes) and tag (1 byte: a tree node's level, 0xFF for a
/// commit) at the start of a [`FLAG_HASHED`] sealed body.
pub const CONTENT_PREFIX: usize = 33;
/// Bodies shorter than this are stored uncompressed; zstd's frame costs more than it saves.
const COMPRESS_MIN: usize = 96;
/// zstd level: the fast end, because bulk loads compress every chunk once.
const ZSTD_LEVEL: i32 = 1;

/// What an object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A node of a quad-set tree (see `tree`).
    Node = 1,
    /// A commit (see `commit`).
    Commit = 2,
}

impl Kind {
    pub fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Node),
            2 => Some(Kind::Commit),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Node => "tree node",
            Kind::Commit => "commit",
        }
    }
}

/// How a body was sealed in place: the ciphertext took the plaintext's
/// place, and the tag follows it.
pub struct Sealed {
    pub key_version: u32,
    pub nonce: [u8; NONCE_LEN],
    pub tag: [u8; TAG_LEN],
}

/// Nonce and tag sizes of a sealed body (AES-256-GCM).
pub const NONCE_LEN: usize = 12;
pub const TAG_LEN: usize = 16;

/// Addresses and (optionally) seals object bodies for one namespace.
pub trait Sealer: Send + Sync {
    /// The address a new object gets from its content hash
    /// (`ObjectId::hash(kind, payload)`, which is the plaintext address).
    fn address_of(&self, content: &ObjectId) -> ObjectId;
    /// The address a new object with this payload gets.
    fn address(&self, kind: Kind, payload: &[u8]) -> ObjectId {
        self.address_of(&ObjectId::hash(kind as u8, payload))
    }
    /// The address of a stored object without [`FLAG_HASHED`], sealed under
    /// `key_version` (None: unsealed); an error when such an object may not
    /// exist in this namespace.
    fn address_for(&self, key_version: Option<u32>, kind: Kind, payload: &[u8])
        -> Result<ObjectId>;
    /// The address of a stored [`FLAG_HASHED`] object sealed under
    /// `key_version` with this content hash.
    fn hashed_address_for(&self, key_version: u32, content: &ObjectId) -> Result<ObjectId>;
    /// The key version sealing new objects (None: they are stored unsealed).
    fn sealing_version(&self) -> Option<u32> {
        None
    }
    /// Seal `body` for object `id` in place (one copy less per object than
    /// sealing into a new buffer; a key rotation seals every object), or
    /// return `None` to store it as it is; `Some` exactly when
    /// [`Sealer::sealing_version`] is.
    fn seal(&self, id: &ObjectId, body: &mut [u8]) -> Result<Option<Sealed>>;
    /// Open `sealed` (ciphertext, then tag), sealed under `key_version` with
    /// `nonce`, in place; returns the length of the plaintext now at its front.
    fn open(
        &self,
        id: &ObjectId,
        key_version: u32,
        nonce: &[u8],
        sealed: &mut [u8],
    ) -> Result<usize>;
}

/// The plaintext sealer: SHA-256 addresses, bodies stored as they are.
#[derive(Debug, Default, Clone, Copy)]
pub struct Plain;

impl Sealer for Plain {
    fn address_of(&self, content: &ObjectId) -> ObjectId {
        *content
    }

    fn hashed_address_for(&self, key_version: u32, _content: &ObjectId) -> Result<ObjectId> {
        Err(Error::Other(format!(
            "an object sealed under key version {key_version} sits in a namespace that is not encrypted"
        )))
    }

    fn address_for(
        &self,
        key_version: Option<u32>,
        kind: Kind,
        payload: &[u8],
    ) -> Result<ObjectId> {
        match key_version {
            None => Ok(self.address(kind, payload)),
            Some(v) => Err(Error::Other(format!(
                "an object sealed under key version {v} sits in a namespace that is not encrypted"
            ))),
        }
    }

    fn seal(&self, _id: &ObjectId, _body: &mut [u8]) -> Result<Option<Sealed>> {
        Ok(None)
    }

    fn open(&self, id: &ObjectId, _v: u32, _n: &[u8], _b: &mut [u8]) -> Result<usize> {
        Err(Error::Other(format!(
            "object {id} is sealed but its namespace is not encrypted"
        )))
    }
}

thread_local! {
    // zstd contexts are costly to build; one per thread serves every object.
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

fn compress(payload: &[u8]) -> Result<Vec<u8>> {
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        Ok(c.as_mut().expect("just set").compress(payload)?)
    })
}

/// Largest body a frame may claim to expand to (nodes are capped far below).
const MAX_BODY: usize = 64 << 20;

fn decompress(body: &[u8]) -> std::result::Result<Vec<u8>, String> {
    let size = zstd::zstd_safe::get_frame_content_size(body)
        .map_err(|_| "bad zstd frame header".to_string())?
        .ok_or("zstd frame without content size")? as usize;
    if size > MAX_BODY {
        return Err(format!("zstd frame claims {size} bytes"));
    }
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new().map_err(|e| e.to_string())?);
        }
        let out = d
            .as_mut()
            .expect("just set")
            .decompress(body, size)
            .map_err(|e| format!("bad zstd body: {e}"))?;
        if out.len() != size {
            return Err("zstd body shorter than its header says".into());
        }
        Ok(out)
    })
}

/// Frame `payload` as an object of `kind`; returns its address and stored bytes.
pub fn encode(sealer: &dyn Sealer, kind: Kind, payload: &[u8]) -> Result<(ObjectId, Vec<u8>)> {
    let content = ObjectId::hash(kind as u8, payload);
    let id = sealer.address_of(&content);
    Ok((id, frame(sealer, &id, &content, kind, payload)?))
}

/// The stored bytes of the object `id` (`sealer.address_of(content)`, where
/// `content` is `ObjectId::hash(kind, payload)`): compressed when that saves
/// space, sealed, framed. Addresses depend on the payload only, so callers
/// may compute the id first and frame later.
pub fn frame(
    sealer: &dyn Sealer,
    id: &ObjectId,
    content: &ObjectId,
    kind: Kind,
    payload: &[u8],
) -> Result<Vec<u8>> {
    let mut flags = 0u8;
    let mut body = None;
    if payload.len() >= COMPRESS_MIN {
        let packed = compress(payload)?;
        if packed.len() < payload.len() {
            body = Some(packed);
            flags |= FLAG_ZSTD;
        }
    }
    let body = body.as_deref().unwrap_or(payload);
    seal_and_frame(sealer, id, content, tag(kind, payload), kind, flags, body)
}

/// The tag of a commit in a [`FLAG_HASHED`] body (no tree is that tall).
const COMMIT_TAG: u8 = 0xFF;

/// The tag byte of a [`FLAG_HASHED`] body: a tree node's level (its first
/// payload byte), [`COMMIT_TAG`] for a commit. Sealed with the body, it
/// vouches for the header's kind byte, which the AEAD does not cover, when
/// a re-encryption reads the tag instead of the payload.
fn tag(kind: Kind, payload: &[u8]) -> u8 {
    match kind {
        Kind::Node => payload.first().copied().unwrap_or(0),
        Kind::Commit => COMMIT_TAG,
    }
}

/// Seal `body` (as compressed or not per `flags`) for `id` and frame it; a
/// sealed body gets the content hash and tag in front ([`FLAG_HASHED`]).
/// Built in one buffer: header, then the body sealed in place.
fn seal_and_frame(
    sealer: &dyn Sealer,
    id: &ObjectId,
    content: &ObjectId,
    tag: u8,
    kind: Kind,
    flags: u8,
    body: &[u8],
) -> Result<Vec<u8>> {
    let sealing = sealer.sealing_version().is_some();
    let extra = if sealing {
        NONCE_LEN + CONTENT_PREFIX + TAG_LEN
    } else {
        0
    };
    let mut out = Vec::with_capacity(HEADER_LEN + extra + body.len());
    out.extend_from_slice(MAGIC);
    out.push(FORMAT_VERSION);
    out.push(kind as u8);
    out.push(flags & FLAG_ZSTD);
    out.extend_from_slice(&0u32.to_le_bytes()); // key version, below
    out.push(0); // nonce length, below
    if sealing {
        out.extend_from_slice(&[0; NONCE_LEN]);
    }
    let start = out.len();
    if sealing {
        out.extend_from_slice(&content.0);
        out.push(tag);
    }
    out.extend_from_slice(body);
    match (sealer.seal(id, &mut out[start..])?, sealing) {
        (Some(s), true) => {
            out[5] |= FLAG_SEALED | FLAG_HASHED;
            out[6..10].copy_from_slice(&s.key_version.to_le_bytes());
            out[10] = NONCE_LEN as u8;
            out[HEADER_LEN..start].copy_from_slice(&s.nonce);
            out.extend_from_slice(&s.tag);
        }
        (None, false) => {}
        _ => {
            return Err(Error::Other(
                "a sealer sealed when it said it would not (or the reverse)".into(),
            ))
        }
    }
    Ok(out)
}

/// The body of sealed object `id` (header `h`) opened by `sealer`.
fn open_body(sealer: &dyn Sealer, id: &ObjectId, h: &Header) -> Result<Vec<u8>> {
    let mut body = h.stored.to_vec();
    let n = sealer.open(id, h.key_version, h.nonce, &mut body)?;
    body.truncate(n);
    Ok(body)
}

/// Fixed part of the header: magic, version, kind, flags, key version, nonce length.
pub const HEADER_LEN: usize = 3 + 1 + 1 + 1 + 4 + 1;

/// Unframe stored bytes, re-checking that they hash to `id`.
///
/// `ns` only names the namespace in errors.
pub fn decode(
    sealer: &dyn Sealer,
    ns: &str,
    id: &ObjectId,
    bytes: &[u8],
) -> Result<(Kind, Vec<u8>)> {
    let o = unframe(sealer, ns, id, bytes)?;
    Ok((o.kind, o.payload))
}

/// An object moved to another sealer by [`reseal`].
pub struct Resealed {
    pub kind: Kind,
    /// The object's address under the new sealer, and its stored bytes there.
    pub id: ObjectId,
    pub bytes: Vec<u8>,
    /// A tree node's level (0xFF for a commit).
    pub tag: u8,
}

/// Re-frame a stored object of `from` for `to` (key rotation, encryption of a
/// plaintext namespace), addressed and sealed by `to`. The compressed body is
/// reused as it is: rotating a key must not pay for compressing every object
/// again. A [`FLAG_HASHED`] object is opened (which authenticates it, its
/// address included) and its address checked against its content hash, but
/// not decompressed or re-hashed: its payload is what a holder of the old
/// key sealed for that address. Any other object is verified against `id`
/// as [`decode`] does.
///
/// Only objects for which `want(kind, tag)` holds (the tag is a tree node's
/// level, 0xFF for a commit) are re-framed; the others give `None`, checked
/// all the same. A re-encryption moves the leaves, nearly all of the bytes,
/// this way in storage order, before it rewrites the nodes above them.
pub fn reseal(
    from: &dyn Sealer,
    to: &dyn Sealer,
    ns: &str,
    id: &ObjectId,
    bytes: &[u8],
    want: impl Fn(Kind, u8) -> bool,
) -> Result<Option<Resealed>> {
    let h = header(ns, id, bytes)?;
    let corrupt = |reason: String| corrupt(ns, id, reason);
    let zstd = h.flags & FLAG_ZSTD;
    let opened;
    let unframed;
    let (content, tag, body) = if h.flags & FLAG_HASHED != 0 {
        opened = open_body(from, id, &h)?;
        let (content, tag, body) = split_content(&opened).map_err(&corrupt)?;
        let expected = from
            .hashed_address_for(h.key_version, &content)
            .map_err(|e| corrupt(e.to_string()))?;
        if expected != *id {
            return Err(corrupt(format!("its content hashes to {expected}")));
        }
        if (tag == COMMIT_TAG) != (h.kind == Kind::Commit) {
            return Err(corrupt(format!(
                "its header says it is a {} but it was sealed as {}",
                h.kind.name(),
                if tag == COMMIT_TAG {
                    "a commit"
                } else {
                    "a tree node"
                }
            )));
        }
        if !want(h.kind, tag) {
            return Ok(None);
        }
        (content, tag, body)
    } else {
        unframed = unframe(from, ns, id, bytes)?;
        let o = &unframed;
        let tag = tag(o.kind, &o.payload);
        if !want(o.kind, tag) {
            return Ok(None);
        }
        // an unsealed object's address, just checked, is its content hash
        let content = if h.flags & FLAG_SEALED == 0 {
            *id
        } else {
            ObjectId::hash(o.kind as u8, &o.payload)
        };
        (content, tag, o.compressed.as_deref().unwrap_or(&o.payload))
    };
    resealed(to, &content, tag, h.kind, zstd, body).map(Some)
}

/// An object with content hash `content` and (compressed per `flags`) body
/// `body`, addressed and sealed by `to`.
fn resealed(
    to: &dyn Sealer,
    content: &ObjectId,
    tag: u8,
    kind: Kind,
    flags: u8,
    body: &[u8],
) -> Result<Resealed> {
    let id = to.address_of(content);
    Ok(Resealed {
        kind,
        id,
        bytes: seal_and_frame(to, &id, content, tag, kind, flags, body)?,
        tag,
    })
}

/// Re-frame unsealed object `id` of `from`, which its parent says is a tree
/// leaf, for `to` (encryption of a plaintext namespace) without opening its
/// body: an unsealed object's address is its content hash, so neither the
/// address nor the tag needs the payload. The payload is not checked here:
/// the sealed copy carries the content hash, against which every later read
/// (and `fsck`) checks it, as they checked the plaintext object.
pub fn reseal_plain_leaf(
    to: &dyn Sealer,
    ns: &str,
    id: &ObjectId,
    bytes: &[u8],
) -> Result<Resealed> {
    let h = header(ns, id, bytes)?;
    if h.flags & FLAG_SEALED != 0 || h.kind != Kind::Node {
        return Err(corrupt(
            ns,
            id,
            format!(
                "a tree names it as a leaf, but it is a {}{}",
                if h.flags & FLAG_SEALED != 0 {
                    "sealed "
                } else {
                    ""
                },
                h.kind.name()
            ),
        ));
    }
    resealed(to, id, 0, Kind::Node, h.flags, h.stored)
}

/// A stored object opened and verified.
struct Unframed {
    kind: Kind,
    /// The body before sealing, when it is zstd-compressed.
    compressed: Option<Vec<u8>>,
    payload: Vec<u8>,
}

/// The parsed header of a stored object, and what follows it.
struct Header<'b> {
    kind: Kind,
    flags: u8,
    key_version: u32,
    nonce: &'b [u8],
    stored: &'b [u8],
}

/// The error for object `id` of namespace `ns` that is not what it should be.
fn corrupt(ns: &str, id: &ObjectId, reason: String) -> Error {
    Error::CorruptObject {
        ns: ns.to_string(),
        id: *id,
        reason,
    }
}

/// Check the header of stored object `id` without opening its body (for
/// sealed objects whose keys are not at hand); returns the kind it names.
pub fn check_header(ns: &str, id: &ObjectId, bytes: &[u8]) -> Result<Kind> {
    Ok(header(ns, id, bytes)?.kind)
}

fn header<'b>(ns: &str, id: &ObjectId, bytes: &'b [u8]) -> Result<Header<'b>> {
    let corrupt = |reason: String| corrupt(ns, id, reason);
    if bytes.len() < HEADER_LEN || &bytes[..3] != MAGIC {
        return Err(corrupt("bad header magic".into()));
    }
    if bytes[3] != FORMAT_VERSION {
        return Err(corrupt(format!(
            "unknown object format version {}",
            bytes[3]
        )));
    }
    let kind =
        Kind::from_u8(bytes[4]).ok_or_else(|| corrupt(format!("unknown kind {}", bytes[4])))?;
    let flags = bytes[5];
    if flags & !(FLAG_ZSTD | FLAG_SEALED | FLAG_HASHED) != 0 {
        return Err(corrupt(format!("unknown header flags {flags:#04x}")));
    }
    if flags & FLAG_HASHED != 0 && flags & FLAG_SEALED == 0 {
        return Err(corrupt("content-hash flag on an unsealed object".into()));
    }
    let key_version = u32::from_le_bytes(bytes[6..10].try_into().expect("4 bytes"));
    let nonce_len = bytes[10] as usize;
    if bytes.len() < HEADER_LEN + nonce_len {
        return Err(corrupt("truncated header".into()));
    }
    if flags & FLAG_SEALED != 0 && nonce_len == 0 {
        return Err(corrupt("sealed without a nonce".into()));
    }
    Ok(Header {
        kind,
        flags,
        key_version,
        nonce: &bytes[HEADER_LEN..HEADER_LEN + nonce_len],
        stored: &bytes[HEADER_LEN + nonce_len..],
    })
}

/// (content hash, tag, body) of an opened [`FLAG_HASHED`] body.
fn split_content(opened: &[u8]) -> std::result::Result<(ObjectId, u8, &[u8]), String> {
    if opened.len() < CONTENT_PREFIX {
        return Err("sealed body shorter than its content hash".into());
    }
    let content = ObjectId::from_slice(&opened[..32]).expect("32 bytes");
    Ok((content, opened[32], &opened[CONTENT_PREFIX..]))
}

fn unframe(sealer: &dyn Sealer, ns: &str, id: &ObjectId, bytes: &[u8]) -> Result<Unframed> {
    let corrupt = |reason: String| corrupt(ns, id, reason);
    let h = header(ns, id, bytes)?;
    let kind = h.kind;
    let sealed = h.flags & FLAG_SEALED != 0;
    let mut opened = if sealed {
        open_body(sealer, id, &h)?
    } else {
        h.stored.to_vec()
    };
    let prefix = if h.flags & FLAG_HASHED != 0 {
        let (content, tag, _) = split_content(&opened).map_err(&corrupt)?;
        opened.drain(..CONTENT_PREFIX);
        Some((content, tag))
    } else {
        None
    };
    let (compressed, payload) = if h.flags & FLAG_ZSTD != 0 {
        let payload = decompress(&opened).map_err(&corrupt)?;
        (Some(opened), payload)
    } else {
        (None, opened)
    };
    let actual = match prefix {
        Some((content, tag)) => {
            let hashed = ObjectId::hash(kind as u8, &payload);
            if hashed != content {
                return Err(corrupt(format!(
                    "its payload hashes to {hashed}, not to the content hash sealed with it"
                )));
            }
            if self::tag(kind, &payload) != tag {
                return Err(corrupt("its tag does not match its payload".into()));
            }
            sealer
                .hashed_address_for(h.key_version, &content)
                .map_err(|e| corrupt(e.to_string()))?
        }
        None => sealer
            .address_for(sealed.then_some(h.key_version), kind, &payload)
            .map_err(|e| corrupt(e.to_string()))?,
    };
    if actual != *id {
        return Err(corrupt(format!("content hashes to {actual}")));
    }
    Ok(Unframed {
        kind,
        compressed,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_and_large() {
        for payload in [b"tiny".to_vec(), vec![7u8; 10_000]] {
            let (id, bytes) = encode(&Plain, Kind::Node, &payload).unwrap();
            assert_eq!(id, ObjectId::hash(Kind::Node as u8, &payload));
            let (kind, back) = decode(&Plain, "ns", &id, &bytes).unwrap();
            assert_eq!(kind, Kind::Node);
            assert_eq!(back, payload);
        }
    }

    #[test]
    fn large_bodies_are_compressed() {
        let (_, bytes) = encode(&Plain, Kind::Node, &vec![7u8; 10_000]).unwrap();
        assert_eq!(bytes[5] & FLAG_ZSTD, FLAG_ZSTD);
        assert!(bytes.len() < 1000);
    }

    #[test]
    fn flipped_byte_is_detected_and_named() {
        let payload = b"some payload that is long enough to matter".to_vec();
        let (id, mut bytes) = encode(&Plain, Kind::Commit, &payload).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let err = decode(&Plain, "default", &id, &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&id.to_hex()) && err.contains("corrupt"),
            "{err}"
        );
    }

    #[test]
    fn reseal_keeps_the_payload_and_checks_the_old_address() {
        for payload in [b"tiny".to_vec(), vec![7u8; 10_000]] {
            let (id, bytes) = encode(&Plain, Kind::Node, &payload).unwrap();
            let r = reseal(&Plain, &Plain, "ns", &id, &bytes, |_, _| true)
                .unwrap()
                .unwrap();
            // same sealer: the same object, byte for byte, without recompressing
            assert_eq!(
                (r.kind, r.id, &r.bytes, r.tag),
                (Kind::Node, id, &bytes, payload[0])
            );
            let mut bad = bytes.clone();
            let last = bad.len() - 1;
            bad[last] ^= 1;
            assert!(reseal(&Plain, &Plain, "ns", &id, &bad, |_, _| true).is_err());
        }
    }

    fn sealer(versions: &[u32], sealing: u32) -> crate::crypto::NsSealer {
        let deks: std::collections::BTreeMap<u32, crate::crypto::Secret> = versions
            .iter()
            .map(|&v| (v, zeroize::Zeroizing::new([v as u8; 32])))
            .collect();
        crate::crypto::NsSealer::new("ns", &deks, Some(sealing), false)
    }

    /// A leaf payload: level 0, then bytes that compress.
    fn leaf() -> Vec<u8> {
        let mut p = vec![0u8];
        p.extend(b"<http://example.org/s> <http://p> \"literal\" .".repeat(40));
        p
    }

    #[test]
    fn sealed_objects_carry_their_content_hash_and_reseal_without_rehashing() {
        let (v1, v2) = (sealer(&[1], 1), sealer(&[1, 2], 2));
        let payload = leaf();
        let (id, bytes) = encode(&v1, Kind::Node, &payload).unwrap();
        assert_eq!(bytes[5], FLAG_ZSTD | FLAG_SEALED | FLAG_HASHED);
        assert_eq!(id, v1.address_of(&ObjectId::hash(1, &payload)));
        let r = reseal(&v2, &v2, "ns", &id, &bytes, |_, _| true)
            .unwrap()
            .unwrap();
        assert_eq!((r.kind, r.tag), (Kind::Node, 0));
        assert_eq!(
            r.id,
            v2.address(Kind::Node, &payload),
            "new key, new address"
        );
        assert_ne!(r.id, id);
        assert_eq!(decode(&v2, "ns", &r.id, &r.bytes).unwrap().1, payload);
        // a flipped byte fails to open; a wrong id fails its check
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(reseal(&v2, &v2, "ns", &id, &bad, |_, _| true).is_err());
        assert!(reseal(&v2, &v2, "ns", &r.id, &bytes, |_, _| true).is_err());
    }

    #[test]
    fn a_sealed_content_hash_that_does_not_match_the_payload_is_corrupt() {
        let s = sealer(&[1], 1);
        let payload = leaf();
        // sealed for the address of other content
        let other = ObjectId::hash(1, b"something else");
        let id = s.address_of(&other);
        let body = compress(&payload).unwrap();
        let bytes = seal_and_frame(&s, &id, &other, 0, Kind::Node, FLAG_ZSTD, &body).unwrap();
        let err = decode(&s, "ns", &id, &bytes).unwrap_err().to_string();
        assert!(
            err.contains("not to the content hash sealed with it"),
            "{err}"
        );
        // the tag is checked against the payload too
        let content = ObjectId::hash(1, &payload);
        let id = s.address_of(&content);
        let body = compress(&payload).unwrap();
        let bytes = seal_and_frame(&s, &id, &content, 3, Kind::Node, FLAG_ZSTD, &body).unwrap();
        let err = decode(&s, "ns", &id, &bytes).unwrap_err().to_string();
        assert!(err.contains("tag"), "{err}");
    }

    #[test]
    fn objects_sealed_by_earlier_versions_still_read_and_reseal_to_the_new_form() {
        let (v1, v2) = (sealer(&[1], 1), sealer(&[1, 2], 2));
        let payload = leaf();
        // the earlier form: no content hash inside, address keyed over the payload
        let id = v1.address_for(Some(1), Kind::Node, &payload).unwrap();
        let mut sealed = compress(&payload).unwrap();
        let s = v1.seal(&id, &mut sealed).unwrap().unwrap();
        let mut bytes = MAGIC.to_vec();
        bytes.extend([FORMAT_VERSION, Kind::Node as u8, FLAG_ZSTD | FLAG_SEALED]);
        bytes.extend(s.key_version.to_le_bytes());
        bytes.push(NONCE_LEN as u8);
        bytes.extend(s.nonce);
        bytes.extend(&sealed);
        bytes.extend(s.tag);
        assert_eq!(decode(&v1, "ns", &id, &bytes).unwrap().1, payload);
        let r = reseal(&v2, &v2, "ns", &id, &bytes, |_, _| true)
            .unwrap()
            .unwrap();
        assert_eq!(r.bytes[5], FLAG_ZSTD | FLAG_SEALED | FLAG_HASHED);
        assert_eq!(decode(&v2, "ns", &r.id, &r.bytes).unwrap().1, payload);
        // a hashed flag on an unsealed object is refused
        let (pid, mut plain) = encode(&Plain, Kind::Node, &payload).unwrap();
        plain[5] |= FLAG_HASHED;
        assert!(decode(&Plain, "ns", &pid, &plain).is_err());
    }

    #[test]
    fn reseal_takes_what_is_wanted_and_checks_everything() {
        let (v1, v2) = (sealer(&[1], 1), sealer(&[1, 2], 2));
        let mut inner = leaf();
        inner[0] = 2;
        let wanted = |k: Kind, tag: u8| k == Kind::Node && tag == 0;
        // sealed (content hash inside) and plain objects alike
        let cases: [(&dyn Sealer, &dyn Sealer); 2] = [(&v2, &v2), (&Plain, &v1)];
        for (from, to) in cases {
            let writer: &dyn Sealer = if from.sealing_version().is_some() {
                &v1
            } else {
                &Plain
            };
            let (leaf_id, leaf_bytes) = encode(writer, Kind::Node, &leaf()).unwrap();
            let (node_id, node_bytes) = encode(writer, Kind::Node, &inner).unwrap();
            let (commit_id, commit_bytes) = encode(writer, Kind::Commit, b"{}").unwrap();
            let r = reseal(from, to, "ns", &leaf_id, &leaf_bytes, wanted).unwrap();
            let r = r.expect("a leaf is wanted");
            assert_eq!(decode(to, "ns", &r.id, &r.bytes).unwrap().1, leaf());
            for (id, bytes) in [(node_id, &node_bytes), (commit_id, &commit_bytes)] {
                assert!(reseal(from, to, "ns", &id, bytes, wanted)
                    .unwrap()
                    .is_none());
            }
            // not wanted is no excuse for a wrong id
            assert!(reseal(from, to, "ns", &leaf_id, &node_bytes, wanted).is_err());
            // a commit whose kind byte was flipped is not taken for a leaf
            let mut flipped = commit_bytes.clone();
            flipped[4] = Kind::Node as u8;
            let err = reseal(from, to, "ns", &commit_id, &flipped, wanted)
                .err()
                .expect("refused");
            assert!(err.to_string().contains("corrupt"), "{err}");
        }
    }

    #[test]
    fn a_plain_leaf_is_resealed_unopened_and_its_reads_check_it() {
        let v1 = sealer(&[1], 1);
        let (id, bytes) = encode(&Plain, Kind::Node, &leaf()).unwrap();
        let r = reseal_plain_leaf(&v1, "ns", &id, &bytes).unwrap();
        assert_eq!(r.bytes[5], FLAG_ZSTD | FLAG_SEALED | FLAG_HASHED);
        assert_eq!(r.id, v1.address(Kind::Node, &leaf()));
        assert_eq!(decode(&v1, "ns", &r.id, &r.bytes).unwrap().1, leaf());
        // a damaged body goes through unopened, and the first read names it
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x55;
        let r = reseal_plain_leaf(&v1, "ns", &id, &bad).unwrap();
        let err = decode(&v1, "ns", &r.id, &r.bytes).unwrap_err();
        assert!(matches!(err, Error::CorruptObject { .. }), "{err}");
        // only unsealed tree nodes are taken
        let (cid, commit) = encode(&Plain, Kind::Commit, b"{}").unwrap();
        let err = reseal_plain_leaf(&v1, "ns", &cid, &commit)
            .err()
            .expect("refused");
        assert!(err.to_string().contains("but it is a commit"), "{err}");
        let (sid, sealed) = encode(&v1, Kind::Node, &leaf()).unwrap();
        let err = reseal_plain_leaf(&v1, "ns", &sid, &sealed)
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("but it is a sealed tree node"),
            "{err}"
        );
    }

    #[test]
    fn wrong_kind_changes_address() {
        let (id, mut bytes) = encode(&Plain, Kind::Commit, b"x").unwrap();
        bytes[4] = Kind::Node as u8;
        assert!(decode(&Plain, "default", &id, &bytes).is_err());
    }
}
