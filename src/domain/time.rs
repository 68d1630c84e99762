//! Instants and the business day. Storage holds unix milliseconds (UTC); the wire shows
//! RFC 3339 in Asia/Shanghai, where the business day is defined (+08:00, no DST).

use time::{OffsetDateTime, UtcOffset, format_description::well_known::Rfc3339};

/// Asia/Shanghai has been UTC+8 without daylight saving since 1991.
pub const SHANGHAI: UtcOffset = time::macros::offset!(+8);

/// Milliseconds since the unix epoch, UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(pub i64);

impl UnixMs {
    pub fn now() -> Self {
        let now = OffsetDateTime::now_utc();
        Self((now.unix_timestamp_nanos() / 1_000_000) as i64)
    }

    pub fn to_rfc3339_shanghai(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        let instant =
            OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(OffsetDateTime::UNIX_EPOCH).to_offset(SHANGHAI);
        instant.format(&Rfc3339).unwrap_or_else(|_| String::from("1970-01-01T08:00:00+08:00"))
    }
}

/// A calendar date as every wire writes it, `YYYY-MM-DD`; what [`is_calendar_date`]
/// accepts but for the days a month lacks (the OpenAPI document adds `format: date`).
pub const DATE_PATTERN: &str = "^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";

/// A real calendar date written `YYYY-MM-DD` (RFC 3339 `full-date`): 2026-02-29 is not one.
pub fn is_calendar_date(raw: &str) -> bool {
    let b = raw.as_bytes();
    let shaped = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter().enumerate().all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    shaped && time::Date::parse(raw, time::macros::format_description!("[year]-[month]-[day]")).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_dates_are_real_days_in_one_spelling() {
        for good in ["2026-01-01", "2024-02-29", "0000-01-01", "9999-12-31"] {
            assert!(is_calendar_date(good), "{good}");
        }
        for bad in [
            "2026-02-29",
            "2026-13-01",
            "2026-00-10",
            "2026-04-31",
            "2026-1-01",
            "+2026-01-01",
            "2026-01-01 ",
            "20260101",
            "",
        ] {
            assert!(!is_calendar_date(bad), "{bad}");
        }
    }

    #[test]
    fn instants_are_shown_in_shanghai_time() {
        // 2026-11-28T01:15:02Z is 09:15:02 in Shanghai.
        let ms = 1_795_828_502_000;
        assert_eq!(UnixMs(ms).to_rfc3339_shanghai(), "2026-11-28T09:15:02+08:00");
    }
}
