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

/// Marks the sealing scheme, so a later one can sit beside it. A sealed value is
/// `gcm1:<key id>:<base64>`; values sealed before keys had ids are `gcm1:<base64>` and are
/// opened by trying each configured key (AES-GCM refuses a wrong key, so a try is a test).
const SEALED_PREFIX: &str = "gcm1:";
const KEY_BYTES: usize = 32;
/// HKDF salt of the digest key; changing it changes every stored digest.
const DIGEST_KEY_SALT: &[u8] = b"carepay digest key v1";
/// HKDF salt of the keys derived for other purposes (the audit chain's MAC key and its
/// checkpoint signing key); changing it changes every key derived from it.
const DERIVED_KEY_SALT: &[u8] = b"carepay derived keys v1";
/// The id of a key given without one (a key file or `CAREPAY_SECRET_KEY` from before keys had ids).
pub const UNNAMED_KEY_ID: &str = "k0";
/// Longest key id; ids are letters, digits, `-` and `_`.
const MAX_KEY_ID_LEN: usize = 32;
/// Most keys one configuration may list (the current one and those it replaced).
const MAX_KEYS: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a secret key is the base64 of exactly 32 bytes, optionally after its id (`k2:BASE64`)")]
    BadKey,
    #[error("key ids are 1 to 32 letters, digits, '-' or '_', each listed once, at most 16 keys")]
    BadKeyId,
    #[error("the system random generator failed")]
    Random,
    #[error("a sealed secret does not open with these keys (unknown key id, wrong key, or tampered)")]
    Unsealable,
    #[error("cannot read or create the key file {path}: {source}")]
    KeyFile { path: String, source: std::io::Error },
}

struct SealingKey {
    id: String,
    key: LessSafeKey,
}

/// Seals and opens secrets. Cloning shares the keys; `Debug` shows key ids, never keys.
///
/// Several keys may be configured: the first seals, all open (rotation: add a new key in
/// front, run `carepay keys reseal`, then drop the old one). The keyed digest of personal data
/// is derived from the last key listed, the oldest: digests are compared across all stored
/// rows, so their key cannot change by re-sealing.
#[derive(Clone)]
pub struct SecretBox {
    /// The first is the current key.
    keys: Arc<Vec<SealingKey>>,
    /// HMAC-SHA256 key derived from the oldest key (HKDF), for keyed digests of personal data
    /// that must be compared without being kept in clear (citizen ID numbers).
    digest_key: Arc<ring::hmac::Key>,
    /// HKDF pseudo-random key from the oldest key, expanded per purpose by
    /// [`SecretBox::derived_key`] (like the digest key, it must not change with rotation).
    derived: Arc<ring::hkdf::Prk>,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        write!(f, "SecretBox(keys {ids:?}, <redacted>)")
    }
}

fn valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

