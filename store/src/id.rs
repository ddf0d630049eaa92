//! Object ids: 32-byte content addresses shown as lowercase hex.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A 32-byte object address (SHA-256 of the object's kind and payload).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// Length of the short form printed by `log` and friends.
    pub const SHORT_LEN: usize = 12;

    /// The address of `payload` stored as an object of `kind`.
    pub fn hash(kind: u8, payload: &[u8]) -> Self {
        let mut h = Sha256::new();
        h.update([kind]);
        h.update(payload);
        ObjectId(h.finalize().into())
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(ObjectId(bytes.try_into().ok()?))
    }

    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(ObjectId(out))
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn short(&self) -> String {
        self.to_hex()[..Self::SHORT_LEN].to_string()
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({})", self.short())
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ObjectId::from_hex(&s).ok_or_else(|| serde::de::Error::custom("bad object id"))
    }
}

/// A hash map keyed by object id. Ids are hashes already, so the map uses
/// foldhash (keyed per process, a few nanoseconds for 32 bytes) rather than
/// SipHash: a key rotation looks every id up several times.
pub type IdMap<V> = std::collections::HashMap<ObjectId, V, foldhash::fast::RandomState>;

/// A set of object ids (see [`IdMap`]).
pub type IdSet = std::collections::HashSet<ObjectId, foldhash::fast::RandomState>;
