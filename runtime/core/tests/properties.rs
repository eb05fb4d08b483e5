//! Property tests: JSON -> envelope -> JSON keeps every event intact, and no plugin output, however
//! malformed, makes the host panic or forward anything but a JSON object.

use eventplug_proto::v1 as pb;
use eventplug_runtime::pipeline::{encode_event, interpret_response};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use prost::Message;
use prost_types::value::Kind;
use serde_json::{Map, Value};
use std::cell::Cell;

/// JSON values as a protobuf Struct carries them: numbers are doubles.
fn as_doubles(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(as_doubles).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), as_doubles(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn from_proto(value: &prost_types::Value) -> Value {
    match &value.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::NumberValue(n)) => {
            serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number)
        }
        Some(Kind::StringValue(s)) => Value::String(s.clone()),
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::StructValue(s)) => Value::Object(
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), from_proto(v)))
                .collect(),
        ),
        Some(Kind::ListValue(l)) => Value::Array(l.values.iter().map(from_proto).collect()),
    }
}

/// The envelope as Teleport's EventUnstructured, decoded with prost's own well-known types.
#[derive(Clone, PartialEq, Message)]
struct Unstructured {
    #[prost(string, tag = "1")]
    r#type: String,
    #[prost(string, tag = "2")]
    id: String,
    #[prost(message, optional, tag = "3")]
    time: Option<prost_types::Timestamp>,
    #[prost(int64, tag = "4")]
    index: i64,
    #[prost(message, optional, tag = "5")]
    unstructured: Option<prost_types::Struct>,
}

#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(message, optional, tag = "1")]
    event: Option<Unstructured>,
}

/// `cases` cases, and failures kept in `properties.proptest-regressions` beside this file (where
/// the default ends up too, after a warning on every run that it found no `src` folder).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..ProptestConfig::default()
    }
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{1,8}",
        "[a-z]{1,4}\\.[a-z]{1,6}",
        "\\PC{0,6}",
        // Few enough that random edits find members events already have.
        "[a-c]",
        Just("event".to_string()),
        Just("uid".to_string()),
        Just("ei".to_string()),
    ]
}

/// The path of an edit: mostly keys events have or could have and array indexes, now and then
/// what must be refused (no key at all, an identity key first).
fn edit_path() -> impl Strategy<Value = Vec<String>> {
    let segment = prop_oneof![
        4 => "[a-c]",
        2 => "[a-z_]{1,8}",
        1 => "\\PC{0,6}",
        2 => "[0-3]",
    ];
    prop_oneof![
        14 => prop::collection::vec(segment.clone(), 1..4),
        1 => Just(Vec::new()),
        1 => (prop::sample::select(vec!["event", "uid", "time", "ei", "code", "sid"]), prop::collection::vec(segment, 0..2))
            .prop_map(|(first, rest)| std::iter::once(first.to_string()).chain(rest).collect()),
    ]
}

