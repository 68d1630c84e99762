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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_are_shown_in_shanghai_time() {
        // 2026-11-28T01:15:02Z is 09:15:02 in Shanghai.
        let ms = 1_795_828_502_000;
        assert_eq!(UnixMs(ms).to_rfc3339_shanghai(), "2026-11-28T09:15:02+08:00");
    }
}
