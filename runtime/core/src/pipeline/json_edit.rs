//! Applies a plugin's edits to the event's original JSON bytes. Only the bytes an edit touches
//! change; every other member stays byte-for-byte as it arrived (spacing, escapes, number forms).
//!
//! Duplicate keys: a plugin decodes an object's members into a map, so of a key that appears more
//! than once it sees the last occurrence. An edit therefore first collapses, in every object on its
//! path, the members with the key it names to that last one (earlier ones are dropped), then
//! applies. A set on a duplicated key thus leaves exactly one member, the one set, and an earlier
//! occurrence can never slip past a redaction.
//!
//! Identity keys: the host keys redeliveries by the top-level `event`, `uid`, `time`, `ei`, `code`
//! and `sid`, so an edit whose path starts with one of them is refused.

use eventplug_proto::v1 as pb;
use std::borrow::Cow;

/// The deepest nesting an event may have after edits (the JSON parser's own limit), so that an
/// edited event always parses again for the next plugin.
const MAX_DEPTH: usize = 128;

/// How deeply objects and arrays nest in `doc` (strings skipped).
fn nesting_depth(doc: &[u8]) -> usize {
    let (mut depth, mut deepest, mut i) = (0usize, 0usize, 0usize);
    while i < doc.len() {
        match doc[i] {
            b'"' => {
                i = skip_string(doc, i).unwrap_or(doc.len());
                continue;
            }
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    deepest
}

/// The top-level keys that make up an event's identity (what a redelivery is recognised by); no
/// edit may change them.
pub const IDENTITY_KEYS: [&str; 6] = ["event", "uid", "time", "ei", "code", "sid"];

/// Applies `edits` in order to `json` (a JSON object) and returns the new bytes.
pub fn apply_edits(json: &[u8], edits: &[pb::Edit]) -> Result<Vec<u8>, String> {
    let mut doc = json.to_vec();
    for (n, edit) in edits.iter().enumerate() {
        apply_edit(&mut doc, edit).map_err(|problem| {
            let op = match pb::EditOp::try_from(edit.op) {
                Ok(pb::EditOp::Set) => "set",
                Ok(pb::EditOp::Remove) => "remove",
                Err(_) => "?",
            };
            format!("edit {n} ({op} {:?}): {problem}", edit.path)
        })?;
    }
    let depth = nesting_depth(&doc);
    if depth > MAX_DEPTH {
        return Err(format!(
            "the edits nest the event {depth} levels deep; at most {MAX_DEPTH} are allowed"
        ));
    }
    Ok(doc)
}

fn apply_edit(doc: &mut Vec<u8>, edit: &pb::Edit) -> Result<(), String> {
    if edit.path.is_empty() {
        return Err("the path is empty; name at least one key".into());
    }
    if let Some(key) = IDENTITY_KEYS.iter().find(|key| **key == edit.path[0]) {
        return Err(format!(
            "`{key}` is an identity key of the event (one of {}): the host recognises \
             redeliveries by them, so no edit may change them; edit another key",
            IDENTITY_KEYS.join(", ")
        ));
    }
    let root = skip_ws(doc, 0);
    if doc.get(root) != Some(&b'{') {
        return Err("the event is not a JSON object".into());
    }
    match pb::EditOp::try_from(edit.op) {
        Ok(pb::EditOp::Set) => {
            let value = edit.value_json.trim();
            serde_json::from_str::<serde::de::IgnoredAny>(value)
                .map_err(|e| format!("value_json is not valid JSON ({e}): {value:?}"))?;
            set_at(doc, root, &edit.path, value)
        }
        Ok(pb::EditOp::Remove) => remove_at(doc, root, &edit.path),
        Err(_) => Err(format!("unknown op {}", edit.op)),
    }
}

/// A member of an object or an element of an array, as byte ranges.
#[derive(Debug, Clone, Copy)]
struct Item {
    /// Start of the key (objects) or of the value (arrays).
    start: usize,
    /// End of the key including its quotes (objects; equal to `start` for arrays).
    key_end: usize,
    value_start: usize,
    value_end: usize,
}

/// The items of the container at `open` (`{` or `[`), and the index of its closing bracket.
fn items(doc: &[u8], open: usize) -> Result<(Vec<Item>, usize), String> {
    let is_object = doc[open] == b'{';
    let close_byte = if is_object { b'}' } else { b']' };
    let mut found = Vec::new();
    let mut i = skip_ws(doc, open + 1);
    if doc.get(i) == Some(&close_byte) {
        return Ok((found, i));
    }
    loop {
        let start = i;
        let mut key_end = i;
        if is_object {
            key_end = skip_string(doc, i)?;
            i = skip_ws(doc, key_end);
            if doc.get(i) != Some(&b':') {
                return Err(format!("expected `:` at byte {i}"));
            }
            i = skip_ws(doc, i + 1);
        }
        let value_start = i;
        let value_end = skip_value(doc, i)?;
        found.push(Item {
            start,
            key_end,
            value_start,
            value_end,
        });
        i = skip_ws(doc, value_end);
        match doc.get(i) {
            Some(b',') => i = skip_ws(doc, i + 1),
            Some(b) if *b == close_byte => return Ok((found, i)),
            _ => return Err(format!("unexpected byte at {i}")),
        }
    }
}

fn skip_ws(doc: &[u8], mut i: usize) -> usize {
    while i < doc.len() && matches!(doc[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

fn skip_string(doc: &[u8], start: usize) -> Result<usize, String> {
    if doc.get(start) != Some(&b'"') {
        return Err(format!("expected a string at byte {start}"));
    }
    let mut i = start + 1;
    while i < doc.len() {
        match doc[i] {
            b'\\' => i += 2,
            b'"' => return Ok(i + 1),
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

fn skip_value(doc: &[u8], start: usize) -> Result<usize, String> {
    match doc.get(start) {
        None => Err("unexpected end of the event".into()),
        Some(b'"') => skip_string(doc, start),
        Some(b'{' | b'[') => {
            let mut depth = 0usize;
            let mut i = start;
            while i < doc.len() {
                match doc[i] {
                    b'"' => {
                        i = skip_string(doc, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err("unterminated object or array".into())
        }
        Some(_) => {
            let mut i = start;
            while i < doc.len()
                && !matches!(doc[i], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                i += 1;
            }
            Ok(i)
        }
    }
}

fn key_text(raw: &[u8]) -> Cow<'_, str> {
    let inner = &raw[1..raw.len() - 1];
    if !inner.contains(&b'\\')
        && let Ok(text) = std::str::from_utf8(inner)
    {
        return Cow::Borrowed(text);
    }
    Cow::Owned(serde_json::from_slice::<String>(raw).unwrap_or_default())
}

/// The item a path segment names in the container at `open`: the last member with that key, or
/// the element at that index.
fn find(doc: &[u8], open: usize, items: &[Item], segment: &str) -> Option<usize> {
    if doc[open] == b'{' {
        items
            .iter()
            .rposition(|item| key_text(&doc[item.start..item.key_end]) == segment)
    } else {
        segment.parse::<usize>().ok().filter(|i| *i < items.len())
    }
}

/// The bytes to drain to take item `index` out of its container, with one comma.
fn member_range(found_items: &[Item], index: usize) -> std::ops::Range<usize> {
    let item = found_items[index];
    if index > 0 {
        found_items[index - 1].value_end..item.value_end
    } else if let Some(next) = found_items.get(1) {
        item.start..next.start
    } else {
        item.start..item.value_end
    }
}

/// In the object at `open`, drops every member with the key `segment` but the last (the one a
/// plugin decoding the object sees). Arrays are left alone.
fn collapse_duplicates(doc: &mut Vec<u8>, open: usize, segment: &str) -> Result<(), String> {
    if doc[open] != b'{' {
        return Ok(());
    }
    loop {
        let (found_items, _) = items(doc, open)?;
        let mut same = found_items
            .iter()
            .enumerate()
            .filter(|(_, item)| key_text(&doc[item.start..item.key_end]) == segment)
            .map(|(index, _)| index);
        let (Some(first), Some(_)) = (same.next(), same.next()) else {
            return Ok(());
        };
        let range = member_range(&found_items, first);
        doc.drain(range);
    }
}

fn kind(byte: u8) -> &'static str {
    match byte {
        b'"' => "a string",
        b'{' => "an object",
        b'[' => "an array",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        _ => "a number",
    }
}

/// `{"a":{"b":value}}` for the path `[a, b]`; the value itself for an empty path.
fn nested(path: &[String], value: &str) -> String {
    let mut text = String::new();
    for segment in path {
        text.push('{');
        text.push_str(&serde_json::Value::from(segment.as_str()).to_string());
        text.push(':');
    }
    text.push_str(value);
    for _ in path {
        text.push('}');
    }
    text
}

fn set_at(doc: &mut Vec<u8>, open: usize, path: &[String], value: &str) -> Result<(), String> {
    let segment = &path[0];
    collapse_duplicates(doc, open, segment)?;
    let (found_items, close) = items(doc, open)?;
    if let Some(index) = find(doc, open, &found_items, segment) {
        let item = found_items[index];
        if path.len() == 1 {
            doc.splice(item.value_start..item.value_end, value.bytes());
            return Ok(());
        }
        return match doc[item.value_start] {
            b'{' | b'[' => set_at(doc, item.value_start, &path[1..], value),
            other => Err(format!(
                "`{segment}` holds {}, not an object or array",
                kind(other)
            )),
        };
    }
    let inner = nested(&path[1..], value);
    let addition = if doc[open] == b'{' {
        format!("{}:{inner}", serde_json::Value::from(segment.as_str()))
    } else if segment.parse::<usize>().ok() == Some(found_items.len()) {
        inner
    } else {
        return Err(format!(
            "index {segment} is past the end of an array of {} elements (only {} appends)",
            found_items.len(),
            found_items.len()
        ));
    };
    match found_items.last() {
        Some(last) => {
            let text = format!(",{addition}");
            doc.splice(last.value_end..last.value_end, text.bytes());
        }
        None => {
            doc.splice(close..close, addition.bytes());
        }
    }
    Ok(())
}

fn remove_at(doc: &mut Vec<u8>, open: usize, path: &[String]) -> Result<(), String> {
    collapse_duplicates(doc, open, &path[0])?;
    let (found_items, _) = items(doc, open)?;
    let Some(index) = find(doc, open, &found_items, &path[0]) else {
        return Ok(());
    };
    let item = found_items[index];
    if path.len() > 1 {
        return match doc[item.value_start] {
            b'{' | b'[' => remove_at(doc, item.value_start, &path[1..]),
            _ => Ok(()),
        };
    }
    doc.drain(member_range(&found_items, index));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(path: &[&str], value: &str) -> pb::Edit {
        pb::Edit {
            path: path.iter().map(|s| s.to_string()).collect(),
            op: pb::EditOp::Set as i32,
            value_json: value.to_string(),
        }
    }

    fn remove(path: &[&str]) -> pb::Edit {
        pb::Edit {
            path: path.iter().map(|s| s.to_string()).collect(),
            op: pb::EditOp::Remove as i32,
            value_json: String::new(),
        }
    }

    fn apply(json: &str, edits: &[pb::Edit]) -> String {
        String::from_utf8(apply_edits(json.as_bytes(), edits).expect("edits apply")).expect("utf-8")
    }

    #[test]
    fn set_replaces_only_the_value_bytes() {
        let json = r#"{ "ei" : 1.0e0, "user":"alice" , "addr.remote":"1.2.3.4:5", "x":"\u00e9" }"#;
        assert_eq!(
            apply(json, &[set(&["user"], r#""***""#)]),
            r#"{ "ei" : 1.0e0, "user":"***" , "addr.remote":"1.2.3.4:5", "x":"\u00e9" }"#
        );
        assert_eq!(
            apply(json, &[set(&["addr.remote"], "null")]),
            r#"{ "ei" : 1.0e0, "user":"alice" , "addr.remote":null, "x":"\u00e9" }"#
        );
    }

    #[test]
    fn set_appends_missing_keys_and_creates_objects_on_the_way() {
        assert_eq!(
            apply(r#"{"a":1}"#, &[set(&["b"], "true")]),
            r#"{"a":1,"b":true}"#
        );
        assert_eq!(apply(r#"{ }"#, &[set(&["b"], "1")]), r#"{ "b":1}"#);
        assert_eq!(
            apply(r#"{"a":{"x":1}}"#, &[set(&["a", "y", "z"], r#""v""#)]),
            r#"{"a":{"x":1,"y":{"z":"v"}}}"#
        );
    }

    #[test]
    fn set_finds_escaped_keys_and_array_elements() {
        assert_eq!(
            apply(r#"{"a\"b":1}"#, &[set(&["a\"b"], "2")]),
            r#"{"a\"b":2}"#
        );
        assert_eq!(
            apply(r#"{"l":[1, 2 ,3]}"#, &[set(&["l", "1"], "9")]),
            r#"{"l":[1, 9 ,3]}"#
        );
        assert_eq!(
            apply(r#"{"l":[1]}"#, &[set(&["l", "1"], "2")]),
            r#"{"l":[1,2]}"#
        );
        assert!(apply_edits(br#"{"l":[1]}"#, &[set(&["l", "5"], "2")]).is_err());
    }

    #[test]
    fn remove_takes_the_member_and_one_comma() {
        let json = r#"{"a":1, "b":2, "c":3}"#;
        assert_eq!(apply(json, &[remove(&["a"])]), r#"{"b":2, "c":3}"#);
        assert_eq!(apply(json, &[remove(&["b"])]), r#"{"a":1, "c":3}"#);
        assert_eq!(apply(json, &[remove(&["c"])]), r#"{"a":1, "b":2}"#);
        assert_eq!(apply(r#"{"a":1}"#, &[remove(&["a"])]), r#"{}"#);
        assert_eq!(apply(json, &[remove(&["zzz"])]), json);
        assert_eq!(
            apply(r#"{"a":{"b":1,"c":2}}"#, &[remove(&["a", "b"])]),
            r#"{"a":{"c":2}}"#
        );
        assert_eq!(
            apply(r#"{"l":[1,2,3]}"#, &[remove(&["l", "0"])]),
            r#"{"l":[2,3]}"#
        );
        assert_eq!(
            apply(r#"{"a":1,"a":2,"b":3}"#, &[remove(&["a"])]),
            r#"{"b":3}"#
        );
    }

    #[test]
    fn a_set_on_a_duplicated_key_leaves_one_member_the_one_set() {
        let redact = set(&["secret"], r#""REDACTED""#);
        assert_eq!(
            apply(
                r#"{"secret":"A","secret":"B"}"#,
                std::slice::from_ref(&redact)
            ),
            r#"{"secret":"REDACTED"}"#
        );
        assert_eq!(
            apply(
                r#"{"secret":"A", "x":1, "secret":"B", "y":2, "secret":"C"}"#,
                &[redact]
            ),
            r#"{"x":1, "y":2, "secret":"REDACTED"}"#
        );
        // Escaped spellings of the same key are the same key.
        assert_eq!(
            apply(r#"{"secret":"A","secret":"B"}"#, &[set(&["secret"], "0")]),
            r#"{"secret":0}"#
        );
    }

    #[test]
    fn nested_duplicates_collapse_on_every_level_of_the_path() {
        let redact = set(&["a", "secret"], r#""REDACTED""#);
        assert_eq!(
            apply(
                r#"{"a":{"secret":"A","k":1},"a":{"secret":"B","secret":"C"}}"#,
                &[redact]
            ),
            r#"{"a":{"secret":"REDACTED"}}"#
        );
        assert_eq!(
            apply(
                r#"{"l":[{"secret":"A","secret":"B"}]}"#,
                &[set(&["l", "0", "secret"], "null")]
            ),
            r#"{"l":[{"secret":null}]}"#
        );
        assert_eq!(
            apply(
                r#"{"a":{"secret":"A"},"a":{"k":1}}"#,
                &[remove(&["a", "secret"])]
            ),
            r#"{"a":{"k":1}}"#
        );
    }

    #[test]
    fn identity_keys_are_not_editable() {
        for key in IDENTITY_KEYS {
            for edit in [set(&[key], "1"), remove(&[key]), set(&[key, "x"], "1")] {
                let err = apply_edits(br#"{"event":"x","uid":"u","a":1}"#, &[edit]).unwrap_err();
                assert!(
                    err.contains(&format!("`{key}` is an identity key")),
                    "{err}"
                );
            }
        }
        // Only the top level is the identity: nested keys of those names are ordinary.
        assert_eq!(
            apply(r#"{"a":{"uid":1}}"#, &[set(&["a", "uid"], "2")]),
            r#"{"a":{"uid":2}}"#
        );
    }

    #[test]
    fn edits_may_not_nest_the_event_past_what_parses() {
        let deep_value = "[".repeat(100) + &"]".repeat(100);
        let path: Vec<&str> = std::iter::repeat_n("k", 40).collect();
        let err = apply_edits(br#"{"a":1}"#, &[set(&path, &deep_value)]).unwrap_err();
        assert!(err.contains("levels deep"), "{err}");
        let ok = apply_edits(br#"{"a":"[[[{"}"#, &[set(&["b"], "[1]")])
            .expect("brackets in strings do not count");
        assert_eq!(ok, br#"{"a":"[[[{","b":[1]}"#);
    }

    #[test]
    fn bad_edits_are_named() {
        let err = apply_edits(br#"{"a":"s"}"#, &[set(&["a", "b"], "1")]).unwrap_err();
        assert!(
            err.contains("edit 0") && err.contains("holds a string"),
            "{err}"
        );
        let err = apply_edits(br#"{"a":1}"#, &[set(&["a"], "{oops")]).unwrap_err();
        assert!(err.contains("not valid JSON"), "{err}");
        let err = apply_edits(br#"{"a":1}"#, &[set(&[], "1")]).unwrap_err();
        assert!(err.contains("empty"), "{err}");
        let mut unknown = remove(&["a"]);
        unknown.op = 9;
        assert!(
            apply_edits(br#"{"a":1}"#, &[unknown])
                .unwrap_err()
                .contains("unknown op")
        );
    }
}
