//! cosign's key and signature formats, implemented with the RustCrypto
//! crates (p256, scrypt, crypto_secretbox). Described in `FORMAT.md`.
//!
//! - Private key: PEM `ENCRYPTED SIGSTORE PRIVATE KEY` (cosign 2.x; the older
//!   `ENCRYPTED COSIGN PRIVATE KEY` label is read too) whose body is a JSON
//!   document: scrypt KDF parameters and salt, a NaCl secretbox
//!   (XSalsa20-Poly1305) nonce, and the sealed PKCS#8 DER of the P-256 key.
//! - Public key: PEM `PUBLIC KEY` (PKIX / SubjectPublicKeyInfo DER).
//! - Signature (`sign-blob`): ECDSA P-256 over SHA-256 of the blob, DER
//!   encoded, then standard base64, no newline.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::der::pem::{self, LineEnding};
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// PEM label cosign 2.x writes for encrypted private keys.
pub const SIGSTORE_KEY_LABEL: &str = "ENCRYPTED SIGSTORE PRIVATE KEY";
/// PEM label older cosign releases wrote; still read.
pub const COSIGN_KEY_LABEL: &str = "ENCRYPTED COSIGN PRIVATE KEY";
/// scrypt N cosign uses when it writes a key (log2 = 15).
pub const SCRYPT_N: u32 = 32768;
/// The other N cosign accepts when reading (some releases wrote 65536).
pub const SCRYPT_N_ALT: u32 = 65536;
pub const SCRYPT_R: u32 = 8;
pub const SCRYPT_P: u32 = 1;

#[derive(Serialize, Deserialize)]
struct EncryptedKey {
    kdf: Kdf,
    cipher: Cipher,
    /// base64 of the secretbox output (Poly1305 tag, then ciphertext).
    ciphertext: String,
}

#[derive(Serialize, Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Serialize, Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u32,
    r: u32,
    p: u32,
}

#[derive(Serialize, Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|e| Error::Other(format!("no randomness available: {e}")))?;
    Ok(b)
}

/// A fresh P-256 signing key from the operating system's randomness.
pub fn generate_key() -> Result<SigningKey> {
    loop {
        let bytes = Zeroizing::new(random::<32>()?);
        // Fails only for 0 or >= n (probability ~2^-32); draw again.
        if let Ok(key) = SigningKey::from_slice(&bytes[..]) {
            return Ok(key);
        }
    }
}

fn scrypt_key(password: &[u8], salt: &[u8], n: u32) -> Result<Zeroizing<[u8; 32]>> {
    let log_n = n.trailing_zeros() as u8;
    let params = scrypt::Params::new(log_n, SCRYPT_R, SCRYPT_P, 32)
        .map_err(|e| Error::Other(format!("scrypt parameters: {e}")))?;
    let mut out = Zeroizing::new([0u8; 32]);
    scrypt::scrypt(password, salt, &params, &mut out[..])
        .map_err(|e| Error::Other(format!("scrypt: {e}")))?;
    Ok(out)
}

/// The private key in cosign's encrypted PEM format, sealed under `password`.
pub fn encrypt_private_key(key: &SigningKey, password: &[u8]) -> Result<Zeroizing<String>> {
    let der = key
        .to_pkcs8_der()
        .map_err(|e| Error::Other(format!("encoding the private key: {e}")))?;
    let salt = random::<32>()?;
    let nonce = random::<24>()?;
    let box_key = scrypt_key(password, &salt, SCRYPT_N)?;
    let cipher = XSalsa20Poly1305::new((&*box_key).into());
    let sealed = cipher
        .encrypt((&nonce).into(), der.as_bytes())
        .map_err(|_| Error::Other("secretbox sealing failed".into()))?;
    let doc = EncryptedKey {
        kdf: Kdf {
            name: "scrypt".into(),
            params: KdfParams {
                n: SCRYPT_N,
                r: SCRYPT_R,
                p: SCRYPT_P,
            },
            salt: B64.encode(salt),
        },
        cipher: Cipher {
            name: "nacl/secretbox".into(),
            nonce: B64.encode(nonce),
        },
        ciphertext: B64.encode(sealed),
    };
    let json = serde_json::to_vec(&doc).map_err(|e| Error::Other(e.to_string()))?;
    let pem = pem::encode_string(SIGSTORE_KEY_LABEL, LineEnding::LF, &json)
        .map_err(|e| Error::Other(format!("PEM encoding: {e}")))?;
    Ok(Zeroizing::new(pem))
}

