//! The sidecar's own identity at each target, least privilege: a ServiceAccount the operator owns,
//! its token in a `kubernetes.io/service-account-token` Secret mounted only into the sidecar at
//! the standard path (so no default token is mounted there, and event-handler's own, often
//! `default`, ServiceAccount is never bound to anything), and a Role allowing get, list and watch
//! on the target's config Secret and get on its module ConfigMaps, by name, and nothing else.
//!
//! A token Secret, not a TokenRequest: the Secret is filled by the token controller on every
//! server from 1.20 to today's (later releases still fill Secrets created this way). The trade is
//! a long-lived token that does not rotate by itself; it goes with the target. Every object
//! carries an owner reference to the Deployment, so deleting the Deployment collects them.

use crate::inject;
use crate::modules::MODULE_CONFIG_MAPS;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The target's sidecar ServiceAccount (and its Role and RoleBinding).
pub fn service_account_name(target: &str) -> String {
    format!("{target}-eventplug")
}

/// The Secret holding the ServiceAccount's token, mounted into the sidecar.
pub fn token_secret_name(target: &str) -> String {
    format!("{target}-eventplug-token")
}

/// Where the sidecar finds its token, as every Kubernetes client looks for it.
pub const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The objects of a target's sidecar identity, as server-side apply bodies (kind, body), in the
/// order they are applied. `metadata` is the operator's own labels and owner reference.
pub fn objects(target: &str, metadata: &Value) -> Vec<(&'static str, Value)> {
    let account = service_account_name(target);
    let with_name = |name: &str| {
        let mut m = metadata.clone();
        m["name"] = json!(name);
        m
    };
    let mut token_metadata = with_name(&token_secret_name(target));
    token_metadata["annotations"]["kubernetes.io/service-account.name"] = json!(account);
    let modules: Vec<String> = (0..MODULE_CONFIG_MAPS)
        .map(|i| inject::modules_config_map_name(target, i))
        .collect();
    vec![
        (
            "ServiceAccount",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": with_name(&account),
                   "automountServiceAccountToken": false}),
        ),
        (
            "Secret",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": token_metadata,
                   "type": "kubernetes.io/service-account-token"}),
        ),
        (
            "Role",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": with_name(&account),
            "rules": [
                {"apiGroups": [""], "resources": ["secrets"],
                 "resourceNames": [inject::secret_name(target)],
                 "verbs": ["get", "list", "watch"]},
                {"apiGroups": [""], "resources": ["configmaps"],
                 "resourceNames": modules, "verbs": ["get"]}
            ]}),
        ),
        (
            "RoleBinding",
            json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                   "metadata": with_name(&account),
                   "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
                   "subjects": [{"kind": "ServiceAccount", "name": account}]}),
        ),
    ]
}

/// The API of an object of [`objects`], from its own `apiVersion` and `kind`.
fn api(client: &Client, namespace: &str, body: &Value) -> Api<DynamicObject> {
    let kind = body["kind"].as_str().unwrap_or_default();
    let (group, version) = body["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .unwrap_or(("", "v1"));
    let plural = format!("{}s", kind.to_ascii_lowercase());
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), &plural);
    Api::namespaced_with(client.clone(), namespace, &resource)
}

/// Applies the target's identity objects under `field_manager`.
pub async fn apply(
    client: &Client,
    namespace: &str,
    target: &str,
    metadata: &Value,
    field_manager: &str,
) -> Result<(), kube::Error> {
    let params = PatchParams::apply(field_manager).force();
    for (_, body) in objects(target, metadata) {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        api(client, namespace, &body)
            .patch(&name, &params, &Patch::Apply(body))
            .await?;
    }
    Ok(())
}

/// Deletes the target's identity objects (those already gone are no error).
pub async fn delete(client: &Client, namespace: &str, target: &str) -> Result<(), kube::Error> {
    for (_, body) in objects(target, &json!({})) {
        let name = body["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        match api(client, namespace, &body)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_role_names_only_the_targets_own_objects() {
        let objects = objects("eh", &json!({"labels": {"a": "b"}}));
        let kinds: Vec<&str> = objects.iter().map(|(k, _)| *k).collect();
        assert_eq!(kinds, ["ServiceAccount", "Secret", "Role", "RoleBinding"]);
        let role = &objects[2].1;
        let rules = role["rules"].as_array().expect("rules");
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["resourceNames"], json!(["eh-eventplug"]));
        assert_eq!(rules[0]["verbs"], json!(["get", "list", "watch"]));
        assert_eq!(rules[1]["resources"], json!(["configmaps"]));
        assert_eq!(rules[1]["verbs"], json!(["get"]));
        assert_eq!(
            rules[1]["resourceNames"].as_array().map(Vec::len),
            Some(MODULE_CONFIG_MAPS)
        );
        // Nothing but named objects: no rule without resourceNames.
        assert!(rules.iter().all(|r| r["resourceNames"].is_array()));
        let binding = &objects[3].1;
        assert_eq!(binding["subjects"][0]["name"], json!("eh-eventplug"));
        let token = &objects[1].1;
        assert_eq!(token["type"], json!("kubernetes.io/service-account-token"));
        assert_eq!(
            token["metadata"]["annotations"]["kubernetes.io/service-account.name"],
            json!("eh-eventplug")
        );
        assert_eq!(token["metadata"]["labels"]["a"], json!("b"));
        assert_eq!(objects[0].1["automountServiceAccountToken"], json!(false));
    }
}
