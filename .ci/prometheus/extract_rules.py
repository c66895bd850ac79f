#!/usr/bin/env python3
"""Writes the `spec` of every PrometheusRule in a `helm template --output-dir` folder as a
Prometheus rules file (what promtool and a plain Prometheus read).

    extract_rules.py RENDER_DIR OUT.yml
"""
import pathlib
import sys

import yaml

groups = []
for path in sorted(pathlib.Path(sys.argv[1]).rglob("*.yaml")):
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "PrometheusRule":
            groups.extend(doc["spec"]["groups"])
if not groups:
    sys.exit("no PrometheusRule rendered")
pathlib.Path(sys.argv[2]).write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
print(f"{sum(len(g['rules']) for g in groups)} rules")
