//! Sizes in bytes, written as a number or with a binary suffix (`64Mi`, `1Gi`, `512KiB`), as
//! Kubernetes writes memory quantities.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u32); 3] = [("Gi", 30), ("Mi", 20), ("Ki", 10)];

impl ByteSize {
    /// The number of bytes.
    pub const fn get(self) -> u64 {
        self.0
    }

    /// Parses `64Mi`, `1GiB`, `512Ki`, `4096`; refuses decimal units (`64MB`) and overflow.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let value: u64 = number.parse().map_err(|_| {
            format!("`{text}` is not a size: write it like `64Mi`, `1Gi` or `4096`")
        })?;
        let shift = match unit.trim() {
            "" | "B" => 0,
            "Ki" | "KiB" => 10,
            "Mi" | "MiB" => 20,
            "Gi" | "GiB" => 30,
            other => {
                return Err(format!(
                    "`{text}` has the unknown unit `{other}`: use Ki, Mi or Gi (powers of 1024)"
                ));
            }
        };
        value
            .checked_mul(1 << shift)
            .map(Self)
            .ok_or_else(|| format!("`{text}` is too large"))
    }
}

/// The largest binary unit that divides the size exactly (`64Mi`), else the number of bytes.
impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, shift) in UNITS {
            let scale = 1u64 << shift;
            if self.0 != 0 && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written<'a> {
            Number(u64),
            Text(Cow<'a, str>),
        }
        match Written::deserialize(deserializer)? {
            Written::Number(n) => Ok(Self(n)),
            Written::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: a number, or a number with Ki, Mi or Gi (powers of 1024), such as `64Mi`.",
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            // At the top, not inside `anyOf`: a structural schema (Kubernetes) keeps no types in
            // `anyOf`, and `pattern` holds for strings only, `minimum` for numbers only.
            "pattern": "^[0-9]+(B|Ki|KiB|Mi|MiB|Gi|GiB)?$",
            "minimum": 0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_powers_of_1024_and_print_back() {
        assert_eq!(ByteSize::parse("64Mi"), Ok(ByteSize(64 << 20)));
        assert_eq!(ByteSize::parse("1GiB"), Ok(ByteSize(1 << 30)));
        assert_eq!(ByteSize::parse("4096"), Ok(ByteSize(4096)));
        assert!(ByteSize::parse("64MB").unwrap_err().contains("MB"));
        assert!(ByteSize::parse("99999999999999999999Gi").is_err());
        for size in [0u64, 1, 1023, 1024, 64 << 20, 3 << 30, (1 << 20) + 1] {
            let text = ByteSize(size).to_string();
            assert_eq!(ByteSize::parse(&text), Ok(ByteSize(size)), "{text}");
        }
        assert_eq!(ByteSize(64 << 20).to_string(), "64Mi");
        let number: ByteSize = serde_json::from_str("4096").expect("a number of bytes");
        assert_eq!(number, ByteSize(4096));
    }
}
