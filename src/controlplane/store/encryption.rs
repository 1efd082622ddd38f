//! Encryption at rest of stored objects, configured with kube-apiserver's
//! `EncryptionConfiguration` file (`apiserver.config.k8s.io/v1`, `--encryption-provider-config`).
//!
//! Providers: `aescbc` (AES-CBC with PKCS#7 padding, random 16-byte IV, keys of 16/24/32 bytes),
//! `secretbox` (XSalsa20-Poly1305, random 24-byte nonce, 32-byte keys) and `identity`. For each
//! resource the first provider of its rule encrypts; every provider of the rule may decrypt
//! (matched by the stored prefix, `identity` matching anything), as upstream. Stored values are
//! `k8s:enc:<provider>:v1:<key name>:<iv or nonce><ciphertext>`, byte-compatible with
//! kube-apiserver's envelope for these providers. Keys are tried in order for a provider, so a
//! rotated-out key may stay listed after the new one.
use std::path::Path;

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use serde::Deserialize;

/// Errors loading the configuration or transforming a value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EncryptionError {
    #[error("reading encryption provider config {path}: {msg}")]
    Read { path: String, msg: String },
    #[error("invalid encryption provider config: {0}")]
    Config(String),
    #[error("no matching prefix found")]
    NoMatchingPrefix,
    #[error("decrypting with {provider} key {key:?}: {msg}")]
    Decrypt {
        provider: &'static str,
        key: String,
        msg: String,
    },
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: String,
    kind: String,
    #[serde(default)]
    resources: Vec<FileRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRule {
    resources: Vec<String>,
    providers: Vec<FileProvider>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileProvider {
    aescbc: Option<FileKeys>,
    secretbox: Option<FileKeys>,
    identity: Option<serde_json::Value>,
    aesgcm: Option<FileKeys>,
    kms: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKeys {
    keys: Vec<FileKey>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileKey {
    name: String,
    secret: String,
}

#[derive(Clone)]
enum Provider {
    AesCbc(Vec<(String, Vec<u8>)>),
    Secretbox(Vec<(String, [u8; 32])>),
    Identity,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        match self {
            Provider::AesCbc(k) => write!(f, "aescbc({} keys)", k.len()),
            Provider::Secretbox(k) => write!(f, "secretbox({} keys)", k.len()),
            Provider::Identity => write!(f, "identity"),
        }
    }
}

#[derive(Debug, Clone)]
struct Rule {
    /// Group-qualified plural resources (`secrets`, `leases.coordination.k8s.io`), `*.` (every
    /// core resource), `*.<group>` or `*.*`.
    resources: Vec<String>,
    providers: Vec<Provider>,
}

/// A parsed `EncryptionConfiguration`.
#[derive(Debug, Clone)]
pub struct EncryptionConfig {
    rules: Vec<Rule>,
}

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes192CbcEnc = cbc::Encryptor<aes::Aes192>;
type Aes256CbcEnc = cbc::Encryptor<aes::Aes256>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;
type Aes192CbcDec = cbc::Decryptor<aes::Aes192>;
type Aes256CbcDec = cbc::Decryptor<aes::Aes256>;

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // uuid v4 draws from the OS RNG (getrandom); 16 bytes per call.
    for chunk in b.chunks_mut(16) {
        let u = uuid::Uuid::new_v4();
        chunk.copy_from_slice(&u.as_bytes()[..chunk.len()]);
    }
    b
}

fn cfg_err(m: impl Into<String>) -> EncryptionError {
    EncryptionError::Config(m.into())
}

fn decode_keys(
    provider: &str,
    keys: &FileKeys,
    sizes: &[usize],
) -> Result<Vec<(String, Vec<u8>)>, EncryptionError> {
    if keys.keys.is_empty() {
        return Err(cfg_err(format!("{provider}: keys: Required value")));
    }
    let mut out = Vec::new();
    for k in &keys.keys {
        if k.name.is_empty() || k.name.contains(':') {
            return Err(cfg_err(format!(
                "{provider}: key name {:?} must be non-empty and may not contain ':'",
                k.name
            )));
        }
        let secret = base64::engine::general_purpose::STANDARD
            .decode(k.secret.trim())
            .map_err(|e| cfg_err(format!("{provider}: key {:?}: secret is not base64: {e}", k.name)))?;
        if !sizes.contains(&secret.len()) {
            return Err(cfg_err(format!(
                "{provider}: key {:?}: secret is {} bytes, must be one of {sizes:?}",
                k.name,
                secret.len()
            )));
        }
        out.push((k.name.clone(), secret));
    }
    Ok(out)
}

impl EncryptionConfig {
    /// Load the file given to `--encryption-provider-config` (YAML or JSON).
    pub fn load(path: &Path) -> Result<EncryptionConfig, EncryptionError> {
        let text = std::fs::read_to_string(path).map_err(|e| EncryptionError::Read {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<EncryptionConfig, EncryptionError> {
        let f: FileConfig = serde_saphyr::from_str(text).map_err(|e| cfg_err(e.to_string()))?;
        if f.kind != "EncryptionConfiguration" {
            return Err(cfg_err(format!("kind {:?}: must be EncryptionConfiguration", f.kind)));
        }
        if f.api_version != "apiserver.config.k8s.io/v1" {
            return Err(cfg_err(format!(
                "apiVersion {:?}: must be apiserver.config.k8s.io/v1",
                f.api_version
            )));
        }
        let mut rules = Vec::new();
        for r in f.resources {
            if r.resources.is_empty() {
                return Err(cfg_err("resources[].resources: Required value"));
            }
            if r.providers.is_empty() {
                return Err(cfg_err("resources[].providers: Required value"));
            }
            let mut providers = Vec::new();
            for p in &r.providers {
                let set = [
                    p.aescbc.is_some(),
                    p.secretbox.is_some(),
                    p.identity.is_some(),
                    p.aesgcm.is_some(),
                    p.kms.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if set != 1 {
                    return Err(cfg_err(
                        "each provider must set exactly one of aescbc, secretbox, identity",
                    ));
                }
                if p.aesgcm.is_some() || p.kms.is_some() {
                    return Err(cfg_err("providers aesgcm and kms are not supported by berth"));
                }
                if let Some(k) = &p.aescbc {
                    providers.push(Provider::AesCbc(decode_keys("aescbc", k, &[16, 24, 32])?));
                } else if let Some(k) = &p.secretbox {
                    let keys = decode_keys("secretbox", k, &[32])?
                        .into_iter()
                        .map(|(n, s)| (n, s.try_into().expect("length checked")))
                        .collect();
                    providers.push(Provider::Secretbox(keys));
                } else {
                    providers.push(Provider::Identity);
                }
            }
            let resources = r
                .resources
                .iter()
                .map(|s| s.strip_suffix(".").map(str::to_string).unwrap_or_else(|| s.clone()))
                .collect();
            rules.push(Rule {
                resources,
                providers,
            });
        }
        Ok(EncryptionConfig { rules })
    }

    fn rule(&self, resource: &str) -> Option<&Rule> {
        let group = resource.split_once('.').map(|(_, g)| g).unwrap_or("");
        self.rules.iter().find(|r| {
            r.resources.iter().any(|p| {
                p == resource
                    || p == "*.*"
                    || (p == "*" && group.is_empty())
                    || p.strip_prefix("*.").is_some_and(|g| g == group)
            })
        })
    }

    /// Whether values of `resource` are encrypted when written.
    pub fn encrypts(&self, resource: &str) -> bool {
        self.rule(resource)
            .is_some_and(|r| !matches!(r.providers.first(), Some(Provider::Identity) | None))
    }

    /// The stored form of `plain` for `resource` (first provider of its rule).
    pub fn encrypt(&self, resource: &str, plain: &[u8]) -> Vec<u8> {
        let Some(rule) = self.rule(resource) else {
            return plain.to_vec();
        };
        match rule.providers.first() {
            Some(Provider::AesCbc(keys)) => {
                let (name, key) = &keys[0];
                let iv = random::<16>();
                let ct = match key.len() {
                    16 => Aes128CbcEnc::new_from_slices(key, &iv)
                        .expect("key length checked")
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                    24 => Aes192CbcEnc::new_from_slices(key, &iv)
                        .expect("key length checked")
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                    _ => Aes256CbcEnc::new_from_slices(key, &iv)
                        .expect("key length checked")
                        .encrypt_padded_vec_mut::<Pkcs7>(plain),
                };
                let mut out = format!("k8s:enc:aescbc:v1:{name}:").into_bytes();
                out.extend_from_slice(&iv);
                out.extend_from_slice(&ct);
                out
            }
            Some(Provider::Secretbox(keys)) => {
                let (name, key) = &keys[0];
                let nonce = random::<24>();
                let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.into());
                let ct = cipher
                    .encrypt((&nonce).into(), plain)
                    .expect("secretbox sealing cannot fail");
                let mut out = format!("k8s:enc:secretbox:v1:{name}:").into_bytes();
                out.extend_from_slice(&nonce);
                out.extend_from_slice(&ct);
                out
            }
            Some(Provider::Identity) | None => plain.to_vec(),
        }
    }

    /// The plaintext of a stored value of `resource`.
    pub fn decrypt(&self, resource: &str, stored: &[u8]) -> Result<Vec<u8>, EncryptionError> {
        let Some(rule) = self.rule(resource) else {
            return Ok(stored.to_vec());
        };
        for p in &rule.providers {
            match p {
                Provider::AesCbc(keys) => {
                    for (name, key) in keys {
                        let prefix = format!("k8s:enc:aescbc:v1:{name}:");
                        let Some(rest) = stored.strip_prefix(prefix.as_bytes()) else {
                            continue;
                        };
                        let err = |msg: &str| EncryptionError::Decrypt {
                            provider: "aescbc",
                            key: name.clone(),
                            msg: msg.into(),
                        };
                        if rest.len() < 16 || (rest.len() - 16) % 16 != 0 {
                            return Err(err("the stored data is not a multiple of the block size"));
                        }
                        let (iv, ct) = rest.split_at(16);
                        let r = match key.len() {
                            16 => Aes128CbcDec::new_from_slices(key, iv)
                                .expect("sizes checked")
                                .decrypt_padded_vec_mut::<Pkcs7>(ct),
                            24 => Aes192CbcDec::new_from_slices(key, iv)
                                .expect("sizes checked")
                                .decrypt_padded_vec_mut::<Pkcs7>(ct),
                            _ => Aes256CbcDec::new_from_slices(key, iv)
                                .expect("sizes checked")
                                .decrypt_padded_vec_mut::<Pkcs7>(ct),
                        };
                        return r.map_err(|_| err("invalid padding on input"));
                    }
                }
                Provider::Secretbox(keys) => {
                    for (name, key) in keys {
                        let prefix = format!("k8s:enc:secretbox:v1:{name}:");
                        let Some(rest) = stored.strip_prefix(prefix.as_bytes()) else {
                            continue;
                        };
                        let err = |msg: &str| EncryptionError::Decrypt {
                            provider: "secretbox",
                            key: name.clone(),
                            msg: msg.into(),
                        };
                        if rest.len() < 24 {
                            return Err(err("the stored data was shorter than the required size"));
                        }
                        let (nonce, ct) = rest.split_at(24);
                        let cipher = crypto_secretbox::XSalsa20Poly1305::new(key.into());
                        return cipher
                            .decrypt(nonce.into(), ct)
                            .map_err(|_| err("output array was not large enough for encryption"));
                    }
                }
                Provider::Identity => {
                    if stored.starts_with(b"k8s:enc:") {
                        // identity must not hand out ciphertext of another provider as data.
                        continue;
                    }
                    return Ok(stored.to_vec());
                }
            }
        }
        Err(EncryptionError::NoMatchingPrefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY32: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const KEY16: &str = "MDEyMzQ1Njc4OWFiY2RlZg=="; // 16 bytes

    fn cfg(providers: &str) -> EncryptionConfig {
        EncryptionConfig::parse(&format!(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources:\n      - secrets\n    providers:\n{providers}"
        ))
        .unwrap()
    }

    #[test]
    fn aescbc_roundtrip_with_upstream_prefix() {
        let c = cfg(&format!(
            "      - aescbc:\n          keys:\n            - name: key1\n              secret: {KEY32}\n      - identity: {{}}\n"
        ));
        assert!(c.encrypts("secrets"));
        assert!(!c.encrypts("configmaps"));
        let plain = br#"{"data":{"password":"aHVudGVyMg=="}}"#;
        let stored = c.encrypt("secrets", plain);
        assert!(stored.starts_with(b"k8s:enc:aescbc:v1:key1:"));
        assert!(!stored.windows(8).any(|w| w == b"password"));
        assert_eq!((stored.len() - 23 - 16) % 16, 0);
        assert_eq!(c.decrypt("secrets", &stored).unwrap(), plain);
        // identity (listed) still reads values written before encryption was turned on.
        assert_eq!(c.decrypt("secrets", plain).unwrap(), plain);
        // Other resources pass through.
        assert_eq!(c.encrypt("configmaps", plain), plain);
        // Two encryptions differ (random IV).
        assert_ne!(c.encrypt("secrets", plain), stored);
        // Tampered padding is an error, not a panic.
        let mut bad = stored.clone();
        let n = bad.len();
        bad[n - 1] ^= 0xff;
        assert!(c.decrypt("secrets", &bad).is_err());
        assert!(c.decrypt("secrets", b"k8s:enc:aescbc:v1:key1:short").is_err());
    }

    #[test]
    fn secretbox_and_key_rotation() {
        let old = cfg(&format!(
            "      - secretbox:\n          keys:\n            - name: old\n              secret: {KEY32}\n"
        ));
        let stored = old.encrypt("secrets", b"{}");
        assert!(stored.starts_with(b"k8s:enc:secretbox:v1:old:"));
        assert_eq!(old.decrypt("secrets", &stored).unwrap(), b"{}");
        // Without identity, plaintext is not accepted.
        assert_eq!(
            old.decrypt("secrets", b"{}").unwrap_err(),
            EncryptionError::NoMatchingPrefix
        );
        // New first provider encrypts; the old one still decrypts.
        let rotated = cfg(&format!(
            "      - aescbc:\n          keys:\n            - name: new\n              secret: {KEY16}\n      - secretbox:\n          keys:\n            - name: old\n              secret: {KEY32}\n"
        ));
        assert_eq!(rotated.decrypt("secrets", &stored).unwrap(), b"{}");
        assert!(rotated.encrypt("secrets", b"{}").starts_with(b"k8s:enc:aescbc:v1:new:"));
        let mut tampered = stored.clone();
        let n = tampered.len();
        tampered[n - 1] ^= 1;
        assert!(old.decrypt("secrets", &tampered).is_err());
    }

    #[test]
    fn config_errors() {
        let bad = |s: &str| EncryptionConfig::parse(s).unwrap_err();
        assert!(matches!(
            bad("apiVersion: v1\nkind: EncryptionConfiguration\n"),
            EncryptionError::Config(_)
        ));
        let base = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n";
        assert!(matches!(
            bad(&format!("{base}      - aescbc:\n          keys:\n            - name: k\n              secret: c2hvcnQ=\n")),
            EncryptionError::Config(m) if m.contains("bytes")
        ));
        assert!(matches!(
            bad(&format!("{base}      - aescbc:\n          keys: []\n")),
            EncryptionError::Config(_)
        ));
        // JSON is YAML too.
        let json = r#"{"apiVersion":"apiserver.config.k8s.io/v1","kind":"EncryptionConfiguration","resources":[{"resources":["*.*"],"providers":[{"identity":{}}]}]}"#;
        let c = EncryptionConfig::parse(json).unwrap();
        assert!(!c.encrypts("secrets"));
        assert_eq!(c.decrypt("secrets", b"{}").unwrap(), b"{}");
    }
}
