"""The chart's documentation agrees with the chart: values table, RBAC table; docs/chart.md
links the chart README instead of copying it."""

from __future__ import annotations

import json
import re

import yaml

from tests.chart.chart_helpers import CHART, REPO_ROOT, one, render, rule_set

# Whole objects documented as one row (their inner keys are Kubernetes API fields).
OPAQUE = {"podSecurityContext", "securityContext", "resources"}


def documented_values() -> dict[str, object]:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    rows: dict[str, object] = {}

    def walk(d: dict, prefix: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict) and v and k not in OPAQUE:
                walk(v, f"{prefix}{k}.")
            else:
                rows[f"{prefix}{k}"] = v

    walk(values, "")
    return rows


def table_rows(text: str) -> dict[str, object]:
    block = text.split("<!-- values-table -->", 1)[1].split("<!-- /values-table -->", 1)[0]
    rows = {}
    for line in block.splitlines():
        m = re.match(r"^\| `([^`]+)` \| \w+ \| `(.*)` \| .+ \|$", line)
        if m:
            rows[m.group(1)] = json.loads(m.group(2))
    return rows


def test_chart_readme_values_table_matches_values_yaml():
    table = table_rows((CHART / "README.md").read_text())
    assert table == documented_values()


def test_docs_chart_links_the_chart_readme_and_does_not_copy_its_values_table():
    """docs/chart.md points at the chart's README (the source of truth) instead of copying
    its values table; neither it nor the root README repeats a row of that table."""
    page = REPO_ROOT / "docs" / "chart.md"
    text = page.read_text()
    targets = {
        (page.parent / m.group(1).split("#", 1)[0]).resolve()
        for m in re.finditer(r"\]\(([^)\s]+)\)", text)
        if "://" not in m.group(1)
    }
    assert (CHART / "README.md").resolve() in targets, "docs/chart.md must link the chart README"
    keys = set(documented_values())
    for doc in (page, REPO_ROOT / "README.md"):
        body = doc.read_text()
        assert "<!-- values-table -->" not in body, f"{doc.name} copies the values table"
        copied = {k for k in keys if re.search(rf"^\| `{re.escape(k)}` \|", body, re.M)}
        assert not copied, f"{doc.name} copies rows of the chart's values table: {sorted(copied)}"


def test_readme_rbac_table_matches_the_rendered_cluster_role():
    text = (CHART / "README.md").read_text()
    block = text.split("## RBAC", 1)[1].split("Cluster-wide (no", 1)[0]
    documented = set()
    for line in block.splitlines():
        m = re.match(r"^\| (`?[\w.]+`?|core) \| `([\w/]+)` \| ([a-z, ]+) \|", line)
        if m and "leader election" not in line:
            group = "" if m.group(1) == "core" else m.group(1).strip("`")
            documented |= {(group, m.group(2), v.strip()) for v in m.group(3).split(",")}
    rendered = rule_set(one(render(), "ClusterRole")["rules"])
    cluster_scoped = {t for t in rendered if t[1] in ("customresourcedefinitions",)}
    assert documented == rendered - cluster_scoped


def rbac_md_rules() -> dict[str, set[tuple[str, str, str]]]:
    """operator/RBAC.md's table as (group, resource, verb) triples, by condition."""
    text = (REPO_ROOT / "operator" / "RBAC.md").read_text()
    out: dict[str, set[tuple[str, str, str]]] = {"always": set(), "clusterwide": set(),
                                                 "leader": set(), "keda": set()}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        group = cells[0].strip("`").strip('"')
        verbs = re.findall(r"`([a-z]+)`", cells[2])
        resources = re.findall(r"`([a-z/]+)`", cells[1])
        key = ("clusterwide" if "cluster-wide mode only" in cells[3]
               else "leader" if "leader election" in cells[3]
               else "keda" if "only with `keda.enabled`" in cells[3] else "always")
        out[key] |= {(group, r, v) for r in resources for v in verbs}
    return out


def granted(values: dict) -> set[tuple[str, str, str]]:
    docs = render(values)
    roles = [d for d in docs if d["kind"] in ("ClusterRole", "Role")]
    return set().union(*(rule_set(r["rules"]) for r in roles))


def test_rbac_md_parses():
    md = rbac_md_rules()
    assert ("serving.n1v1.io", "mlmodels/status", "patch") in md["always"]
    assert ("apiextensions.k8s.io", "customresourcedefinitions", "watch") in md["clusterwide"]
    assert not any(r == "namespaces" for _, r, _ in set().union(*md.values()))
    assert md["leader"] == {("coordination.k8s.io", "leases", v)
                            for v in ("get", "create", "update")}


def test_chart_grants_exactly_rbac_md_cluster_wide():
    md = rbac_md_rules()
    assert granted({}) == md["always"] | md["clusterwide"] | md["leader"]
    off = {"leaderElection": {"enabled": False}}
    assert granted(off) == md["always"] | md["clusterwide"]
    keda = {**off, "keda": {"enabled": True, "prometheusUrl": "http://prometheus:9090"}}
    assert granted(keda) == md["always"] | md["clusterwide"] | md["keda"]
    assert md["keda"] == {("keda.sh", "scaledobjects", v)
                          for v in ("get", "create", "patch", "delete")}


def test_chart_grants_exactly_rbac_md_per_namespace():
    md = rbac_md_rules()
    ns = {"operator": {"watchNamespaces": ["a"]}}
    assert granted({**ns, "leaderElection": {"enabled": False}}) == md["always"]
    assert granted(ns) == md["always"] | md["leader"]