/// Open a cosign encrypted private key. `path` only names the key in errors.
pub fn decrypt_private_key(
    pem_text: &[u8],
    password: &[u8],
    path: &std::path::Path,
) -> Result<SigningKey> {
    let bad = |reason: String| Error::bad_key(path, reason);
    let (label, body) =
        pem::decode_vec(pem_text).map_err(|e| bad(format!("not a PEM private key ({e})")))?;
    if label != SIGSTORE_KEY_LABEL && label != COSIGN_KEY_LABEL {
        return Err(bad(format!(
            "PEM label is `{label}`, expected `{SIGSTORE_KEY_LABEL}` (a cosign private key)"
        )));
    }
    let doc: EncryptedKey = serde_json::from_slice(&body)
        .map_err(|e| bad(format!("malformed cosign key document: {e}")))?;
    if doc.kdf.name != "scrypt" || doc.cipher.name != "nacl/secretbox" {
        return Err(bad(format!(
            "unsupported key encryption {} + {} (expected scrypt + nacl/secretbox)",
            doc.kdf.name, doc.cipher.name
        )));
    }
    let p = &doc.kdf.params;
    if !(p.n == SCRYPT_N || p.n == SCRYPT_N_ALT) || p.r != SCRYPT_R || p.p != SCRYPT_P {
        return Err(bad(format!(
            "unexpected scrypt parameters N={} r={} p={}",
            p.n, p.r, p.p
        )));
    }
    let b64 = |what: &str, s: &str| {
        B64.decode(s)
            .map_err(|e| bad(format!("{what} is not base64: {e}")))
    };
    let salt = b64("salt", &doc.kdf.salt)?;
    let nonce = b64("nonce", &doc.cipher.nonce)?;
    let sealed = b64("ciphertext", &doc.ciphertext)?;
    if nonce.len() != 24 {
        return Err(bad(format!("nonce is {} bytes, expected 24", nonce.len())));
    }
    let box_key = scrypt_key(password, &salt, p.n)?;
    let cipher = XSalsa20Poly1305::new((&*box_key).into());
    let der = Zeroizing::new(
        cipher
            .decrypt(nonce.as_slice().into(), sealed.as_slice())
            .map_err(|_| {
                bad(
                    "cannot decrypt the key: wrong password (COSIGN_PASSWORD) or a damaged key"
                        .into(),
                )
            })?,
    );
    SigningKey::from_pkcs8_der(&der).map_err(|e| {
        bad(format!(
            "the decrypted key is not a PKCS#8 ECDSA P-256 key: {e}"
        ))
    })
}

/// The public key as cosign writes `cosign.pub`: PEM `PUBLIC KEY`.
pub fn public_key_pem(key: &VerifyingKey) -> Result<String> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|e| Error::Other(format!("PEM encoding: {e}")))
}

/// DER SubjectPublicKeyInfo of the key.
pub fn public_key_der(key: &VerifyingKey) -> Result<Vec<u8>> {
    key.to_public_key_der()
        .map(|d| d.into_vec())
        .map_err(|e| Error::Other(format!("DER encoding: {e}")))
}

/// Hex SHA-256 of the DER public key: how signatures and envelopes name it.
pub fn key_id(key: &VerifyingKey) -> Result<String> {
    Ok(hex::encode(Sha256::digest(public_key_der(key)?)))
}

