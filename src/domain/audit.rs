//! The audit chain's arithmetic, pure: how a record is hashed (by recipe), the keys that make
//! the chain unforgeable without the key file, and signed checkpoints of its head.
//!
//! Recipe 1 (records written before the chain was keyed) is a public SHA-256 over most
//! columns: anyone with write access to the database could recompute it. Recipe 2 is
//! HMAC-SHA256 under a key derived from the key file over every column, `region_path`
//! included, so a record cannot be edited, moved to another scope or re-hashed by someone
//! who has only the database. A checkpoint is the head `(seq, hash)` signed with an Ed25519
//! key derived from the same key file: published outside the database (log, export), it
//! makes removing the newest records (and moving `audit_head` back) detectable.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::KeyPair as _;

/// The hash a first record follows.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// The action of the record that vouches for recipe-1 records (see [`Recipe::Unkeyed`]).
pub const LEGACY_SEALED_ACTION: &str = "audit.legacy_sealed";

/// Purposes of the keys derived from the key file (changing one changes that key).
const CHAIN_KEY_PURPOSE: &str = "audit chain mac v2";
const CHECKPOINT_KEY_PURPOSE: &str = "audit checkpoint ed25519 v1";
/// Domain separation: a record's MAC input and a checkpoint's signed bytes never coincide.
const RECORD_TAG: &[u8] = b"carepay audit record v2\0";
const CHECKPOINT_TAG: &[u8] = b"carepay audit checkpoint v1\0";

/// A stored audit record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditRecord {
    pub seq: i64,
    pub at_ms: i64,
    pub actor: String,
    pub actor_role: String,
    pub actor_region_id: Option<String>,
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    /// The object's region path: which auditors' scope the record lies in.
    pub region_path: Option<String>,
    pub summary: String,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
    /// How `hash` was computed ([`Recipe::number`]).
    pub recipe: i64,
}

/// How a record's hash is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recipe {
    /// 1: SHA-256 of the length-prefixed columns except `region_path`, an absent value hashed
    /// as empty. Only records written before the chain was keyed have it; they count once a
    /// keyed record seals them ([`LEGACY_SEALED_ACTION`]).
    Unkeyed,
    /// 2: HMAC-SHA256 under the chain key over every column, absent and empty told apart.
    Keyed,
}

impl Recipe {
    pub fn from_number(number: i64) -> Option<Recipe> {
        match number {
            1 => Some(Recipe::Unkeyed),
            2 => Some(Recipe::Keyed),
            _ => None,
        }
    }

    pub fn number(self) -> i64 {
        match self {
            Recipe::Unkeyed => 1,
            Recipe::Keyed => 2,
        }
    }
}

/// The chain's MAC key and the checkpoint signing key, both derived from the key file. `Debug`
/// shows the public key only.
pub struct AuditKeys {
    chain: ring::hmac::Key,
    signing: ring::signature::Ed25519KeyPair,
}

impl std::fmt::Debug for AuditKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKeys(checkpoint key {}, <redacted>)", self.public_key())
    }
}

impl AuditKeys {
    /// The keys from the secret box's derived key material: every instance with the same key
    /// file (or `CAREPAY_SECRET_KEY`) has the same audit keys.
    pub fn derive(derived_key: impl Fn(&str) -> [u8; 32]) -> AuditKeys {
        let chain = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &derived_key(CHAIN_KEY_PURPOSE));
        let signing = ring::signature::Ed25519KeyPair::from_seed_unchecked(&derived_key(CHECKPOINT_KEY_PURPOSE))
            .expect("any 32 bytes are an Ed25519 seed");
        AuditKeys { chain, signing }
    }

    /// The checkpoint verification key, base64url (no padding).
    pub fn public_key(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.public_key().as_ref())
    }

    /// The hash of `record` by `recipe` (hex); `record.hash` and `record.recipe` are not read.
    pub fn record_hash(&self, record: &AuditRecord, recipe: Recipe) -> String {
        match recipe {
            Recipe::Unkeyed => unkeyed_hash(record),
            Recipe::Keyed => {
                let mut context = ring::hmac::Context::with_key(&self.chain);
                context.update(RECORD_TAG);
                keyed_fields(record, |bytes| context.update(bytes));
                hex::encode(context.sign().as_ref())
            }
        }
    }

    /// Whether `record.hash` follows from its content by its own recipe.
    pub fn hash_holds(&self, record: &AuditRecord) -> bool {
        Recipe::from_number(record.recipe).is_some_and(|recipe| {
            let expected = self.record_hash(record, recipe);
            // Every byte compared, so how long a check takes says nothing of where it differs.
            expected.len() == record.hash.len()
                && expected.bytes().zip(record.hash.bytes()).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
        })
    }

    pub fn sign(&self, head: Checkpoint) -> SignedCheckpoint {
        let signature = self.signing.sign(&checkpoint_message(&head));
        SignedCheckpoint { checkpoint: head, signature: signature.as_ref().to_vec() }
    }

    /// Whether `signed` was signed with this key.
    pub fn signed_here(&self, signed: &SignedCheckpoint) -> bool {
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, self.signing.public_key().as_ref());
        public.verify(&checkpoint_message(&signed.checkpoint), &signed.signature).is_ok()
    }
}

