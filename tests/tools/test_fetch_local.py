"""fetch from plain paths and file:// URIs: bare artifacts, model folders, archives,
sha256 pinning, metadata agreement, atomic install. Real artifacts (skops, XGBoost UBJ)
made by the frameworks themselves."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from serving_runtime.tools.fetch import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    import skops.io as sio
    import xgboost as xgb
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    out = tmp_path_factory.mktemp("artifacts")
    X, y = load_iris(return_X_y=True)
    sio.dump(LogisticRegression(max_iter=500).fit(X, y), out / "iris-v3.skops")
    booster = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(X, y)
    booster.save_model(out / "iris.ubj")
    return {"skops": out / "iris-v3.skops", "ubj": out / "iris.ubj"}


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process: exit codes and stderr as an init container sees them."""
    return subprocess.run(
        [sys.executable, "-m", "serving_runtime.tools.fetch", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )


def model_folder(tmp: Path, artifact: Path, **meta: object) -> Path:
    folder = tmp / "src" / "iris"
    folder.mkdir(parents=True)
    (folder / "model.skops").write_bytes(artifact.read_bytes())
    metadata = {"framework": "sklearn", "version": "3", "artifact": "model.skops", **meta}
    (folder / "metadata.json").write_text(json.dumps(metadata))
    return folder


def leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.iterdir()) if dest.exists() else []


def test_bare_artifact_gets_metadata_from_flags(artifacts, tmp_path):
    dest = tmp_path / "models"
    digest = sha(artifacts["skops"])
    proc = run_cli("--uri", str(artifacts["skops"]), "--dest", str(dest), "--name", "iris",
                   "--framework", "sklearn", "--version", "3", "--sha256", digest)
    assert proc.returncode == 0, proc.stderr
    folder = dest / "iris"
    assert sorted(p.name for p in folder.iterdir()) == ["metadata.json", "model.skops"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["framework"] == "sklearn" and meta["version"] == "3"
    assert meta["artifact"] == "model.skops" and meta["sha256"] == digest
    assert (folder / "model.skops").read_bytes() == artifacts["skops"].read_bytes()
    assert leftovers(dest) == ["iris"], "the staging folder must be gone"


def test_fetched_bare_artifacts_load_in_the_runtime(artifacts, tmp_path):
    """What fetch writes is what the runtime's loader accepts (sha256 re-checked there)."""
    import numpy as np

    from serving_runtime import load_model

    dest = tmp_path / "models"
    for name, key, framework in (("iris-sk", "skops", "sklearn"), ("iris-xgb", "ubj", "xgboost")):
        assert main(["--uri", str(artifacts[key]), "--dest", str(dest), "--name", name,
                     "--framework", framework, "--version", "3",
                     "--sha256", sha(artifacts[key])]) == 0
        model = load_model(dest / name)
        assert model.version == "3" and model.framework == framework
        assert model.sha256 == sha(artifacts[key]) and model.n_features == 4
        labels, proba = model.predict(np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]))
        assert labels.tolist() == [0, 2] and proba is not None


def test_xgboost_bare_artifact_via_file_uri(artifacts, tmp_path):
    dest = tmp_path / "models"
    rc = main(["--uri", f"file://{artifacts['ubj']}", "--dest", str(dest), "--name", "xgb",
               "--framework", "xgboost", "--version", "1.0.0"])
    assert rc == 0
    meta = json.loads((dest / "xgb" / "metadata.json").read_text())
    assert meta["framework"] == "xgboost" and meta["artifact"] == "model.ubj"
    assert meta["sha256"] == sha(artifacts["ubj"])


def test_sha256_mismatch_exits_nonzero_and_leaves_nothing(artifacts, tmp_path):
    dest = tmp_path / "models"
    wrong = hashlib.sha256(b"another model").hexdigest()
    proc = run_cli("--uri", str(artifacts["skops"]), "--dest", str(dest), "--name", "iris",
                   "--framework", "sklearn", "--version", "3", "--sha256", wrong)
    assert proc.returncode == 4
    assert "sha256 mismatch for model.skops" in proc.stderr
    assert wrong in proc.stderr and sha(artifacts["skops"]) in proc.stderr
    assert leftovers(dest) == []


