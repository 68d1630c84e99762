//! Bodies of the cargo-fuzz targets in `fuzz/fuzz_targets/`.
//!
//! Every fuzz target is a one-line call into a function here, never logic of its own, so that
//! the ordinary `cargo test` run can replay each target's committed seed corpus
//! (`tests/fuzz_corpus.rs`) on stable Rust. That keeps the targets compiling and their
//! assertions true even on days nobody runs the fuzzer. A body must never panic on any input
//! except to report a broken invariant.

use crate::domain::money::Amount;

/// Fuzz body for [`Amount::parse`], the parser of every amount a client sends.
///
/// Invariants checked on every accepted input: only ASCII digits and a point got through, the
/// value is within the ceiling, formatting and re-parsing give the same amount (and the same
/// text when the input already had two decimals), and the JSON form round-trips.
pub fn amount(data: &[u8]) {
    // Lossy decoding still drives the parser with every input; invalid bytes become U+FFFD,
    // which must be refused like any other stray character.
    let text = String::from_utf8_lossy(data);
    let amount = match Amount::parse(&text) {
        Ok(amount) => amount,
        Err(err) => {
            // Rendering the error for a client must not panic either.
            assert!(!err.code().is_empty());
            assert!(!err.to_string().is_empty());
            return;
        }
    };

    assert!(text.bytes().all(|b| b.is_ascii_digit() || b == b'.'), "accepted a non-numeric amount {text:?}");
    assert!(
        (0..=Amount::MAX_FEN).contains(&amount.fen()),
        "accepted {text:?} as {} fen, outside 0..={}",
        amount.fen(),
        Amount::MAX_FEN
    );

    let formatted = amount.to_string();
    assert_eq!(Amount::parse(&formatted), Ok(amount), "{text:?} formats as {formatted:?}, which does not parse back");
    if text.split_once('.').is_some_and(|(_, frac)| frac.len() == 2) {
        assert_eq!(formatted, text, "two-decimal input changed when formatted");
    }

    let json = serde_json::to_string(&amount).expect("an amount always serializes");
    let back: Amount = serde_json::from_str(&json).expect("an amount's JSON parses back");
    assert_eq!(back, amount, "JSON round trip changed {text:?}");
}
