//! Converts fixtures in the 2022 prototype's wrapper format — `{name, type, description, data}` with
//! `data` the typed event as protobuf JSON with Go field names — to flat event JSON as
//! event-handler posts it: embedded metadata blocks are lifted to the top level and Go field names
//! become Teleport's JSON keys.

use serde_json::{Map, Value};

/// Go field names whose JSON key is not simply their snake_case form.
const KEYS: &[(&str, &str)] = &[
    ("Index", "ei"),
    ("Type", "event"),
    ("ID", "uid"),
    ("ClusterName", "cluster_name"),
    ("AWSRoleARN", "aws_role_arn"),
    ("GCPServiceAccount", "gcp_service_account"),
    ("LocalAddr", "addr.local"),
    ("RemoteAddr", "addr.remote"),
    ("Protocol", "proto"),
    ("SessionID", "sid"),
    ("WithMFA", "with_mfa"),
    ("ServerNamespace", "namespace"),
    ("ServerID", "server_id"),
    ("ServerHostname", "server_hostname"),
    ("ServerAddr", "server_addr"),
    ("ServerLabels", "server_labels"),
    ("UserMessage", "message"),
    ("MFADevice", "mfa_device"),
    ("MFADeviceName", "mfa_device_name"),
    ("MFADeviceUUID", "mfa_device_uuid"),
    ("MFADeviceType", "mfa_device_type"),
    ("UserAgent", "user_agent"),
    ("ExitCode", "exitCode"),
];

/// Embedded blocks whose fields sit at the top level of the flat JSON.
fn is_embedded(name: &str) -> bool {
    name.ends_with("Metadata") || name == "Status"
}

/// `ClusterName` → `cluster_name`; runs of capitals stay one word (`AWSRole` → `aws_role`).
fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        if c.is_uppercase() {
            let previous_lower =
                i > 0 && (chars[i - 1].is_lowercase() || chars[i - 1].is_ascii_digit());
            let next_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
            if i > 0 && (previous_lower || (next_lower && chars[i - 1].is_uppercase())) {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(*c);
        }
    }
    out
}

fn key(name: &str) -> String {
    KEYS.iter()
        .find(|(go, _)| *go == name)
        .map_or_else(|| snake_case(name), |(_, json)| (*json).to_string())
}

/// Nested objects keep their shape, with their Go field names mapped too.
fn convert_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (key(k), convert_value(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(convert_value).collect()),
        other => other.clone(),
    }
}

fn flatten(data: &Map<String, Value>, out: &mut Map<String, Value>) {
    for (name, value) in data {
        match value {
            Value::Object(block) if is_embedded(name) => flatten(block, out),
            _ => {
                out.insert(key(name), convert_value(value));
            }
        }
    }
}

pub(super) fn convert_wrapper(wrapper: &Map<String, Value>) -> Result<Vec<u8>, String> {
    let Some(Value::Object(data)) = wrapper.get("data") else {
        return Err("a prototype fixture needs an object under `data`".into());
    };
    let mut flat = Map::new();
    flatten(data, &mut flat);
    if !flat.get("event").is_some_and(Value::is_string) {
        return Err("the prototype fixture's data has no Metadata.Type (the event type)".into());
    }
    serde_json::to_vec(&Value::Object(flat)).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_become_teleport_keys() {
        assert_eq!(key("ClusterName"), "cluster_name");
        assert_eq!(key("RemoteAddr"), "addr.remote");
        assert_eq!(key("AccessRequests"), "access_requests");
        assert_eq!(
            key("RequiredPrivateKeyPolicy"),
            "required_private_key_policy"
        );
        assert_eq!(snake_case("KubernetesGroups"), "kubernetes_groups");
    }

    #[test]
    fn a_prototype_login_fixture_flattens() {
        let wrapper: Value = serde_json::json!({
            "name": "failed-login", "type": "user.login", "description": "a failed login",
            "data": {
                "Metadata": {"Index": 0, "Type": "user.login", "ID": "u-1", "Code": "T1000W", "Time": "2024-02-23T18:56:50.628Z", "ClusterName": "c"},
                "UserMetadata": {"User": "mallory", "Login": "root"},
                "Status": {"Success": false, "Error": "bad password"},
                "ConnectionMetadata": {"RemoteAddr": "1.2.3.4:5"},
                "Method": "local",
                "MFADevice": {"MFADeviceName": "otp", "MFADeviceType": "TOTP"}
            }
        });
        let flat: Value = serde_json::from_slice(
            &convert_wrapper(wrapper.as_object().expect("object")).expect("converts"),
        )
        .expect("json");
        assert_eq!(
            flat,
            serde_json::json!({
                "ei": 0, "event": "user.login", "uid": "u-1", "code": "T1000W", "time": "2024-02-23T18:56:50.628Z",
                "cluster_name": "c", "user": "mallory", "login": "root", "success": false, "error": "bad password",
                "addr.remote": "1.2.3.4:5", "method": "local",
                "mfa_device": {"mfa_device_name": "otp", "mfa_device_type": "TOTP"}
            })
        );
    }

    #[test]
    fn a_wrapper_without_a_type_is_refused() {
        let wrapper = serde_json::json!({"name": "x", "type": "t", "description": "", "data": {"Method": "local"}});
        assert!(
            convert_wrapper(wrapper.as_object().expect("object"))
                .unwrap_err()
                .contains("Metadata.Type")
        );
    }
}