def test_sha256_pins_the_artifact_not_the_archive(artifacts, tmp_path):
    folder = model_folder(tmp_path, artifacts["skops"])
    archive = tmp_path / "iris.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="iris")
    dest = tmp_path / "models"
    assert main(["--uri", str(archive), "--dest", str(dest), "--name", "iris",
                 "--framework", "sklearn", "--version", "3", "--sha256", sha(archive)]) == 4
    assert leftovers(dest) == []
    assert main(["--uri", str(archive), "--dest", str(dest), "--name", "iris",
                 "--framework", "sklearn", "--version", "3",
                 "--sha256", sha(artifacts["skops"]).upper()]) == 0
    meta = json.loads((dest / "iris" / "metadata.json").read_text())
    assert meta["sha256"] == sha(artifacts["skops"]), "the pin is carried into metadata.json"


@pytest.mark.parametrize("layout", ["top-level-folder", "files-at-root"])
def test_archive_layouts(artifacts, tmp_path, layout):
    folder = model_folder(tmp_path, artifacts["skops"])
    (folder / "sample.json").write_text('{"features": {}}')
    archive = tmp_path / "m.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        if layout == "top-level-folder":
            tar.add(folder, arcname="whatever-name")
        else:
            tar.add(folder, arcname=".")
    dest = tmp_path / "models"
    assert main(["--uri", str(archive), "--dest", str(dest), "--name", "iris",
                 "--framework", "sklearn", "--version", "3"]) == 0
    got = sorted(p.name for p in (dest / "iris").iterdir())
    assert got == ["metadata.json", "model.skops", "sample.json"]


def test_metadata_version_disagreement_is_an_error(artifacts, tmp_path):
    folder = model_folder(tmp_path, artifacts["skops"])
    dest = tmp_path / "models"
    proc = run_cli("--uri", f"file://{folder}", "--dest", str(dest), "--name", "iris",
                   "--framework", "sklearn", "--version", "4")
    assert proc.returncode == 6
    assert "metadata.json says version '3' but --version is '4'" in proc.stderr
    assert leftovers(dest) == []


def test_metadata_framework_disagreement_is_an_error(artifacts, tmp_path, capsys):
    folder = model_folder(tmp_path, artifacts["skops"])
    dest = tmp_path / "models"
    assert main(["--uri", str(folder), "--dest", str(dest), "--name", "iris",
                 "--framework", "xgboost", "--version", "3"]) == 6
    assert "framework 'sklearn' but --framework is 'xgboost'" in capsys.readouterr().err


def test_metadata_sha256_is_checked_too(artifacts, tmp_path, capsys):
    folder = model_folder(tmp_path, artifacts["skops"], sha256="0" * 64)
    dest = tmp_path / "models"
    assert main(["--uri", str(folder), "--dest", str(dest), "--name", "iris",
                 "--framework", "sklearn", "--version", "3"]) == 4
    assert "metadata.json sha256 says " + "0" * 64 in capsys.readouterr().err
    assert leftovers(dest) == []


def test_artifact_extension_must_fit_framework(artifacts, tmp_path, capsys):
    assert main(["--uri", str(artifacts["skops"]), "--dest", str(tmp_path / "m"),
                 "--name", "iris", "--framework", "xgboost", "--version", "3"]) == 6
    assert ("a .skops artifact is read by sklearn, but the framework is xgboost"
            in capsys.readouterr().err)


def test_unknown_file_type_is_refused(tmp_path, capsys):
    odd = tmp_path / "model.bin"
    odd.write_bytes(b"\x00\x01")
    assert main(["--uri", str(odd), "--dest", str(tmp_path / "m"), "--name", "x",
                 "--framework", "sklearn", "--version", "1"]) == 6
    assert "not a known artifact type" in capsys.readouterr().err


