//! Durations in Go and Kubernetes syntax (`250ms`, `90s`, `1m30s`, `1.5h`), the one syntax every
//! duration key of eventplug takes. A bare number other than `0` is refused in every key: `30` could
//! mean seconds or milliseconds, and the two readings differ a thousandfold.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// The longest duration any key takes: longer values are mistakes, and refusing them keeps every
/// sum of durations far from overflow.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// A duration written as Go's `time.ParseDuration` and Kubernetes' `metav1.Duration` write it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// A duration of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(std::time::Duration::from_millis(millis))
    }

    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(std::time::Duration::from_secs(secs))
    }

    /// The standard library's duration.
    pub const fn get(self) -> std::time::Duration {
        self.0
    }

    /// Parses `1m30s`, `250ms`, `500us`, `1.5h`, `0`, as Go's `time.ParseDuration` does; refuses a
    /// bare number other than 0, a negative duration, an unknown unit, and anything over 24 h.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hint =
            "write it like `250ms`, `30s`, `1m30s` or `1h` (Go and Kubernetes duration syntax)";
        let (negative, unsigned) = match text.as_bytes().first() {
            Some(b'-') => (true, &text[1..]),
            Some(b'+') => (false, &text[1..]),
            _ => (false, text),
        };
        if unsigned == "0" {
            return Ok(Self::default());
        }
        if unsigned.is_empty() {
            return Err(format!("`{text}` is not a duration: {hint}"));
        }
        let mut rest = unsigned;
        let mut nanos: u128 = 0;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(rest.len());
            let (number, after) = rest.split_at(digits);
            if number.is_empty() || number == "." {
                return Err(format!("`{text}` is not a duration: {hint}"));
            }
            let unit_len = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_len);
            let scale: u128 = match unit {
                "ns" => 1,
                "us" | "µs" | "μs" => 1_000,
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "" => return Err(format!("`{text}` has a number without a unit: {hint}")),
                other => {
                    return Err(format!(
                        "`{text}` has the unknown unit `{other}`: use ns, us, ms, s, m or h"
                    ));
                }
            };
            let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
            if fraction.contains('.') {
                return Err(format!("`{text}` is not a duration: {hint}"));
            }
            let whole: u128 = if whole.is_empty() {
                0
            } else {
                whole
                    .parse()
                    .map_err(|_| format!("`{text}` is too long: at most 24h"))?
            };
            let mut part = whole.saturating_mul(scale);
            let mut divisor = 1u128;
            for digit in fraction.bytes().take(18) {
                divisor *= 10;
                part = part.saturating_add(u128::from(digit - b'0') * scale / divisor);
            }
            nanos = nanos.saturating_add(part);
            rest = next;
        }
        if negative && nanos > 0 {
            return Err(format!("`{text}` is negative: {hint}"));
        }
        if nanos > MAX_DURATION.as_nanos() {
            return Err(format!(
                "`{text}` is longer than the 24h any eventplug duration may be"
            ));
        }
        let secs = (nanos / 1_000_000_000) as u64;
        let sub = (nanos % 1_000_000_000) as u32;
        Ok(Self(std::time::Duration::new(secs, sub)))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(value)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(value: Duration) -> Self {
        value.0
    }
}

