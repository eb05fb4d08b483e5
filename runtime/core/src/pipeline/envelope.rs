//! One audit event's JSON (as event-handler POSTs it) to the `HandleEventRequest` a plugin receives,
//! encoded straight from the JSON parser into protobuf bytes, with no intermediate tree.
//!
//! The envelope is Teleport's `EventUnstructured` shape: the whole object as a
//! `google.protobuf.Struct` in field 5, plus type, id, time and index lifted from the keys `event`,
//! `uid`, `time` and `ei`. `type` is always written first.

use super::protobuf_writer::{
    FIXED64, LEN, VARINT, begin_len, end_len, insert_bytes, put_bytes_field, put_tag, put_varint,
    split_len_field, varint,
};
use super::timestamp::parse_rfc3339;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
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
    let mut duplicate = None;
    parser
        .deserialize_map(TopLevel {
            out: &mut fields,
            identity: &mut identity,
            duplicate: &mut duplicate,
        })
        .and_then(|()| parser.end())
        .map_err(|e| match duplicate.take() {
            Some(key) => InputError::DuplicateKey(key),
            None => InputError::Malformed(e.to_string()),
        })?;

    // The request is its envelope's identity fields, then the object (`fields`): they are written
    // in front of the object, which is neither copied nor allocated again.
    let mut head = Vec::with_capacity(96 + identity.event_type.len() + identity.uid.len());
    if !identity.event_type.is_empty() {
        put_bytes_field(&mut head, 1, identity.event_type.as_bytes());
    }
    if !identity.uid.is_empty() {
        put_bytes_field(&mut head, 2, identity.uid.as_bytes());
    }
    if let Some((seconds, nanos)) = parse_rfc3339(&identity.time) {
        let start = begin_len(&mut head, 3);
        if seconds != 0 {
            put_tag(&mut head, 1, VARINT);
            put_varint(&mut head, seconds as u64);
        }
        if nanos != 0 {
            put_tag(&mut head, 2, VARINT);
            put_varint(&mut head, nanos as u64);
        }
        end_len(&mut head, start);
    }
    if let Some(index) = identity.index.filter(|i| i.is_finite() && *i != 0.0) {
        put_tag(&mut head, 4, VARINT);
        put_varint(&mut head, index as i64 as u64);
    }
    put_tag(&mut head, 5, LEN);
    put_varint(&mut head, fields.len() as u64);
    // `HandleEventRequest.envelope` (field 1): the fields above and the object.
    let (len, width) = varint((head.len() + fields.len()) as u64);
    let mut envelope_tag = [0u8; 11];
    envelope_tag[0] = (1 << 3) | LEN;
    envelope_tag[1..=width].copy_from_slice(&len[..width]);
    insert_bytes(&mut head, 0, &envelope_tag[..=width]);
    let mut request = fields;
    insert_bytes(&mut request, 0, &head);
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

/// Keys an object may have before [`ObjectKeys`] keeps them in a hash set: up to here a repeated
/// key is looked for among the entries already written, which costs nothing to keep.
const KEYS_SCANNED: usize = 32;

/// The keys of one JSON object so far, to refuse a key it has twice. They are not kept: the
/// object's entries already written hold them, and a per-object filter tells most new keys apart
/// without reading those. Past [`KEYS_SCANNED`] keys they are kept in a hash set, so that a huge
/// object costs no quadratic scan.
struct ObjectKeys {
    /// Where the object's first entry starts in the output.
    start: usize,
    /// How many keys the object has had so far.
    count: usize,
    /// One bit per key seen, chosen by [`key_filter`]: a key whose bit is clear is new.
    bloom: u128,
    /// Every key so far, once the object is past [`KEYS_SCANNED`] keys.
    set: Option<HashSet<Box<[u8]>>>,
}

impl ObjectKeys {
    /// An object whose entries start at `start` in the output.
    fn new(start: usize) -> Self {
        Self {
            start,
            count: 0,
            bloom: 0,
            set: None,
        }
    }

    /// Records `key`, whose entry starts at `entry` in `out` (after the object's earlier entries);
    /// false when the object has it already.
    #[inline]
    fn insert(&mut self, out: &[u8], entry: usize, key: &[u8]) -> bool {
        self.count += 1;
        if self.count > KEYS_SCANNED {
            return self.insert_hashed(&out[self.start..entry], key);
        }
        let bit = 1u128 << (key_filter(key).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 57);
        if self.bloom & bit == 0 {
            self.bloom |= bit;
            return true;
        }
        !written_keys(&out[self.start..entry]).any(|seen| seen == key)
    }

    /// [`Self::insert`] in an object past [`KEYS_SCANNED`] keys, whose entries so far are
    /// `earlier`.
    #[cold]
    #[inline(never)]
    fn insert_hashed(&mut self, earlier: &[u8], key: &[u8]) -> bool {
        self.set
            .get_or_insert_with(|| written_keys(earlier).map(Box::from).collect())
            .insert(key.into())
    }
}

/// The keys of the `Struct.fields` entries written in `entries`, in order.
fn written_keys(entries: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = entries;
    std::iter::from_fn(move || {
        let (entry, after) = split_len_field(rest)?;
        rest = after;
        split_len_field(entry).map(|(key, _)| key)
    })
}

