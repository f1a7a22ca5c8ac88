#!/usr/bin/env python3
"""Lint the Helm chart with the real Helm library (Helm v4 through PyPI's helm-sdkpy).

helm-sdkpy's Lint takes a chart path and no values, so each values file is linted on a temporary
copy of the chart whose values.yaml is the chart's defaults merged with that file (Helm's own
rules: maps merge, lists and scalars replace, null deletes a key). Lint renders every template
offline and validates the values against values.schema.json.

Fails (exit 1) on any message of severity 3 (error) or any exception. helm-sdkpy serialises each
message's error as `{}`, so the path is all Helm tells us; for values.yaml errors the script adds
the schema violations it finds itself (python jsonschema).

Each values file is then installed with the real Helm install action into a fake API server
(see render()): that renders every template outside lint mode, where `fail` and `required` are
real errors. `--render-to DIR` writes those renders to DIR/<values file>.yaml instead and exits;
operator/tests/manifests.rs parses them strictly.

A self-test follows: values that must be rejected (wrong types, unknown keys) have to produce a
severity-3 message, or (for rules only a template `fail` can state) make `helm install` fail,
which proves the schema, the templates and this script really catch mistakes.

Usage: helm-lint.py [--render-to DIR] [CHART_DIR]   (default: charts/flashcard-operator)
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
import shutil
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

import helm_sdkpy

SEVERITY = {0: "UNKNOWN", 1: "INFO", 2: "WARNING", 3: "ERROR"}
ERROR = 3

# Values that the chart must reject: (description, overrides).
MUST_FAIL = [
    ("replicaCount is a string", {"replicaCount": "two"}),
    ("crds.install is a string", {"crds": {"install": "yes"}}),
    ("unknown top-level key (typo)", {"replicaCont": 2}),
    ("unknown nested key (typo)", {"serviceMonitor": {"enabeld": True}}),
    ("serviceMonitor.labels value is a number", {"serviceMonitor": {"labels": {"release": 1}}}),
    ("metrics.port out of range", {"metrics": {"port": 70000}}),
    ("watchNamespace is not a DNS label", {"watchNamespace": "Study_NS"}),
    ("example pipeline without any Redis", {"examplePipeline": {"enabled": True}}),
    ("ServiceMonitor without the metrics Service",
     {"serviceMonitor": {"enabled": True}, "metrics": {"service": {"enabled": False}}}),
    ("no ServiceAccount name with create=false", {"serviceAccount": {"create": False}}),
    ("restrictSecrets without any Secret name", {"rbac": {"secretNames": []}}),
    ("renew deadline not below the lease duration",
     {"leaderElection": {"leaseDurationSeconds": 10, "renewDeadlineSeconds": 10}}),
    ("secretNames entry is not a Secret name", {"rbac": {"restrictSecrets": True, "secretNames": ["Redis URL"]}}),
]


# ---------------------------------------------------------------------------------------------
# Rendering. helm-sdkpy has no `helm template`, and lint runs templates in lint mode (where `fail`
# and `required` only log). So each values file is also installed, with the real Helm install
# action, into a fake API server on 127.0.0.1 that answers discovery, says every object is new,
# and records every object Helm creates: those are the rendered manifests, exactly as Helm sends
# them. The post-install hook (the example FlashcardPipeline) is not captured: Helm validates
# hooks against the server's OpenAPI (protobuf), which the fake does not serve.

RESOURCES = {
    "v1": [("namespaces", "Namespace", False), ("secrets", "Secret", True), ("services", "Service", True),
           ("serviceaccounts", "ServiceAccount", True), ("configmaps", "ConfigMap", True), ("pods", "Pod", True)],
    "apps/v1": [("deployments", "Deployment", True), ("statefulsets", "StatefulSet", True)],
    "rbac.authorization.k8s.io/v1": [("clusterroles", "ClusterRole", False), ("clusterrolebindings", "ClusterRoleBinding", False),
                                     ("roles", "Role", True), ("rolebindings", "RoleBinding", True)],
    "apiextensions.k8s.io/v1": [("customresourcedefinitions", "CustomResourceDefinition", False)],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget", True)],
    "monitoring.coreos.com/v1": [("servicemonitors", "ServiceMonitor", True), ("prometheusrules", "PrometheusRule", True)],
    "flashcards.dev/v1alpha1": [("flashcardpipelines", "FlashcardPipeline", True)],
    "networking.k8s.io/v1": [("ingresses", "Ingress", True)],
}
CREATED: list[dict] = []


def resource_list(gv):
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
        {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} for n, k, ns in RESOURCES[gv]]}


class FakeKubeApi(BaseHTTPRequestHandler):
    """Just enough of a Kubernetes API for `helm install` without --wait."""

    def log_message(self, *a):
        pass

    def send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def notfound(self):
        self.send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"})

    def do_GET(self):
        p = self.path.split("?")[0]
        if p == "/version":
            return self.send(200, {"major": "1", "minor": "33", "gitVersion": "v1.33.0", "platform": "linux/amd64"})
        if p == "/openapi/v2":
            return self.send(200, {"swagger": "2.0", "info": {"title": "fake", "version": "v1"}, "paths": {}, "definitions": {}})
        if p == "/openapi/v3":
            return self.send(200, {"paths": {}})
        if p == "/api":
            return self.send(200, {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []})
        if p == "/apis":
            groups = {}
            for gv in RESOURCES:
                if "/" in gv:
                    g, v = gv.split("/")
                    groups.setdefault(g, []).append({"groupVersion": gv, "version": v})
            return self.send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": vs, "preferredVersion": vs[0]} for g, vs in groups.items()]})
        if p == "/api/v1":
            return self.send(200, resource_list("v1"))
        m = re.fullmatch(r"/apis/([^/]+)/([^/]+)", p)
        if m and f"{m[1]}/{m[2]}" in RESOURCES:
            return self.send(200, resource_list(f"{m[1]}/{m[2]}"))
        # list calls (no name) -> empty list; get -> 404
        parts = p.strip("/").split("/")
        if parts[-1] in {n for rs in RESOURCES.values() for n, _, _ in rs}:
            return self.send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        return self.notfound()

    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(n)
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            # the release record (typed client): not ours to read
            return self.send(201, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release", "namespace": "flashcards-system", "resourceVersion": "1"}})
        body = json.loads(raw or b"{}")
        CREATED.append(body)
        body.setdefault("metadata", {})["resourceVersion"] = "1"
        body["metadata"]["uid"] = "00000000-0000-0000-0000-000000000001"
        self.send(201, body)

    def do_PUT(self):
        n = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(n)
        if "protobuf" in (self.headers.get("Content-Type") or ""):
            return self.send(200, {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "release", "namespace": "flashcards-system", "resourceVersion": "2"}})
        self.send(200, json.loads(raw or b"{}"))

    do_PATCH = do_PUT

    def do_DELETE(self):
        self.send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


def serve():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubeApi)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def render(chart: Path, overrides: dict | None) -> list[dict]:
    """`helm install` against the fake API; returns the objects Helm created."""
    srv = serve()
    CREATED.clear()
    kubeconfig = yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{srv.server_address[1]}"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "users": [{"name": "fake", "user": {"token": "fake"}}],
    })
    try:
        cfg = helm_sdkpy.Configuration(namespace="flashcards-system", kubeconfig=kubeconfig)
        try:
            asyncio.run(helm_sdkpy.Install(cfg).run(
                "fc", str(chart), values=overrides or None, wait=False, timeout=30))
        except helm_sdkpy.HelmError as e:
            if "failed post-install" not in str(e):
                raise
    finally:
        srv.shutdown()
    return [o for o in CREATED
            if not (o.get("kind") == "Secret" and (o.get("metadata", {}).get("labels") or {}).get("owner") == "helm")]


def merge(base, override):
    """Helm's coalescing of a values file over the chart's defaults."""
    if not isinstance(base, dict) or not isinstance(override, dict):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def schema_errors(chart: Path, values: dict) -> list[str]:
    try:
        import jsonschema
    except ImportError:
        return []
    schema = json.loads((chart / "values.schema.json").read_text())
    validator = jsonschema.Draft7Validator(schema)
    return [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.path)))
    ]


def lint(chart: Path, overrides: dict | None, config) -> tuple[list[dict], dict]:
    """Lint a copy of the chart with `overrides` merged into its values. Returns the messages
    and the merged values."""
    defaults = yaml.safe_load((chart / "values.yaml").read_text()) or {}
    values = merge(defaults, overrides or {})
    with tempfile.TemporaryDirectory(prefix="helm-lint-") as tmp:
        copy_dir = Path(tmp) / chart.name
        shutil.copytree(chart, copy_dir, ignore=shutil.ignore_patterns("ci"))
        if overrides:
            (copy_dir / "values.yaml").write_text(yaml.safe_dump(values, sort_keys=False))
        result = asyncio.run(helm_sdkpy.Lint(config).run(str(copy_dir)))
    if result.get("TotalChartsLinted") != 1:
        raise RuntimeError(f"expected 1 chart linted, got {result!r}")
    return result.get("Messages") or [], values


def main() -> int:
    repo = Path(__file__).resolve().parent.parent
    args = sys.argv[1:]
    render_to = None
    if args[:1] == ["--render-to"]:
        render_to = Path(args[1])
        args = args[2:]
    chart = Path(args[0]).resolve() if args else repo / "charts" / "flashcard-operator"
    config = helm_sdkpy.Configuration(namespace="flashcards-system")
    print(f"helm-lint: {helm_sdkpy.get_version()}, chart {chart.relative_to(repo) if chart.is_relative_to(repo) else chart}")

    cases: list[tuple[str, dict | None]] = [("values.yaml (defaults)", None)]
    for f in sorted((chart / "ci").glob("*.yaml")):
        cases.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))

    if render_to is not None:
        # Used by operator/tests/manifests.rs, which parses the output strictly.
        render_to.mkdir(parents=True, exist_ok=True)
        for name, overrides in cases:
            objects = render(chart, overrides)
            out = render_to / (Path(name.split(" ")[0]).stem + ".yaml")
            out.write_text("".join("---\n" + json.dumps(o) + "\n" for o in objects))
            print(f"rendered {name}: {len(objects)} objects -> {out}")
        return 0

    passed = failed = 0
    for name, overrides in cases:
        try:
            messages, values = lint(chart, overrides, config)
        except Exception as e:  # noqa: BLE001 - any library failure fails the lint
            print(f"FAIL {name}: lint raised {type(e).__name__}: {e}")
            failed += 1
            continue
        errors = [m for m in messages if m.get("Severity") == ERROR]
        for m in messages:
            sev = SEVERITY.get(m.get("Severity"), str(m.get("Severity")))
            err = m.get("Err")
            detail = f" {err}" if err not in ({}, None, "") else ""
            print(f"  [{sev}] {name}: {m.get('Path')}{detail}")
        if errors:
            for e in schema_errors(chart, values):
                print(f"    schema: {e}")
            print(f"FAIL {name}: {len(errors)} error(s)")
            failed += 1
            continue
        try:
            objects = render(chart, overrides)
        except Exception as e:  # noqa: BLE001 - a failing install is a failing chart
            print(f"FAIL {name}: lint clean but `helm install` fails: {e}")
            failed += 1
            continue
        kinds = sorted({o.get("kind", "?") for o in objects})
        print(f"ok   {name}: {len(messages)} lint message(s), no errors; installs {len(objects)} objects ({', '.join(kinds)})")
        passed += 1

    for desc, overrides in MUST_FAIL:
        try:
            messages, _ = lint(chart, overrides, config)
        except Exception as e:  # noqa: BLE001
            print(f"FAIL must-reject '{desc}': lint raised {type(e).__name__}: {e}")
            failed += 1
            continue
        if any(m.get("Severity") == ERROR for m in messages):
            print(f"ok   must-reject '{desc}': rejected")
            passed += 1
            continue
        # Rules the schema cannot state (comparisons between values) are template `fail`s,
        # which lint mode only logs: the install must then refuse.
        try:
            render(chart, overrides)
        except Exception as e:  # noqa: BLE001 - the refusal is what we want
            first = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
            print(f"ok   must-reject '{desc}': rejected by `helm install` ({first})")
            passed += 1
            continue
        print(f"FAIL must-reject '{desc}': lint and `helm install` accepted it")
        failed += 1

    print(f"helm-lint: {len(cases)} values files, {len(MUST_FAIL)} must-reject cases")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
