//! Timestamps: RFC 3339 UTC strings on the wire, milliseconds in storage.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    let now = OffsetDateTime::now_utc();
    (now.unix_timestamp_nanos() / 1_000_000) as i64
}

/// Formats milliseconds since the epoch as an RFC 3339 UTC string with millisecond precision.
pub fn to_rfc3339(millis: i64) -> String {
    let nanos = i128::from(millis) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let t = t
                .replace_nanosecond((millis.rem_euclid(1000) as u32) * 1_000_000)
                .unwrap_or(t);
            t.format(&Rfc3339)
                .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_string())
        }
        Err(_) => "1970-01-01T00:00:00Z".to_string(),
    }
}

/// Parses an RFC 3339 string back to milliseconds since the epoch.
pub fn from_rfc3339(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let ms = 1_700_000_000_123;
        let s = to_rfc3339(ms);
        assert_eq!(s, "2023-11-14T22:13:20.123Z");
        assert_eq!(from_rfc3339(&s), Some(ms));
    }
}