/// Read a PEM public key (`cosign.pub`).
pub fn parse_public_key(pem_text: &[u8], path: &std::path::Path) -> Result<VerifyingKey> {
    let text = std::str::from_utf8(pem_text)
        .map_err(|_| Error::bad_key(path, "not a PEM public key (not text)"))?;
    if text.contains("PRIVATE KEY") {
        return Err(Error::bad_key(
            path,
            "this is a private key; verification takes the public key (cosign.pub)",
        ));
    }
    VerifyingKey::from_public_key_pem(text.trim()).map_err(|e| {
        Error::bad_key(
            path,
            format!("not a PEM ECDSA P-256 public key (`PUBLIC KEY`): {e}"),
        )
    })
}

/// ECDSA P-256 signature (DER) over a SHA-256 digest.
pub fn sign_digest(key: &SigningKey, digest: &[u8; 32]) -> Result<Vec<u8>> {
    let sig: Signature = key
        .sign_prehash(digest)
        .map_err(|e| Error::Other(format!("signing failed: {e}")))?;
    Ok(sig.to_der().as_bytes().to_vec())
}

/// Check a DER (or raw r||s) ECDSA P-256 signature over a SHA-256 digest.
pub fn verify_digest(key: &VerifyingKey, digest: &[u8; 32], sig: &[u8]) -> bool {
    let sig = match Signature::from_der(sig).or_else(|_| Signature::from_slice(sig)) {
        Ok(s) => s,
        Err(_) => return false,
    };
    key.verify_prehash(digest, &sig).is_ok()
}

/// Decode a signature file as cosign writes it (base64 of DER, whitespace
/// tolerated); raw DER is accepted too.
pub fn decode_signature(data: &[u8], path: &std::path::Path) -> Result<Vec<u8>> {
    let text: String = String::from_utf8_lossy(data)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    if let Ok(bytes) = B64.decode(text.as_bytes()) {
        return Ok(bytes);
    }
    if data.first() == Some(&0x30) {
        return Ok(data.to_vec());
    }
    Err(Error::bad_input(
        path,
        "not a signature: expected base64 of a DER ECDSA signature (cosign sign-blob output)",
    ))
}

pub fn base64(data: &[u8]) -> String {
    B64.encode(data)
}

pub fn unbase64(text: &str) -> Option<Vec<u8>> {
    B64.decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn encrypted_key_round_trips_and_rejects_wrong_password() {
        let key = generate_key().unwrap();
        let pem = encrypt_private_key(&key, b"pw").unwrap();
        assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"));
        let back = decrypt_private_key(pem.as_bytes(), b"pw", Path::new("k")).unwrap();
        assert_eq!(back.to_bytes(), key.to_bytes());
        let err = decrypt_private_key(pem.as_bytes(), b"nope", Path::new("k")).unwrap_err();
        assert!(err.to_string().contains("wrong password"), "{err}");
    }

    #[test]
    fn signatures_verify_and_detect_changes() {
        let key = generate_key().unwrap();
        let d: [u8; 32] = Sha256::digest(b"hello").into();
        let sig = sign_digest(&key, &d).unwrap();
        assert!(verify_digest(key.verifying_key(), &d, &sig));
        let d2: [u8; 32] = Sha256::digest(b"hellp").into();
        assert!(!verify_digest(key.verifying_key(), &d2, &sig));
        let other = generate_key().unwrap();
        assert!(!verify_digest(other.verifying_key(), &d, &sig));
    }

    #[test]
    fn public_key_pem_round_trips() {
        let key = generate_key().unwrap();
        let pem = public_key_pem(key.verifying_key()).unwrap();
        assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
        let back = parse_public_key(pem.as_bytes(), Path::new("p")).unwrap();
        assert_eq!(&back, key.verifying_key());
    }
}
