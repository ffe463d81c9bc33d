"""The CRD (crds/) and the typed spec must agree: defaults, names, examples."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlmodel_operator.spec import GROUP, KIND, PLURAL, VERSION, MLModelSpec, parse_spec

ROOT = Path(__file__).resolve().parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "serving.n1v1.io_mlmodels.yaml").read_text())
SCHEMA = CRD["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _defaults(schema: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for name, sub in (schema.get("properties") or {}).items():
        if "default" in sub and sub["default"] != {}:
            out[(*path, name)] = sub["default"]
        out.update(_defaults(sub, (*path, name)))
    return out


def test_names_match_the_shared_contract():
    assert CRD["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert CRD["spec"]["group"] == GROUP
    assert CRD["spec"]["names"]["kind"] == KIND
    assert CRD["spec"]["names"]["shortNames"] == ["mlm"]
    (version,) = CRD["spec"]["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"]["status"] == {}
    assert version["subresources"]["scale"]["specReplicasPath"] == ".spec.serving.replicas"


def test_every_crd_default_is_the_typed_default():
    # Optional objects are given (with only their required keys) so their defaults count.
    minimal = {"model": {"framework": "sklearn", "version": "1", "uri": "https://h/m",
                         "caBundle": {"configMap": "ca"}},
               "canary": {"version": "2", "uri": "https://h/m2", "weight": 5}}
    parsed = parse_spec(minimal).model_dump(by_alias=True)
    defaults = _defaults(SCHEMA["properties"]["spec"])
    assert len(defaults) >= 12
    for path, value in defaults.items():
        node: Any = parsed
        for p in path:
            node = node[p]
        if isinstance(value, dict):  # an object default: every key it sets agrees
            assert {k: node[k] for k in value} == value, path
        else:
            assert node == value, path


def test_every_typed_field_is_in_the_schema():
    def walk(model: type, schema: dict[str, Any], path: str) -> None:
        props = schema["properties"]
        for name, field in model.model_fields.items():
            key = field.alias or name
            assert key in props, f"{path}.{key} missing from the CRD"
            ann = field.annotation
            sub = props[key]
            # An optional sub-object (X | None) is walked like a required one, a list's items
            # like an object.
            if typing.get_origin(ann) in (typing.Union, types.UnionType):
                (ann,) = [a for a in typing.get_args(ann) if a is not type(None)]
            if typing.get_origin(ann) is list:
                (ann,), sub = typing.get_args(ann), sub["items"]
            if isinstance(ann, type) and hasattr(ann, "model_fields"):
                walk(ann, sub, f"{path}.{key}")

    walk(MLModelSpec, SCHEMA["properties"]["spec"], "spec")


def test_printer_columns_point_at_status_fields_we_write():
    cols = {
        c["name"]: c["jsonPath"] for c in CRD["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert list(cols) == ["Framework", "Model", "Version", "Served", "Ready", "Status", "URL",
                          "Age"]
    status_props = SCHEMA["properties"]["status"]["properties"]
    for path in cols.values():
        if path.startswith(".status."):
            assert path.removeprefix(".status.") in status_props


def test_cel_rules_carry_messages_that_name_the_field():
    rules = []

    def walk(s: dict[str, Any]) -> None:
        rules.extend(s.get("x-kubernetes-validations", []))
        for sub in (s.get("properties") or {}).values():
            walk(sub)
        if "items" in s:
            walk(s["items"])

    walk(SCHEMA)
    assert len(rules) >= 8
    for r in rules:
        assert r["message"].split(":")[0].split(" ")[0].startswith(("spec.", "metadata.")), r


EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_parse(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d and d.get("kind") == KIND]
    assert docs, f"{path.name} has no MLModel"
    for d in docs:
        parse_spec(d["spec"])
