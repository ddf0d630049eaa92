//! `qg-sbom sign` / `qg-sbom verify`: what `cosign sign-blob --key` and
//! `cosign verify-blob --key` do, offline: ECDSA P-256 over SHA-256 of the
//! file, the signature written as base64 of its DER encoding. Optionally a
//! Sigstore bundle (v0.3 JSON, public-key verification material, no
//! transparency-log entry) next to it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::cosign;
use crate::error::{read_file, write_file, Error, Result};

/// Media type of the bundles `--bundle` writes.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SignOptions {
    pub file: PathBuf,
    /// cosign encrypted private key.
    pub key: PathBuf,
    /// Default: `FILE.sig`.
    pub output_signature: Option<PathBuf>,
    /// Also write a Sigstore bundle here.
    pub bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SignResult {
    pub file: PathBuf,
    pub sha256: String,
    pub signature: PathBuf,
    /// base64 of the DER signature (the content of the signature file).
    pub signature_base64: String,
    pub bundle: Option<PathBuf>,
    pub key_id: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyOptions {
    pub file: PathBuf,
    /// PEM public key (`cosign.pub`).
    pub key: PathBuf,
    /// Signature file (base64 of DER, as cosign writes it).
    pub signature: Option<PathBuf>,
    /// Or a Sigstore bundle written by `sign --bundle`.
    pub bundle: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    pub file: PathBuf,
    pub sha256: String,
    pub verified: bool,
    /// Why verification failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub key_id: String,
}

fn append_ext(p: &Path, ext: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(ext);
    PathBuf::from(s)
}

/// Read and decrypt a cosign private key with `password`.
pub fn load_private_key(
    path: &Path,
    password: &Zeroizing<String>,
) -> Result<p256::ecdsa::SigningKey> {
    let pem = Zeroizing::new(read_file(path).map_err(|e| match e {
        Error::Read { path, source } => Error::BadKey {
            path,
            reason: format!("cannot read the private key: {source}"),
        },
        other => other,
    })?);
    cosign::decrypt_private_key(&pem, password.as_bytes(), path)
}

/// Read a PEM public key.
pub fn load_public_key(path: &Path) -> Result<p256::ecdsa::VerifyingKey> {
    let pem = read_file(path).map_err(|e| match e {
        Error::Read { path, source } => Error::BadKey {
            path,
            reason: format!("cannot read the public key: {source}"),
        },
        other => other,
    })?;
    cosign::parse_public_key(&pem, path)
}

pub fn sign(opts: &SignOptions, password: &Zeroizing<String>) -> Result<SignResult> {
    let key = load_private_key(&opts.key, password)?;
    let digest = crate::sha256_file(&opts.file)?;
    let der = cosign::sign_digest(&key, &digest)?;
    let b64 = cosign::base64(&der);
    let sig_path = opts
        .output_signature
        .clone()
        .unwrap_or_else(|| append_ext(&opts.file, ".sig"));
    let spki = cosign::public_key_der(key.verifying_key())?;
    if let Some(bundle) = &opts.bundle {
        let doc = json!({
            "mediaType": BUNDLE_MEDIA_TYPE,
            "verificationMaterial": {
                "publicKey": { "hint": cosign::base64(&Sha256::digest(&spki)) },
                "tlogEntries": [],
                "timestampVerificationData": { "rfc3161Timestamps": [] }
            },
            "messageSignature": {
                "messageDigest": { "algorithm": "SHA2_256", "digest": cosign::base64(&digest) },
                "signature": b64
            }
        });
        let mut text =
            serde_json::to_string_pretty(&doc).map_err(|e| Error::Other(e.to_string()))?;
        text.push('\n');
        write_file(bundle, text.as_bytes())?;
    }
    // cosign writes the base64 signature with no trailing newline.
    write_file(&sig_path, b64.as_bytes())?;
    Ok(SignResult {
        file: opts.file.clone(),
        sha256: hex::encode(digest),
        signature: sig_path,
        signature_base64: b64,
        bundle: opts.bundle.clone(),
        key_id: cosign::key_id(key.verifying_key())?,
    })
}

/// The signature (DER) and the digest a bundle claims.
fn read_bundle(path: &Path) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
    let doc: serde_json::Value = serde_json::from_slice(&read_file(path)?)
        .map_err(|e| Error::bad_input(path, format!("not a JSON Sigstore bundle: {e}")))?;
    let sig = doc
        .pointer("/messageSignature/signature")
        .and_then(|v| v.as_str())
        .and_then(cosign::unbase64)
        .ok_or_else(|| {
            Error::bad_input(path, "no base64 messageSignature.signature in the bundle")
        })?;
    let digest = doc
        .pointer("/messageSignature/messageDigest/digest")
        .and_then(|v| v.as_str())
        .and_then(cosign::unbase64);
    Ok((sig, digest))
}

pub fn verify(opts: &VerifyOptions) -> Result<VerifyResult> {
    let key = load_public_key(&opts.key)?;
    let digest = crate::sha256_file(&opts.file)?;
    let (sig, claimed) = match (&opts.signature, &opts.bundle) {
        (Some(s), None) => (cosign::decode_signature(&read_file(s)?, s)?, None),
        (None, Some(b)) => read_bundle(b)?,
        _ => {
            return Err(Error::BadInput {
                path: opts.file.display().to_string(),
                reason: "give exactly one of --signature FILE.sig or --bundle FILE.sigstore.json"
                    .into(),
            })
        }
    };
    let mut reason = None;
    if claimed.as_deref().is_some_and(|c| c != digest) {
        reason = Some("the bundle's message digest is not the SHA-256 of the file".to_string());
    } else if !cosign::verify_digest(&key, &digest, &sig) {
        reason = Some(format!(
            "the signature does not match {} under this public key (file changed, or another key)",
            opts.file.display()
        ));
    }
    Ok(VerifyResult {
        file: opts.file.clone(),
        sha256: hex::encode(digest),
        verified: reason.is_none(),
        reason,
        key_id: cosign::key_id(&key)?,
    })
}
