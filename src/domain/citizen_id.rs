//! Citizen ID numbers (居民身份证号码, GB 11643-1999) and the masking rules for personal data.
//!
//! An ID number is personal data: design.md says it is never stored or logged in clear. The
//! type therefore has no `Display`, its `Debug` prints the masked form, and the clear text is
//! reachable only through [`CitizenId::expose_clear_text`], whose name makes every use visible
//! in review (keyed hashing and sealing for the owning office are the only legitimate ones).

use std::fmt;

/// Length of a second-generation ID number: 17 digits and a check character.
pub const CITIZEN_ID_LEN: usize = 18;

/// ISO 7064 MOD 11-2 weights of the first 17 digits (2^(18-i) mod 11).
const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];

/// Check character for each weighted sum modulo 11.
const CHECK_CHARS: [u8; 11] = *b"10X98765432";

/// Characters kept in clear at each end of a masked ID number: the province/city prefix and
/// the last four, which is what an office clerk uses to tell two people apart on paper.
const MASK_KEEP_HEAD: usize = 3;
const MASK_KEEP_TAIL: usize = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CitizenIdError {
    #[error("a citizen ID number has 18 characters")]
    Length,
    #[error("a citizen ID number is 17 digits followed by a digit or X")]
    Character,
    #[error("the birth date inside the citizen ID number is not a calendar date")]
    BirthDate,
    #[error("the check digit of the citizen ID number is wrong (ISO 7064 MOD 11-2); the number was probably mistyped")]
    CheckDigit,
}

impl CitizenIdError {
    /// Stable code for API error bodies and result files; never change an existing one.
    pub fn code(self) -> &'static str {
        match self {
            CitizenIdError::Length => "CITIZEN_ID_LENGTH",
            CitizenIdError::Character => "CITIZEN_ID_CHARACTER",
            CitizenIdError::BirthDate => "CITIZEN_ID_BIRTH_DATE",
            CitizenIdError::CheckDigit => "CITIZEN_ID_CHECK_DIGIT",
        }
    }
}

/// A well-formed citizen ID number (check digit verified, `x` normalised to `X`).
#[derive(Clone, PartialEq, Eq)]
pub struct CitizenId(String);

impl CitizenId {
    pub fn parse(raw: &str) -> Result<CitizenId, CitizenIdError> {
        let raw = raw.trim();
        // Count characters, not bytes, so a stray multi-byte character is a character error.
        if raw.chars().count() != CITIZEN_ID_LEN {
            return Err(CitizenIdError::Length);
        }
        let bytes = raw.as_bytes();
        if bytes.len() != CITIZEN_ID_LEN || !bytes[..17].iter().all(u8::is_ascii_digit) {
            return Err(CitizenIdError::Character);
        }
        let check = bytes[17].to_ascii_uppercase();
        if !(check.is_ascii_digit() || check == b'X') {
            return Err(CitizenIdError::Character);
        }
        if !plausible_birth_date(&bytes[6..14]) {
            return Err(CitizenIdError::BirthDate);
        }
        if check_char(bytes[..17].try_into().expect("17 digits checked above")) != check {
            return Err(CitizenIdError::CheckDigit);
        }
        let mut normalised = raw.to_owned();
        normalised.make_ascii_uppercase();
        Ok(CitizenId(normalised))
    }

    /// The number in clear. Only for keyed hashing and for sealing the owning office's copy;
    /// never for logs, errors, or anything shown outside the owning office.
    pub fn expose_clear_text(&self) -> &str {
        &self.0
    }

    /// `110***********1234`: what every screen, log line and result file shows.
    pub fn masked(&self) -> String {
        mask_citizen_id(&self.0)
    }
}

impl fmt::Debug for CitizenId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CitizenId({})", self.masked())
    }
}

/// The MOD 11-2 check character of 17 ASCII digits.
pub fn check_char(digits: &[u8; 17]) -> u8 {
    let sum: u32 = digits.iter().zip(WEIGHTS).map(|(digit, weight)| u32::from(digit - b'0') * weight).sum();
    CHECK_CHARS[(sum % 11) as usize]
}

/// A month 01-12 and a day 01-31 in years 1900-2099. Finer calendar rules would only add ways
/// to refuse real, if oddly registered, people; the check digit catches typing errors.
fn plausible_birth_date(yyyymmdd: &[u8]) -> bool {
    let number = |range: std::ops::Range<usize>| {
        yyyymmdd[range].iter().fold(0u32, |acc, digit| acc * 10 + u32::from(digit - b'0'))
    };
    let (year, month, day) = (number(0..4), number(4..6), number(6..8));
    (1900..=2099).contains(&year) && (1..=12).contains(&month) && (1..=31).contains(&day)
}

