//! Secrets at rest: AES-256-GCM with a key from config (`CAREPAY_SECRET_KEY`) or from a key
//! file carepay generates (0600) next to the SQLite database. Every ciphertext is bound to
//! what it belongs to (`{endpoint id}/{field}` as associated data), so a sealed value copied
//! into another row or column does not open.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom as _, SystemRandom};

/// Marks the sealing scheme, so a later one can sit beside it.
const SEALED_PREFIX: &str = "gcm1:";
const KEY_BYTES: usize = 32;
/// HKDF salt of the digest key; changing it changes every stored digest.
const DIGEST_KEY_SALT: &[u8] = b"carepay digest key v1";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the secret key must be the base64 of exactly 32 bytes")]
    BadKey,
    #[error("the system random generator failed")]
    Random,
    #[error("a sealed secret does not open with this key (wrong key, or tampered)")]
    Unsealable,
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
}

/// Seals and opens secrets. Cloning shares the key; `Debug` never shows it.
#[derive(Clone)]
pub struct SecretBox {
    key: Arc<LessSafeKey>,
    /// HMAC-SHA256 key derived from the same secret (HKDF), for keyed digests of personal data
    /// that must be compared without being kept in clear (citizen ID numbers).
    digest_key: Arc<ring::hmac::Key>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<redacted>)")
    }
}

impl SecretBox {
    fn from_key_bytes(bytes: &[u8]) -> Result<SecretBox, SecretError> {
        if bytes.len() != KEY_BYTES {
            return Err(SecretError::BadKey);
        }
        let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::BadKey)?;
        // A separate key for digests: the same bytes must never serve two algorithms.
        let digest_key: ring::hmac::Key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, DIGEST_KEY_SALT)
            .extract(bytes)
            .expand(&[b"keyed digest"], ring::hmac::HMAC_SHA256)
            .map_err(|_| SecretError::BadKey)?
            .into();
        Ok(SecretBox { key: Arc::new(LessSafeKey::new(key)), digest_key: Arc::new(digest_key) })
    }

    /// A key given as base64 (the `CAREPAY_SECRET_KEY` form).
    pub fn from_base64(encoded: &str) -> Result<SecretBox, SecretError> {
        let bytes = BASE64.decode(encoded.trim()).map_err(|_| SecretError::BadKey)?;
        SecretBox::from_key_bytes(&bytes)
    }

    /// A random key that lives as long as the process: for tools and tests that never need
    /// to open what an earlier process sealed.
    pub fn ephemeral() -> SecretBox {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new().fill(&mut bytes).expect("the system random generator works");
        SecretBox::from_key_bytes(&bytes).expect("32 random bytes are an AES-256 key")
    }

    /// The key in `path`, creating the file (mode 0600) with a new random key when it does not
    /// exist. Returns whether it was created, so the caller can say so.
    pub fn from_key_file(path: &Path) -> Result<(SecretBox, bool), SecretError> {
        let file_error = |source| SecretError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(encoded) => Ok((SecretBox::from_base64(&encoded)?, false)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_BYTES];
                SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
                let encoded = BASE64.encode(bytes);
                write_private_file(path, &encoded).map_err(file_error)?;
                Ok((SecretBox::from_key_bytes(&bytes)?, true))
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// `gcm1:<base64(nonce || ciphertext || tag)>`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SecretError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SecretError::Unsealable)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}", BASE64.encode(sealed)))
    }

    /// Hex HMAC-SHA256 of `data` under the digest key, separated by `purpose`: equal inputs
    /// give equal digests (duplicate checks), and without the key a digest cannot be tested
    /// against guesses (an 18-character ID number has few enough values to enumerate).
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> String {
        let mut context = ring::hmac::Context::with_key(&self.digest_key);
        context.update(purpose.as_bytes());
        context.update(b"\0");
        context.update(data);
        hex::encode(context.sign().as_ref())
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SecretError> {
        let encoded = sealed.strip_prefix(SEALED_PREFIX).ok_or(SecretError::Unsealable)?;
        let raw = BASE64.decode(encoded).map_err(|_| SecretError::Unsealable)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Unsealable);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Unsealable)?;
        let mut in_out = ciphertext.to_vec();
        let plaintext = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SecretError::Unsealable)?;
        Ok(plaintext.to_vec())
    }
}

#[cfg(unix)]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    // create_new: never overwrite a key another process just wrote.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()
}

#[cfg(not(unix))]
fn write_private_file(path: &Path, contents: &str) -> std::io::Result<()> {
    std::fs::write(path, contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_digests_are_stable_per_key_and_purpose() {
        let key = BASE64.encode([7u8; KEY_BYTES]);
        let (a, b) = (SecretBox::from_base64(&key).unwrap(), SecretBox::from_base64(&key).unwrap());
        assert_eq!(a.keyed_digest("citizen_id", b"x"), b.keyed_digest("citizen_id", b"x"));
        assert_ne!(a.keyed_digest("citizen_id", b"x"), a.keyed_digest("other", b"x"));
        assert_ne!(a.keyed_digest("citizen_id", b"x"), SecretBox::ephemeral().keyed_digest("citizen_id", b"x"));
        assert_eq!(a.keyed_digest("citizen_id", b"x").len(), 64);
    }

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_context() {
        let secrets = SecretBox::ephemeral();
        let sealed = secrets.seal(b"whsec_abc", "ep_1/secret").unwrap();
        assert!(!sealed.contains("whsec"));
        assert_eq!(secrets.open(&sealed, "ep_1/secret").unwrap(), b"whsec_abc");
        assert!(secrets.open(&sealed, "ep_2/secret").is_err(), "moved to another row");
        assert!(SecretBox::ephemeral().open(&sealed, "ep_1/secret").is_err(), "another key");
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push('A');
        assert!(secrets.open(&tampered, "ep_1/secret").is_err());
    }

    #[test]
    fn a_key_file_is_created_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("carepay.key");
        let (first, created) = SecretBox::from_key_file(&path).unwrap();
        assert!(created);
        let (second, created) = SecretBox::from_key_file(&path).unwrap();
        assert!(!created);
        let sealed = first.seal(b"x", "c").unwrap();
        assert_eq!(second.open(&sealed, "c").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(format!("{first:?}").contains("redacted"));
        assert!(matches!(SecretBox::from_base64("c2hvcnQ="), Err(SecretError::BadKey)));
    }
}