/// The length and the first, middle and last bytes of a key in one word: equal for equal keys,
/// and for distinct keys seldom.
#[inline]
fn key_filter(key: &[u8]) -> u64 {
    let first = key.first().copied().unwrap_or(0);
    let last = key.last().copied().unwrap_or(0);
    let middle = key.get(key.len() / 2).copied().unwrap_or(0);
    (key.len() as u64) << 24 | u64::from(first) << 16 | u64::from(middle) << 8 | u64::from(last)
}

struct TopLevel<'a> {
    out: &'a mut Vec<u8>,
    identity: &'a mut EventIdentity,
    /// Set to the repeated key when an object has one.
    duplicate: &'a mut Option<String>,
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        write_entries(self.out, &mut map, Some(self.identity), self.duplicate)
    }
}

/// Writes the entries of a JSON object as `Struct.fields` map entries (field 1 of `Struct`).
fn write_entries<'de, A: MapAccess<'de>>(
    out: &mut Vec<u8>,
    map: &mut A,
    mut identity: Option<&mut EventIdentity>,
    duplicate: &mut Option<String>,
) -> Result<(), A::Error> {
    let mut keys = ObjectKeys::new(out.len());
    loop {
        let entry = begin_len(out, 1);
        let Some(slot) = map.next_key_seed(Key {
            out: &mut *out,
            top_level: identity.is_some(),
            keys: &mut keys,
            entry: entry - 2,
            duplicate: &mut *duplicate,
        })?
        else {
            out.truncate(entry - 2);
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
            duplicate: &mut *duplicate,
        })?;
        end_len(out, value);
        end_len(out, entry);
    }
}

struct Key<'a> {
    out: &'a mut Vec<u8>,
    top_level: bool,
    /// The keys of the object so far.
    keys: &'a mut ObjectKeys,
    /// Where this key's entry starts in `out`.
    entry: usize,
    /// Set to the key when the object has it already.
    duplicate: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Key<'_> {
    type Value = Slot;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Slot, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key<'_> {
    type Value = Slot;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Slot, E> {
        if !self.keys.insert(self.out, self.entry, key.as_bytes()) {
            *self.duplicate = Some(key.to_string());
            return Err(E::custom("duplicate key"));
        }
        put_bytes_field(self.out, 1, key.as_bytes());
        if !self.top_level {
            return Ok(Slot::None);
        }
        Ok(match key {
            "event" => Slot::Type,
            "uid" => Slot::Uid,
            "time" => Slot::Time,
            "ei" => Slot::Index,
            "sid" => Slot::SessionId,
            _ => Slot::None,
        })
    }
}

/// Writes one JSON value as the body of a `google.protobuf.Value`.
struct Value<'a, 'c> {
    out: &'a mut Vec<u8>,
    capture: Option<Captured<'c>>,
    /// Set to the repeated key when an object has one.
    duplicate: &'a mut Option<String>,
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl Value<'_, '_> {
    fn number(self, number: f64) {
        if let Some(Captured::Number(slot)) = self.capture {
            *slot = Some(number);
        }
        put_tag(self.out, 2, FIXED64);
        self.out.extend_from_slice(&number.to_le_bytes());
    }
}

impl<'de> Visitor<'de> for Value<'_, '_> {
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
        write_entries(self.out, &mut map, None, self.duplicate)?;
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
                    duplicate: &mut *self.duplicate,
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

#[cfg(test)]
mod tests {
    use super::{InputError, KEYS_SCANNED, encode_event};

    fn object(keys: impl IntoIterator<Item = String>) -> String {
        let entries: Vec<String> = keys.into_iter().map(|k| format!("\"{k}\":1")).collect();
        format!("{{\"event\":\"x\",\"o\":{{{}}}}}", entries.join(","))
    }

    fn refused_key(json: &str) -> Option<String> {
        match encode_event(json.as_bytes()) {
            Err(InputError::DuplicateKey(key)) => Some(key),
            Ok(_) => None,
            Err(other) => panic!("{json}: {other}"),
        }
    }

    #[test]
    fn a_repeated_key_is_found_in_small_and_big_objects() {
        for count in [2, 3, KEYS_SCANNED - 1, KEYS_SCANNED, KEYS_SCANNED + 1, 1000] {
            let keys: Vec<String> = (0..count).map(|i| format!("key{i}")).collect();
            assert_eq!(refused_key(&object(keys.clone())), None, "{count} keys");
            for repeated in [0, count / 2, count - 1] {
                let mut with_repeat = keys.clone();
                with_repeat.push(keys[repeated].clone());
                assert_eq!(
                    refused_key(&object(with_repeat)),
                    Some(keys[repeated].clone()),
                    "{count} keys, key {repeated} again"
                );
            }
        }
    }

    #[test]
    fn keys_are_compared_after_unescaping() {
        assert_eq!(
            refused_key(r#"{"event":"x","ab":1,"a\u0062":2}"#),
            Some("ab".to_string())
        );
        assert_eq!(refused_key(r#"{"event":"x","ab":1,"a\u0063":2}"#), None);
    }

    #[test]
    fn keys_of_long_entries_are_still_found() {
        // Entries over 127 bytes have wider lengths; the scan must step over them.
        let long = "v".repeat(300);
        let json = format!(r#"{{"event":"x","a":"{long}","b":{{"c":"{long}"}},"a":1}}"#);
        assert_eq!(refused_key(&json), Some("a".to_string()));
    }
}