/// Edits as a plugin might send them: mostly sets of JSON values and removals, now and then an
/// unknown op or a value that is not JSON.
fn edits() -> impl Strategy<Value = Vec<pb::Edit>> {
    let op = prop_oneof![8 => Just(0i32), 6 => Just(1i32), 1 => 2i32..5];
    let value = prop_oneof![
        12 => json_value().prop_map(|v| v.to_string()),
        2 => json_value().prop_map(|v| format!(" {v:#}\n")),
        1 => "\\PC{0,8}",
    ];
    prop::collection::vec(
        (edit_path(), op, value).prop_map(|(path, op, value_json)| pb::Edit {
            path,
            op,
            value_json,
        }),
        1..4,
    )
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e300f64..1e300)
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        "\\PC{0,20}".prop_map(Value::String),
        "[\"\\\\\n\t\u{0}-\u{1f}é🦀]{0,6}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn event() -> impl Strategy<Value = Map<String, Value>> {
    (
        prop::collection::btree_map(key(), json_value(), 0..10),
        "[a-z.]{1,20}",
        "[0-9a-f-]{0,36}",
    )
        .prop_map(|(fields, ty, uid)| {
            let mut map: Map<String, Value> = fields.into_iter().collect();
            map.insert("event".into(), Value::String(ty));
            map.insert("uid".into(), Value::String(uid));
            map.insert(
                "time".into(),
                Value::String("2024-02-23T18:56:50.628Z".into()),
            );
            map
        })
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn json_to_envelope_keeps_every_field(event in event(), pretty in any::<bool>()) {
        let json = if pretty { serde_json::to_vec_pretty(&event) } else { serde_json::to_vec(&event) }.expect("serialise");
        let encoded = encode_event(&json).expect("a JSON object encodes");
        let request = Request::decode(encoded.request.as_slice()).expect("prost decodes the request");
        let envelope = request.event.expect("an envelope");
        prop_assert_eq!(&envelope.r#type, event["event"].as_str().expect("type"));
        prop_assert_eq!(&envelope.id, event["uid"].as_str().expect("uid"));
        prop_assert_eq!(envelope.time, Some(prost_types::Timestamp { seconds: 1_708_714_610, nanos: 628_000_000 }));
        let back = Value::Object(envelope.unstructured.expect("struct").fields.iter().map(|(k, v)| (k.clone(), from_proto(v))).collect());
        prop_assert_eq!(back, as_doubles(&Value::Object(event)));
        // The type is the first field of the envelope, which is the first field of the request:
        // request tag, envelope length (a varint), type tag, type length, the type's bytes.
        let ty = encoded.identity.event_type.as_bytes();
        let envelope_len_bytes = encoded.request[1..].iter().position(|b| b & 0x80 == 0).expect("varint") + 1;
        let at = 1 + envelope_len_bytes;
        prop_assert_eq!(encoded.request[0], 0x0a);
        prop_assert_eq!(encoded.request[at], 0x0a);
        prop_assert_eq!(usize::from(encoded.request[at + 1]), ty.len());
        prop_assert_eq!(&encoded.request[at + 2..at + 2 + ty.len()], ty);
    }

    #[test]
    fn arbitrary_bytes_as_a_response_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let event = br#"{"event":"x","a":{"b":[1,2]}}"#;
        if let Ok(decision) = interpret_response(&bytes, event)
            && let Some(edited) = decision.edited
        {
            let value: Value = serde_json::from_slice(&edited).expect("edited output is JSON");
            prop_assert!(value.is_object());
        }
    }

}

