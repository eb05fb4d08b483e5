//! One audit event's JSON (as event-handler POSTs it) to the `HandleEventRequest` a plugin receives,
//! encoded straight from the JSON parser into protobuf bytes, with no intermediate tree.
//!
//! The envelope is Teleport's `EventUnstructured` shape: the whole object as a
//! `google.protobuf.Struct` in field 5, plus type, id, time and index lifted from the keys `event`,
//! `uid`, `time` and `ei`. `type` is always written first.

use super::protobuf_writer::{
    FIXED64, LEN, VARINT, begin_len, end_len, put_bytes_field, put_tag, put_varint,
};
use super::timestamp::parse_rfc3339;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// What identifies an event, lifted from its top-level keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventIdentity {
    /// `event`: the type string.
    pub event_type: String,
    /// `uid`: the unique id (may be empty).
    pub uid: String,
    /// `time` as written.
    pub time: String,
    /// `ei`: the index.
    pub index: Option<f64>,
    /// `sid`: the session id of session events.
    pub session_id: String,
}

impl EventIdentity {
    /// The key retries of the same event share: the `uid`, or, where it is empty, type, time, index
    /// and session id together.
    pub fn key(&self) -> String {
        if self.uid.is_empty() {
            let index = self.index.map(|i| i.to_string()).unwrap_or_default();
            format!(
                "tie:{}|{}|{index}|{}",
                self.event_type, self.time, self.session_id
            )
        } else {
            format!("uid:{}", self.uid)
        }
    }
}

/// Why a body could not be turned into an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InputError {
    /// The body is not valid JSON.
    #[error("the body is not valid JSON: {0}")]
    Malformed(String),
    /// The body is JSON but not an object.
    #[error("the body is JSON but not an object: an audit event is one JSON object")]
    NotObject,
    /// An object of the event has a key twice. event-handler's JSON comes from a protobuf Struct,
    /// whose keys are unique; a plugin sees one copy, so another could pass it unseen.
    #[error(
        "the event has the key `{0}` twice in one object: an audit event's keys are unique, and a repeated key could pass a plugin unseen"
    )]
    DuplicateKey(String),
    /// The body is over the size limit.
    #[error("the event is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// The request bytes for one event, and its identity.
#[derive(Debug, Clone)]
pub struct EncodedEvent {
    /// A `HandleEventRequest` holding the envelope.
    pub request: Vec<u8>,
    /// What identifies the event.
    pub identity: EventIdentity,
}

/// Encodes one event's JSON as a `HandleEventRequest`.
pub fn encode_event(json: &[u8]) -> Result<EncodedEvent, InputError> {
    let first = json.iter().find(|b| !b.is_ascii_whitespace());
    if first != Some(&b'{') {
        // Valid JSON that is not an object gets its own message; anything else is malformed.
        return match serde_json::from_slice::<serde::de::IgnoredAny>(json) {
            Ok(_) => Err(InputError::NotObject),
            Err(e) => Err(InputError::Malformed(e.to_string())),
        };
    }
    let mut fields = Vec::with_capacity(json.len() + json.len() / 2);
    let mut identity = EventIdentity::default();
    let mut parser = serde_json::Deserializer::from_slice(json);
    let mut seen = KeysSeen::new();
    parser
        .deserialize_map(TopLevel {
            out: &mut fields,
            identity: &mut identity,
            seen: &mut seen,
        })
        .and_then(|()| parser.end())
        .map_err(|e| match seen.duplicate.take() {
            Some(key) => InputError::DuplicateKey(key),
            None => InputError::Malformed(e.to_string()),
        })?;

    let mut envelope = Vec::with_capacity(fields.len() + 96);
    if !identity.event_type.is_empty() {
        put_bytes_field(&mut envelope, 1, identity.event_type.as_bytes());
    }
    if !identity.uid.is_empty() {
        put_bytes_field(&mut envelope, 2, identity.uid.as_bytes());
    }
    if let Some((seconds, nanos)) = parse_rfc3339(&identity.time) {
        let start = begin_len(&mut envelope, 3);
        if seconds != 0 {
            put_tag(&mut envelope, 1, VARINT);
            put_varint(&mut envelope, seconds as u64);
        }
        if nanos != 0 {
            put_tag(&mut envelope, 2, VARINT);
            put_varint(&mut envelope, nanos as u64);
        }
        end_len(&mut envelope, start);
    }
    if let Some(index) = identity.index.filter(|i| i.is_finite() && *i != 0.0) {
        put_tag(&mut envelope, 4, VARINT);
        put_varint(&mut envelope, index as i64 as u64);
    }
    put_bytes_field(&mut envelope, 5, &fields);

    let mut request = Vec::with_capacity(envelope.len() + 6);
    put_bytes_field(&mut request, 1, &envelope);
    Ok(EncodedEvent { request, identity })
}