def test_refetch_replaces_an_earlier_result_but_a_failure_keeps_it(artifacts, tmp_path):
    dest = tmp_path / "models"
    args = ["--dest", str(dest), "--name", "iris", "--framework", "sklearn", "--version", "3"]
    assert main(["--uri", str(artifacts["skops"]), *args]) == 0
    (dest / "iris" / "stale.txt").write_text("from an earlier run")
    assert main(["--uri", str(artifacts["skops"]), *args]) == 0
    assert not (dest / "iris" / "stale.txt").exists()
    assert main(["--uri", str(artifacts["skops"]), *args, "--sha256", "1" * 64]) == 4
    assert (dest / "iris" / "model.skops").read_bytes() == artifacts["skops"].read_bytes()
    assert leftovers(dest) == ["iris"]


def test_configmap_style_symlinks_are_followed_inside_only(artifacts, tmp_path):
    # A ConfigMap volume: keys are links to ..data/<key>, ..data links to a dated folder.
    mount = tmp_path / "mnt"
    data = mount / "..2026_11_26"
    data.mkdir(parents=True)
    (data / "model.skops").write_bytes(artifacts["skops"].read_bytes())
    (mount / "..data").symlink_to(data.name)
    (mount / "model.skops").symlink_to("..data/model.skops")
    dest = tmp_path / "models"
    assert main(["--uri", f"file://{mount}", "--dest", str(dest), "--name", "cm",
                 "--framework", "sklearn", "--version", "1"]) == 0
    assert (dest / "cm" / "model.skops").read_bytes() == artifacts["skops"].read_bytes()
    assert not (dest / "cm" / "model.skops").is_symlink()

    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (mount / "sample.json").symlink_to(secret)
    assert main(["--uri", f"file://{mount}", "--dest", str(dest), "--name", "cm2",
                 "--framework", "sklearn", "--version", "1"]) == 5
    assert not (dest / "cm2").exists()


def test_folder_of_models_is_refused_with_a_hint(artifacts, tmp_path, capsys):
    folder = model_folder(tmp_path, artifacts["skops"])
    assert main(["--uri", str(folder.parent), "--dest", str(tmp_path / "m"), "--name", "iris",
                 "--framework", "sklearn", "--version", "3"]) == 6
    assert "folder of models instead of one model" in capsys.readouterr().err


def test_size_cap(artifacts, tmp_path, capsys):
    size = artifacts["skops"].stat().st_size
    assert main(["--uri", str(artifacts["skops"]), "--dest", str(tmp_path / "m"),
                 "--name", "iris", "--framework", "sklearn", "--version", "3",
                 "--max-bytes", str(size - 1)]) == 5
    assert "size cap" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--name", "-iris"], "not starting with '.' or '-'"),
        (["--name", "../iris"], "not starting with '.' or '-'"),
        (["--name", "a/b"], "letters, digits"),
        (["--name", "a" * 129], "129 characters long"),
        (["--sha256", "abc"], "is not 64 hex digits"),
        (["--version", " "], "--version must not be empty"),
    ],
)
def test_bad_flags(artifacts, tmp_path, capsys, flags, message):
    base = {"--name": "iris", "--framework": "sklearn", "--version": "3"}
    for flag, value in zip(flags[::2], flags[1::2], strict=True):
        base[flag] = value
    argv = ["--uri", str(artifacts["skops"]), "--dest", str(tmp_path / "m")]
    argv += [f"{flag}={value}" for flag, value in base.items()]  # "=": "-iris" is a value
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_missing_source_and_unknown_scheme(tmp_path, capsys):
    base = ["--dest", str(tmp_path / "m"), "--name", "x", "--framework", "sklearn",
            "--version", "1"]
    assert main(["--uri", str(tmp_path / "nope.skops"), *base]) == 3
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["--uri", "gs://bucket/model.skops", *base]) == 3
    assert "unsupported scheme 'gs'" in capsys.readouterr().err


