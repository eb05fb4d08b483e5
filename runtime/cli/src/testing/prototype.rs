//! Converts fixtures in the 2022 prototype's wrapper format — `{name, type, description, data}` with
//! `data` the typed event as protobuf JSON with Go field names — to flat event JSON as
//! event-handler posts it, with the table generated into `sdk/prototype-fields.json` (its `about`
//! says how the table reads).

use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

const TABLE: &str = include_str!("../../../../sdk/prototype-fields.json");

/// The conversion of one event type.
#[derive(Debug, Deserialize)]
struct EventTable {
    /// The typed event's message name (`UserLogin`), under which `data` may wrap the event.
    message: String,
    /// Flat keys whose values are JSON numbers (protobuf JSON writes 64-bit integers as strings).
    #[serde(default)]
    numbers: BTreeSet<String>,
    /// Go field path → flat key; `""` for an embedded block whose members are lifted.
    fields: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
struct Table {
    events: BTreeMap<String, EventTable>,
}

fn table() -> Result<&'static Table, String> {
    static PARSED: OnceLock<Result<Table, String>> = OnceLock::new();
    PARSED
        .get_or_init(|| {
            serde_json::from_str(TABLE)
                .map_err(|e| format!("the bundled prototype field table is malformed: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

fn convert_object(
    table: &EventTable,
    object: &Map<String, Value>,
    prefix: &str,
    out: &mut Map<String, Value>,
) {
    for (name, value) in object {
        let path = format!("{prefix}{name}");
        let Some(key) = table.fields.get(&path) else {
            continue;
        };
        let below = format!("{path}.");
        let has_paths_below = table
            .fields
            .range(below.clone()..)
            .next()
            .is_some_and(|(p, _)| p.starts_with(&below));
        match value {
            Value::Object(block) if key.is_empty() => convert_object(table, block, &below, out),
            Value::Object(inner) if has_paths_below => {
                let mut converted = Map::new();
                convert_object(table, inner, &below, &mut converted);
                out.insert(key.clone(), Value::Object(converted));
            }
            Value::String(text) if table.numbers.contains(key) => {
                let number = text
                    .parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| text.parse::<f64>().map(Value::from));
                out.insert(key.clone(), number.unwrap_or_else(|_| value.clone()));
            }
            _ if key.is_empty() => {}
            _ => {
                out.insert(key.clone(), value.clone());
            }
        }
    }
}

pub(super) fn convert_wrapper(wrapper: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let Some(Value::Object(mut data)) = wrapper.get("data").cloned() else {
        return Err("a prototype fixture needs an object under `data`".into());
    };
    // The prototype wrapped events in their message name ({"UserLogin": {...}}).
    if !data.contains_key("Metadata")
        && data.len() == 1
        && let Some((_, Value::Object(inner))) = data.iter().next()
    {
        data = inner.clone();
    }
    let Some(event_type) = data
        .get("Metadata")
        .and_then(|m| m.get("Type"))
        .and_then(Value::as_str)
    else {
        return Err("the prototype fixture's data has no Metadata.Type (the event type)".into());
    };
    let table = table()?;
    let Some(events) = table.events.get(event_type) else {
        let known: Vec<&str> = table.events.keys().map(String::as_str).collect();
        return Err(format!(
            "prototype fixtures of type {event_type} cannot be converted (the table covers {}); write it as flat JSON as event-handler posts it",
            known.join(", ")
        ));
    };
    let mut flat = Map::new();
    convert_object(events, &data, "", &mut flat);
    tracing::debug!(message = %events.message, "converted a prototype fixture");
    serde_json::to_vec(&Value::Object(flat)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(wrapper: Value) -> Result<Value, String> {
        convert_wrapper(wrapper.as_object().expect("object"))
            .map(|bytes| serde_json::from_slice(&bytes).expect("JSON"))
    }

    #[test]
    fn a_prototype_login_fixture_flattens_through_the_generated_table() {
        let data = serde_json::json!({
            "Metadata": {"Index": "3", "Type": "user.login", "ID": "u-1", "Code": "T1000W", "Time": "2024-02-23T18:56:50.628Z", "ClusterName": "c"},
            "User": {"User": "mallory", "Login": "root"},
            "Status": {"Success": false, "Error": "bad password"},
            "Connection": {"RemoteAddr": "1.2.3.4:5"},
            "Method": "local",
            "MFADevice": {"DeviceName": "otp", "DeviceType": "TOTP"},
            "NotInTheTable": 1
        });
        let expected = serde_json::json!({
            "ei": 3, "event": "user.login", "uid": "u-1", "code": "T1000W", "time": "2024-02-23T18:56:50.628Z",
            "cluster_name": "c", "user": "mallory", "login": "root", "success": false, "error": "bad password",
            "addr.remote": "1.2.3.4:5", "method": "local",
            "mfa_device": {"mfa_device_name": "otp", "mfa_device_type": "TOTP"}
        });
        let wrapper = serde_json::json!({"name": "failed-login", "type": "user.login", "description": "", "data": data.clone()});
        assert_eq!(convert(wrapper).expect("converts"), expected);
        // The same event wrapped in its message name, as the prototype's OneOf wrote it.
        let wrapped = serde_json::json!({"name": "x", "type": "user.login", "description": "", "data": {"UserLogin": data}});
        assert_eq!(convert(wrapped).expect("converts"), expected);
    }

    #[test]
    fn fixtures_without_a_type_or_a_table_are_refused_with_the_reason() {
        let no_type = serde_json::json!({"name": "x", "type": "t", "description": "", "data": {"Method": "local"}});
        assert!(convert(no_type).unwrap_err().contains("Metadata.Type"));
        let unknown = serde_json::json!({"name": "x", "type": "t", "description": "", "data": {"Metadata": {"Type": "no.such.type"}}});
        let err = convert(unknown).unwrap_err();
        assert!(
            err.contains("no.such.type") && err.contains("user.login") && err.contains("flat JSON"),
            "{err}"
        );
    }
}
