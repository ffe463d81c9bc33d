"""Spec parsing: defaults, and errors that name the field."""

from __future__ import annotations

from decimal import Decimal

import pytest
from mlmodel_operator.spec import SpecError, check_name, parse_quantity, parse_spec

BASE = {"model": {"framework": "sklearn", "version": "1.0.0", "uri": "https://x.example/m.tar.gz"}}


def spec_with(**sections):
    out = {"model": dict(BASE["model"])}
    for k, v in sections.items():
        if k == "model":
            out["model"].update(v)
        else:
            out[k] = v
    return out


def test_defaults_match_the_documented_ones():
    s = parse_spec(BASE)
    assert s.serving.replicas == 1
    assert s.serving.image is None
    assert s.serving.autoscaling.enabled is False
    assert (s.serving.autoscaling.minReplicas, s.serving.autoscaling.maxReplicas) == (1, 5)
    assert s.serving.autoscaling.targetCPUUtilizationPercentage == 70
    assert s.serving.autoscaling.targetMemoryUtilizationPercentage == 80
    assert s.serving.autoscaling.targetLatencyMilliseconds is None
    assert s.serving.autoscaling.scaleDownStabilizationSeconds == 300
    assert s.model.caBundle is None
    assert s.serving.resources.effective() == (
        {"cpu": "500m", "memory": "512Mi"},
        {"memory": "1Gi"},
    )
    assert s.alerting.enabled is True
    assert s.alerting.latencyP95ThresholdMilliseconds == 100
    assert s.alerting.errorRateThresholdPercent == 1
    assert s.alerting.for_ == "5m"
    assert s.serving.progressDeadlineSeconds == 600
    assert s.model.sha256 is None and s.model.allowUnsafeLoading is False


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        (spec_with(model={"framework": "pytorch"}), "spec.model.framework"),
        (spec_with(model={"uri": "ftp://host/m"}), "spec.model.uri"),
        (spec_with(model={"uri": "file:///m"}), "spec.model.uri"),
        (spec_with(model={"uri": "pvc://claim"}), "spec.model.uri"),
        (spec_with(model={"uri": "s3://b"}), "spec.model.uri"),
        (spec_with(model={"sha256": "ABC"}), "spec.model.sha256"),
        (spec_with(model={"sha256": "a" * 63}), "spec.model.sha256"),
        (spec_with(model={"version": ""}), "spec.model.version"),
        (spec_with(model={"caBundle": {}}), "spec.model.caBundle.configMap"),
        (spec_with(model={"caBundle": {"configMap": "Bad_Name"}}), "spec.model.caBundle.configMap"),
        (spec_with(model={"caBundle": {"configMap": "ca", "key": "../x"}}),
         "spec.model.caBundle.key"),
        (spec_with(model={"caBundle": {"configMap": "ca", "keys": "x"}}),
         "spec.model.caBundle.keys"),
        (
            spec_with(serving={"autoscaling": {"scaleDownStabilizationSeconds": -1}}),
            "spec.serving.autoscaling.scaleDownStabilizationSeconds",
        ),
        (
            spec_with(serving={"autoscaling": {"scaleDownStabilizationSeconds": 3601}}),
            "spec.serving.autoscaling.scaleDownStabilizationSeconds",
        ),
        (spec_with(serving={"replicas": -1}), "spec.serving.replicas"),
        (spec_with(serving={"replicas": 101}), "spec.serving.replicas"),
        (
            spec_with(serving={"autoscaling": {"minReplicas": 4, "maxReplicas": 2}}),
            "spec.serving.autoscaling",
        ),
        (
            spec_with(serving={"autoscaling": {"targetCPUUtilizationPercentage": 0}}),
            "spec.serving.autoscaling.targetCPUUtilizationPercentage",
        ),
        (
            spec_with(serving={"resources": {"requests": {"gpu": "1"}}}),
            "spec.serving.resources.requests",
        ),
        (
            spec_with(serving={"resources": {"requests": {"cpu": "lots"}}}),
            "spec.serving.resources.requests",
        ),
        (
            spec_with(serving={"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}),
            "spec.serving.resources",
        ),
        (spec_with(serving={"env": [{"name": "MODELS_DIR", "value": "/x"}]}), "spec.serving.env"),
        (
            spec_with(serving={"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}),
            "spec.serving.env",
        ),
        (
            spec_with(alerting={"errorRateThresholdPercent": 0}),
            "spec.alerting.errorRateThresholdPercent",
        ),
        (spec_with(alerting={"for": "five minutes"}), "spec.alerting.for"),
        (spec_with(serving={"replica": 2}), "spec.serving.replica"),
        ({"serving": {}}, "spec.model"),
    ],
)
def test_invalid_specs_name_the_field(spec, field):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert field in str(err.value), str(err.value)


@pytest.mark.parametrize(
    "uri",
    [
        "pvc://models/fraud/v1",
        "http://host:8080/m.tar.gz",
        "https://host/m.ubj",
        "s3://bucket-1/models/m.tar.gz",
        "configmap://small-model",
        "configmap://small-model/model.json",
    ],
)
def test_allowed_uri_schemes(uri):
    assert parse_spec(spec_with(model={"uri": uri})).model.uri == uri


def test_missing_request_is_filled_from_the_limit():
    s = parse_spec(spec_with(serving={"resources": {"limits": {"cpu": "250m", "memory": "256Mi"}}}))
    assert s.serving.resources.effective() == (
        {"cpu": "250m", "memory": "256Mi"},
        {"cpu": "250m", "memory": "256Mi"},
    )


@pytest.mark.parametrize(
    ("q", "value"),
    [
        ("500m", Decimal("0.5")),
        ("2", Decimal(2)),
        ("1Gi", Decimal(2**30)),
        ("1.5", Decimal("1.5")),
        ("1e3", Decimal(1000)),
        ("100M", Decimal(10**8)),
    ],
)
def test_parse_quantity(q, value):
    assert parse_quantity(q) == value


@pytest.mark.parametrize("name", ["9lives", "Upper", "a" * 47, "dot.name", "trailing-"])
def test_bad_names_are_rejected(name):
    with pytest.raises(SpecError, match="metadata.name"):
        check_name(name)


def test_good_name_passes():
    check_name("fraud-detector-v2")
