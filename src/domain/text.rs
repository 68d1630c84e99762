//! Free text from a client: names, labels, notes. One rule for all of it, so that no field
//! lets a NUL (which PostgreSQL refuses and SQLite stores) or another control character
//! through, and so the OpenAPI document states exactly what the parser accepts.

use std::fmt;

/// What one kind of free text may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TextRule {
    /// Most characters (Unicode scalar values), counted before trimming, as JSON Schema's
    /// `maxLength` counts them.
    pub max_chars: usize,
    /// Whether line breaks and tabs (`\n`, `\r`, `\t`) are allowed; no other control
    /// character ever is.
    pub multi_line: bool,
}

impl TextRule {
    pub const fn single_line(max_chars: usize) -> TextRule {
        TextRule { max_chars, multi_line: false }
    }

    pub const fn multi_line(max_chars: usize) -> TextRule {
        TextRule { max_chars, multi_line: true }
    }

    fn allows(self, c: char) -> bool {
        !c.is_control() || (self.multi_line && matches!(c, '\n' | '\r' | '\t'))
    }

    /// The same rule as an ECMA-262 / Python regular expression, for the `pattern` of the
    /// OpenAPI document: only allowed characters, at least one of them not whitespace. (The
    /// length is the schema's `maxLength`.)
    pub fn pattern(self) -> String {
        // `char::is_control` is Unicode's Cc: U+0000..=U+001F and U+007F..=U+009F.
        let control = if self.multi_line { r"\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f" } else { r"\x00-\x1f\x7f-\x9f" };
        // `char::is_whitespace` (Unicode White_Space) spelled out, so that no regex
        // engine's own idea of `\s` can differ from the parser's.
        let space = r"\t\n\x0b\x0c\r \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
        format!("^[^{control}]*[^{control}{space}][^{control}]*$")
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max_chars} characters")]
    TooLong { max_chars: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
    #[error("must not contain control characters other than line breaks and tabs")]
    ControlCharacterInText,
}

/// Text a client typed, checked against its [`TextRule`] and trimmed.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct FreeText(String);

impl FreeText {
    pub fn parse(raw: &str, rule: TextRule) -> Result<FreeText, TextError> {
        if raw.chars().count() > rule.max_chars {
            return Err(TextError::TooLong { max_chars: rule.max_chars });
        }
        if !raw.chars().all(|c| rule.allows(c)) {
            return Err(if rule.multi_line { TextError::ControlCharacterInText } else { TextError::ControlCharacter });
        }
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(TextError::Empty);
        }
        Ok(FreeText(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Debug for FreeText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Free text may name people; logs get its length only.
        write!(f, "FreeText({} chars)", self.0.chars().count())
    }
}

/// A discrepancy's resolution note: a few lines an accountant writes.
pub const NOTE: TextRule = TextRule::multi_line(500);

/// A beneficiary's name as a subsidy office corrects it (as the batch file's name column holds it).
pub const PAYEE_NAME: TextRule = TextRule::single_line(super::disbursement::MAX_NAME_CHARS);

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: TextRule = TextRule::single_line(5);

    #[test]
    fn text_is_trimmed_and_bounded_before_trimming() {
        assert_eq!(FreeText::parse("  ab ", LINE).unwrap().as_str(), "ab");
        assert_eq!(FreeText::parse("abcde", LINE).unwrap().as_str(), "abcde");
        assert_eq!(FreeText::parse(" abcde", LINE), Err(TextError::TooLong { max_chars: 5 }));
        assert_eq!(FreeText::parse("张三李四王", LINE).unwrap().as_str(), "张三李四王");
        assert_eq!(FreeText::parse("   ", LINE), Err(TextError::Empty));
        assert_eq!(FreeText::parse("", LINE), Err(TextError::Empty));
    }

    #[test]
    fn nul_and_other_control_characters_are_refused() {
        for raw in ["a\0b", "\0", "a\u{7}", "a\u{1b}[3", "a\u{85}", "a\u{9f}", "a\nb", "a\tb", " \n a"] {
            assert_eq!(FreeText::parse(raw, LINE), Err(TextError::ControlCharacter), "{raw:?}");
        }
        let note = TextRule::multi_line(50);
        assert_eq!(FreeText::parse("line one\r\nline\ttwo", note).unwrap().as_str(), "line one\r\nline\ttwo");
        assert_eq!(FreeText::parse("a\0b", note), Err(TextError::ControlCharacterInText));
        assert_eq!(FreeText::parse("a\u{1f}", note), Err(TextError::ControlCharacterInText));
    }

    #[test]
    fn the_pattern_accepts_exactly_what_the_parser_accepts() {
        for rule in [TextRule::single_line(100), TextRule::multi_line(100)] {
            let pattern = regex::Regex::new(&rule.pattern()).expect("a valid pattern");
            let samples = [
                "name",
                " name ",
                "",
                " ",
                "\u{3000}",
                "\u{a0}x",
                "a\0",
                "\0",
                "a\nb",
                "\n",
                "a\tb",
                "a\rb",
                "\u{7f}",
                "x\u{85}",
                "\u{9f}",
                "\u{a0}",
                "吴江区",
                "\u{feff}",
                "\u{200b}",
                "\u{2028}",
                "x\u{2029}y",
                "a\u{1}b",
            ];
            for sample in samples {
                assert_eq!(
                    pattern.is_match(sample),
                    FreeText::parse(sample, rule).is_ok(),
                    "{sample:?} with {rule:?}: pattern {}",
                    rule.pattern()
                );
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn the_pattern_and_the_parser_agree_on_any_short_text(raw in "\\PC{0,4}|[\\x00-\\x20\\u{80}-\\u{a0}a\\u{3000}\\u{2028}]{0,4}") {
            for rule in [TextRule::single_line(100), TextRule::multi_line(100)] {
                let pattern = regex::Regex::new(&rule.pattern()).unwrap();
                proptest::prop_assert_eq!(pattern.is_match(&raw), FreeText::parse(&raw, rule).is_ok(), "{:?}", raw);
            }
        }
    }
}
