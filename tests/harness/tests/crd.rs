//! The operator's CRDs on the test cluster's real 1.20 API server: they install (a structural
//! schema the server accepts), defaults are filled in, and the schema refuses bad EventPlugins at
//! apply time, naming the field.
#![forbid(unsafe_code)]

use eventplug_harness::TestNamespace;
use eventplug_harness::event_handler::install_crds;
use eventplug_operator::crd::{EventPlugin, EventPluginTarget};
use kube::api::{ApiResource, DynamicObject, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::{Value, json};

async fn install(client: kube::Client) {
    install_crds(client, vec![EventPlugin::crd(), EventPluginTarget::crd()]).await;
}

fn plugin(name: &str, spec: Value) -> DynamicObject {
    match serde_json::from_value(json!({
        "apiVersion": "eventplug.dev/v1alpha1",
        "kind": "EventPlugin",
        "metadata": {"name": name},
        "spec": spec,
    })) {
        Ok(object) => object,
        Err(e) => panic!("test object does not parse: {e}"),
    }
}

fn valid_spec() -> Value {
    json!({
        "module": {"reference": "198.18.0.1:5000/plugins/redact:v1"},
        "target": {"deployment": "event-handler"},
        "config": {"fields": ["addr.remote"], "nested": {"any": [1, "two"]}},
    })
}

#[tokio::test]
async fn the_crds_install_and_refuse_bad_event_plugins_at_apply_time() {
    let ns = TestNamespace::create("crd").await;
    install(ns.client()).await;
    let resource = ApiResource::erase::<EventPlugin>(&());
    let plugins: Api<DynamicObject> = Api::namespaced_with(ns.client(), ns.name(), &resource);

    let created = match plugins
        .create(&PostParams::default(), &plugin("redact", valid_spec()))
        .await
    {
        Ok(created) => created,
        Err(e) => panic!("a valid EventPlugin was refused: {e}"),
    };
    let spec = &created.data["spec"];
    assert_eq!(
        spec["limits"]["timeout"], "100ms",
        "defaults filled: {spec}"
    );
    assert_eq!(spec["limits"]["memoryLimit"], "64Mi", "{spec}");
    assert_eq!(spec["failurePolicy"], "FailOpen", "{spec}");
    assert_eq!(spec["mode"], "enforce", "{spec}");
    assert_eq!(
        spec["config"]["nested"]["any"],
        json!([1, "two"]),
        "config is kept as given: {spec}"
    );
    let typed: Api<EventPlugin> = ns.api();
    match typed.get("redact").await {
        Ok(read) => assert_eq!(
            read.spec.target.deployment.as_deref(),
            Some("event-handler")
        ),
        Err(e) => panic!("the typed client cannot read it back: {e}"),
    }

    let mut cases = Vec::new();
    let mut bad = |name: &str, field: &str, edit: &dyn Fn(&mut Value)| {
        let mut spec = valid_spec();
        edit(&mut spec);
        cases.push((name.to_string(), field.to_string(), spec));
    };
    bad("policy", "spec.failurePolicy", &|s| {
        s["failurePolicy"] = json!("Sometimes")
    });
    bad("mode", "spec.mode", &|s| s["mode"] = json!("loud"));
    bad("reference", "spec.module.reference", &|s| {
        s["module"]["reference"] = json!("https://registry/x")
    });
    bad("priority", "spec.priority", &|s| {
        s["priority"] = json!(5000)
    });
    bad("permissions", "spec.permissions", &|s| {
        s["permissions"] = json!({"lock": true})
    });
    bad("timeout", "spec.limits.timeout", &|s| {
        s["limits"] = json!({"timeout": "30"})
    });
    bad("memory", "spec.limits.memoryLimit", &|s| {
        s["limits"] = json!({"memoryLimit": "lots"})
    });
    bad("concurrency", "spec.limits.concurrency", &|s| {
        s["limits"] = json!({"concurrency": 0})
    });
    bad("target", "spec.target", &|s| {
        s.as_object_mut().map(|o| o.remove("target"));
    });
    for (name, field, spec) in cases {
        match plugins
            .create(
                &PostParams::default(),
                &plugin(&format!("bad-{name}"), spec),
            )
            .await
        {
            Ok(_) => panic!("the API server took a bad EventPlugin ({name})"),
            Err(kube::Error::Api(status)) => {
                assert_eq!(status.code, 422, "{name}: {status:?}");
                assert!(
                    status.message.contains(&field),
                    "{name}: the refusal should name {field}: {}",
                    status.message
                );
            }
            Err(e) => panic!("{name}: {e}"),
        }
    }
}
