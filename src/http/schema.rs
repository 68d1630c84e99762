//! The wire forms of the domain types, for the OpenAPI document. Each schema is built from
//! the rule of the domain type that parses the value (its pattern, its length), so the
//! document is exactly as strict as the server and cannot drift from it: a client that
//! follows the document is never refused for the shape of a value, and a value outside it is
//! always refused.

use std::borrow::Cow;

use utoipa::openapi::schema::{
    AdditionalProperties, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::directory::{Name, WalletId};
use crate::domain::ids;
use crate::domain::money::Amount;
use crate::domain::text::{self, TextRule};

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

fn text(rule: TextRule) -> ObjectBuilder {
    string().min_length(Some(1)).max_length(Some(rule.max_chars)).pattern(Some(rule.pattern()))
}

/// A reference to a named schema; the type that uses it lists it with [`register`].
pub fn reference<T: ToSchema>() -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(T::name()))
}

/// Adds `T` (and what it refers to) to the document's components.
pub fn register<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// A JSON object that refuses unknown fields, as every request body does.
pub fn object() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Object).additional_properties(Some(AdditionalProperties::FreeForm(false)))
}

/// Exactly one of `choices`.
pub fn one_of(choices: impl IntoIterator<Item = ObjectBuilder>) -> RefOr<Schema> {
    let one_of = choices.into_iter().fold(OneOfBuilder::new(), |one_of, choice| one_of.item(choice.build()));
    Schema::OneOf(one_of.build()).into()
}

/// One of these strings.
pub fn strings<const N: usize>(values: [&str; N]) -> ObjectBuilder {
    string().enum_values(Some(values))
}

/// `null` only: a field that may be omitted or null, never anything else.
pub fn null() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::Null)
}

macro_rules! wire_schema {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $build:expr) => {
        $(#[$doc])*
        pub struct $ty;

        impl PartialSchema for $ty {
            fn schema() -> RefOr<Schema> {
                let build: ObjectBuilder = $build;
                build.build().into()
            }
        }

        impl ToSchema for $ty {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }
        }
    };
}

wire_schema!(
    /// A non-negative amount of yuan with at most two decimals.
    AmountText,
    "Amount",
    string().pattern(Some(Amount::PATTERN)).examples(["300.00"]).description(Some(
        "Yuan with at most two decimals, no sign, no exponent, no leading zeros, at most 10000000000000."
    ))
);
wire_schema!(
    /// An amount that must not be zero (budgets, caps).
    NonZeroAmountText,
    "NonZeroAmount",
    string().pattern(Some(Amount::NONZERO_PATTERN)).examples(["500.00"]).description(Some(
        "Yuan with at most two decimals, above zero, at most 10000000000000."
    ))
);
wire_schema!(
    /// A signed amount of yuan that is not zero (a ledger adjustment).
    SignedAmountText,
    "NonZeroSignedAmount",
    string().pattern(Some(Amount::SIGNED_NONZERO_PATTERN)).examples(["-1.00"]).description(Some(
        "Yuan as `Amount`, above zero, with an optional leading `-`."
    ))
);
wire_schema!(
    /// An e-CNY wallet id.
    WalletIdText,
    "WalletId",
    string().pattern(Some(WalletId::PATTERN)).examples(["0021000000000001"])
);
wire_schema!(
    /// An Ed25519 public key.
    PublicKeyText,
    "PublicKey",
    string().pattern(Some(crate::domain::directory::PublicKey::PATTERN)).examples(["AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw="])
);
wire_schema!(
    /// A calendar date.
    DateText,
    "Date",
    string().pattern(Some(crate::domain::time::DATE_PATTERN)).format(Some(SchemaFormat::KnownFormat(KnownFormat::Date)))
);
wire_schema!(
    /// A month paid for.
    PeriodText,
    "Period",
    string().pattern(Some(crate::domain::batch::Period::PATTERN)).examples(["2026-11"])
);
wire_schema!(
    /// An instant with an offset.
    InstantText,
    "Instant",
    string().format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime))).examples(["2026-11-28T00:00:00+08:00"])
);
wire_schema!(
    /// An audit checkpoint as carepay publishes it.
    CheckpointText,
    "Checkpoint",
    string().pattern(Some(crate::domain::audit::GivenCheckpoint::PATTERN)).max_length(Some(170))
);
wire_schema!(
    /// A listing position: a previous page's `next_after`.
    CursorText,
    "Cursor",
    string().pattern(Some(ids::Cursor::PATTERN)).description(Some("The `next_after` of the previous page."))
);
wire_schema!(
    /// The name of a region, organisation, facility or programme, or the label of a
    /// terminal or token.
    NameText,
    "Name",
    text(Name::RULE)
);
wire_schema!(
    /// A discrepancy's resolution note.
    NoteText,
    "Note",
    text(text::NOTE)
);
wire_schema!(
    /// A beneficiary's name.
    PayeeNameText,
    "PayeeName",
    text(text::PAYEE_NAME)
);

