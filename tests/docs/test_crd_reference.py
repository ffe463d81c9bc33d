"""docs/crd-reference.md is what scripts/crd_reference.py generates from crds/ (never stale)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "crd_reference.py"
REFERENCE = REPO_ROOT / "docs" / "crd-reference.md"


def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("crd_reference", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_reference_is_what_the_crd_generates():
    expected = generator().render(REPO_ROOT / "crds")
    assert REFERENCE.read_text(encoding="utf-8") == expected, (
        "docs/crd-reference.md is stale: run `python scripts/crd_reference.py` and commit it"
    )


def test_generation_is_deterministic():
    gen = generator()
    assert gen.render(REPO_ROOT / "crds") == gen.render(REPO_ROOT / "crds")


def test_reference_names_known_fields_with_their_schema():
    text = REFERENCE.read_text(encoding="utf-8")
    fields = text.split("### Validation rules", 1)[0]  # the field table, not the CEL rules
    rows = {line.split(" | ", 1)[0].strip("| `"): line for line in fields.splitlines()
            if line.startswith("| `")}
    assert "spec.model.uri" in rows and "| string | yes |" in rows["spec.model.uri"]
    assert "one of `lightgbm`, `sklearn`, `xgboost`" in rows["spec.model.framework"]
    replicas = rows["spec.serving.replicas"]
    assert "`1`" in replicas and ">= 0" in replicas and "<= 100" in replicas
    assert "spec.serving.autoscaling.targetLatencyMilliseconds" in rows
    assert "spec.serving.env[].name" in rows
    assert "status.conditions[].type" in rows
    assert "minReplicas must be less than or equal to maxReplicas" in text


def test_check_flag_fails_on_a_stale_file(tmp_path, capsys):
    gen = generator()
    stale = tmp_path / "crd-reference.md"
    stale.write_text(REFERENCE.read_text(encoding="utf-8") + "hand edit\n", encoding="utf-8")
    assert gen.main(["--check", "--out", str(stale)]) == 1
    assert "stale" in capsys.readouterr().err
    assert gen.main(["--check", "--out", str(REFERENCE)]) == 0
