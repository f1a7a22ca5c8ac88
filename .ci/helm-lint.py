#!/usr/bin/env python3
"""Lint the Helm chart with the real Helm library (Helm v4 through PyPI's helm-sdkpy).

helm-sdkpy's Lint takes a chart path and no values, so each values file is linted on a temporary
copy of the chart whose values.yaml is the chart's defaults merged with that file (Helm's own
rules: maps merge, lists and scalars replace, null deletes a key). Lint renders every template
offline and validates the values against values.schema.json.

Fails (exit 1) on any message of severity 3 (error) or any exception. helm-sdkpy serialises each
message's error as `{}`, so the path is all Helm tells us; for values.yaml errors the script adds
the schema violations it finds itself (python jsonschema).

A self-test follows: values that must be rejected (wrong types, unknown keys) have to produce a
severity-3 message, which proves the schema and this script really catch mistakes.

Usage: helm-lint.py [CHART_DIR]   (default: charts/flashcard-operator)
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import sys
import tempfile
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
]


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
    chart = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else repo / "charts" / "flashcard-operator"
    config = helm_sdkpy.Configuration(namespace="flashcards-system")
    print(f"helm-lint: {helm_sdkpy.get_version()}, chart {chart.relative_to(repo) if chart.is_relative_to(repo) else chart}")

    cases: list[tuple[str, dict | None]] = [("values.yaml (defaults)", None)]
    for f in sorted((chart / "ci").glob("*.yaml")):
        cases.append((f"ci/{f.name}", yaml.safe_load(f.read_text()) or {}))

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
        else:
            print(f"ok   {name}: {len(messages)} message(s), no errors")
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
        else:
            print(f"FAIL must-reject '{desc}': lint accepted it")
            failed += 1

    print(f"helm-lint: {len(cases)} values files, {len(MUST_FAIL)} must-reject cases")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