macro_rules! id_schemas {
    ($($id:ident),+ $(,)?) => {
        $(
            impl PartialSchema for ids::$id {
                fn schema() -> RefOr<Schema> {
                    let example = format!("{}_0192f1ab0192f1ab0192f1ab0192f1ab", ids::$id::PREFIX);
                    string().pattern(Some(ids::$id::pattern())).examples([example]).build().into()
                }
            }

            impl ToSchema for ids::$id {}
        )+
    };
}

id_schemas!(
    RegionId,
    OrganisationId,
    FacilityId,
    TerminalId,
    TokenId,
    EndpointId,
    EventId,
    ProgrammeId,
    BatchId,
    DiscrepancyId
);

#[cfg(test)]
mod tests {
    use crate::domain::batch::Period;
    use crate::domain::directory::{PublicKey, WalletId};
    use crate::domain::time::{DATE_PATTERN, is_calendar_date};

    fn agree(pattern: &str, samples: &[&str], mut parses: impl FnMut(&str) -> bool) {
        let regex = regex::Regex::new(pattern).unwrap();
        for sample in samples {
            assert_eq!(regex.is_match(sample), parses(sample), "{sample:?} against {pattern}");
        }
    }

    #[test]
    fn each_pattern_accepts_what_its_parser_accepts() {
        agree(Period::PATTERN, &["2026-11", "2026-13", "1999-01", "2100-01", "2026-1", "2026-00", " 2026-11"], |s| {
            Period::parse(s).is_ok()
        });
        agree(
            WalletId::PATTERN,
            &["0021000000000001", "002100000000001", "00210000000000011", "002100000000000a", ""],
            |s| WalletId::parse(s).is_ok(),
        );
        // The document adds `format: date`, which refuses the days a month lacks.
        agree(DATE_PATTERN, &["2026-01-31", "2026-13-01", "2026-01-32", "2026-1-01", "20260101", "0000-01-01"], |s| {
            is_calendar_date(s)
        });
        let key = "AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=";
        let off_padding = "AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfx=";
        agree(
            PublicKey::PATTERN,
            &[key, off_padding, " AJleQ5YNwqtksahmYC5WevsvFkaBDD3c5JzFeyVyrfw=", "AAAA", ""],
            |s| PublicKey::parse(s).is_ok(),
        );
        let hash = "ab".repeat(32);
        let signature = "A".repeat(86);
        agree(
            crate::domain::audit::GivenCheckpoint::PATTERN,
            &[
                &format!("0:{hash}"),
                &format!("42:{hash}:{signature}"),
                &format!("042:{hash}"),
                &format!("-1:{hash}"),
                &format!(" 42:{hash}"),
                &format!("42:{}", "AB".repeat(32)),
                &format!("42:{hash}:{}", &signature[..85]),
                &format!("42:{hash}:"),
                &format!("42:{hash}:{}0", &signature[..85]),
            ],
            |s| crate::domain::audit::GivenCheckpoint::parse(s).is_ok(),
        );
        let mut headers = axum::http::HeaderMap::new();
        let long = "k".repeat(129);
        agree(
            super::super::disbursement::IDEMPOTENCY_KEY_PATTERN,
            &["b-1", "a b", "x", &long[..128], &long, "a\tb", "~!"],
            |s| {
                headers.insert("idempotency-key", axum::http::HeaderValue::from_str(s).unwrap());
                super::super::disbursement::idempotency_key(&headers).is_ok()
            },
        );
    }
}
