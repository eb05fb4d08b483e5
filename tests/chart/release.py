#!/usr/bin/env python3
"""Installs, upgrades or uninstalls charts/eventplug-operator in a real cluster with the real Helm
engine (PyPI helm-python-sdk: the official Helm v4 Go SDK), for tests and the demo.

  release.py install|upgrade NAME NAMESPACE VALUES_JSON   (waits until the release's objects are ready)
  release.py uninstall NAME NAMESPACE                     (waits until they are gone)

The cluster is $KUBECONFIG's. Errors go to stderr, naming the release; the exit code is 1.
"""
import json
import os
import sys

import helm_python

CHART = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "charts", "eventplug-operator")
TIMEOUT = int(os.environ.get("EVENTPLUG_HELM_TIMEOUT", "300"))


def main(argv):
    if len(argv) < 3 or argv[0] not in ("install", "upgrade", "uninstall"):
        print(__doc__, file=sys.stderr)
        return 2
    verb, name, namespace = argv[:3]
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        print("release.py: KUBECONFIG is not set: name the cluster's kubeconfig", file=sys.stderr)
        return 1
    helm_python.disable_logging()
    helm = helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    try:
        if verb == "uninstall":
            helm.uninstall(name, wait="watcher", timeout=TIMEOUT)
        else:
            values = json.loads(argv[3]) if len(argv) > 3 else {}
            act = helm.install if verb == "install" else helm.upgrade
            release = act(CHART, name, values, namespace=namespace, wait="watcher", timeout=TIMEOUT)
            print(json.dumps({"name": name, "namespace": namespace,
                              "version": getattr(release, "version", None)}))
    except helm_python.HelmError as e:
        print(f"release.py: helm {verb} {name} in {namespace}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
