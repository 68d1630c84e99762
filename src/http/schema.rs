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