/// Masks any text as an ID number: head and tail kept, every other character a star. Works on
/// stored masked values and on malformed input alike, so error reports never echo a full number.
pub fn mask_citizen_id(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    if chars.len() <= MASK_KEEP_HEAD + MASK_KEEP_TAIL {
        return "*".repeat(chars.len());
    }
    let tail_start = chars.len() - MASK_KEEP_TAIL;
    chars.iter().enumerate().map(|(i, c)| if i < MASK_KEEP_HEAD || i >= tail_start { *c } else { '*' }).collect()
}

/// `张*`, `欧**`: the first character and a star for each other one. Shown to everyone except
/// the office that owns the beneficiary.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        None => String::new(),
        Some(first) => {
            let rest = chars.count().max(1);
            let mut masked = String::with_capacity(first.len_utf8() + rest);
            masked.push(first);
            masked.extend(std::iter::repeat_n('*', rest));
            masked
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // A published sample number (GB 11643 examples) with check character X.
    const SAMPLE_X: &str = "11010519491231002X";
    const SAMPLE_DIGIT: &str = "110101199003071234";

    fn with_correct_check(first17: &str) -> String {
        let digits: [u8; 17] = first17.as_bytes().try_into().unwrap();
        format!("{first17}{}", check_char(&digits) as char)
    }

    #[test]
    fn a_number_with_a_correct_check_character_parses() {
        assert!(CitizenId::parse(SAMPLE_X).is_ok());
        let lower = SAMPLE_X.to_ascii_lowercase();
        assert_eq!(CitizenId::parse(&lower).unwrap().expose_clear_text(), SAMPLE_X);
        let built = with_correct_check("11010119900307123");
        assert!(CitizenId::parse(&built).is_ok());
    }

    #[test]
    fn a_wrong_check_character_is_refused_as_such() {
        let valid = with_correct_check("11010119900307123");
        let last = valid.as_bytes()[17];
        let wrong = if last == b'0' { '1' } else { '0' };
        let mistyped = format!("{}{wrong}", &valid[..17]);
        assert_eq!(CitizenId::parse(&mistyped), Err(CitizenIdError::CheckDigit));
        // Its correct check character is 3, so the number a clerk might type from memory fails.
        assert_eq!(CitizenId::parse(SAMPLE_DIGIT), Err(CitizenIdError::CheckDigit));
    }

    #[test]
    fn malformed_numbers_say_what_is_wrong() {
        assert_eq!(CitizenId::parse("1234"), Err(CitizenIdError::Length));
        assert_eq!(CitizenId::parse("11010119900307123A"), Err(CitizenIdError::Character));
        assert_eq!(CitizenId::parse("1101011990030712３4"), Err(CitizenIdError::Character));
        assert_eq!(CitizenId::parse(&with_correct_check("11010119901307123")), Err(CitizenIdError::BirthDate));
    }

    #[test]
    fn masking_keeps_the_prefix_and_the_last_four() {
        let id = CitizenId::parse(SAMPLE_X).unwrap();
        assert_eq!(id.masked(), "110***********002X");
        assert_eq!(format!("{id:?}"), "CitizenId(110***********002X)");
        assert_eq!(mask_citizen_id("12345"), "*****");
    }

    #[test]
    fn names_are_masked_after_the_first_character() {
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳娜娜"), "欧***");
        assert_eq!(mask_name("李"), "李*");
        assert_eq!(mask_name(""), "");
    }

    proptest! {
        #[test]
        fn any_single_digit_change_is_caught(first17 in "[1-6][0-9]{5}(19[0-9]{2}|20[0-2][0-9])(0[1-9]|1[0-2])(0[1-9]|[12][0-9])[0-9]{3}", pos in 0usize..17, delta in 1u8..10) {
            let valid = with_correct_check(&first17);
            prop_assert!(CitizenId::parse(&valid).is_ok());
            let mut bytes = valid.into_bytes();
            bytes[pos] = b'0' + (bytes[pos] - b'0' + delta) % 10;
            let changed = String::from_utf8(bytes).unwrap();
            // MOD 11-2 detects every single-digit substitution; a date change may be caught first.
            prop_assert!(CitizenId::parse(&changed).is_err());
        }

        #[test]
        fn masked_form_never_contains_the_middle(first17 in "[1-6][0-9]{5}19[0-9]{2}0[1-9]1[0-9][0-9]{3}") {
            let id = CitizenId::parse(&with_correct_check(&first17)).unwrap();
            let masked = id.masked();
            prop_assert_eq!(masked.chars().count(), CITIZEN_ID_LEN);
            prop_assert_eq!(&masked[3..14], "***********");
            let debug = format!("{:?}", id);
            prop_assert!(!debug.contains(&first17[3..14]));
        }
    }
}