impl SecretBox {
    fn from_keys(keys: Vec<(String, Vec<u8>)>) -> Result<SecretBox, SecretError> {
        if keys.is_empty() {
            return Err(SecretError::BadKey);
        }
        if keys.len() > MAX_KEYS {
            return Err(SecretError::BadKeyId);
        }
        let mut sealing = Vec::with_capacity(keys.len());
        for (id, bytes) in &keys {
            if !valid_key_id(id) || sealing.iter().any(|k: &SealingKey| &k.id == id) {
                return Err(SecretError::BadKeyId);
            }
            if bytes.len() != KEY_BYTES {
                return Err(SecretError::BadKey);
            }
            let key = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SecretError::BadKey)?;
            sealing.push(SealingKey { id: id.clone(), key: LessSafeKey::new(key) });
        }
        let oldest = &keys[keys.len() - 1].1;
        // A separate key for digests: the same bytes must never serve two algorithms.
        let digest_key: ring::hmac::Key = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, DIGEST_KEY_SALT)
            .extract(oldest)
            .expand(&[b"keyed digest"], ring::hmac::HMAC_SHA256)
            .map_err(|_| SecretError::BadKey)?
            .into();
        let derived = ring::hkdf::Salt::new(ring::hkdf::HKDF_SHA256, DERIVED_KEY_SALT).extract(oldest);
        Ok(SecretBox { keys: Arc::new(sealing), digest_key: Arc::new(digest_key), derived: Arc::new(derived) })
    }

    /// Keys as configured: `[id:]BASE64` entries separated by commas or lines, the current
    /// key first; blank lines and `#` comments are skipped. An entry without an id is
    /// [`UNNAMED_KEY_ID`].
    pub fn from_key_list(text: &str) -> Result<SecretBox, SecretError> {
        let mut keys = Vec::new();
        for entry in text.lines().filter(|line| !line.trim_start().starts_with('#')).flat_map(|line| line.split(',')) {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (id, encoded) = entry.split_once(':').unwrap_or((UNNAMED_KEY_ID, entry));
            let bytes = BASE64.decode(encoded.trim()).map_err(|_| SecretError::BadKey)?;
            keys.push((id.trim().to_owned(), bytes));
        }
        SecretBox::from_keys(keys)
    }

    /// A single key given as base64, without an id.
    pub fn from_base64(encoded: &str) -> Result<SecretBox, SecretError> {
        SecretBox::from_key_list(encoded)
    }

    /// A random key that lives as long as the process: for tools and tests that never need
    /// to open what an earlier process sealed.
    pub fn ephemeral() -> SecretBox {
        let (id, bytes) = new_key("ephemeral").expect("the system random generator works");
        SecretBox::from_keys(vec![(id, bytes)]).expect("32 random bytes are an AES-256 key")
    }

    /// The keys in `path`, creating the file (mode 0600) with a new random key when it does
    /// not exist. Returns whether it was created, so the caller can say so.
    pub fn from_key_file(path: &Path) -> Result<(SecretBox, bool), SecretError> {
        let file_error = |source| SecretError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((SecretBox::from_key_list(&text)?, false)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let line = generate_key_line("k1")?;
                let text = format!(
                    "# carepay secret keys, one `id:base64` per line; the first seals, all open.\n\
                     # Rotate: put a new line first (carepay keys generate), restart, run carepay keys reseal.\n{line}\n"
                );
                write_private_file(path, &text).map_err(file_error)?;
                Ok((SecretBox::from_key_list(&text)?, true))
            }
            Err(error) => Err(file_error(error)),
        }
    }

    /// The id of the key that seals new values.
    pub fn current_key_id(&self) -> &str {
        &self.keys[0].id
    }

    /// What every value sealed under the current key starts with.
    pub fn current_prefix(&self) -> String {
        format!("{SEALED_PREFIX}{}:", self.current_key_id())
    }

    /// `gcm1:<key id>:<base64(nonce || ciphertext || tag)>`, bound to `context`.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<String, SecretError> {
        let current = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).map_err(|_| SecretError::Random)?;
        let mut in_out = plaintext.to_vec();
        current
            .key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| SecretError::Unsealable)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&in_out);
        Ok(format!("{SEALED_PREFIX}{}:{}", current.id, BASE64.encode(sealed)))
    }

    /// Hex HMAC-SHA256 of `data` under the digest key, separated by `purpose`: equal inputs
    /// give equal digests (duplicate checks), and without the key a digest cannot be tested
    /// against guesses (an 18-character ID number has few enough values to enumerate).
    pub fn keyed_digest(&self, purpose: &str, data: &[u8]) -> String {
        hex::encode(self.keyed_digest_bytes(purpose, data))
    }

    /// [`SecretBox::keyed_digest`] as its 32 bytes, for callers that compare or store digests
    /// in bulk and would only decode the hex again.
    pub fn keyed_digest_bytes(&self, purpose: &str, data: &[u8]) -> [u8; 32] {
        let mut context = ring::hmac::Context::with_key(&self.digest_key);
        context.update(purpose.as_bytes());
        context.update(b"\0");
        context.update(data);
        context.sign().as_ref().try_into().expect("HMAC-SHA256 is 32 bytes")
    }

    /// 32 bytes of key material for `purpose` (HKDF-SHA256 from the oldest key): distinct
    /// purposes get unrelated keys, and none of them is a sealing key.
    pub fn derived_key(&self, purpose: &str) -> [u8; KEY_BYTES] {
        struct Len;
        impl ring::hkdf::KeyType for Len {
            fn len(&self) -> usize {
                KEY_BYTES
            }
        }
        let mut out = [0u8; KEY_BYTES];
        let info = [purpose.as_bytes()];
        self.derived
            .expand(&info, Len)
            .and_then(|okm| okm.fill(&mut out))
            .expect("32 bytes are within HKDF-SHA256's output limit");
        out
    }

    pub fn open(&self, sealed: &str, context: &str) -> Result<Vec<u8>, SecretError> {
        let rest = sealed.strip_prefix(SEALED_PREFIX).ok_or(SecretError::Unsealable)?;
        // Base64 has no ':', so a colon separates a key id.
        let (candidates, encoded): (Vec<&SealingKey>, &str) = match rest.split_once(':') {
            Some((id, encoded)) => (self.keys.iter().filter(|k| k.id == id).collect(), encoded),
            None => (self.keys.iter().collect(), rest),
        };
        let raw = BASE64.decode(encoded).map_err(|_| SecretError::Unsealable)?;
        if raw.len() < NONCE_LEN {
            return Err(SecretError::Unsealable);
        }
        let (nonce, ciphertext) = raw.split_at(NONCE_LEN);
        for candidate in candidates {
            let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SecretError::Unsealable)?;
            let mut in_out = ciphertext.to_vec();
            if let Ok(plaintext) = candidate.key.open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out) {
                return Ok(plaintext.to_vec());
            }
        }
        Err(SecretError::Unsealable)
    }
}

