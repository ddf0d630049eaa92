//! keygen / sign / verify / provenance end to end, checked by verifiers we
//! did not write: openssl, Python's cryptography + PyNaCl (cosign key
//! format), securesystemslib (DSSE), and keys written by cosign itself.

mod common;

use std::fs;
use std::path::Path;

use common::*;

const PW: &str = "correct horse battery staple";

fn keygen(dir: &Path) {
    expect(
        qg_sbom(dir)
            .args(["keygen", "--output-key-prefix", "cosign"])
            .env("COSIGN_PASSWORD", PW),
        0,
    );
}

fn write_artifact(dir: &Path, name: &str) -> Vec<u8> {
    let data: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
    fs::write(dir.join(name), &data).unwrap();
    data
}

#[test]
fn keygen_writes_cosign_format_that_pynacl_decrypts() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    keygen(d);
    let key = fs::read_to_string(d.join("cosign.key")).unwrap();
    assert!(
        key.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n"),
        "{key}"
    );
    assert!(!key.contains(PW));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(d.join("cosign.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private key must be owner-only");
    }
    // Decrypt independently: scrypt (hashlib) + NaCl secretbox (PyNaCl), then
    // check the PKCS#8 key matches cosign.pub (cryptography).
    let script = r#"
import base64, hashlib, json, sys
import nacl.secret
from cryptography.hazmat.primitives import serialization
pem = open('cosign.key').read().strip().splitlines()
assert pem[0] == '-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----', pem[0]
doc = json.loads(base64.b64decode(''.join(pem[1:-1])))
assert doc['kdf']['name'] == 'scrypt' and doc['cipher']['name'] == 'nacl/secretbox', doc
p = doc['kdf']['params']
assert (p['N'], p['r'], p['p']) == (32768, 8, 1), p
salt = base64.b64decode(doc['kdf']['salt'])
key = hashlib.scrypt(sys.argv[1].encode(), salt=salt, n=p['N'], r=p['r'], p=p['p'], dklen=32, maxmem=64*1024*1024)
der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(doc['ciphertext']), base64.b64decode(doc['cipher']['nonce']))
priv = serialization.load_der_private_key(der, password=None)
assert priv.curve.name == 'secp256r1', priv.curve.name
pub = serialization.load_pem_public_key(open('cosign.pub','rb').read())
same = priv.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) == pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
assert same, 'cosign.pub does not match cosign.key'
print('ok')
"#;
    let r = python(script, &[PW], d);
    assert_eq!(r.code, 0, "{r:?}");

    // Refuses to overwrite; --force replaces.
    let r = expect(
        qg_sbom(d)
            .args(["keygen", "--output-key-prefix", "cosign"])
            .env("COSIGN_PASSWORD", PW),
        2,
    );
    assert!(r.stderr.contains("cosign.key: already exists"), "{r:?}");
    expect(
        qg_sbom(d)
            .args(["keygen", "--output-key-prefix", "cosign", "--force"])
            .env("COSIGN_PASSWORD", PW),
        0,
    );
}

#[test]
fn signatures_verify_with_openssl_and_a_flipped_byte_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    keygen(d);
    let mut data = write_artifact(d, "qg-linux");
    let r = expect(
        qg_sbom(d)
            .args([
                "sign",
                "qg-linux",
                "--key",
                "cosign.key",
                "--bundle",
                "qg-linux.sigstore.json",
            ])
            .env("COSIGN_PASSWORD", PW),
        0,
    );
    assert!(r.stdout.contains("qg-linux.sig"), "{r:?}");
    let sig_text = fs::read_to_string(d.join("qg-linux.sig")).unwrap();
    assert!(
        !sig_text.ends_with('\n'),
        "cosign writes no trailing newline"
    );
    fs::write(d.join("sig.der"), b64decode(&sig_text)).unwrap();

    let ok = openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "cosign.pub",
            "-signature",
            "sig.der",
            "qg-linux",
        ],
    );
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(ok.stdout.contains("Verified OK"), "{ok:?}");
    expect(
        qg_sbom(d).args([
            "verify",
            "qg-linux",
            "--key",
            "cosign.pub",
            "--signature",
            "qg-linux.sig",
        ]),
        0,
    );
    expect(
        qg_sbom(d).args([
            "verify",
            "qg-linux",
            "--key",
            "cosign.pub",
            "--bundle",
            "qg-linux.sigstore.json",
        ]),
        0,
    );
    let bundle: serde_json::Value =
        serde_json::from_slice(&fs::read(d.join("qg-linux.sigstore.json")).unwrap()).unwrap();
    assert_eq!(
        bundle["mediaType"],
        "application/vnd.dev.sigstore.bundle.v0.3+json"
    );
    assert_eq!(bundle["messageSignature"]["signature"], sig_text.as_str());

    // One flipped byte: openssl and we both reject it.
    data[1234] ^= 0x01;
    fs::write(d.join("qg-linux"), &data).unwrap();
    let bad = openssl(
        d,
        &[
            "dgst",
            "-sha256",
            "-verify",
            "cosign.pub",
            "-signature",
            "sig.der",
            "qg-linux",
        ],
    );
    assert_ne!(bad.code, 0, "{bad:?}");
    assert!(bad.stdout.contains("Verification failure"), "{bad:?}");
    let r = expect(
        qg_sbom(d).args([
            "verify",
            "qg-linux",
            "--key",
            "cosign.pub",
            "--signature",
            "qg-linux.sig",
        ]),
        1,
    );
    assert!(r.stderr.contains("verification failed"), "{r:?}");
    expect(
        qg_sbom(d).args([
            "verify",
            "qg-linux",
            "--key",
            "cosign.pub",
            "--bundle",
            "qg-linux.sigstore.json",
        ]),
        1,
    );
}