def test_unwritable_dest_is_a_clear_error(artifacts, tmp_path, capsys):
    blocker = tmp_path / "file-not-folder"
    blocker.write_text("x")
    rc = main(["--uri", str(artifacts["skops"]), "--dest", str(blocker / "models"),
               "--name", "iris", "--framework", "sklearn", "--version", "3"])
    assert rc == 1
    err = capsys.readouterr().err
    assert err.startswith("fetch: error: ") and "Traceback" not in err
    assert "file-not-folder" in err


def test_dest_is_created_and_temp_dirs_sit_beside_the_result(artifacts, tmp_path):
    dest = tmp_path / "deep" / "models"
    assert main(["--uri", str(artifacts["skops"]), "--dest", str(dest), "--name", "iris",
                 "--framework", "sklearn", "--version", "3"]) == 0
    assert os.listdir(dest) == ["iris"]


def test_the_fetch_tool_imports_neither_numpy_nor_a_framework():
    """The init container runs `python -m serving_runtime.tools.fetch`: it must start
    without numpy or any framework (it reads the model-folder format and the plug-ins'
    declarations, never a model)."""
    import subprocess
    import sys

    probe = ("import sys, runpy; sys.argv = ['fetch', '--help']\n"
             "try:\n    runpy.run_module('serving_runtime.tools.fetch', run_name='__main__')\n"
             "except SystemExit:\n    pass\n"
             "print(sorted(m for m in ('numpy', 'sklearn', 'xgboost', 'lightgbm', 'skops',"
             " 'serving_runtime.models.runtimes.base', 'serving_runtime.models.folder')"
             " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout + out.stderr


def test_only_the_frameworks_own_suffixes_count_as_artifacts(artifacts, tmp_path):
    """A README.txt beside an XGBoost file is no second artifact (.txt is LightGBM's)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "fraud.ubj").write_bytes(artifacts["ubj"].read_bytes())
    (src / "README.txt").write_text("trained 2026-11-30 on the EU book\n")
    assert main(["--uri", str(src), "--dest", str(tmp_path / "m"), "--name", "fraud_model",
                 "--framework", "xgboost", "--version", "1"]) == 0
    meta = json.loads((tmp_path / "m" / "fraud_model" / "metadata.json").read_text())
    assert meta["artifact"] == "model.ubj"


def test_an_artifact_the_framework_cannot_read_is_refused_even_when_named(artifacts, tmp_path,
                                                                           capsys):
    folder = tmp_path / "src" / "m"
    folder.mkdir(parents=True)
    (folder / "model.ubj").write_bytes(artifacts["ubj"].read_bytes())
    (folder / "metadata.json").write_text(json.dumps(
        {"framework": "lightgbm", "version": "1", "artifact": "model.ubj"}))
    assert main(["--uri", str(folder), "--dest", str(tmp_path / "d"), "--name", "m",
                 "--framework", "lightgbm", "--version", "1"]) == 6
    assert "a .ubj artifact is read by xgboost, but the framework is lightgbm" in (
        capsys.readouterr().err)
    assert leftovers(tmp_path / "d") == []


@pytest.mark.parametrize(("name", "content", "message"), [
    ("metadata.json", '{"framework": "sklearn", "version": "3", "classes": [0, "b"]}',
     "'classes' must be a non-empty list of strings, numbers or booleans, all of one type"),
    ("metadata.json", '{"framework": "sklearn", "version": "3", "classes": ["a", "a"]}',
     "'classes' lists a label twice"),
    ("metadata.json", '{"framework": "sklearn", "version": "3", "version": "4"}',
     "duplicate key 'version'"),
    ("sample.json", '{"features": {"x": [NaN]}}', "sample.json is not valid JSON"),
])
def test_fetch_reads_metadata_and_sample_as_the_loader_does(artifacts, tmp_path, capsys,
                                                            name, content, message):
    folder = model_folder(tmp_path, artifacts["skops"])
    (folder / name).write_text(content)
    assert main(["--uri", str(folder), "--dest", str(tmp_path / "d"), "--name", "iris",
                 "--framework", "sklearn", "--version", "3"]) == 6
    assert message in capsys.readouterr().err
