//! RFC 3339 timestamps (as Teleport writes `time`) to seconds and nanoseconds since the Unix epoch,
//! checked and converted by `jiff`, so impossible dates (`2024-02-31`) and offsets (`+99:99`) are
//! refused rather than folded into another instant.

use jiff::Timestamp;
use jiff::civil::{Date, Time};

/// Parses `2024-02-23T18:56:50.628Z` or `...+02:00` into (seconds, nanos); `None` if it is not an
/// RFC 3339 timestamp with a valid date, time and offset.
///
/// The fixed layout of RFC 3339 is read by hand (this runs for every event); jiff decides whether
/// the date and time exist and turns them into an instant.
pub fn parse_rfc3339(text: &str) -> Option<(i64, i32)> {
    let b = text.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i32> {
        b.get(range)?.iter().try_fold(0i32, |acc, d| {
            d.is_ascii_digit().then(|| acc * 10 + i32::from(d - b'0'))
        })
    };
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let mut i = 19;
    let mut nanos: i32 = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = i - start;
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(start..i)? * 10i32.pow((9 - digits) as u32);
    }
    let offset_seconds = match b.get(i)? {
        b'Z' | b'z' if i + 1 == b.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == b.len() && b[i + 3] == b':' => {
            let (hours, minutes) = (num(i + 1..i + 3)?, num(i + 4..i + 6)?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = hours * 3600 + minutes * 60;
            if *sign == b'+' { seconds } else { -seconds }
        }
        _ => return None,
    };
    // RFC 3339 allows a leap second (:60); jiff's civil time has none, so it reads as :59.
    let second = if second == 60 { 59 } else { second };
    // jiff refuses a day the month does not have (2024-02-31, 2023-02-29) and a time that does
    // not exist; the instant is then plain arithmetic on a date known to be valid.
    let date = Date::new(i16::try_from(year).ok()?, month as i8, day as i8).ok()?;
    Time::new(hour as i8, minute as i8, second as i8, nanos).ok()?;
    let days = days_from_civil(i64::from(date.year()), i64::from(month), i64::from(day));
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
            - i64::from(offset_seconds);
    Some((seconds, nanos))
}

/// Days since 1970-01-01 of a valid proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
