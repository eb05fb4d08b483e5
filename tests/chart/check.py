#!/usr/bin/env python3
"""Offline checks of charts/eventplug-operator with the real Helm engine (PyPI helm-python-sdk,
the official Helm v4 Go SDK) and PyPI kubernetes-validate:

- `helm lint --strict` of the chart with its defaults and with every option on;
- renders with the defaults and with non-default values, each object checked against the
  Kubernetes schemas of the oldest version kubernetes-validate ships (1.25) and a current one
  (the 1.20 test cluster's API server checks the rest when tests/harness installs the chart);
- what the renders must say: the settings the operator reads, least-privilege RBAC (namespaced
  Roles only in the allowed namespaces; a ClusterRole only for the webhook configurations and
  namespace labels), the PodDisruptionBudget only with replicas > 1, the options' objects only
  when asked for;
- values.schema.json refuses bad values at install time, naming the value;
- the chart's CRDs are the same bytes as crds/;
- docs/install.md's values table lists every value of values.yaml with its default.

Exits non-zero with what is wrong. Run from anywhere: python3 tests/chart/check.py
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import helm_python
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHART = os.path.join(ROOT, "charts", "eventplug-operator")
SCHEMA_VERSIONS = ["1.25.0", "1.33.0"]
# Kinds of prometheus-operator, which kubernetes-validate has no schema for.
NOT_CORE = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

failures = []


def check(ok, what):
    if not ok:
        failures.append(what)
        print(f"FAIL: {what}", file=sys.stderr)
    return ok


def render(values, name="ep", namespace="eventplug-system"):
    chart = helm_python.Chart.load(CHART)
    out = chart.render(values, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    notes = next((t for p, t in out.items() if p.endswith("NOTES.txt")), "")
    return objects, notes


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def validate(objects, label):
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, obj in enumerate(objects):
            if obj["kind"] in NOT_CORE:
                continue
            paths.append(os.path.join(tmp, f"{i:02d}-{obj['kind']}.yaml"))
            with open(paths[-1], "w") as f:
                yaml.safe_dump(obj, f)
        for version in SCHEMA_VERSIONS:
            run = subprocess.run(
                ["kubernetes-validate", "--strict", "--quiet", "-k", version, *paths],
                capture_output=True, text=True)
            check(run.returncode == 0,
                  f"{label}: kubernetes-validate {version}: {run.stdout}{run.stderr}")


def settings_of(objects):
    config_map = next(o for o in by_kind(objects, "ConfigMap")
                      if "settings.yaml" in o.get("data", {}))
    return yaml.safe_load(config_map["data"]["settings.yaml"])


ALL_ON = {
    "replicas": 2,
    "fullnameOverride": "evp-operator",
    "image": {"repository": "registry.example:5000/eventplug/operator", "tag": "sha256:" + "a" * 64},
    "imagePullSecrets": [{"name": "regcred"}],
    "log": {"level": "debug", "format": "text"},
    "policy": {"allowedNamespaces": ["teleport", "audit"], "allowedRegistries": ["registry.example:5000"],
               "maxMemory": "128Mi", "maxConcurrency": 4},
    "registries": {"registry.example:5000": {"plainHttp": True}},
    "sidecar": {"image": {"repository": "registry.example:5000/eventplug/sidecar", "tag": "1.2.3"},
                "upgrade": "manual", "configApiVersion": "eventplug.dev/v1alpha1", "adminPort": 9191,
                "resources": {"cpu": "50m", "cpuLimit": "1", "memoryHeadroom": "32Mi"},
                "delivery": {"poisonPolicy": "block", "poisonAttempts": 3, "maxBodyBytes": "1Mi"}},
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                "podMonitor": {"enabled": True}, "sidecarPodMonitor": {"enabled": True}},
    "dashboard": {"enabled": True},
    "prometheusRule": {"enabled": True},
    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
    "extraVolumes": [{"name": "registry-ca", "secret": {"secretName": "registry-ca"}}],
    "extraVolumeMounts": [{"name": "registry-ca", "mountPath": "/etc/registry-ca", "readOnly": True}],
    "nodeSelector": {"kubernetes.io/os": "linux"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "audit", "effect": "NoSchedule"}],
    "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
            "matchLabels": {"app.kubernetes.io/name": "eventplug-operator"}}}}]}},
    "podAnnotations": {"example.com/team": "security"},
    "serviceAccount": {"annotations": {"example.com/owner": "platform"}},
}


def lint(values, label):
    try:
        result = helm_python.lint(CHART, values, strict=True, namespace="eventplug-system")
    except helm_python.HelmError as e:
        check(False, f"helm lint ({label}): {e}")
        return
    messages = [m for m in (result.get("messages") or []) if m.get("severity", "") not in ("INFO", 1)]
    check(not messages and not result.get("errors"), f"helm lint ({label}): {json.dumps(result)}")


def main():
    defaults = {"policy": {"allowedNamespaces": ["teleport"]}}
    lint(defaults, "chart defaults")
    lint(ALL_ON, "every option on")

    # Defaults (with the one value a user must give).
    objects, notes = render(defaults)
    validate(objects, "defaults")
    kinds = sorted(o["kind"] for o in objects)
    check(kinds == sorted(["ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Role",
                           "Role", "RoleBinding", "RoleBinding", "Service", "ServiceAccount"]),
          f"defaults render {kinds}")
    check(not by_kind(objects, "PodDisruptionBudget"), "a PodDisruptionBudget with one replica")
    settings = settings_of(objects)
    check(settings["policy"]["allowedNamespaces"] == ["teleport"], f"settings policy {settings}")
    check(settings["sidecarImage"] == "ghcr.io/eventplug/sidecar:0.1.0", f"sidecarImage {settings}")
    check(settings["webhook"]["service"] == {"namespace": "eventplug-system", "name": "ep-eventplug-operator", "port": 443},
          f"webhook service {settings.get('webhook')}")
    check(settings["leaderElection"]["namespace"] == "eventplug-system", f"leaderElection {settings}")
    check(settings["sidecarDefaults"]["adminPort"] == 9090, f"sidecarDefaults {settings.get('sidecarDefaults')}")
    deployment = by_kind(objects, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    check(container["image"] == "ghcr.io/eventplug/operator:0.1.0", f"operator image {container['image']}")
    check(container["securityContext"]["readOnlyRootFilesystem"] is True
          and pod["securityContext"]["runAsNonRoot"] is True, "the operator runs as non-root, read-only")
    labels = deployment["metadata"]["labels"]
    for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/version",
                "app.kubernetes.io/managed-by", "helm.sh/chart"):
        check(key in labels, f"label {key} on the Deployment")
    check("kubectl get evp" in notes and "kubectl apply -n teleport" in notes, f"NOTES: {notes}")
    check_rbac(objects, ["teleport"], "eventplug-system")

    # Every option on.
    objects, notes = render(ALL_ON, name="audit", namespace="ops")
    validate(objects, "every option on")
    names = {o["metadata"]["name"] for o in objects}
    check("evp-operator" in names, f"fullnameOverride: {sorted(names)}")
    pdb = by_kind(objects, "PodDisruptionBudget")
    check(len(pdb) == 1 and pdb[0]["spec"]["minAvailable"] == 1, f"PDB with 2 replicas: {pdb}")
    for kind, count in (("ServiceMonitor", 1), ("PodMonitor", 2), ("PrometheusRule", 1)):
        check(len(by_kind(objects, kind)) == count, f"{count} {kind}")
    dashboard = [o for o in by_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith("-dashboard")]
    if check(len(dashboard) == 1, "the dashboard ConfigMap"):
        board = json.loads(dashboard[0]["data"]["eventplug.json"])
        exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
        for metric in ("eventplug_events_total", "eventplug_plugin_duration_seconds_bucket",
                       "eventplug_plugin_failures_total", "eventplug_upstream_errors_total",
                       "eventplug_poison_events_total", "eventplug_reloads_total",
                       "eventplug_operator_reconciles_total"):
            check(metric in exprs, f"the dashboard shows {metric}")
    rules = by_kind(objects, "PrometheusRule")[0]["spec"]["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    check({"EventplugSidecarBlocked", "EventplugPoisonEvents", "EventplugPluginNotLoaded",
           "EventplugUpstreamErrors"} <= alerts, f"alerts {alerts}")
    settings = settings_of(objects)
    check(settings["sidecarImage"] == "registry.example:5000/eventplug/sidecar:1.2.3", f"sidecarImage {settings}")
    check(settings["sidecarUpgrade"] == "manual" and settings["sidecarConfigApiVersion"] == "eventplug.dev/v1alpha1",
          f"sidecar upgrade settings {settings}")
    check(settings["sidecarDefaults"] == {"cpu": "50m", "cpuLimit": "1", "memoryHeadroom": "32Mi",
                                          "poisonPolicy": "block", "poisonAttempts": 3, "maxBodyBytes": "1Mi",
                                          "adminPort": 9191},
          f"sidecarDefaults {settings.get('sidecarDefaults')}")
    check(settings["registries"] == {"registry.example:5000": {"plainHttp": True}}, f"registries {settings}")
    deployment = by_kind(objects, "Deployment")[0]
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    check(container["image"] == "registry.example:5000/eventplug/operator@sha256:" + "a" * 64,
          f"a digest tag pins the image: {container['image']}")
    env = {e["name"]: e.get("value") for e in container["env"]}
    check(env.get("EVENTPLUG_LOG_FORMAT") == "text" and env.get("RUST_BACKTRACE") == "1", f"env {env}")
    check(any(v["name"] == "registry-ca" for v in pod["volumes"])
          and any(m["name"] == "registry-ca" for m in container["volumeMounts"]), "extra volumes reach the pod")
    check(pod["imagePullSecrets"] == [{"name": "regcred"}] and pod["nodeSelector"] and pod["tolerations"]
          and pod["affinity"], "pull secrets, node selector, tolerations, affinity reach the pod")
    check_rbac(objects, ["teleport", "audit"], "ops")

    # Settings checksum: a changed value rolls the operator, the same values do not.
    a = by_kind(render(defaults)[0], "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    b = by_kind(render({"policy": {"allowedNamespaces": ["teleport", "x"]}})[0], "Deployment")[0]["spec"]["template"]["metadata"]["annotations"]
    check(a == by_kind(render(defaults)[0], "Deployment")[0]["spec"]["template"]["metadata"]["annotations"],
          "the same values render the same settings checksum")
    check(a["checksum/settings"] != b["checksum/settings"], "a changed policy changes the settings checksum")

    # Without the webhook, leader election, RBAC or a ServiceAccount of its own: only what is left
    # is rendered, and the settings say so.
    objects, _ = render({"policy": {"allowedNamespaces": ["teleport"]}, "webhook": {"enabled": False},
                         "leaderElection": {"enabled": False}})
    validate(objects, "no webhook, no leader election")
    settings = settings_of(objects)
    check("webhook" not in settings and "leaderElection" not in settings, f"settings {settings}")
    check(not by_kind(objects, "ClusterRole") and sorted(r["metadata"]["namespace"] for r in by_kind(objects, "Role")) == ["teleport"],
          f"no ClusterRole and no Role of its own without webhook and election: {[o['kind'] for o in objects]}")
    service = by_kind(objects, "Service")[0]
    check([p["name"] for p in service["spec"]["ports"]] == ["metrics"], f"no webhook port: {service['spec']['ports']}")
    objects, _ = render({"policy": {"allowedNamespaces": ["teleport"]}, "rbac": {"create": False},
                         "serviceAccount": {"create": False, "name": "platform-operator"}})
    kinds = {o["kind"] for o in objects}
    check(not kinds & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ServiceAccount"},
          f"rbac.create and serviceAccount.create false: {sorted(kinds)}")
    pod = by_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]
    check(pod["serviceAccountName"] == "platform-operator", f"serviceAccountName {pod['serviceAccountName']}")

    # The operator refuses to start without namespaces: so does the install, saying what to set.
    try:
        render({})
        check(False, "the chart rendered with an empty policy.allowedNamespaces")
    except helm_python.HelmError as e:
        check("policy.allowedNamespaces is empty" in str(e), f"an empty allowedNamespaces: {e}")

    # values.schema.json refuses bad values, naming them.
    for bad, needle in (
        ({"replicas": "two"}, "replicas"),
        ({"log": {"format": "xml"}}, "format"),
        ({"sidecar": {"upgrade": "sometimes"}}, "upgrade"),
        ({"sidecar": {"adminPort": 8888}}, "adminPort"),
        ({"policy": {"allowedNamespaces": ["Not_A_Namespace"]}}, "allowedNamespaces"),
        ({"policy": {"maxMemory": "lots"}}, "maxMemory"),
        ({"leaderElection": {"leaseDuration": "15"}}, "leaseDuration"),
        ({"imagePullSecret": [{"name": "x"}]}, "imagePullSecret"),
    ):
        try:
            render(bad)
            check(False, f"values {bad} were accepted")
        except helm_python.HelmError as e:
            check(needle in str(e), f"values {bad}: the error does not name {needle}: {e}")
    try:
        render({"replicas": 2, "leaderElection": {"enabled": False}, "policy": {"allowedNamespaces": ["teleport"]}})
        check(False, "replicas 2 without leader election rendered")
    except helm_python.HelmError as e:
        check("leaderElection" in str(e), f"replicas 2 without leader election: {e}")

    # The CRDs are crds/'s bytes.
    for name in os.listdir(os.path.join(ROOT, "crds")):
        with open(os.path.join(ROOT, "crds", name), "rb") as f, \
                open(os.path.join(CHART, "crds", name), "rb") as g:
            check(f.read() == g.read(), f"charts/eventplug-operator/crds/{name} differs from crds/{name}: cp crds/{name} charts/eventplug-operator/crds/")

    check_values_table()
    if failures:
        print(f"chart checks: {len(failures)} failed", file=sys.stderr)
        sys.exit(1)
    print("chart checks: all passed")


def check_rbac(objects, namespaces, release_namespace):
    roles = by_kind(objects, "Role")
    role_namespaces = sorted(r["metadata"]["namespace"] for r in roles)
    check(role_namespaces == sorted(namespaces + [release_namespace]),
          f"Roles in {role_namespaces}, want the allowed namespaces {namespaces} and {release_namespace}")
    bindings = by_kind(objects, "RoleBinding")
    check(sorted(b["metadata"]["namespace"] for b in bindings) == role_namespaces, "a RoleBinding beside each Role")
    for role in roles:
        for rule in role["rules"]:
            check("*" not in rule.get("verbs", []) and "*" not in rule.get("resources", []),
                  f"a wildcard in Role {role['metadata']['namespace']}: {rule}")
    cluster_roles = by_kind(objects, "ClusterRole")
    if not check(len(cluster_roles) == 1, f"one ClusterRole, not {len(cluster_roles)}"):
        return
    cluster_role = cluster_roles[0]
    resources = sorted(r for rule in cluster_role["rules"] for r in rule["resources"])
    check(set(resources) <= {"validatingwebhookconfigurations", "namespaces"},
          f"the ClusterRole grants only what is cluster-wide: {resources}")
    for rule in cluster_role["rules"]:
        if "namespaces" in rule["resources"]:
            check("resourceNames" in rule and sorted(rule["resourceNames"]) == sorted(namespaces),
                  f"namespace label patches only on the allowed namespaces: {rule}")


def check_values_table():
    """Every value of values.yaml has a `# --` comment, and docs/install.md's table lists each
    documented value with values.yaml's default."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        values = yaml.safe_load(f)
    documented = {key: default for key, default, _ in value_rows()}
    leaves = []

    def walk(prefix, node):
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        else:
            leaves.append(prefix)
    walk("", values)
    for leaf in leaves:
        parts = leaf.split(".")
        check(any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)),
              f"values.yaml: `{leaf}` has no `# --` comment (nor has a key above it)")
    with open(os.path.join(ROOT, "docs", "install.md")) as f:
        doc = f.read()
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^|]*)` \|", doc, re.M))
    hint = "python3 tests/chart/check.py --table prints the table"
    for key, want in documented.items():
        if check(key in rows, f"docs/install.md's values table has no row for `{key}` ({hint})"):
            check(rows[key] == want, f"docs/install.md says `{key}` defaults to `{rows[key]}`; values.yaml says `{want}` ({hint})")
    for key in rows:
        check(key in documented, f"docs/install.md's values table lists `{key}`, which values.yaml does not document ({hint})")


def value_rows():
    """(key, default as JSON, meaning) of every value values.yaml documents with `# --`."""
    with open(os.path.join(CHART, "values.yaml")) as f:
        lines = f.read().splitlines()
    values = yaml.safe_load("\n".join(lines))
    stack, comment, rows = [], [], []
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment = [stripped[4:].strip()]
            continue
        if stripped.startswith("#") and comment:
            comment.append(stripped[1:].strip())
            continue
        m = re.match(r"^(\s*)([A-Za-z][A-Za-z0-9]*):", line)
        if not m:
            continue
        depth = len(m.group(1)) // 2
        stack = stack[:depth] + [m.group(2)]
        key = ".".join(stack)
        node = values
        for part in stack:
            node = node[part]
        if comment:
            rows.append((key, json.dumps(node, separators=(",", ":")), " ".join(comment)))
        comment = []
    return rows


def values_table():
    """The values table for docs/install.md."""
    out = ["| value | default | meaning |", "|---|---|---|"]
    out += [f"| `{k}` | `{d}` | {m} |" for k, d, m in value_rows()]
    return "\n".join(out)


if __name__ == "__main__":
    if sys.argv[1:] == ["--table"]:
        print(values_table())
    else:
        main()
