//! The directory of who is who: regions, organisations, facilities and terminals, and the
//! region scope that bounds what a back-office token may see.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use super::ids::{FacilityId, OrganisationId, RegionId, TerminalId, TerminalKeyId};
use super::text::{FreeText, TextError, TextRule};
use super::time::UnixMs;

/// Longest display name accepted for a region, organisation, facility, terminal or token.
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DirectoryError {
    #[error("must not be empty")]
    EmptyName,
    #[error("must be at most {MAX_NAME_CHARS} characters")]
    NameTooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must be a 16-digit e-CNY wallet id")]
    InvalidWalletId,
    #[error("must be the base64 of a 32-byte Ed25519 public key")]
    InvalidPublicKey,
}

/// A human-readable name: trimmed, non-empty, bounded, printable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    /// What a name may be: one line of at most [`MAX_NAME_CHARS`] characters.
    pub const RULE: TextRule = TextRule::single_line(MAX_NAME_CHARS);

    pub fn parse(raw: &str) -> Result<Name, DirectoryError> {
        FreeText::parse(raw, Self::RULE).map(|text| Name(text.into_string())).map_err(|error| match error {
            TextError::Empty => DirectoryError::EmptyName,
            TextError::TooLong { .. } => DirectoryError::NameTooLong,
            TextError::ControlCharacter | TextError::ControlCharacterInText => DirectoryError::ControlCharacter,
        })
    }

    pub fn from_trusted(raw: String) -> Name {
        Name(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An e-CNY wallet id as the operator issues them: 16 decimal digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WalletId(String);

impl WalletId {
    pub const PATTERN: &'static str = "^[0-9]{16}$";

    pub fn parse(raw: &str) -> Result<WalletId, DirectoryError> {
        if raw.len() == 16 && raw.bytes().all(|b| b.is_ascii_digit()) {
            Ok(WalletId(raw.to_owned()))
        } else {
            Err(DirectoryError::InvalidWalletId)
        }
    }

    pub fn from_trusted(raw: String) -> WalletId {
        WalletId(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:tt),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord,
            serde::Serialize, serde::Deserialize, utoipa::ToSchema,
        )]
        pub enum $name {
            // `$text` is a `tt`, not a `literal` fragment: a `literal` fragment reaches the
            // derives wrapped in an invisible group, which the OpenAPI derive does not see
            // through, and the document would then show the Rust variant names.
            $($(#[$vdoc])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(raw: &str) -> Option<$name> {
                match raw { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use text_enum;

text_enum!(
    /// The three administrative levels of the region tree, top down.
    RegionLevel {
        District => "district",
        /// Town or street (镇/街道).
        Town => "town",
        /// Village or community (村/社区).
        Village => "village",
    }
);

impl RegionLevel {
    /// The level a child of a node at this level must have, if children are allowed.
    pub fn child_level(self) -> Option<RegionLevel> {
        match self {
            RegionLevel::District => Some(RegionLevel::Town),
            RegionLevel::Town => Some(RegionLevel::Village),
            RegionLevel::Village => None,
        }
    }
}

text_enum!(
    /// What kind of elder-care facility this is.
    FacilityKind {
        NursingHome => "nursing_home",
        CommunityCareCentre => "community_care_centre",
        /// Meal-assistance canteen (助餐点).
        MealCanteen => "meal_canteen",
        HomeCareProvider => "home_care_provider",
    }
);

text_enum!(
    /// Whether a terminal may transact.
    TerminalStatus {
        Active => "active",
        Suspended => "suspended",
    }
);

/// A terminal's Ed25519 public key, kept as the base64 of its 32 raw bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(String);

impl PublicKey {
    /// What [`PublicKey::parse`] accepts: 32 bytes in canonical padded base64 (the last
    /// digit carries two bits of padding, which must be zero).
    pub const PATTERN: &'static str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

    pub fn parse(raw: &str) -> Result<PublicKey, DirectoryError> {
        match BASE64.decode(raw) {
            Ok(bytes) if bytes.len() == 32 => Ok(PublicKey(BASE64.encode(bytes))),
            _ => Err(DirectoryError::InvalidPublicKey),
        }
    }

    pub fn from_trusted(raw: String) -> PublicKey {
        PublicKey(raw)
    }

    pub fn as_base64(&self) -> &str {
        &self.0
    }

    pub fn raw_bytes(&self) -> Vec<u8> {
        BASE64.decode(&self.0).unwrap_or_default()
    }
}

/// The materialised path of a region: the ids from its district down to itself, each
/// followed by '/'. A node is inside another's subtree exactly when its path starts with
/// the other's path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RegionPath(String);

impl RegionPath {
    pub fn root_of(id: &RegionId) -> RegionPath {
        RegionPath(format!("{id}/"))
    }

    pub fn child(&self, id: &RegionId) -> RegionPath {
        RegionPath(format!("{}{id}/", self.0))
    }

    pub fn from_trusted(raw: String) -> RegionPath {
        RegionPath(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn contains(&self, other: &RegionPath) -> bool {
        other.0.starts_with(&self.0)
    }
}

/// The part of the region tree a token may see and act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every region: the bootstrap admin and district-wide operators.
    All,
    /// One region and everything below it.
    Region { id: RegionId, path: RegionPath },
}

impl Scope {
    pub fn contains(&self, path: &RegionPath) -> bool {
        match self {
            Scope::All => true,
            Scope::Region { path: scope_path, .. } => scope_path.contains(path),
        }
    }

    pub fn region_id(&self) -> Option<&RegionId> {
        match self {
            Scope::All => None,
            Scope::Region { id, .. } => Some(id),
        }
    }

    /// True when `inner` grants nothing beyond `self` (used when one token issues another).
    pub fn covers(&self, inner: &Scope) -> bool {
        match inner {
            Scope::All => *self == Scope::All,
            Scope::Region { path, .. } => self.contains(path),
        }
    }
}

/// A node of the region tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub id: RegionId,
    pub parent_id: Option<RegionId>,
    pub level: RegionLevel,
    pub name: Name,
    pub path: RegionPath,
    pub created_at: UnixMs,
}

/// A service-operator organisation, attached to the region it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Organisation {
    pub id: OrganisationId,
    pub region_id: RegionId,
    pub region_path: RegionPath,
    pub name: Name,
    pub created_at: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facility {
    pub id: FacilityId,
    pub region_id: RegionId,
    pub region_path: RegionPath,
    pub organisation_id: Option<OrganisationId>,
    pub name: Name,
    pub kind: FacilityKind,
    pub merchant_wallet_id: WalletId,
    /// Bumped on every change, so receivers of callbacks can discard stale copies.
    pub version: i64,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Terminal {
    pub id: TerminalId,
    pub facility_id: FacilityId,
    /// The facility's merchant wallet, where this terminal's payments go.
    pub merchant_wallet_id: WalletId,
    pub region_path: RegionPath,
    pub label: Name,
    pub status: TerminalStatus,
    pub active_key_id: TerminalKeyId,
    pub public_key: PublicKey,
    pub version: i64,
    pub created_at: UnixMs,
    pub updated_at: UnixMs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(Name::parse("  颐养院 ").unwrap().as_str(), "颐养院");
        assert_eq!(Name::parse("   "), Err(DirectoryError::EmptyName));
        assert_eq!(Name::parse(&"长".repeat(101)), Err(DirectoryError::NameTooLong));
        assert_eq!(Name::parse("a\u{7}b"), Err(DirectoryError::ControlCharacter));
    }

    #[test]
    fn wallet_ids_are_sixteen_digits() {
        assert!(WalletId::parse("0021000000000001").is_ok());
        for bad in ["", "002100000000000", "00210000000000011", "002100000000000a", "００２１"] {
            assert!(WalletId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn public_keys_must_be_thirty_two_bytes() {
        assert!(PublicKey::parse("AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=").is_ok());
        assert!(PublicKey::parse("AJleQ5YNwqtksahmYC5Wevsv").is_err());
        assert!(PublicKey::parse("not base64!").is_err());
    }

    #[test]
    fn a_scope_contains_its_subtree_and_nothing_else() {
        let district = RegionId::generate();
        let town = RegionId::generate();
        let other_town = RegionId::generate();
        let district_path = RegionPath::root_of(&district);
        let town_path = district_path.child(&town);
        let other_path = district_path.child(&other_town);
        let scope = Scope::Region { id: town.clone(), path: town_path.clone() };
        assert!(scope.contains(&town_path));
        assert!(scope.contains(&town_path.child(&RegionId::generate())));
        assert!(!scope.contains(&district_path));
        assert!(!scope.contains(&other_path));
        assert!(Scope::All.covers(&scope));
        assert!(!scope.covers(&Scope::All));
    }

    #[test]
    fn wire_names_and_stored_names_agree() {
        fn check<T: serde::Serialize + Copy + std::fmt::Display>(all: &[T]) {
            for value in all {
                assert_eq!(serde_json::to_value(value).unwrap(), serde_json::Value::String(value.to_string()));
            }
        }
        check(RegionLevel::ALL);
        check(FacilityKind::ALL);
        check(TerminalStatus::ALL);
        check(crate::domain::payment::PaymentStatus::ALL);
        check(crate::domain::payment::PaymentMethod::ALL);
        check(crate::domain::payment::RefundStatus::ALL);
        check(crate::domain::callbacks::EventType::ALL);
        check(crate::domain::callbacks::EndpointStatus::ALL);
        check(crate::domain::callbacks::DisabledReason::ALL);
        check(crate::domain::callbacks::DeliveryStatus::ALL);
        check(crate::domain::callbacks::OwnerKind::ALL);
    }

    #[test]
    fn only_districts_and_towns_have_children() {
        assert_eq!(RegionLevel::District.child_level(), Some(RegionLevel::Town));
        assert_eq!(RegionLevel::Town.child_level(), Some(RegionLevel::Village));
        assert_eq!(RegionLevel::Village.child_level(), None);
    }
}