/// Recipe 1, kept as it was so that records written with it still verify.
fn unkeyed_hash(record: &AuditRecord) -> String {
    let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
    let fields = [
        record.prev_hash.as_str(),
        &record.seq.to_string(),
        &record.at_ms.to_string(),
        &record.actor,
        &record.actor_role,
        record.actor_region_id.as_deref().unwrap_or(""),
        &record.action,
        &record.object_kind,
        &record.object_id,
        &record.summary,
        record.request_id.as_deref().unwrap_or(""),
    ];
    for field in fields {
        // Length-prefixed, so no two different records hash the same bytes.
        hasher.update(&(field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    hex::encode(hasher.finish())
}

/// Every column but the hash itself, each length-prefixed; an optional one is preceded by
/// whether it is present, so absent and empty differ.
fn keyed_fields(record: &AuditRecord, mut update: impl FnMut(&[u8])) {
    let mut field = |value: Option<&str>| match value {
        None => update(&[0]),
        Some(value) => {
            update(&[1]);
            update(&(value.len() as u64).to_be_bytes());
            update(value.as_bytes());
        }
    };
    field(Some(&record.prev_hash));
    field(Some(&record.seq.to_string()));
    field(Some(&record.at_ms.to_string()));
    field(Some(&record.actor));
    field(Some(&record.actor_role));
    field(record.actor_region_id.as_deref());
    field(Some(&record.action));
    field(Some(&record.object_kind));
    field(Some(&record.object_id));
    field(record.region_path.as_deref());
    field(Some(&record.summary));
    field(record.request_id.as_deref());
}

fn checkpoint_message(head: &Checkpoint) -> Vec<u8> {
    let mut message = CHECKPOINT_TAG.to_vec();
    message.extend_from_slice(head.to_string().as_bytes());
    message
}

/// The chain's head at some moment: the newest record's number and hash (`0` and
/// [`GENESIS_HASH`] before the first record). Written `SEQ:HASH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub seq: i64,
    pub hash: String,
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

/// A checkpoint with carepay's signature, written `SEQ:HASH:SIGNATURE` (base64url).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedCheckpoint {
    pub checkpoint: Checkpoint,
    signature: Vec<u8>,
}

impl std::fmt::Display for SignedCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.checkpoint, URL_SAFE_NO_PAD.encode(&self.signature))
    }
}

/// A checkpoint as someone kept it: `SEQ:HASH`, or `SEQ:HASH:SIGNATURE` as carepay publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GivenCheckpoint {
    Plain(Checkpoint),
    Signed(SignedCheckpoint),
}

impl GivenCheckpoint {
    /// The written form: a record number (within what `i64` holds), 64 lowercase hex digits,
    /// and optionally a 64-byte signature in unpadded base64url (86 characters, the last
    /// carrying two bits and four zero bits).
    pub const PATTERN: &'static str = "^(0|[1-9][0-9]{0,17}):[0-9a-f]{64}(:[A-Za-z0-9_-]{85}[AQgw])?$";

