"""Every metric the operator's alert rules and autoscaler read is one the runtime exports.

The names are parsed out of what the builders generate (PromQL of the alert rules and of the
KEDA ScaledObject's latency trigger), never restated here, so a builder that names a metric
the runtime does not export fails this test.
"""

from __future__ import annotations

import re

import pytest
import yaml
from mlmodel_operator import builders, names
from mlmodel_operator.spec import parse_spec
from prometheus_client import Counter, Gauge, Histogram

from serving_runtime.server.metrics import RuntimeMetrics

OWNER = builders.Owner(name="fraud", namespace="team-a", uid="1234-uid")
SPEC = parse_spec(
    {
        "model": {"framework": "xgboost", "version": "1.2.0", "uri": "https://h.example/m"},
        "serving": {"autoscaling": {"enabled": True, "targetLatencyMilliseconds": 20}},
        "alerting": {"enabled": True},
    }
)
# A series selector: a metric name directly followed by its label matchers or a range.
SELECTOR_RE = re.compile(r"(?<![\w.:<])([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
# A label matcher inside a selector's braces: name, then =, !=, =~ or !~.
MATCHER_RE = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")
# Labels Prometheus attaches to every scraped series (target labels), not the runtime's.
TARGET_LABELS = {"namespace", "pod", "job", "instance", "container", "service", "endpoint"}
# Series Prometheus makes itself for each scrape target.
PROMETHEUS_SERIES = {names.SCRAPE_UP_METRIC}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


Exported = dict[str, tuple[str, str, set[str]]]


def runtime_families() -> dict[str, tuple[str, set[str]]]:
    """The runtime's metric families: name -> (type, label names), from a RuntimeMetrics
    (single-process mode: its registry then holds the metric objects themselves)."""
    metrics = RuntimeMetrics()
    out: dict[str, tuple[str, set[str]]] = {}
    for collector in vars(metrics).values():
        if isinstance(collector, Counter | Gauge | Histogram):
            (family,) = collector.describe()
            # prometheus_client has no public accessor for a metric's label names.
            out[family.name] = (family.type, set(collector._labelnames))
    # None missed: the registry a scrape reads has exactly these families.
    assert set(out) == {f.name for f in metrics.registry.collect()}
    return out


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Exported:
    """Series names a scrape of the runtime shows -> (family, type, label names)."""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    out: Exported = {}
    for family, (type_, labels) in runtime_families().items():
        if type_ == "counter":
            out[f"{family}_total"] = (family, type_, labels)
        elif type_ == "histogram":
            for suffix in HISTOGRAM_SUFFIXES:
                # `le`, the bucket's bound, is on the _bucket series only.
                extra = {"le"} if suffix == "_bucket" else set()
                out[f"{family}{suffix}"] = (family, type_, labels | extra)
        else:
            out[family] = (family, type_, labels)
    return out


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched on) of every series selector in a PromQL expr."""
    found = []
    for m in SELECTOR_RE.finditer(expr):
        name = m.group(1)
        rest = expr[m.end() - 1 :]
        matchers = rest[1 : rest.index("}")] if rest.startswith("{") else ""
        found.append((name, set(MATCHER_RE.findall(matchers))))
    return found


def problems(expr: str, exported: Exported) -> list[str]:
    """What in `expr` the runtime does not export: unknown series, unknown labels."""
    out = []
    for name, labels in selectors(expr):
        if name in PROMETHEUS_SERIES:
            continue
        if name not in exported:
            out.append(f"{name} (the runtime exports {sorted(exported)})")
            continue
        unknown = labels - exported[name][2] - TARGET_LABELS
        if unknown:
            out.append(f"{name} has no label(s) {sorted(unknown)}")
    return out


def alert_expressions() -> list[tuple[str, str]]:
    """(alert, expr) of the rules as both children carry them."""
    rule_files = [
        builders.build_prometheus_rule(OWNER, SPEC)["spec"],
        yaml.safe_load(builders.build_alert_configmap(OWNER, SPEC)["data"][names.ALERT_RULES_KEY]),
    ]
    return [
        (r.get("alert") or r.get("record"), r["expr"])
        for rules in rule_files
        for group in rules["groups"]
        for r in group["rules"]
    ]


def autoscaler_queries() -> list[str]:
    """The PromQL of the ScaledObject's Prometheus triggers."""
    so = builders.build_scaled_object(OWNER, SPEC, builders.Monitoring("http://prometheus:9090"))
    assert so is not None
    return [t["metadata"]["query"] for t in so["spec"]["triggers"] if t["type"] == "prometheus"]


