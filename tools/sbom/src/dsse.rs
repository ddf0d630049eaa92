//! DSSE envelopes (Dead Simple Signing Envelope, v1.0): the signature covers
//! the pre-authentication encoding `PAE(type, body)`, never the JSON.

use p256::ecdsa::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cosign;
use crate::error::{Error, Result};

/// The payload type of in-toto statements.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub payload_type: String,
    /// base64 (standard) of the payload bytes.
    pub payload: String,
    pub signatures: Vec<EnvelopeSignature>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct EnvelopeSignature {
    #[serde(default)]
    pub keyid: String,
    /// base64 of the DER ECDSA signature over PAE.
    pub sig: String,
}

/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, lengths in ASCII decimal.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {} {} ",
        payload_type.len(),
        payload_type,
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Sign `payload` into a one-signature envelope.
pub fn sign(key: &SigningKey, payload_type: &str, payload: &[u8]) -> Result<Envelope> {
    let digest: [u8; 32] = Sha256::digest(pae(payload_type, payload)).into();
    let sig = cosign::sign_digest(key, &digest)?;
    Ok(Envelope {
        payload_type: payload_type.to_string(),
        payload: cosign::base64(payload),
        signatures: vec![EnvelopeSignature {
            keyid: cosign::key_id(key.verifying_key())?,
            sig: cosign::base64(&sig),
        }],
    })
}

/// The payload, if at least one signature verifies under `key`.
pub fn verify(envelope: &Envelope, key: &VerifyingKey) -> Result<Vec<u8>> {
    let payload = cosign::unbase64(&envelope.payload)
        .ok_or_else(|| Error::VerificationFailed("the envelope payload is not base64".into()))?;
    let digest: [u8; 32] = Sha256::digest(pae(&envelope.payload_type, &payload)).into();
    if envelope.signatures.is_empty() {
        return Err(Error::VerificationFailed(
            "the envelope has no signatures".into(),
        ));
    }
    let ok = envelope.signatures.iter().any(|s| {
        cosign::unbase64(&s.sig).is_some_and(|sig| cosign::verify_digest(key, &digest, &sig))
    });
    if !ok {
        return Err(Error::VerificationFailed(
            "no envelope signature verifies with this public key".into(),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pae_matches_the_dsse_spec_example() {
        // From the DSSE protocol document.
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world".to_vec()
        );
    }

    #[test]
    fn tampered_payload_fails() {
        let key = cosign::generate_key().unwrap();
        let mut env = sign(&key, IN_TOTO_PAYLOAD_TYPE, b"{}").unwrap();
        assert_eq!(verify(&env, key.verifying_key()).unwrap(), b"{}");
        env.payload = cosign::base64(b"{ }");
        assert!(verify(&env, key.verifying_key()).is_err());
    }
}