/// Which identity slot a top-level key fills.
#[derive(Clone, Copy)]
enum Slot {
    None,
    Type,
    Uid,
    Time,
    Index,
    SessionId,
}

/// Captured scalar of a top-level value.
enum Captured<'a> {
    Text(&'a mut String),
    Number(&'a mut Option<f64>),
}

/// The keys of the objects being written, one run per open object (innermost last), to refuse a
/// key that appears twice in one object. Keys are kept as slices of the input where serde_json
/// lends them (no escapes), with a cheap filter word so that most comparisons are one integer.
struct KeysSeen<'de> {
    keys: Vec<(u64, Cow<'de, str>)>,
    /// The repeated key, once found.
    duplicate: Option<String>,
}

impl<'de> KeysSeen<'de> {
    fn new() -> Self {
        Self {
            keys: Vec::with_capacity(32),
            duplicate: None,
        }
    }

    /// Records `key` in the object whose keys start at `base` and whose keys so far set the bits
    /// of `bloom`; false when it is there already. Most keys set a bit of their own, so only a
    /// few are compared with the others.
    fn insert(&mut self, base: usize, bloom: &mut u64, key: Cow<'de, str>) -> bool {
        let filter = key_filter(&key);
        let bit = 1u64 << (filter.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58);
        let maybe_seen = *bloom & bit != 0;
        *bloom |= bit;
        if maybe_seen
            && self.keys[base..]
                .iter()
                .any(|(f, seen)| *f == filter && *seen == key)
        {
            self.duplicate = Some(key.into_owned());
            return false;
        }
        self.keys.push((filter, key));
        true
    }
}

/// The length and the first and last bytes of a key in one word: equal for equal keys, and for
/// distinct keys seldom.
fn key_filter(key: &str) -> u64 {
    let bytes = key.as_bytes();
    let first = bytes.first().copied().unwrap_or(0);
    let last = bytes.last().copied().unwrap_or(0);
    let middle = bytes.get(bytes.len() / 2).copied().unwrap_or(0);
    (bytes.len() as u64) << 24 | u64::from(first) << 16 | u64::from(middle) << 8 | u64::from(last)
}

struct TopLevel<'a, 'de> {
    out: &'a mut Vec<u8>,
    identity: &'a mut EventIdentity,
    seen: &'a mut KeysSeen<'de>,
}

impl<'de> Visitor<'de> for TopLevel<'_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        write_entries(self.out, &mut map, Some(self.identity), self.seen)
    }
}