def test_the_parser_finds_series_but_not_functions_or_labels() -> None:
    expr = 'sum(rate(a_total{x="1",y=~"b"}[5m])) / absent(up{p!="q"} == 1) + b[1m] + c'
    assert selectors(expr) == [("a_total", {"x", "y"}), ("up", {"p"}), ("b", set())]


def test_alert_rules_read_only_metrics_the_runtime_exports(exported: Exported) -> None:
    exprs = alert_expressions()
    assert len(exprs) == 8  # four alerts, in the PrometheusRule and in the ConfigMap
    for alert, expr in exprs:
        assert selectors(expr), f"{alert}: no series found in {expr!r}"
        assert not problems(expr, exported), f"{alert}: {problems(expr, exported)} in {expr!r}"


def test_the_latency_alert_reads_the_runtimes_histogram(exported: Exported) -> None:
    (expr,) = {e for a, e in alert_expressions() if a == "MLModelHighLatencyP95"}
    assert "histogram_quantile(" in expr
    buckets = [n for n, _ in selectors(expr) if n.endswith("_bucket")]
    assert buckets and all(exported[n][1] == "histogram" for n in buckets)


def test_the_latency_autoscaler_reads_the_runtimes_histogram(exported: Exported) -> None:
    (query,) = autoscaler_queries()
    assert not problems(query, exported), problems(query, exported)
    buckets = [n for n, _ in selectors(query) if n.endswith("_bucket")]
    assert "histogram_quantile(0.95," in query and buckets, query
    assert all(exported[n][1] == "histogram" for n in buckets), buckets


@pytest.mark.parametrize(
    "name", [names.REQUESTS_METRIC, names.LATENCY_BUCKET_SERIES, names.LOAD_FAILURES_METRIC,
             names.LOAD_FAILED_METRIC]
)
def test_the_shared_metric_names_are_runtime_series(name: str, exported: Exported) -> None:
    assert name in exported


def test_a_renamed_metric_fails(monkeypatch: pytest.MonkeyPatch, exported: Exported) -> None:
    # The check itself must be able to fail: a builder naming a metric the runtime lacks.
    monkeypatch.setattr(names, "REQUESTS_METRIC", "inference_request_total")
    found = [problems(e, exported) for a, e in alert_expressions() if a == "MLModelHighErrorRate"]
    assert found and all(p and "inference_request_total" in p[0] for p in found)


# The runtime env vars the operator sets that the runtime must read (the others only roll
# the pods when they change, or are read by the fetch step).
NOT_RUNTIME_SETTINGS = {names.ENV_MODEL_VERSION, names.ENV_MODEL_URI, names.ENV_MODEL_SHA256,
                        names.ENV_FETCH_CA_BUNDLE}


def test_probe_and_scrape_paths_are_routes_of_the_runtime():
    from serving_runtime.server.routes import ROUTES

    served = {(r.method, r.path) for r in ROUTES}
    for path in (names.LIVE_PATH, names.READY_PATH, names.METRICS_PATH):
        assert ("GET", path) in served, f"{path}: the operator probes/scrapes it, no route"


