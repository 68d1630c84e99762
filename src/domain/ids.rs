//! Typed, prefixed identifiers (`fac_0192f1...`). The prefix says what an id names, so an
//! id pasted into the wrong field is refused instead of silently matching nothing.

use std::fmt;

/// Longest id accepted from outside; ours are prefix + '_' + 32 hex digits.
const MAX_ID_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be an id of the form {prefix}_<32 hex digits>")]
pub struct IdError {
    pub prefix: &'static str,
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// What [`Self::parse`] accepts, as a regular expression (for the OpenAPI document).
            pub fn pattern() -> String {
                format!("^{}_[0-9a-f]{{32}}$", $prefix)
            }

            /// A new id; UUIDv7 keeps ids roughly time-ordered, which keeps B-tree inserts
            /// local and makes `ORDER BY id` a creation order for pagination.
            pub fn generate() -> Self {
                Self(format!("{}_{}", $prefix, uuid::Uuid::now_v7().simple()))
            }

            pub fn parse(raw: &str) -> Result<Self, IdError> {
                let valid = raw.len() <= MAX_ID_LEN
                    && raw
                        .strip_prefix($prefix)
                        .and_then(|rest| rest.strip_prefix('_'))
                        .is_some_and(|hex| {
                            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                        });
                if valid {
                    Ok(Self(raw.to_owned()))
                } else {
                    Err(IdError { prefix: $prefix })
                }
            }

            /// For values read back from our own database, which only ever holds ids we made.
            pub fn from_trusted(raw: String) -> Self {
                debug_assert!(Self::parse(&raw).is_ok(), "stored id {raw:?} is malformed");
                Self(raw)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Self::parse(&raw).map_err(serde::de::Error::custom)
            }
        }
    };
}

typed_id!(
    /// A node of the region tree (district, town/street or village/community).
    RegionId, "reg"
);
typed_id!(
    /// A service-operator organisation attached to a region.
    OrganisationId, "org"
);
typed_id!(
    /// An elder-care facility (nursing home, care centre, canteen, home-care provider).
    FacilityId, "fac"
);
typed_id!(
    /// A counter terminal bound to one facility.
    TerminalId, "trm"
);
typed_id!(
    /// One registered public key of a terminal.
    TerminalKeyId, "tkey"
);
typed_id!(
    /// A back-office API token (the id, not the secret).
    TokenId, "tok"
);
typed_id!(
    /// A payment taken at a terminal; also its `out_trade_no` towards the operator.
    PaymentId, "pay"
);
typed_id!(
    /// A refund of a payment; also its `out_refund_no` towards the operator.
    RefundId, "rfd"
);
typed_id!(
    /// A statement file received from the operator or an accountant.
    StatementFileId, "stf"
);
typed_id!(
    /// One reconciliation run of a wallet's business day.
    RunId, "rcn"
);
typed_id!(
    /// A reconciliation discrepancy an accountant resolves.
    DiscrepancyId, "dsc"
);
typed_id!(
    /// One recorded reconciliation action (import, run, resolve, close).
    ReconciliationActionId, "rca"
);
typed_id!(
    /// A ledger journal entry.
    EntryId, "je"
);
typed_id!(
    /// A callback endpoint: where a facility's or subsidy office's system receives events.
    EndpointId, "ep"
);
typed_id!(
    /// A callback event; also its Standard Webhooks `webhook-id`, stable across retries.
    EventId, "msg"
);
typed_id!(
    /// One HTTP attempt to deliver a callback event to an endpoint.
    AttemptId, "att"
);
typed_id!(
    /// A subsidy programme: who pays whom from which funding wallet, within what budget.
    ProgrammeId, "prg"
);
typed_id!(
    /// One uploaded subsidy batch file; its hex part also prefixes its lines' `out_transfer_no`.
    BatchId, "bat"
);

/// A position in a listing: the id of the last item of the previous page (`after=`). Every
/// listing is in id order and every id has the form `prefix_<32 hex digits>`, so anything
/// else (a NUL, a quote, a long string) names no position and is refused at the edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor(String);

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("must be the `next_after` of an earlier page (an id such as reg_<32 hex digits>)")]
pub struct CursorError;

impl Cursor {
    pub const PATTERN: &'static str = "^[a-z]{1,8}_[0-9a-f]{32}$";

    pub fn parse(raw: &str) -> Result<Cursor, CursorError> {
        let valid = raw.split_once('_').is_some_and(|(prefix, hex)| {
            (1..=8).contains(&prefix.len())
                && prefix.bytes().all(|b| b.is_ascii_lowercase())
                && hex.len() == 32
                && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if valid { Ok(Cursor(raw.to_owned())) } else { Err(CursorError) }
    }

    /// The position after an item, from the item's own (well-formed) id.
    pub fn after(id: &impl fmt::Display) -> Cursor {
        let raw = id.to_string();
        debug_assert!(Cursor::parse(&raw).is_ok(), "id {raw:?} is no cursor");
        Cursor(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_ids_and_nothing_else() {
        let id = RegionId::generate();
        assert_eq!(Cursor::parse(id.as_str()), Ok(Cursor::after(&id)));
        assert!(Cursor::parse(EndpointId::generate().as_str()).is_ok());
        for raw in [
            "",
            "\0",
            "reg_",
            "reg_\0",
            "x",
            "reg_0192F1AB0192F1AB0192F1AB0192F1AB",
            "toolongprefix_0192f1ab0192f1ab0192f1ab0192f1ab",
            "'; --",
        ] {
            assert_eq!(Cursor::parse(raw), Err(CursorError), "{raw:?}");
        }
        let pattern = regex::Regex::new(Cursor::PATTERN).unwrap();
        for raw in [
            "reg_0192f1ab0192f1ab0192f1ab0192f1ab",
            "ab_0192f1ab0192f1ab0192f1ab0192f1ab",
            "reg_0192",
            "\0",
            "A_0192f1ab0192f1ab0192f1ab0192f1ab",
        ] {
            assert_eq!(pattern.is_match(raw), Cursor::parse(raw).is_ok(), "{raw:?}");
        }
        assert!(regex::Regex::new(&RegionId::pattern()).unwrap().is_match(RegionId::generate().as_str()));
    }

    #[test]
    fn generated_ids_parse_back_and_carry_their_prefix() {
        let id = FacilityId::generate();
        assert!(id.as_str().starts_with("fac_"));
        assert_eq!(FacilityId::parse(id.as_str()), Ok(id));
    }

    #[test]
    fn an_id_of_another_kind_is_refused() {
        let region = RegionId::generate();
        assert!(FacilityId::parse(region.as_str()).is_err());
    }

    #[test]
    fn malformed_ids_are_refused() {
        for raw in [
            "",
            "fac_",
            "fac_xyz",
            "fac_0192F1AB0192F1AB0192F1AB0192F1AB",
            "fac-0192f1ab0192f1ab0192f1ab0192f1ab",
            "fac_0192f1ab0192f1ab0192f1ab0192f1ab0",
        ] {
            assert!(FacilityId::parse(raw).is_err(), "{raw:?} accepted");
        }
    }
}