/// Writes the entries of a JSON object as `Struct.fields` map entries (field 1 of `Struct`).
fn write_entries<'de, A: MapAccess<'de>>(
    out: &mut Vec<u8>,
    map: &mut A,
    mut identity: Option<&mut EventIdentity>,
    seen: &mut KeysSeen<'de>,
) -> Result<(), A::Error> {
    let base = seen.keys.len();
    let mut bloom = 0u64;
    loop {
        let entry = begin_len(out, 1);
        let Some(slot) = map.next_key_seed(Key {
            out: &mut *out,
            top_level: identity.is_some(),
            seen: &mut *seen,
            base,
            bloom: &mut bloom,
        })?
        else {
            out.truncate(entry - 2);
            seen.keys.truncate(base);
            return Ok(());
        };
        let capture = match (slot, identity.as_deref_mut()) {
            (Slot::None, _) | (_, None) => None,
            (Slot::Type, Some(id)) => Some(Captured::Text(&mut id.event_type)),
            (Slot::Uid, Some(id)) => Some(Captured::Text(&mut id.uid)),
            (Slot::Time, Some(id)) => Some(Captured::Text(&mut id.time)),
            (Slot::SessionId, Some(id)) => Some(Captured::Text(&mut id.session_id)),
            (Slot::Index, Some(id)) => Some(Captured::Number(&mut id.index)),
        };
        let value = begin_len(out, 2);
        map.next_value_seed(Value {
            out: &mut *out,
            capture,
            seen: &mut *seen,
        })?;
        end_len(out, value);
        end_len(out, entry);
    }
}

struct Key<'a, 'de> {
    out: &'a mut Vec<u8>,
    top_level: bool,
    seen: &'a mut KeysSeen<'de>,
    /// Where the current object's keys start in `seen`.
    base: usize,
    /// The bits the current object's keys set so far.
    bloom: &'a mut u64,
}

impl<'de> DeserializeSeed<'de> for Key<'_, 'de> {
    type Value = Slot;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Slot, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Key<'_, 'de> {
    fn key<E: serde::de::Error>(self, key: Cow<'de, str>) -> Result<Slot, E> {
        put_bytes_field(self.out, 1, key.as_bytes());
        let slot = if self.top_level {
            match &*key {
                "event" => Slot::Type,
                "uid" => Slot::Uid,
                "time" => Slot::Time,
                "ei" => Slot::Index,
                "sid" => Slot::SessionId,
                _ => Slot::None,
            }
        } else {
            Slot::None
        };
        if !self.seen.insert(self.base, self.bloom, key) {
            return Err(E::custom("duplicate key"));
        }
        Ok(slot)
    }
}

impl<'de> Visitor<'de> for Key<'_, 'de> {
    type Value = Slot;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_borrowed_str<E: serde::de::Error>(self, key: &'de str) -> Result<Slot, E> {
        self.key(Cow::Borrowed(key))
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Slot, E> {
        self.key(Cow::Owned(key.to_string()))
    }
}

/// Writes one JSON value as the body of a `google.protobuf.Value`.
struct Value<'a, 'c, 'de> {
    out: &'a mut Vec<u8>,
    capture: Option<Captured<'c>>,
    seen: &'a mut KeysSeen<'de>,
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_, 'de> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Value<'_, '_, '_> {
    fn number(self, number: f64) {
        if let Some(Captured::Number(slot)) = self.capture {
            *slot = Some(number);
        }
        put_tag(self.out, 2, FIXED64);
        self.out.extend_from_slice(&number.to_le_bytes());
    }
}

impl<'de> Visitor<'de> for Value<'_, '_, 'de> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        put_tag(self.out, 1, VARINT);
        self.out.push(0);
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        put_tag(self.out, 4, VARINT);
        self.out.push(u8::from(value));
        Ok(())
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.number(value as f64);
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.number(value as f64);
        Ok(())
    }

    fn visit_f64<E>(self, value: f64) -> Result<(), E> {
        self.number(value);
        Ok(())
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        if let Some(Captured::Text(slot)) = self.capture {
            value.clone_into(slot);
        }
        put_tag(self.out, 3, LEN);
        put_varint(self.out, value.len() as u64);
        self.out.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let start = begin_len(self.out, 5);
        write_entries(self.out, &mut map, None, self.seen)?;
        end_len(self.out, start);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let list = begin_len(self.out, 6);
        loop {
            let element = begin_len(self.out, 1);
            if seq
                .next_element_seed(Value {
                    out: &mut *self.out,
                    capture: None,
                    seen: &mut *self.seen,
                })?
                .is_none()
            {
                self.out.truncate(element - 2);
                break;
            }
            end_len(self.out, element);
        }
        end_len(self.out, list);
        Ok(())
    }
}