#[test]
fn openssl_signatures_verify_with_qg_sbom() {
    // The other direction: a key and (randomised, possibly high-S) signatures made by openssl.
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    write_artifact(d, "blob");
    let r = openssl(
        d,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            "ec.pem",
        ],
    );
    assert_eq!(r.code, 0, "{r:?}");
    let r = openssl(d, &["ec", "-in", "ec.pem", "-pubout", "-out", "ec.pub"]);
    assert_eq!(r.code, 0, "{r:?}");
    for i in 0..8 {
        let r = openssl(
            d,
            &[
                "dgst", "-sha256", "-sign", "ec.pem", "-out", "blob.der", "blob",
            ],
        );
        assert_eq!(r.code, 0, "{r:?}");
        let der = fs::read(d.join("blob.der")).unwrap();
        fs::write(d.join("blob.sig"), base64_encode(&der)).unwrap();
        let r = run(qg_sbom(d).args([
            "verify",
            "blob",
            "--key",
            "ec.pub",
            "--signature",
            "blob.sig",
        ]));
        assert_eq!(r.code, 0, "openssl signature #{i} rejected: {r:?}");
    }
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn keys_written_by_cosign_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let fx = fixtures().join("cosign");
    write_artifact(d, "blob");
    // Each key's public half, derived independently (PyNaCl + cryptography).
    let derive = r#"
import base64, hashlib, json, sys
import nacl.secret
from cryptography.hazmat.primitives import serialization
pem = open(sys.argv[1]).read().strip().splitlines()
doc = json.loads(base64.b64decode(''.join(pem[1:-1])))
p = doc['kdf']['params']
key = hashlib.scrypt(sys.argv[2].encode(), salt=base64.b64decode(doc['kdf']['salt']), n=p['N'], r=p['r'], p=p['p'], dklen=32, maxmem=128*1024*1024)
der = nacl.secret.SecretBox(key).decrypt(base64.b64decode(doc['ciphertext']), base64.b64decode(doc['cipher']['nonce']))
priv = serialization.load_der_private_key(der, password=None)
open(sys.argv[3],'wb').write(priv.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
"#;
    // Written by `cosign generate-key-pair` with an empty password (scrypt
    // N=65536, SIGSTORE label), and a key in the older COSIGN label with
    // password "password" (N=32768).
    for (file, password) in [
        ("cosign-generated-empty-password.key", ""),
        ("legacy-label-password.key", "password"),
    ] {
        let key = fx.join(file);
        let r = python(derive, &[key.to_str().unwrap(), password, "fx.pub"], d);
        assert_eq!(r.code, 0, "{file}: {r:?}");
        expect(
            qg_sbom(d)
                .args(["sign", "blob", "--key"])
                .arg(&key)
                .env("COSIGN_PASSWORD", password),
            0,
        );
        fs::write(
            d.join("blob.der"),
            b64decode(&fs::read_to_string(d.join("blob.sig")).unwrap()),
        )
        .unwrap();
        let ok = openssl(
            d,
            &[
                "dgst",
                "-sha256",
                "-verify",
                "fx.pub",
                "-signature",
                "blob.der",
                "blob",
            ],
        );
        assert!(ok.stdout.contains("Verified OK"), "{file}: {ok:?}");
        expect(
            qg_sbom(d).args([
                "verify",
                "blob",
                "--key",
                "fx.pub",
                "--signature",
                "blob.sig",
            ]),
            0,
        );
        // The wrong password is refused with exit 2.
        let r = expect(
            qg_sbom(d)
                .args(["sign", "blob", "--key"])
                .arg(&key)
                .env("COSIGN_PASSWORD", "not-it"),
            2,
        );
        assert!(r.stderr.contains("wrong password"), "{r:?}");
    }
}

