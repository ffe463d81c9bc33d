"""Fixtures for the container image tests (e2e/images/).

- ``docker_engine`` (session): a running Docker engine, started by images/engine.sh if need
  be (installs Debian's docker.io when missing). Fails, never skips, when none can be had.
- ``images`` (session): both images, built by images/build.sh (a warm run only checks the
  cache). ``N1V1_SKIP_IMAGE_BUILD=1`` uses whatever RUNTIME_IMAGE / OPERATOR_IMAGE name,
  e.g. a deliberately broken build, without rebuilding.
- ``start_container`` (function): ``start_container(image, *run_args, cmd=())`` -> id of a
  detached container, removed after the test.
- ``demo_models`` (session): a models folder with a scikit-learn and an XGBoost model written
  by ``serving_runtime.save_model``, plus the predictions the host computed for some rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.images.imagelib import (
    IMAGES_DIR,
    LABEL,
    MEASUREMENTS,
    OPERATOR_IMAGE,
    RUNTIME_IMAGE,
    docker,
    image_size_mb,
    logs,
    readable_by_app,
    record,
)

_SESSION_START = time.time()


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """Server version of a running Docker engine (started here when none answers)."""
    proc = subprocess.run(
        [str(IMAGES_DIR / "engine.sh")], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(
            "Docker engine could not be started by images/engine.sh (exit "
            f"{proc.returncode}); the image tests need one.\n{proc.stdout}{proc.stderr}",
            pytrace=False,
        )
    return docker("version", "-f", "{{.Server.Version}}").stdout.strip()


@dataclass(frozen=True)
class Images:
    runtime: str
    operator: str


@pytest.fixture(scope="session")
def images(docker_engine: str) -> Images:
    if os.environ.get("N1V1_SKIP_IMAGE_BUILD") != "1":
        proc = subprocess.run(
            [str(IMAGES_DIR / "build.sh")],
            capture_output=True,
            text=True,
            timeout=1800,
            env={**os.environ, "RUNTIME_IMAGE": RUNTIME_IMAGE, "OPERATOR_IMAGE": OPERATOR_IMAGE},
        )
        if proc.returncode != 0:
            pytest.fail(f"images/build.sh failed:\n{proc.stdout}{proc.stderr}", pytrace=False)
    for image in (RUNTIME_IMAGE, OPERATOR_IMAGE):
        if docker("image", "inspect", image, check=False).returncode != 0:
            pytest.fail(f"image {image} not found (run images/build.sh)", pytrace=False)
    MEASUREMENTS.unlink(missing_ok=True)
    record("runtime_image_size_mb", image_size_mb(RUNTIME_IMAGE))
    record("operator_image_size_mb", image_size_mb(OPERATOR_IMAGE))
    return Images(RUNTIME_IMAGE, OPERATOR_IMAGE)


@pytest.fixture
def start_container(docker_engine: str) -> Iterator[Callable[..., str]]:
    started: list[str] = []

    def start(image: str, *run_args: str, cmd: tuple[str, ...] = ()) -> str:
        cid = docker("run", "-d", "--label", LABEL, *run_args, image, *cmd).stdout.strip()
        started.append(cid)
        return cid

    yield start
    for cid in started:
        docker("rm", "-f", cid, check=False)


@dataclass(frozen=True)
class DemoModels:
    folder: Path  # contains one model folder per name
    feature_names: list[str]
    rows: list[list[float]]
    expected: dict[str, list]  # model name -> host-side predictions for `rows`

    def features(self) -> dict[str, list[float]]:
        """`rows` as the /predict request's columns."""
        return {n: [r[i] for r in self.rows] for i, n in enumerate(self.feature_names)}


@pytest.fixture(scope="session")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> DemoModels:
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from xgboost import XGBClassifier

    from serving_runtime import save_model

    X, y = load_iris(return_X_y=True)
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    folder = tmp_path_factory.mktemp("image-models")
    rows = X[[0, 60, 120, 149]]
    expected: dict[str, list] = {}
    sk = LogisticRegression(max_iter=500).fit(X, y)
    save_model(sk, folder / "demo-sklearn", version="1.0.0", feature_names=names, sample=X[:3])
    expected["demo-sklearn"] = sk.predict(rows).tolist()
    xg = XGBClassifier(n_estimators=10, max_depth=2, n_jobs=1).fit(X, y)
    save_model(xg, folder / "demo-xgboost", version="1.0.0", feature_names=names, sample=X[:3])
    expected["demo-xgboost"] = xg.predict(rows).tolist()
    readable_by_app(folder)  # mounted read-only into a container running as UID 10001
    return DemoModels(folder, names, rows.tolist(), expected)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the sizes and timings this run measured (also kept in MEASUREMENTS)."""
    if MEASUREMENTS.exists() and MEASUREMENTS.stat().st_mtime >= _SESSION_START:
        terminalreporter.write_sep("-", f"image measurements ({MEASUREMENTS})")
        for key, value in json.loads(MEASUREMENTS.read_text()).items():
            terminalreporter.write_line(f"{key}: {value}")


__all__ = ["DemoModels", "Images", "logs"]