    pub fn parse(text: &str) -> Result<GivenCheckpoint, &'static str> {
        const SHAPE: &str = "a checkpoint is SEQ:HASH or SEQ:HASH:SIGNATURE as carepay publishes it";
        let mut parts = text.split(':');
        let (Some(seq), Some(hash)) = (parts.next(), parts.next()) else { return Err(SHAPE) };
        let signature = parts.next();
        if parts.next().is_some() {
            return Err(SHAPE);
        }
        let seq = match seq.parse::<i64>() {
            // Canonical digits only, so one checkpoint has one spelling.
            Ok(parsed) if parsed >= 0 && parsed.to_string() == seq => parsed,
            _ => return Err("a checkpoint's SEQ is a record number, 0 or more"),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err("a checkpoint's HASH is 64 lowercase hexadecimal digits");
        }
        let checkpoint = Checkpoint { seq, hash: hash.to_owned() };
        match signature {
            None => Ok(GivenCheckpoint::Plain(checkpoint)),
            Some(encoded) => match URL_SAFE_NO_PAD.decode(encoded) {
                Ok(signature) if signature.len() == 64 => {
                    Ok(GivenCheckpoint::Signed(SignedCheckpoint { checkpoint, signature }))
                }
                _ => Err("a checkpoint's SIGNATURE is 64 bytes in base64url"),
            },
        }
    }

    pub fn checkpoint(&self) -> &Checkpoint {
        match self {
            GivenCheckpoint::Plain(checkpoint) => checkpoint,
            GivenCheckpoint::Signed(signed) => &signed.checkpoint,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(byte: u8) -> AuditKeys {
        AuditKeys::derive(|purpose| {
            let mut out = [byte; 32];
            out[0] = purpose.len() as u8;
            out
        })
    }

    fn record() -> AuditRecord {
        AuditRecord {
            seq: 1,
            at_ms: 1_700_000_000_000,
            actor: "tok_1".into(),
            actor_role: "admin".into(),
            actor_region_id: None,
            action: "region.created".into(),
            object_kind: "region".into(),
            object_id: "reg_1".into(),
            region_path: Some("/reg_1/".into()),
            summary: "{}".into(),
            request_id: Some("req-1".into()),
            prev_hash: GENESIS_HASH.into(),
            hash: String::new(),
            recipe: 2,
        }
    }

    #[test]
    fn the_keyed_recipe_covers_every_column_and_needs_the_key() {
        let keys = keys(7);
        let mut stored = record();
        stored.hash = keys.record_hash(&stored, Recipe::Keyed);
        assert!(keys.hash_holds(&stored));
        assert!(!self::keys(8).hash_holds(&stored), "another key file");
        let edits: Vec<fn(&mut AuditRecord)> = vec![
            |r| r.seq = 2,
            |r| r.at_ms += 1,
            |r| r.actor.push('x'),
            |r| r.actor_role = "auditor".into(),
            |r| r.actor_region_id = Some(String::new()),
            |r| r.action.push('x'),
            |r| r.object_kind.push('x'),
            |r| r.object_id.push('x'),
            |r| r.region_path = Some("/reg_2/".into()),
            |r| r.region_path = None,
            |r| r.summary = "{\"a\":1}".into(),
            |r| r.request_id = None,
            |r| r.prev_hash = "1".repeat(64),
            |r| r.recipe = 1,
            |r| r.recipe = 3,
        ];
        for edit in edits {
            let mut edited = stored.clone();
            edit(&mut edited);
            assert!(!keys.hash_holds(&edited), "{edited:?}");
        }
        // Recipe 1 never saw region_path: the reason it is no longer written.
        let mut unkeyed = stored.clone();
        unkeyed.recipe = 1;
        unkeyed.hash = keys.record_hash(&unkeyed, Recipe::Unkeyed);
        unkeyed.region_path = Some("/reg_2/".into());
        assert!(keys.hash_holds(&unkeyed));
    }

    #[test]
    fn checkpoints_are_signed_parsed_and_refused_when_malformed() {
        let keys = keys(7);
        let head = Checkpoint { seq: 42, hash: "ab".repeat(32) };
        let signed = keys.sign(head.clone());
        let text = signed.to_string();
        let GivenCheckpoint::Signed(parsed) = GivenCheckpoint::parse(&text).unwrap() else { panic!("{text}") };
        assert!(keys.signed_here(&parsed));
        assert!(!self::keys(8).signed_here(&parsed), "another key file");
        let forged = GivenCheckpoint::parse(&text.replacen("42:", "41:", 1)).unwrap();
        let GivenCheckpoint::Signed(forged) = forged else { panic!() };
        assert!(!keys.signed_here(&forged));
        assert_eq!(GivenCheckpoint::parse(&head.to_string()).unwrap(), GivenCheckpoint::Plain(head.clone()));
        for bad in ["", "42", "x:ab", "-1:ab", &format!("42:{}", "AB".repeat(32)), &format!("{head}:short"), "1:2:3:4"]
        {
            assert!(GivenCheckpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