#[test]
fn secrets_and_keys_fail_with_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    keygen(d);
    write_artifact(d, "blob");
    // No COSIGN_PASSWORD at all.
    let r = expect(qg_sbom(d).args(["sign", "blob", "--key", "cosign.key"]), 2);
    assert!(r.stderr.contains("COSIGN_PASSWORD is not set"), "{r:?}");
    // Wrong password: named key, no secret echoed.
    let r = expect(
        qg_sbom(d)
            .args(["sign", "blob", "--key", "cosign.key"])
            .env("COSIGN_PASSWORD", "hunter2"),
        2,
    );
    assert!(
        r.stderr
            .contains("cosign.key: cannot decrypt the key: wrong password"),
        "{r:?}"
    );
    assert!(!r.stderr.contains("hunter2"));
    assert!(!d.join("blob.sig").exists(), "a failed sign writes nothing");
    // Unreadable / wrong kind of key.
    let r = expect(
        qg_sbom(d)
            .args(["sign", "blob", "--key", "missing.key"])
            .env("COSIGN_PASSWORD", PW),
        2,
    );
    assert!(
        r.stderr
            .contains("missing.key: cannot read the private key"),
        "{r:?}"
    );
    let r = expect(
        qg_sbom(d).args([
            "verify",
            "blob",
            "--key",
            "cosign.key",
            "--signature",
            "blob.sig",
        ]),
        2,
    );
    assert!(r.stderr.contains("private key"), "{r:?}");
    // A password flag does not exist.
    expect(
        qg_sbom(d).args(["sign", "blob", "--key", "cosign.key", "--password", "x"]),
        2,
    );
}