fn new_key(id: &str) -> Result<(String, Vec<u8>), SecretError> {
    let mut bytes = vec![0u8; KEY_BYTES];
    SystemRandom::new().fill(&mut bytes).map_err(|_| SecretError::Random)?;
    Ok((id.to_owned(), bytes))
}

/// A fresh key as a key-list entry, `id:BASE64` (what `carepay keys generate` prints).
pub fn generate_key_line(id: &str) -> Result<String, SecretError> {
    if !valid_key_id(id) {
        return Err(SecretError::BadKeyId);
    }
    let (id, bytes) = new_key(id)?;
    Ok(format!("{id}:{}", BASE64.encode(bytes)))
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
        assert_eq!(a.keyed_digest("citizen_id", b"x"), hex::encode(a.keyed_digest_bytes("citizen_id", b"x")));
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

    #[test]
    fn an_old_key_still_opens_while_the_first_one_seals_and_digests_stay_with_the_oldest() {
        let old = BASE64.encode([1u8; KEY_BYTES]);
        let new = BASE64.encode([2u8; KEY_BYTES]);
        let before = SecretBox::from_base64(&old).unwrap();
        let after = SecretBox::from_key_list(&format!("k2:{new}\n# the first key\n{old}")).unwrap();
        assert_eq!(before.current_key_id(), UNNAMED_KEY_ID);
        assert_eq!(after.current_key_id(), "k2");
        let sealed_before = before.seal(b"x", "c").unwrap();
        assert!(sealed_before.starts_with("gcm1:k0:"));
        assert_eq!(after.open(&sealed_before, "c").unwrap(), b"x");
        let sealed_after = after.seal(b"y", "c").unwrap();
        assert!(sealed_after.starts_with(&after.current_prefix()));
        assert!(before.open(&sealed_after, "c").is_err(), "the old configuration lacks the new key");
        assert_eq!(before.keyed_digest("p", b"z"), after.keyed_digest("p", b"z"));
        assert_eq!(before.derived_key("audit"), after.derived_key("audit"), "derived keys stay with the oldest key");
        assert_ne!(before.derived_key("audit"), before.derived_key("other"));
        assert_ne!(before.derived_key("audit"), SecretBox::ephemeral().derived_key("audit"));

        // A value sealed before keys had ids opens with whichever key sealed it.
        let legacy = format!("gcm1:{}", sealed_before.strip_prefix("gcm1:k0:").unwrap());
        assert_eq!(after.open(&legacy, "c").unwrap(), b"x");
        assert!(SecretBox::ephemeral().open(&legacy, "c").is_err());

        assert!(matches!(SecretBox::from_key_list(&format!("a:{old},a:{new}")), Err(SecretError::BadKeyId)));
        assert!(matches!(SecretBox::from_key_list(&format!("bad id:{old}")), Err(SecretError::BadKeyId)));
        assert!(matches!(SecretBox::from_key_list(""), Err(SecretError::BadKey)));
        assert!(generate_key_line("k3").unwrap().starts_with("k3:"));
    }
}
