//! RFC 3339 timestamps (as Teleport writes `time`) to seconds and nanoseconds since the Unix epoch,
//! parsed and printed by `jiff`, so impossible dates (`2024-02-31`) and offsets (`+99:99`) are
//! refused rather than folded into another instant.

use jiff::Timestamp;

/// Parses `2024-02-23T18:56:50.628Z` or `...+02:00` into (seconds, nanos); `None` if it is not an
/// RFC 3339 timestamp with a valid date, time and offset.
pub fn parse_rfc3339(text: &str) -> Option<(i64, i32)> {
    // jiff also reads ISO 8601 forms RFC 3339 does not have (`2024-02-23T18:56Z`, a bracketed
    // time zone); Teleport writes seconds and an offset, so insist on those.
    let b = text.as_bytes();
    if b.len() < 20 || b.get(16) != Some(&b':') || text.ends_with(']') {
        return None;
    }
    let timestamp: Timestamp = text.parse().ok()?;
    // jiff truncates toward zero; protobuf's Timestamp counts nanos forward from the second below.
    let (seconds, nanos) = (timestamp.as_second(), timestamp.subsec_nanosecond());
    if nanos < 0 {
        Some((seconds - 1, nanos + 1_000_000_000))
    } else {
        Some((seconds, nanos))
    }
}

/// Formats seconds and milliseconds since the Unix epoch as Teleport writes times:
/// `2024-02-23T18:56:50.628Z`. Out-of-range values are clamped to jiff's range.
pub fn format_rfc3339(seconds: i64, millis: u32) -> String {
    let seconds = seconds.clamp(Timestamp::MIN.as_second(), Timestamp::MAX.as_second() - 1);
    let nanos = i32::try_from(millis.min(999) * 1_000_000).unwrap_or(0);
    let timestamp = Timestamp::new(seconds, nanos).unwrap_or(Timestamp::UNIX_EPOCH);
    format!("{timestamp:.3}")
}

#[cfg(test)]
mod tests {
    use super::{format_rfc3339, parse_rfc3339};

    #[test]
    fn parses_teleport_times() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(
            parse_rfc3339("2024-02-23T18:56:50.628Z"),
            Some((1_708_714_610, 628_000_000))
        );
        assert_eq!(
            parse_rfc3339("2024-02-23T20:56:50.628+02:00"),
            Some((1_708_714_610, 628_000_000))
        );
        assert_eq!(
            parse_rfc3339("0001-01-01T00:00:00Z"),
            Some((-62_135_596_800, 0))
        );
        assert_eq!(
            parse_rfc3339("2024-02-23T18:56:50.123456789Z"),
            Some((1_708_714_610, 123_456_789))
        );
    }

    #[test]
    fn formatting_is_the_inverse_of_parsing() {
        assert_eq!(
            format_rfc3339(1_708_714_610, 628),
            "2024-02-23T18:56:50.628Z"
        );
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        for seconds in [-62_135_596_800, 951_782_400, 4_102_444_799, 1_709_164_800] {
            let text = format_rfc3339(seconds, 5);
            assert_eq!(parse_rfc3339(&text), Some((seconds, 5_000_000)), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_rfc3339() {
        for text in [
            "",
            "yesterday",
            "2024-02-23",
            "2024-13-01T00:00:00Z",
            "2024-02-23T18:56:50",
            "2024-02-23T18:56:50.Z",
            "2024-02-23T18:56:50Zjunk",
            "2024-02-31T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-02-23T18:56:50+99:99",
            "2024-02-23T25:00:00Z",
            "2024-02-23T18:56Z",
            "2024-02-23T18:56:50Z[Europe/Paris]",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