def test_every_env_var_the_operator_sets_for_the_runtime_is_a_runtime_setting():
    from serving_runtime.server.settings import Settings

    env = {v for k, v in vars(names).items() if k.startswith("ENV_")} - NOT_RUNTIME_SETTINGS
    assert env, "names.py lists no runtime env vars"
    unknown = sorted(e for e in env if e.lower() not in Settings.model_fields)
    assert unknown == [], f"the runtime has no setting for {unknown}"
    # and the ones set on the container are those names
    dep = builders.build_deployment(OWNER, SPEC, "img")
    (c,) = dep["spec"]["template"]["spec"]["containers"]
    set_on_runtime = {e["name"] for e in c["env"]} - NOT_RUNTIME_SETTINGS
    assert set_on_runtime <= env, set_on_runtime - env


def test_the_frameworks_are_the_runtimes_plug_ins():
    """The operator image has no ML libraries, so spec.py and the CRD name the frameworks
    themselves; they must be exactly the runtime's plug-ins (a new plug-in fails here until
    both list it)."""
    from typing import get_args

    from mlmodel_operator.spec import Framework

    from serving_runtime.models.runtimes import FRAMEWORKS
    from tests.operator.test_operator_crd import SCHEMA

    crd_enum = SCHEMA["properties"]["spec"]["properties"]["model"]["properties"][
        "framework"]["enum"]
    assert sorted(crd_enum) == sorted(get_args(Framework)) == sorted(FRAMEWORKS), (
        crd_enum, get_args(Framework), list(FRAMEWORKS))


def test_the_served_name_rule_is_the_model_folders():
    from serving_runtime.models.folder_format import MAX_MODEL_NAME_LENGTH, MODEL_NAME_PATTERN
    from tests.operator.test_operator_crd import SCHEMA

    crd = SCHEMA["properties"]["spec"]["properties"]["model"]["properties"]["name"]
    assert names.SERVED_NAME_PATTERN == MODEL_NAME_PATTERN == crd["pattern"]
    assert names.SERVED_NAME_MAX_LENGTH == MAX_MODEL_NAME_LENGTH == crd["maxLength"]


def test_a_served_name_reaches_fetch_the_runtime_the_alerts_and_the_status():
    from mlmodel_operator.status import Observed, compute_status

    spec = parse_spec({"model": {"framework": "lightgbm", "version": "1", "name": "your_model",
                                 "uri": "https://h.example/m.txt"},
                       "alerting": {"enabled": True}})
    dep = builders.build_deployment(OWNER, spec, "img")
    pod = dep["spec"]["template"]["spec"]
    (fetch,) = pod["initContainers"]
    assert fetch["args"][fetch["args"].index("--name") + 1] == "your_model"
    assert fetch["args"][fetch["args"].index("--framework") + 1] == "lightgbm"
    (c,) = pod["containers"]
    assert {e["name"]: e.get("value") for e in c["env"]}[names.ENV_PRELOAD_MODELS] == "your_model"
    # the Kubernetes objects keep the DNS-safe metadata.name
    assert dep["metadata"]["name"] == "fraud"
    assert dep["metadata"]["labels"][names.MODEL_LABEL] == "fraud"
    rules = builders.build_alert_rules(OWNER, spec)["groups"][0]["rules"]
    selectors = [r["expr"] for r in rules if names.MODEL_NAME_METRIC_LABEL in r["expr"]]
    assert selectors and all('model_name="your_model"' in e for e in selectors), selectors
    status = compute_status(Observed("fraud", "team-a", 1, "1", None, {},
                                     served_model=spec.served_name("fraud")))
    assert status["servedModel"] == "your_model"
    # without spec.model.name the object's name is the served name
    assert parse_spec({"model": {"framework": "sklearn", "version": "1",
                                 "uri": "https://h.example/m"}}).served_name("fraud") == "fraud"


@pytest.mark.parametrize("bad", ["-x", ".x", "a/b", "a b", "x" * 129, ""])
def test_a_served_name_the_runtime_would_refuse_is_a_spec_error(bad: str):
    from mlmodel_operator.spec import SpecError

    with pytest.raises(SpecError, match="spec.model.name"):
        parse_spec({"model": {"framework": "sklearn", "version": "1", "name": bad,
                              "uri": "https://h.example/m"}})
