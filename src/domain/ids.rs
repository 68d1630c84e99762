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

#[cfg(test)]
mod tests {
    use super::*;

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