#[test]
fn provenance_is_a_dsse_envelope_that_securesystemslib_verifies() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    keygen(d);
    write_artifact(d, "qg");
    write_artifact(d, "qg-sbom");
    fs::write(d.join("qg-sbom"), b"another binary").unwrap();
    let manifest = workspace_root().join("Cargo.toml");
    expect(
        qg_sbom(d)
            .args([
                "provenance",
                "--artifact",
                "qg",
                "--artifact",
                "qg-sbom",
                "--key",
                "cosign.key",
            ])
            .arg("--manifest-path")
            .arg(&manifest)
            .args([
                "--builder-id",
                "https://github.com/example/quadgit/.github/workflows/release.yml@refs/tags/v0.1.0",
            ])
            .args([
                "--git-commit",
                "0123456789abcdef0123456789abcdef01234567",
                "--git-ref",
                "refs/tags/v0.1.0",
            ])
            .args(["--repository", "https://github.com/example/quadgit"])
            .env("COSIGN_PASSWORD", PW),
        0,
    );
    let text = fs::read_to_string(d.join("provenance.intoto.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 1, "one envelope per line");

    let script = r#"
import base64, hashlib, json, sys
from securesystemslib.dsse import Envelope
from securesystemslib.signer import SSlibKey
env_dict = json.loads(open('provenance.intoto.jsonl').readline())
env = Envelope.from_dict(env_dict)
keyid = env.signatures[next(iter(env.signatures))].keyid
from cryptography.hazmat.primitives.serialization import load_pem_public_key
key = SSlibKey.from_crypto(load_pem_public_key(open('cosign.pub','rb').read()), keyid=keyid, scheme='ecdsa-sha2-nistp256')
env.verify([key], 1)  # raises unless the PAE signature verifies
stmt = json.loads(env.payload)
assert stmt['_type'] == 'https://in-toto.io/Statement/v1', stmt['_type']
assert stmt['predicateType'] == 'https://slsa.dev/provenance/v1'
subj = {s['name']: s['digest']['sha256'] for s in stmt['subject']}
for name in ('qg', 'qg-sbom'):
    assert subj[name] == hashlib.sha256(open(name,'rb').read()).hexdigest(), name
bd = stmt['predicate']['buildDefinition']
assert bd['buildType'].startswith('https://'), bd['buildType']
deps = bd['resolvedDependencies']
assert deps[0]['digest']['gitCommit'] == '0123456789abcdef0123456789abcdef01234567', deps[0]
assert deps[0]['uri'] == 'git+https://github.com/example/quadgit@refs/tags/v0.1.0', deps[0]
assert any(d.get('uri','').startswith('pkg:cargo/serde@') and len(d['digest']['sha256']) == 64 for d in deps)
assert bd['externalParameters']['source']['digest']['gitCommit'].startswith('0123')
rd = stmt['predicate']['runDetails']
assert rd['builder']['id'].endswith('release.yml@refs/tags/v0.1.0')
assert rd['metadata']['startedOn'].endswith('Z') and rd['metadata']['finishedOn'].endswith('Z')
# A tampered payload must not verify.
bad = dict(env_dict); bad['payload'] = base64.b64encode(env.payload.replace(b'qg-sbom', b'qg-evil')).decode()
try:
    Envelope.from_dict(bad).verify([key], 1)
    print('TAMPERED ENVELOPE VERIFIED'); sys.exit(1)
except Exception:
    pass
print('ok')
"#;
    let r = python(script, &[], d);
    assert_eq!(r.code, 0, "{r:?}");

    expect(
        qg_sbom(d).args([
            "verify-provenance",
            "--key",
            "cosign.pub",
            "--artifact",
            "qg",
            "--artifact",
            "qg-sbom",
        ]),
        0,
    );
    expect(
        qg_sbom(d).args([
            "verify-provenance",
            "--key",
            "cosign.pub",
            "--artifact",
            "qg",
            "--builder-id",
            "https://github.com/example/quadgit/.github/workflows/release.yml@refs/tags/v0.1.0",
        ]),
        0,
    );
    let r = expect(
        qg_sbom(d).args([
            "verify-provenance",
            "--key",
            "cosign.pub",
            "--artifact",
            "qg",
            "--builder-id",
            "https://evil",
        ]),
        1,
    );
    assert!(r.stderr.contains("builder id"), "{r:?}");
    // A changed artifact.
    fs::write(d.join("qg"), b"trojan").unwrap();
    let r = expect(
        qg_sbom(d).args([
            "verify-provenance",
            "--key",
            "cosign.pub",
            "--artifact",
            "qg",
        ]),
        1,
    );
    assert!(r.stderr.contains("no subject has its SHA-256"), "{r:?}");
    // Another key.
    expect(
        qg_sbom(d)
            .args(["keygen", "--output-key-prefix", "other"])
            .env("COSIGN_PASSWORD", PW),
        0,
    );
    let r = expect(
        qg_sbom(d).args([
            "verify-provenance",
            "--key",
            "other.pub",
            "--artifact",
            "qg-sbom",
        ]),
        1,
    );
    assert!(r.stderr.contains("no envelope signature verifies"), "{r:?}");
}

#[test]
fn commands_record_audit_events_when_a_store_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let data = d.join("store");
    // Not a store yet: exit 2 and nothing written.
    write_artifact(d, "blob");
    keygen(d);
    let r = expect(
        qg_sbom(d)
            .arg("--data")
            .arg(&data)
            .args(["sign", "blob", "--key", "cosign.key"])
            .env("COSIGN_PASSWORD", PW),
        2,
    );
    assert!(r.stderr.contains("no QuadGit store"), "{r:?}");
    assert!(!d.join("blob.sig").exists());

    qg_store::Store::init(&data).unwrap();
    expect(
        qg_sbom(d)
            .args(["sign", "blob", "--key", "cosign.key"])
            .env("QG_DATA", &data)
            .env("COSIGN_PASSWORD", PW),
        0,
    );
    fs::write(d.join("blob"), b"changed").unwrap();
    expect(
        qg_sbom(d)
            .args([
                "verify",
                "blob",
                "--key",
                "cosign.pub",
                "--signature",
                "blob.sig",
                "--data",
            ])
            .arg(&data),
        1,
    );
    let store = qg_store::Store::open(&data).unwrap();
    let entries = qg_store::audit::list(store.db(), None).unwrap();
    let sign = entries
        .iter()
        .find(|e| e.action == "sbom.sign")
        .expect("sbom.sign event");
    assert_eq!(sign.target.as_deref(), Some("blob"));
    assert_eq!(sign.detail["sha256"].as_str().map(str::len), Some(64));
    let verify = entries
        .iter()
        .find(|e| e.action == "sbom.verify")
        .expect("sbom.verify event");
    assert_eq!(verify.outcome, qg_store::audit::Outcome::Failure);
    qg_store::audit::verify(store.db()).expect("audit chain intact");
}