/// Whatever edits a plugin sends either apply, giving the JSON a parsed-tree model of them gives,
/// or are refused. Most random edits are refused (an identity key, a value that is not JSON, an
/// array index past the end), so the cases that apply are counted: too few and the comparison with
/// the model would have been made too rarely to mean anything.
#[test]
fn arbitrary_edits_either_apply_to_valid_json_or_fail_cleanly() {
    use proptest::test_runner::TestRunner;
    let (cases, applied) = (Cell::new(0u32), Cell::new(0u32));
    let mut runner = TestRunner::new(ProptestConfig {
        source_file: Some(file!()),
        test_name: Some(concat!(
            module_path!(),
            "::arbitrary_edits_either_apply_to_valid_json_or_fail_cleanly"
        )),
        ..config(512)
    });
    let result = runner.run(&(event(), edits()), |(event, edits)| {
        cases.set(cases.get() + 1);
        let json = serde_json::to_vec(&event).expect("serialise");
        let response = pb::HandleEventResponse {
            edits: edits.clone(),
            ..Default::default()
        }
        .encode_to_vec();
        if let Ok(decision) = interpret_response(&response, &json) {
            applied.set(applied.get() + 1);
            let edited = decision.edited.expect("edits produce bytes");
            let value: Value = serde_json::from_slice(&edited).expect("edited output is JSON");
            prop_assert!(value.is_object());
            prop_assert_eq!(value, model(Value::Object(event), &edits));
        }
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    let (cases, applied) = (cases.get(), applied.get());
    eprintln!("{applied} of {cases} cases applied their edits");
    assert!(
        applied * 4 >= cases,
        "only {applied} of {cases} cases applied their edits: too few were compared with the model"
    );
    assert!(
        (cases - applied) * 20 >= cases,
        "only {} of {cases} cases were refused: too few refusals were checked",
        cases - applied
    );
}

/// An object written with `key` appearing once per value in `values`, among `others`, the key's
/// occurrences spread between them.
fn with_duplicates(key: &str, values: &[String], others: &Map<String, Value>) -> String {
    let mut members: Vec<String> = others
        .iter()
        .filter(|(k, _)| k.as_str() != key)
        .map(|(k, v)| format!("{}:{v}", Value::from(k.as_str())))
        .collect();
    for (n, value) in values.iter().enumerate() {
        let at = (n * 7) % (members.len() + 1);
        members.insert(
            at,
            format!("{}:{}", Value::from(key), Value::from(value.as_str())),
        );
    }
    format!("{{{}}}", members.join(","))
}

proptest! {
    #![proptest_config(config(256))]

    /// A redaction of a key that appears several times, at the top level or inside a nested
    /// object, leaves no occurrence of any original value.
    #[test]
    fn a_set_on_a_duplicated_key_leaves_no_original_value(
        others in prop::collection::btree_map("[a-z]{1,6}", json_value(), 0..6),
        secrets in prop::collection::vec("SECRET-[a-z0-9]{4,12}", 2..5),
        nested in any::<bool>(),
    ) {
        let others: Map<String, Value> = others.into_iter().collect();
        let inner = with_duplicates("secret", &secrets, &others);
        let (json, path) = if nested {
            (format!(r#"{{"event":"x","outer":{inner},"outer":{inner}}}"#), vec!["outer".to_string(), "secret".to_string()])
        } else {
            (inner, vec!["secret".to_string()])
        };
        let edit = pb::Edit { path, op: 0, value_json: r#""REDACTED""#.into() };
        let response = pb::HandleEventResponse { edits: vec![edit], ..Default::default() }.encode_to_vec();
        let decision = interpret_response(&response, json.as_bytes()).expect("the redaction applies");
        let edited = String::from_utf8(decision.edited.expect("edited bytes")).expect("utf-8");
        for secret in &secrets {
            prop_assert!(!edited.contains(secret.as_str()), "{secret} leaked: {edited}");
        }
        prop_assert_eq!(edited.matches(r#""secret":"REDACTED""#).count(), 1, "{}", edited);
        let value: Value = serde_json::from_str(&edited).expect("edited output is JSON");
        prop_assert!(value.is_object());
    }

    /// An edit of an identity key is refused whatever else the response holds.
    #[test]
    fn edits_of_identity_keys_are_refused(
        event in event(),
        key in prop::sample::select(vec!["event", "uid", "time", "ei", "code", "sid"]),
        rest in prop::collection::vec("[a-z]{1,4}", 0..3),
        op in 0i32..2,
    ) {
        let json = serde_json::to_vec(&event).expect("serialise");
        let mut path = vec![key.to_string()];
        path.extend(rest);
        let edit = pb::Edit { path, op, value_json: "1".into() };
        let response = pb::HandleEventResponse { edits: vec![edit], ..Default::default() }.encode_to_vec();
        let error = interpret_response(&response, &json).expect_err("an identity key edit is refused");
        prop_assert!(
            matches!(&error, eventplug_runtime::engine::CallError::BadOutput(m) if m.contains(&format!("`{key}` is an identity key"))),
            "{}", error
        );
    }
}

/// The same edits applied to a parsed tree: what the byte-level editor must agree with.
fn model(mut doc: Value, edits: &[pb::Edit]) -> Value {
    for edit in edits {
        let value: Value = if edit.op == 0 {
            serde_json::from_str(edit.value_json.trim()).expect("applied edits are valid")
        } else {
            Value::Null
        };
        apply_model(&mut doc, &edit.path, edit.op == 1, value);
    }
    doc
}

fn apply_model(node: &mut Value, path: &[String], remove: bool, value: Value) {
    let (first, rest) = path.split_first().expect("non-empty path");
    match node {
        Value::Object(map) => {
            if rest.is_empty() {
                if remove {
                    map.remove(first);
                } else {
                    map.insert(first.clone(), value);
                }
            } else if let Some(child) = map.get_mut(first) {
                apply_model(child, rest, remove, value);
            } else if !remove {
                let mut created = value;
                for segment in rest.iter().rev() {
                    created = Value::Object([(segment.clone(), created)].into_iter().collect());
                }
                map.insert(first.clone(), created);
            }
        }
        Value::Array(items) => {
            let Ok(index) = first.parse::<usize>() else {
                return;
            };
            if rest.is_empty() {
                if remove {
                    if index < items.len() {
                        items.remove(index);
                    }
                } else if index < items.len() {
                    items[index] = value;
                } else {
                    items.push(value);
                }
            } else if let Some(child) = items.get_mut(index) {
                apply_model(child, rest, remove, value);
            } else if !remove {
                let mut created = value;
                for segment in rest.iter().rev() {
                    created = Value::Object([(segment.clone(), created)].into_iter().collect());
                }
                items.push(created);
            }
        }
        _ => {}
    }
}