/// Go's `Duration.String()`: `1h30m0s`, `1.5s`, `250ms`, `0s`.
impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        let fixed = |f: &mut fmt::Formatter<'_>, value: u128, scale: u128, unit: &str| {
            let whole = value / scale;
            let fraction = value % scale;
            if fraction == 0 {
                write!(f, "{whole}{unit}")
            } else {
                let width = scale.ilog10() as usize;
                let digits = format!("{fraction:0width$}");
                write!(f, "{whole}.{}{unit}", digits.trim_end_matches('0'))
            }
        };
        if nanos < 1_000 {
            return write!(f, "{nanos}ns");
        }
        if nanos < 1_000_000 {
            return fixed(f, nanos, 1_000, "µs");
        }
        if nanos < 1_000_000_000 {
            return fixed(f, nanos, 1_000_000, "ms");
        }
        let hours = nanos / 3_600_000_000_000;
        let minutes = nanos / 60_000_000_000 % 60;
        let seconds = nanos % 60_000_000_000;
        if hours > 0 {
            write!(f, "{hours}h{minutes}m")?;
        } else if minutes > 0 {
            write!(f, "{minutes}m")?;
        }
        fixed(f, seconds, 1_000_000_000, "s")
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written<'a> {
            Text(Cow<'a, str>),
            Number(serde_json::Number),
        }
        match Written::deserialize(deserializer) {
            Ok(Written::Text(text)) => Self::parse(&text).map_err(serde::de::Error::custom),
            Ok(Written::Number(n)) => Err(serde::de::Error::custom(format!(
                "`{n}` is a number, not a duration: write it like `{n}s` or `{n}ms` (Go and Kubernetes duration syntax)"
            ))),
            Err(_) => Err(serde::de::Error::custom(
                "not a duration: write it as text like `250ms`, `30s`, `1m30s` or `1h`",
            )),
        }
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration in Go and Kubernetes syntax, such as `250ms`, `30s`, `1m30s` or `1h`; at most 24h.",
            "pattern": "^[-+]?(0|(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<std::time::Duration, String> {
        Duration::parse(text).map(Duration::get)
    }

    #[test]
    fn go_syntax_parses() {
        assert_eq!(parse("250ms"), Ok(std::time::Duration::from_millis(250)));
        assert_eq!(parse("90s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse("1m30s"), Ok(std::time::Duration::from_secs(90)));
        assert_eq!(parse("1h"), Ok(std::time::Duration::from_secs(3600)));
        assert_eq!(parse("1.5h"), Ok(std::time::Duration::from_secs(5400)));
        assert_eq!(parse("500us"), Ok(std::time::Duration::from_micros(500)));
        assert_eq!(
            parse("1h2m3.5s"),
            Ok(std::time::Duration::from_millis(3_723_500))
        );
        assert_eq!(parse("0"), Ok(std::time::Duration::ZERO));
    }

    #[test]
    fn bare_numbers_unknown_units_and_overlong_values_are_refused() {
        assert!(parse("30").unwrap_err().contains("without a unit"));
        assert!(parse("5 parsecs").is_err());
        assert!(parse("5d").unwrap_err().contains("unknown unit `d`"));
        assert!(parse("fast").is_err());
        assert!(parse("-1s").unwrap_err().contains("negative"));
        assert!(parse("+").is_err(), "a sign alone");
        assert!(parse("-").is_err(), "a sign alone");
        assert!(parse(" 1s").is_err(), "Go refuses spaces");
        assert_eq!(parse("-0"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse("+0"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse("+1s"), Ok(std::time::Duration::from_secs(1)));
        assert!(parse("25h").unwrap_err().contains("24h"));
        assert!(parse("18446744073709551615s").unwrap_err().contains("24h"));
        assert!(parse("1..5s").is_err());
        let number: Result<Duration, _> = serde_json::from_str("30");
        assert!(number.unwrap_err().to_string().contains("`30s`"));
        let float: Result<Duration, _> = serde_json::from_str("1.5");
        assert!(float.unwrap_err().to_string().contains("`1.5s`"));
        let number_zero: Result<Duration, _> = serde_json::from_str("0");
        assert!(number_zero.is_err(), "as the schema says: text only");
        let zero: Duration = serde_json::from_str("\"0\"").expect("\"0\" is a duration");
        assert_eq!(zero.get(), std::time::Duration::ZERO);
        let other: Result<Duration, _> = serde_json::from_str("[1]");
        assert!(other.unwrap_err().to_string().contains("not a duration"));
    }

    #[test]
    fn display_is_gos_and_parses_back() {
        for (nanos, text) in [
            (0u64, "0s"),
            (250_000_000, "250ms"),
            (1_500_000_000, "1.5s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (500_000, "500µs"),
            (1_500, "1.5µs"),
            (7, "7ns"),
        ] {
            let duration = Duration(std::time::Duration::from_nanos(nanos));
            assert_eq!(duration.to_string(), text);
            assert_eq!(Duration::parse(text), Ok(duration), "{text}");
        }
    }
}
