"""Fixtures shared by tests/server, tests/models (and, through battery_zoo, tests/battery):
real model folders written with save_model, and a real server (`python -m serving_runtime`,
i.e. uvicorn) on a free loopback port. A plugin of tests/conftest.py (`pytest_plugins`), so
every test under tests/ can ask for them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.support.runtime_helpers import RuntimeServer


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator:
    started: list[RuntimeServer] = []

    def start(models_dir: Path, **kw) -> RuntimeServer:
        srv = RuntimeServer(models_dir, log_path=tmp_path / f"server-{len(started)}.log", **kw)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


@dataclass
class Zoo:
    """Fitted estimators by model name, the rows to test them on, and their folder."""

    models_dir: Path
    estimators: dict
    X: dict


N_ROWS = 300  # "a few hundred rows" per model kind


@pytest.fixture(scope="session")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Zoo:
    import xgboost as xgb
    from sklearn.datasets import make_classification, make_regression
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.linear_model import LogisticRegression

    from serving_runtime import save_model

    root = tmp_path_factory.mktemp("zoo") / "models"
    Xb, yb = make_classification(n_samples=600, n_features=6, random_state=1)
    Xm, ym = make_classification(n_samples=600, n_features=6, n_informative=4, n_classes=3,
                                 random_state=2)
    Xr, yr = make_regression(n_samples=600, n_features=5, noise=0.1, random_state=3)
    ests = {
        "sk-binary": (RandomForestClassifier(n_estimators=10, random_state=0).fit(Xb, yb), Xb),
        "sk-multi": (LogisticRegression(max_iter=500).fit(Xm, ym), Xm),
        "sk-reg": (RandomForestRegressor(n_estimators=10, random_state=0).fit(Xr, yr), Xr),
        "xgb-binary": (xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(Xb, yb), Xb),
        "xgb-multi": (xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(Xm, ym), Xm),
        "xgb-reg": (xgb.XGBRegressor(n_estimators=20, max_depth=3).fit(Xr, yr), Xr),
    }
    for name, (est, X) in ests.items():
        save_model(est, root / name, version="1.0.0", sample=X[:5])
    rng = np.random.default_rng(0)
    rows = {name: X[rng.choice(len(X), N_ROWS, replace=False)] for name, (_, X) in ests.items()}
    return Zoo(root, {n: e for n, (e, _) in ests.items()}, rows)


@pytest.fixture(scope="session")
def zoo_server(zoo: Zoo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeServer]:
    srv = RuntimeServer(zoo.models_dir, log_path=tmp_path_factory.mktemp("log") / "zoo.log")
    try:
        doc = srv.wait_startup_done()
        assert doc["ready"], doc
        yield srv
    finally:
        srv.stop()

