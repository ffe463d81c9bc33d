"""Hostile model files (issue 12, part C): folders a model author, a broken copy or an
attacker could put in MODELS_DIR, loaded by the real registry and a real server.

- the battery: code-running pickles/joblib/skops, path traversal and absolute paths in
  metadata.json, symlinks and FIFOs where files should be, giant sparse files, a skops zip
  bomb, malformed metadata and golden samples, truncated and semantically corrupt XGBoost
  UBJ/JSON and scikit-learn trees, empty files. Every folder is loaded by the real
  `ModelRegistry` in a loader child process (so that a native crash or a hang is a figure,
  not a dead test run) and, all together, by one real server; each must be refused with a
  clear, bounded reason in /health, no payload may run (a marker file), the server must
  stay up and its good models keep serving.
- one test per fix: artifact size limit checked before reading, symlinks out of the folder
  (with Kubernetes' ConfigMap/projected volume layouts still loading), native error text
  cleaned, folders that cannot be served because of their name reported.

Every process started here runs under an address-space cap (MEMORY_CAP): a loader that
tries to read a 50 GiB file fails inside the cap instead of taking the shared machine.
"""

from __future__ import annotations

import copy
import io
import json
import os
import pickle
import queue
import re
import resource
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.battery import battery_model_payloads as payloads
from tests.support.runtime_helpers import REPO, RuntimeServer, columns, free_port

HERE = Path(__file__).resolve().parent
GIB = 1 << 30
MIB = 1 << 20
MEMORY_CAP = 3 * GIB  # RLIMIT_AS of each child; a healthy server here uses ~0.65 GiB of it
GIANT = 50 * GIB  # sparse: takes no disk space
BATTERY_ARTIFACT_LIMIT = 256 * MIB  # MAX_ARTIFACT_BYTES of the battery's processes
PER_MODEL_TIMEOUT = 30.0  # a load that says nothing for this long is counted as a hang
MAX_REASON_CHARS = 1000
N_FEATURES = 4

# what native stack text looks like: a reason in /health must not carry it
_NATIVE_NOISE = re.compile(r"Stack trace|\[bt\]|0x[0-9a-fA-F]{8,}|/workspace/|\.so\(")


def _cap_memory() -> None:  # preexec_fn of every child process
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("ALLOW_UNSAFE_LOADING", "PRELOAD_MODELS", "MODELS_DIR",
                        "MAX_ARTIFACT_BYTES")
           and not k.startswith("REMOTE_INFERENCE")}
    # the payload module must be importable where a loader might trust it
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE), str(REPO),
                                                    env.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


class CappedServer(RuntimeServer):
    """tests/support's RuntimeServer (same waits, logs and stop), started under
    MEMORY_CAP with the payload module on its path."""

    def __init__(self, models_dir: Path, *, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "serving_runtime", "--models-dir", str(models_dir),
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=child_env(env), stdout=self._log, stderr=subprocess.STDOUT,
            preexec_fn=_cap_memory,
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    def startup(self, timeout: float) -> dict[str, Any] | None:
        """/health once start-up loading is over; None if the process died first."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            try:
                doc = self.client.get("/health", timeout=5).json()
                if "loading models" not in doc["reasons"]:
                    return doc
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"models still loading after {timeout}s: {self.logs()[-3000:]}")

    def peak_rss(self) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024

    def failures(self, name: str) -> float:
        text = self.client.get("/metrics").text
        m = re.search(rf'model_reloads_total{{model_name="{re.escape(name)}",'
                      rf'result="failure"}} ([0-9.]+)', text)
        return float(m.group(1)) if m else 0.0


@pytest.fixture
def servers(tmp_path: Path):
    started: list[CappedServer] = []

    def start(models_dir: Path, **env: str) -> CappedServer:
        srv = CappedServer(models_dir, log_path=tmp_path / f"server-{len(started)}.log",
                           env=env)
        started.append(srv)
        return srv

    yield start
    for srv in started:
        srv.stop()


# --- the real registry in a child process --------------------------------------------

_LOADER = r"""
import asyncio, json, sys
from pathlib import Path
from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.settings import Settings

async def main(models_dir, names):
    registry = ModelRegistry(Settings(models_dir=Path(models_dir)), RuntimeMetrics())
    for name in names:
        print(json.dumps({"start": name}), flush=True)
        ok = await registry.reload(name, settle=False)
        print(json.dumps({"name": name, "ok": ok, "error": registry.states[name].error}),
              flush=True)

asyncio.run(main(sys.argv[1], sys.argv[2:]))
"""


@dataclass
class Outcome:
    state: str  # refused | loaded | crash | hang
    error: str | None


def _describe_exit(rc: int) -> str:
    if rc < 0:
        return f"killed by {signal.Signals(-rc).name}"
    return f"exit code {rc}"


def load_in_child(models_dir: Path, names: list[str], env: dict[str, str],
                  log_path: Path) -> dict[str, Outcome]:
    """Load each model with the real ModelRegistry (the server's own load path) in a
    child process under MEMORY_CAP. A child that dies or says nothing for
    PER_MODEL_TIMEOUT is recorded against the model it was loading and a new child goes
    on with the rest."""
    results: dict[str, Outcome] = {}
    pending = list(names)
    with open(log_path, "ab") as log:
        while pending:
            proc = subprocess.Popen(
                [sys.executable, "-c", _LOADER, str(models_dir), *pending], cwd=REPO,
                env=child_env(env), stdout=subprocess.PIPE, stderr=log,
                preexec_fn=_cap_memory)
            lines: queue.Queue[bytes | None] = queue.Queue()

            def pump(stream: Any = proc.stdout, q: queue.Queue = lines) -> None:
                for line in stream:
                    q.put(line)
                q.put(None)

            threading.Thread(target=pump, daemon=True).start()
            current = None
            while True:
                try:
                    line = lines.get(timeout=PER_MODEL_TIMEOUT)
                except queue.Empty:
                    proc.kill()  # our own child, by its handle
                    proc.wait()
                    if current is None:
                        raise RuntimeError("loader child said nothing") from None
                    results[current] = Outcome(
                        "hang", f"no answer within {PER_MODEL_TIMEOUT:.0f} s")
                    break
                if line is None:
                    rc = proc.wait()
                    if current is not None:
                        results[current] = Outcome(
                            "crash", f"loader process died ({_describe_exit(rc)})")
                    break
                msg = json.loads(line)
                if "start" in msg:
                    current = msg["start"]
                    continue
                results[msg["name"]] = Outcome("loaded" if msg["ok"] else "refused",
                                               msg["error"])
                current = None
            left = [n for n in pending if n not in results]
            if left == pending:
                raise RuntimeError(f"loader child made no progress: {left[:3]}")
            pending = left
    return results


def clear_reason(error: str | None, pattern: str) -> str | None:
    """None if `error` is a clear reason matching `pattern`, else what is wrong with it."""
    if not error:
        return "no reason given"
    if len(error) > MAX_REASON_CHARS:
        return f"reason is {len(error)} characters long"
    noise = _NATIVE_NOISE.search(error)
    if noise:
        return f"reason carries native stack text ({noise.group(0)!r})"
    if not re.search(pattern, error, re.IGNORECASE | re.DOTALL):
        return f"reason does not say /{pattern}/"
    return None


# --- model sources ---------------------------------------------------------------------


@dataclass
class Sources:
    X: np.ndarray
    rf: Any
    dt: Any
    skops_rf: bytes
    xgb_json: dict[str, Any]
    ubj: bytes
    json_bytes: bytes
    good: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    import skops.io as sio
    import xgboost as xgb
    from sklearn.datasets import make_classification
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier

    from serving_runtime import save_model

    X, y = make_classification(n_samples=300, n_features=N_FEATURES, n_informative=3,
                               n_redundant=0, random_state=0)
    rf = RandomForestClassifier(n_estimators=6, max_depth=4, random_state=0).fit(X, y)
    dt = DecisionTreeClassifier(max_depth=3, random_state=0).fit(X, y)
    xg = xgb.XGBClassifier(n_estimators=6, max_depth=3).fit(X, y)
    booster = xg.get_booster()
    root = tmp_path_factory.mktemp("sources")
    good = {
        "good-sk": save_model(rf, root / "good-sk", version="1.0.0", sample=X[:4]),
        "good-xgb": save_model(xg, root / "good-xgb", version="1.0.0", sample=X[:4]),
    }
    json_bytes = bytes(booster.save_raw("json"))
    return Sources(X=X, rf=rf, dt=dt, skops_rf=sio.dumps(rf), xgb_json=json.loads(json_bytes),
                   ubj=bytes(booster.save_raw("ubj")), json_bytes=json_bytes, good=good)


# --- hostile folder builders -----------------------------------------------------------


@dataclass
class Ctx:
    root: Path  # the models dir
    markers: Path
    src: Sources
    tmp: Path

    def marker(self, name: str) -> str:
        return str(self.markers / name)


def write_folder(folder: Path, meta: dict[str, Any] | bytes | None,
                 files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True)
    if meta is not None:
        (folder / "metadata.json").write_bytes(
            meta if isinstance(meta, bytes) else json.dumps(meta).encode())
    for name, data in files.items():
        (folder / name).write_bytes(data)


SK = {"framework": "sklearn", "version": "1"}
XG = {"framework": "xgboost", "version": "1"}


def ubj_int(n: int) -> bytes:
    return b"L" + struct.pack(">q", n)


def ubj_key(k: str) -> bytes:
    return ubj_int(len(k.encode())) + k.encode()


def skops_zip(schema: dict[str, Any] | bytes, *, compress: bool = False) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED,
                         compresslevel=9 if compress else None) as z:
        z.writestr("schema.json", schema if isinstance(schema, bytes)
                   else json.dumps(schema).encode())
    return buf.getvalue()


def skops_exec_schema(code: str) -> dict[str, Any]:
    """skops' ConstructorFromReduceNode calls `<module>.<class>(*content)` at load:
    here builtins.exec(code)."""
    return {
        "__class__": "exec", "__module__": "builtins",
        "__loader__": "ConstructorFromReduceNode",
        "content": {"__class__": "tuple", "__module__": "builtins", "__loader__": "TupleNode",
                    "content": [{"__class__": "str", "__module__": "builtins",
                                 "__loader__": "JsonNode", "content": json.dumps(code),
                                 "is_json": True, "__id__": 2}],
                    "__id__": 1},
        "__id__": 0, "protocol": 2, "_skops_version": "0.16.0",
    }


def corrupt_tree_skops(dt: Any, how: str) -> bytes:
    """A fitted DecisionTreeClassifier whose node array is tampered with (skops trusts
    sklearn's Tree type, and sklearn's native predict follows the indices unchecked)."""
    import skops.io as sio

    est = copy.deepcopy(dt)
    state = est.tree_.__getstate__()
    nodes = state["nodes"].copy()
    if how == "child":
        nodes["left_child"][0] = 10**6
    elif how == "feature":
        nodes["feature"][0] = 10**6
    elif how == "cycle":
        nodes["left_child"][0] = 0
    state["nodes"] = nodes
    est.tree_.__setstate__(state)  # no predict here: only the loader under test runs it
    return sio.dumps(est)


def xgb_tampered(src: Sources, edit: Callable[[dict[str, Any]], None]) -> bytes:
    doc = copy.deepcopy(src.xgb_json)
    edit(doc)
    return json.dumps(doc).encode()


def _tree0(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["learner"]["gradient_booster"]["model"]["trees"][0]


def _set(path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return edit


def _tree_edit(key: str, index: int, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(doc: dict[str, Any]) -> None:
        _tree0(doc)[key][index] = value
    return edit


def _link(folder: Path, name: str, target: str | Path) -> None:
    os.symlink(target, folder / name)


def _copy_good(ctx: Ctx, name: str, folder: Path) -> None:
    shutil.copytree(ctx.src.good[name], folder)


@dataclass
class Variant:
    name: str
    build: Callable[[Ctx, Path], None]
    reason: str  # regex a clear refusal matches
    marker: bool = False  # the payload writes ctx.marker(name) when it runs


def hostile_variants(src: Sources, soak: bool) -> list[Variant]:
    v: list[Variant] = []

    def add(name: str, reason: str, *, marker: bool = False):
        def deco(fn: Callable[[Ctx, Path], None]) -> Callable[[Ctx, Path], None]:
            v.append(Variant(name, fn, reason, marker))
            return fn
        return deco

    # -- code execution ------------------------------------------------------------
    @add("pickle-exec-joblib", r"model\.joblib.*pickle", marker=True)
    def _(c, f):
        write_folder(f, SK, {"model.joblib": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("pickle-system-pkl", r"model\.pkl.*pickle", marker=True)
    def _(c, f):
        write_folder(f, SK, {"model.pkl": pickle.dumps(
            payloads.SystemOnUnpickle(c.marker(f.name)))})

    @add("pickle-xgboost-joblib", r"model\.joblib.*pickle", marker=True)
    def _(c, f):
        write_folder(f, XG, {"model.joblib": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("joblib-compressed", r"model\.joblib.*pickle", marker=True)
    def _(c, f):
        import joblib

        buf = io.BytesIO()
        joblib.dump(payloads.SystemOnUnpickle(c.marker(f.name)), buf, compress=3)
        write_folder(f, SK, {"model.joblib": buf.getvalue()})

    @add("pickle-unsafe-string-flag", r"allow_unsafe.*true or false|model\.joblib.*pickle",
         marker=True)
    def _(c, f):  # a folder's own opt-in is never honoured, as a string or a boolean
        write_folder(f, {**SK, "allow_unsafe": "true"}, {"model.joblib": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("pickle-named-skops", r"model\.skops.*(skops|zip)", marker=True)
    def _(c, f):
        write_folder(f, SK, {"model.skops": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("pickle-named-ubj", r"model\.ubj", marker=True)
    def _(c, f):
        write_folder(f, XG, {"model.ubj": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("pickle-named-json", r"model\.json", marker=True)
    def _(c, f):
        write_folder(f, XG, {"model.json": pickle.dumps(
            payloads.ExecOnUnpickle(c.marker(f.name)))})

    @add("skops-builtins-exec", r"trusted.*builtins\.exec", marker=True)
    def _(c, f):
        code = payloads.marker_code(c.marker(f.name))
        write_folder(f, SK, {"model.skops": skops_zip(skops_exec_schema(code))})

    @add("skops-setstate-class", r"trusted.*WritesMarkerOnSetState", marker=True)
    def _(c, f):
        import skops.io as sio

        write_folder(f, SK, {"model.skops": sio.dumps(
            payloads.WritesMarkerOnSetState(c.marker(f.name)))})

    @add("skops-function-system", r"trusted.*system")
    def _(c, f):
        import skops.io as sio
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import FunctionTransformer

        pipe = make_pipeline(FunctionTransformer(os.system), copy.deepcopy(c.src.dt))
        write_folder(f, SK, {"model.skops": sio.dumps(pipe)})

    # -- paths in metadata.json --------------------------------------------------------
    for label, artifact in (("traversal", "../../etc/passwd"), ("absolute", "/etc/passwd"),
                            ("sibling", "../good-sk/model.skops"), ("dotdot", ".."),
                            ("backslash", "..\\good-sk\\model.skops"),
                            ("nul-byte", "model\x00.skops"), ("not-a-string", 7)):
        @add(f"meta-artifact-{label}", r"artifact")
        def _(c, f, artifact=artifact):
            write_folder(f, {**SK, "artifact": artifact}, {"model.skops": c.src.skops_rf})

    # -- symlinks, FIFOs, directories where files should be ----------------------------
    @add("link-artifact-passwd", r"model\.json.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, XG, {})
        _link(f, "model.json", "/etc/passwd")

    @add("link-artifact-sibling", r"model\.skops.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, SK, {})
        _link(f, "model.skops", "../good-sk/model.skops")

    @add("link-artifact-absolute-good", r"model\.skops.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, SK, {})
        _link(f, "model.skops", c.root / "good-sk" / "model.skops")

    @add("link-artifact-chain", r"model\.json.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, XG, {})
        _link(f, "hop", "/etc/passwd")
        _link(f, "model.json", "hop")

    @add("link-artifact-dev-zero", r"model\.ubj.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, XG, {})
        _link(f, "model.ubj", "/dev/zero")

    @add("link-artifact-dangling", r"model\.skops")
    def _(c, f):
        write_folder(f, SK, {})
        _link(f, "model.skops", "does-not-exist.skops")

    @add("link-metadata-sibling", r"metadata\.json.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, None, {"model.skops": c.src.skops_rf})
        _link(f, "metadata.json", "../good-sk/metadata.json")

    @add("link-metadata-dev-zero", r"metadata\.json.*(symlink|link).*outside")
    def _(c, f):
        write_folder(f, None, {"model.skops": c.src.skops_rf})
        _link(f, "metadata.json", "/dev/zero")

    @add("link-sample-passwd", r"sample\.json.*(symlink|link).*outside")
    def _(c, f):
        _copy_good(c, "good-sk", f)
        (f / "sample.json").unlink()
        _link(f, "sample.json", "/etc/passwd")

    @add("fifo-metadata", r"metadata\.json.*regular file")
    def _(c, f):
        write_folder(f, None, {"model.skops": c.src.skops_rf})
        os.mkfifo(f / "metadata.json")

    @add("fifo-artifact", r"model\.skops.*regular file")
    def _(c, f):
        write_folder(f, {**SK, "artifact": "model.skops"}, {})
        os.mkfifo(f / "model.skops")

    @add("fifo-sample", r"sample\.json.*regular file")
    def _(c, f):
        _copy_good(c, "good-sk", f)
        (f / "sample.json").unlink()
        os.mkfifo(f / "sample.json")

    @add("dir-as-artifact", r"model\.skops.*regular file")
    def _(c, f):
        write_folder(f, {**SK, "artifact": "model.skops"}, {})
        (f / "model.skops").mkdir()

    # -- sizes -------------------------------------------------------------------------
    @add("giant-sparse-artifact", r"model\.json.*bytes.*MAX_ARTIFACT_BYTES")
    def _(c, f):
        write_folder(f, XG, {})
        os.truncate(_touch(f / "model.json"), GIANT)

    @add("giant-sparse-metadata", r"metadata\.json.*bytes")
    def _(c, f):
        write_folder(f, None, {"model.skops": c.src.skops_rf})
        os.truncate(_touch(f / "metadata.json"), GIANT)

    @add("giant-sparse-sample", r"sample\.json.*bytes")
    def _(c, f):
        _copy_good(c, "good-sk", f)
        os.truncate(f / "sample.json", GIANT)

    @add("huge-metadata-json", r"metadata\.json.*bytes")
    def _(c, f):
        write_folder(f, {**SK, "padding": "x" * (20 * MIB)}, {"model.skops": c.src.skops_rf})

    @add("skops-zip-bomb", r"model\.skops.*(uncompress|unpack)")
    def _(c, f):  # 300 MiB of schema.json in ~0.3 MiB of zip
        write_folder(f, SK, {"model.skops": skops_zip(
            b"{" + b" " * (BATTERY_ARTIFACT_LIMIT + 44 * MIB) + b"}", compress=True)})

    # -- malformed metadata.json -------------------------------------------------------
    for label, raw in (
            ("not-object", b"[1, 2]"), ("empty", b""),
            ("invalid-utf8", b'{"framework": "sklearn\xff\xfe", "version": "1"}'),
            ("deep-nesting", b'{"framework": "sklearn", "version": "1", "x": '
             + b"[" * 100_000 + b"]" * 100_000 + b"}"),
            ("duplicate-keys", b'{"framework": "xgboost", "framework": "sklearn", '
             b'"version": "1"}'),
            ("version-object", b'{"framework": "sklearn", "version": {"major": 1}}'),
            ("framework-list", b'{"framework": ["sklearn"], "version": "1"}'),
            ("classes-int", b'{"framework": "sklearn", "version": "1", "classes": 7}'),
            ("feature-names-string", b'{"framework": "sklearn", "version": "1", '
             b'"feature_names": "f0,f1,f2,f3"}'),
            ("nan-version", b'{"framework": "sklearn", "version": NaN}')):
        @add(f"meta-{label}", r"metadata\.json")
        def _(c, f, raw=raw):
            write_folder(f, raw, {"model.skops": c.src.skops_rf})

    # -- malformed sample.json ---------------------------------------------------------
    for label, raw in (("expected-list", {"features": {}, "expected": [1]}),
                       ("features-list", {"features": [[0, 0, 0, 0]], "expected": {}}),
                       ("deep", None)):
        @add(f"sample-{label}", r"sample\.json")
        def _(c, f, raw=raw):
            _copy_good(c, "good-sk", f)
            data = (b'{"features": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
                    if raw is None else json.dumps(raw).encode())
            (f / "sample.json").write_bytes(data)

    # -- XGBoost: empty, garbage, truncated, nested, lying lengths ---------------------
    ubj, js = src.ubj, src.json_bytes
    cuts = sorted({1, 19, 44, 62, 77, len(ubj) // 2, len(ubj) - 1})
    if soak:
        cuts = sorted(set(cuts) | set(range(2, len(ubj), max(1, len(ubj) // 150))))
    for n in cuts:
        @add(f"xgb-ubj-truncated-{n}", r"model\.ubj")
        def _(c, f, n=n):
            write_folder(f, XG, {"model.ubj": ubj[:n]})

    for n in (len(js) // 3, len(js) - 2):
        @add(f"xgb-json-truncated-{n}", r"model\.json")
        def _(c, f, n=n):
            write_folder(f, XG, {"model.json": js[:n]})

    for label, name, data in (
            ("ubj-empty", "model.ubj", b""), ("json-empty", "model.json", b""),
            ("ubj-garbage", "model.ubj", bytes(np.random.default_rng(1).integers(
                0, 256, 4096, dtype=np.uint8))),
            ("json-deep", "model.json", b'{"learner": ' + b"[" * 100_000
             + b"]" * 100_000 + b"}"),
            ("ubj-deep", "model.ubj", b"{" + ubj_key("learner")
             + (b"[#" + ubj_int(1)) * 100_000 + b"Z"),
            ("ubj-string-length", "model.ubj", b"{" + ubj_key("learner") + b"S"
             + ubj_int(1 << 62) + b"abc}"),
            ("ubj-key-length", "model.ubj", b"{" + ubj_int(1 << 40) + b"learner}"),
            ("ubj-array-count", "model.ubj", b"{" + ubj_key("learner") + b"[#"
             + ubj_int(1 << 40) + b"Z}"),
            ("ubj-typed-count", "model.ubj", b"{" + ubj_key("learner") + b"[$d#"
             + ubj_int(1 << 60) + b"\x00\x00\x00\x00}"),
            ("ubj-negative-count", "model.ubj", b"{" + ubj_key("learner") + b"[#"
             + ubj_int(-5) + b"}")):
        @add(f"xgb-{label}", re.escape(name))
        def _(c, f, name=name, data=data):
            write_folder(f, XG, {name: data})

    # -- XGBoost: well-formed files describing impossible trees ------------------------
    for label, edit in (
            ("child-out-of-range", _tree_edit("left_children", 0, 100_000)),
            ("child-negative", _tree_edit("left_children", 0, -5)),
            ("child-cycle", _tree_edit("left_children", 0, 0)),
            ("split-feature-out-of-range", _tree_edit("split_indices", 0, 10**6)),
            ("num-class-huge", _set(["learner", "learner_model_param", "num_class"],
                                    "1000000000")),
            ("num-feature-huge", _set(["learner", "learner_model_param", "num_feature"],
                                      "2147483647"))):
        @add(f"xgb-json-{label}", r"model\.json")
        def _(c, f, edit=edit):
            write_folder(f, XG, {"model.json": xgb_tampered(c.src, edit)})

    # -- scikit-learn: broken skops files and tampered trees ---------------------------
    @add("skops-truncated", r"model\.skops")
    def _(c, f):
        write_folder(f, SK, {"model.skops": c.src.skops_rf[: len(c.src.skops_rf) // 2]})

    @add("skops-empty", r"model\.skops")
    def _(c, f):
        write_folder(f, SK, {"model.skops": b""})

    for how in ("child", "feature", "cycle"):
        @add(f"skops-tree-{how}", r"model\.skops.*tree")
        def _(c, f, how=how):
            write_folder(f, SK, {"model.skops": corrupt_tree_skops(c.src.dt, how)})

    return v


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def build_models_dir(root: Path, src: Sources, variants: list[Variant], tmp: Path) -> Ctx:
    root.mkdir(parents=True)
    markers = tmp / "markers"
    markers.mkdir()
    ctx = Ctx(root, markers, src, tmp)
    for name, folder in src.good.items():
        shutil.copytree(folder, root / name)
    for variant in variants:
        variant.build(ctx, root / variant.name)
    return ctx


# --- the battery ---------------------------------------------------------------------


def test_battery_hostile_model_folders(sources: Sources, soak: bool, servers,
                                       tmp_path: Path) -> None:
    variants = hostile_variants(sources, soak)
    names = [v.name for v in variants]
    assert len(set(names)) == len(names)
    models = tmp_path / "models"
    ctx = build_models_dir(models, sources, variants, tmp_path)
    # a model the server serves, then gets a crashing file for its hot reload
    swap = models / "swap-xgb"
    write_folder(swap, XG, {"model.ubj": sources.ubj})
    env = {"MAX_ARTIFACT_BYTES": str(BATTERY_ARTIFACT_LIMIT), "FAST_PATH_CHECK_ROWS": "100",
           "INFERENCE_THREADS": "1"}

    problems: list[str] = []
    child = load_in_child(models, names, env, tmp_path / "loader.log")
    refused = 0
    for variant in variants:
        out = child[variant.name]
        if out.state != "refused":
            problems.append(f"{variant.name}: {out.state} ({out.error})")
            continue
        wrong = clear_reason(out.error, variant.reason)
        if wrong:
            problems.append(f"{variant.name}: {wrong}: {out.error[:300]!r}")
        else:
            refused += 1

    # the same folders, all at once, in one real server next to good models
    fivexx = 0
    srv = servers(models, **env)
    try:
        doc = srv.startup(timeout=120)
    except TimeoutError:
        doc = None
        problems.append(f"server start-up still loading after 120 s; last log line: "
                        f"{srv.logs().splitlines()[-1][:300]}")
    else:
        if doc is None:
            problems.append(f"server died during start-up "
                            f"({_describe_exit(srv.proc.returncode)}); last log line: "
                            f"{srv.logs().splitlines()[-1][:300]}")
    if doc is not None:
        by_name = {m["name"]: m for m in doc["models"]}
        assert sorted(doc["models_loaded"]) == ["good-sk", "good-xgb", "swap-xgb"], doc
        for variant in variants:
            entry = by_name.get(variant.name)
            if entry is None or entry["state"] != "failed":
                problems.append(f"server: {variant.name} is {entry and entry['state']}")
                continue
            wrong = clear_reason(entry["error"], variant.reason)
            if wrong:
                problems.append(f"server: {variant.name}: {wrong}")

        statuses = []
        body = {"features": columns(sources.X[:3])}
        rounds = 3 if not soak else 30
        for _ in range(rounds):
            for name in ("good-sk", "good-xgb", "swap-xgb"):
                statuses.append(srv.client.post("/predict", json={"model_name": name, **body})
                                .status_code)
        for variant in variants:
            r = srv.client.post("/predict", json={"model_name": variant.name, **body})
            statuses.append(r.status_code)
            if r.status_code != 404:
                problems.append(f"server: /predict {variant.name} answered {r.status_code}")
        # hot reloads of hostile folders, and a crashing file under a served model
        hot = [v.name for v in variants if v.name.startswith(("xgb-", "skops-tree", "link-"))]
        (swap / "model.ubj").write_bytes(sources.ubj[:19])  # crashed XGBoost 3.2 here
        (swap / "metadata.json").write_text(json.dumps({**XG, "version": "2"}))
        for name in [*hot, "swap-xgb"]:
            statuses.append(srv.client.post(f"/reload/{name}").status_code)
        deadline = time.monotonic() + 120
        while srv.proc.poll() is None and time.monotonic() < deadline:
            try:
                done = all(srv.failures(n) >= 2 for n in hot) and srv.failures("swap-xgb") >= 1
            except httpx.TransportError:
                break
            if done:
                break
            time.sleep(0.3)
        if srv.proc.poll() is not None:
            problems.append(f"server died during hot reloads "
                            f"({_describe_exit(srv.proc.returncode)})")
        else:
            for name in ("good-sk", "good-xgb", "swap-xgb"):
                r = srv.client.post("/predict", json={"model_name": name, **body})
                statuses.append(r.status_code)
                if r.status_code != 200:
                    problems.append(f"server: {name} answered {r.status_code} after reloads")
            after = {m["name"]: m for m in srv.client.get("/health").json()["models"]}
            if after["swap-xgb"]["version"] != "1" or not after["swap-xgb"]["error"]:
                problems.append(f"server: swap-xgb after a bad reload: {after['swap-xgb']}")
            print(f"server peak RSS {srv.peak_rss() / MIB:.0f} MiB")
        fivexx = sum(1 for s in statuses if s >= 500)

    executed = sorted(p.name for p in ctx.markers.iterdir())
    print(f"hostile folders: {len(variants)} tried, {len(executed)} code executions, "
          f"{refused} refused with a reason, 5xx {fivexx}")
    for line in problems:
        print("  " + line)
    assert not executed, f"payloads ran: {executed}"
    assert not problems, "\n".join(problems)
    assert fivexx == 0


def test_battery_mutated_artifacts_never_crash(sources: Sources, soak: bool,
                                               tmp_path: Path) -> None:
    """Random byte changes in real UBJ, JSON and skops artifacts, and random index changes
    inside XGBoost and scikit-learn trees (no sha256 in metadata, so the parsers and
    checks see them): each either loads as a valid model (the load predicts a zero row and
    the fast-path check rows) or is refused with a clear reason; none crashes or hangs the
    loader."""
    import skops.io as sio

    rng = np.random.default_rng(12)
    per_kind = 200 if soak else 8
    models = tmp_path / "models"
    models.mkdir()
    names = []

    def flip(data: bytes) -> bytes:
        buf = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
        return bytes(buf)

    def xgb_tree_edit(_: bytes) -> bytes:
        doc = copy.deepcopy(sources.xgb_json)
        trees = doc["learner"]["gradient_booster"]["model"]["trees"]
        tree = trees[int(rng.integers(0, len(trees)))]
        keys = ["left_children", "right_children", "split_indices", "split_type", "parents",
                "default_left"]
        key = keys[int(rng.integers(0, len(keys)))]
        n = len(tree[key])
        tree[key][int(rng.integers(0, n))] = int(rng.integers(-3, n + 4))
        return json.dumps(doc).encode()

    def sk_tree_edit(_: bytes) -> bytes:
        est = copy.deepcopy(sources.dt)
        state = est.tree_.__getstate__()
        nodes = state["nodes"].copy()
        key = ["left_child", "right_child", "feature"][int(rng.integers(0, 3))]
        n = len(nodes)
        nodes[key][int(rng.integers(0, n))] = int(rng.integers(-3, n + 4))
        state["nodes"] = nodes
        est.tree_.__setstate__(state)
        return sio.dumps(est)

    for kind, fname, meta, data, mutate in (
            ("ubj", "model.ubj", XG, sources.ubj, flip),
            ("json", "model.json", XG, sources.json_bytes, flip),
            ("skops", "model.skops", SK, sources.skops_rf, flip),
            ("xgb-tree", "model.json", XG, b"", xgb_tree_edit),
            ("sk-tree", "model.skops", SK, b"", sk_tree_edit)):
        for i in range(per_kind):
            name = f"mut-{kind}-{i}"
            write_folder(models / name, meta, {fname: mutate(data)})
            names.append(name)
    env = {"FAST_PATH_CHECK_ROWS": "100", "INFERENCE_THREADS": "1"}
    out = load_in_child(models, names, env, tmp_path / "loader.log")
    crashes = [f"{n}: {o.state} ({o.error})" for n, o in out.items()
               if o.state in ("crash", "hang")]
    loaded = sum(1 for o in out.values() if o.state == "loaded")
    unclear = [f"{n}: {wrong}: {o.error[:200]!r}" for n, o in out.items()
               if o.state == "refused"
               and (wrong := clear_reason(o.error, r"model\.(ubj|json|skops)|metadata"))]
    refused = sum(1 for o in out.values() if o.state == "refused") - len(unclear)
    print(f"mutated artifacts: {len(names)} tried, {len(crashes)} crashes or hangs, "
          f"{loaded} loaded (still valid), {refused} refused with a reason")
    assert not crashes, crashes
    assert not unclear, unclear


def test_payloads_run_code_when_trusted(sources: Sources, tmp_path: Path) -> None:
    """The marker detector can fire: loaded by a loader that trusts them, the battery's
    payloads do write their markers (so 0 code executions above means something)."""
    import skops.io as sio

    markers = tmp_path / "markers"
    markers.mkdir()
    files = {
        "exec.pkl": pickle.dumps(payloads.ExecOnUnpickle(str(markers / "exec"))),
        "system.pkl": pickle.dumps(payloads.SystemOnUnpickle(str(markers / "system"))),
        "exec.skops": skops_zip(skops_exec_schema(payloads.marker_code(
            str(markers / "skops-exec")))),
        "setstate.skops": sio.dumps(payloads.WritesMarkerOnSetState(
            str(markers / "skops-setstate"))),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    script = (
        "import pickle, sys, skops.io as sio\n"
        "for p in sys.argv[1:]:\n"
        "    if p.endswith('.pkl'):\n"
        "        pickle.loads(open(p, 'rb').read())\n"
        "    else:\n"
        "        sio.load(p, trusted=sio.get_untrusted_types(file=p))\n")
    subprocess.run([sys.executable, "-c", script, *(str(tmp_path / n) for n in files)],
                   cwd=REPO, env=child_env(), check=True, timeout=120,
                   preexec_fn=_cap_memory)
    assert sorted(p.name for p in markers.iterdir()) == [
        "exec", "skops-exec", "skops-setstate", "system"]


# --- one test per fix ----------------------------------------------------------------


def test_giant_sparse_artifact_is_refused_before_reading(sources: Sources, servers,
                                                          tmp_path: Path) -> None:
    """A 50 GiB sparse model.json (default MAX_ARTIFACT_BYTES): refused from its size
    alone, so start-up is quick and memory stays flat; the good model serves."""
    models = tmp_path / "models"
    models.mkdir()
    shutil.copytree(sources.good["good-sk"], models / "good-sk")
    write_folder(models / "giant", XG, {})
    os.truncate(_touch(models / "giant" / "model.json"), GIANT)
    srv = servers(models)
    doc = srv.startup(timeout=60)
    assert doc is not None, srv.logs()[-2000:]
    entry = {m["name"]: m for m in doc["models"]}["giant"]
    assert entry["state"] == "failed"
    assert re.search(rf"model\.json is {GIANT} bytes.*MAX_ARTIFACT_BYTES.*{2 * GIB}",
                     entry["error"]), entry["error"]
    assert doc["models_loaded"] == ["good-sk"]
    r = srv.client.post("/predict", json={"model_name": "good-sk",
                                          "features": columns(sources.X[:2])})
    assert r.status_code == 200
    assert srv.peak_rss() < 1 * GIB, f"peak RSS {srv.peak_rss() / MIB:.0f} MiB"


@pytest.mark.parametrize("case", ["artifact-passwd", "artifact-sibling", "artifact-absolute",
                                  "metadata-sibling", "sample-passwd", "artifact-chain"])
def test_symlinks_out_of_the_model_folder_are_refused(sources: Sources, tmp_path: Path,
                                                      case: str) -> None:
    from serving_runtime import ModelLoadError, load_model

    models = tmp_path / "models"
    models.mkdir()
    good = models / "good-sk"
    shutil.copytree(sources.good["good-sk"], good)
    f = models / "evil"
    if case == "artifact-passwd":
        write_folder(f, XG, {})
        _link(f, "model.json", "/etc/passwd")
        name = "model.json"
    elif case == "artifact-sibling":
        write_folder(f, SK, {})
        _link(f, "model.skops", "../good-sk/model.skops")
        name = "model.skops"
    elif case == "artifact-absolute":
        write_folder(f, SK, {})
        _link(f, "model.skops", good / "model.skops")
        name = "model.skops"
    elif case == "metadata-sibling":
        write_folder(f, None, {"model.skops": (good / "model.skops").read_bytes()})
        _link(f, "metadata.json", "../good-sk/metadata.json")
        name = "metadata.json"
    elif case == "sample-passwd":
        shutil.copytree(good, f)
        (f / "sample.json").unlink()
        _link(f, "sample.json", "/etc/passwd")
        name = "sample.json"
    else:
        write_folder(f, XG, {})
        _link(f, "inner", "../good-xgb-elsewhere.json")
        _link(f, "model.json", "inner")
        (models / "good-xgb-elsewhere.json").write_bytes(sources.json_bytes)
        name = "model.json"
    with pytest.raises(ModelLoadError) as err:
        load_model(f)
    assert re.search(rf"{re.escape(name)} is a symlink .*outside the model folder",
                     str(err.value)), str(err.value)


def _configmap_mount(mount: Path, files: dict[str, bytes], stamp: str) -> None:
    """What the kubelet writes for a ConfigMap/Secret volume: the keys in a timestamped
    hidden folder, `..data` pointing at it, and one `key -> ..data/key` link per key."""
    mount.mkdir(parents=True, exist_ok=True)
    data = mount / stamp
    data.mkdir()
    for key, content in files.items():
        (data / key).write_bytes(content)
    tmp_link = mount / "..data_tmp"
    os.symlink(stamp, tmp_link)
    os.replace(tmp_link, mount / "..data")  # the kubelet's atomic swap
    for key in files:
        if not (mount / key).is_symlink():
            os.symlink(f"..data/{key}", mount / key)


def _folder_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_configmap_and_projected_volume_layouts_load(sources: Sources, servers,
                                                     tmp_path: Path) -> None:
    """Kubernetes volume layouts keep working: a model folder that IS a ConfigMap mount
    (`metadata.json -> ..data/metadata.json`, `..data -> ..2024_01_01_00_00_00.123`), and a
    models dir that is a projected volume whose model folder is a link
    (`proj-model -> ..data/proj-model`). A ConfigMap update (a new timestamped folder, `..data`
    swapped) is picked up by a reload."""
    models = tmp_path / "models"
    good = _folder_files(sources.good["good-sk"])
    xgb_good = _folder_files(sources.good["good-xgb"])
    # models dir = a projected volume with items `proj-model/<file>`
    stamp = "..2024_01_01_00_00_00.123"
    models.mkdir()
    (models / stamp / "proj-model").mkdir(parents=True)
    for key, content in xgb_good.items():
        (models / stamp / "proj-model" / key).write_bytes(content)
    os.symlink(stamp, models / "..data")
    os.symlink("..data/proj-model", models / "proj-model")
    # one model folder in it is itself a ConfigMap mount
    _configmap_mount(models / "cm-model", good, stamp)

    srv = servers(models, FAST_PATH_CHECK_ROWS="100")
    doc = srv.startup(timeout=120)
    assert doc is not None, srv.logs()[-2000:]
    assert doc["models_loaded"] == ["cm-model", "proj-model"], doc
    assert doc["ready"] is True and doc.get("ignored", []) == [], doc
    X = sources.X[:5]
    for name, est in (("cm-model", sources.rf),):
        out = srv.client.post("/predict", json={"model_name": name,
                                                "features": columns(X)}).json()
        assert out["prediction"] == est.predict(X).tolist()
    out = srv.client.post("/predict", json={"model_name": "proj-model",
                                            "features": columns(X)})
    assert out.status_code == 200

    # a ConfigMap update: new keys in a new folder, ..data swapped atomically
    meta = json.loads(good["metadata.json"])
    meta["version"] = "2.0.0"
    _configmap_mount(models / "cm-model", {**good, "metadata.json": json.dumps(meta).encode()},
                     "..2024_01_02_00_00_00.456")
    assert srv.client.post("/reload/cm-model").status_code == 202
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        versions = {m["name"]: m["version"] for m in srv.client.get("/health").json()["models"]}
        if versions["cm-model"] == "2.0.0":
            break
        time.sleep(0.2)
    assert versions["cm-model"] == "2.0.0"


def test_native_error_text_is_cleaned(sources: Sources, servers, tmp_path: Path) -> None:
    """XGBoost's C++ errors carry a timestamp, build paths and a stack trace of
    addresses; /health shows the first meaningful line only, bounded."""
    models = tmp_path / "models"
    models.mkdir()
    bogus = copy.deepcopy(sources.xgb_json)
    bogus["learner"]["objective"]["name"] = "reg:bogus"
    write_folder(models / "bad-objective", XG, {"model.json": json.dumps(bogus).encode()})
    write_folder(models / "no-learner", XG, {"model.json": b'{"version": [3, 0, 0]}'})
    write_folder(models / "passwd-copy", XG, {"model.json": Path("/etc/passwd").read_bytes()})
    srv = servers(models)
    doc = srv.startup(timeout=60)
    assert doc is not None, srv.logs()[-2000:]
    errors = {m["name"]: m["error"] for m in doc["models"]}
    expect = {"bad-objective": r"^could not load model\.json with XGBoost: Unknown objective "
                               r"function: `reg:bogus`",
              "no-learner": r"^could not load model\.json with XGBoost: .*(cast|learner)",
              "passwd-copy": r"^model\.json"}
    for name, pattern in expect.items():
        error = errors[name]
        assert "\n" not in error, error
        assert len(error) <= 400, error
        assert not _NATIVE_NOISE.search(error), error
        assert not re.search(r"\[\d\d:\d\d:\d\d\]", error), error  # XGBoost's log timestamp
        assert re.search(pattern, error), error
    for reason in doc["reasons"]:
        assert not _NATIVE_NOISE.search(reason), reason


def test_unservable_folder_names_are_reported(sources: Sources, servers,
                                             tmp_path: Path) -> None:
    """A folder that cannot be served because of its name is reported (log line + /health
    `ignored`), not skipped silently. Hidden entries (`.git`, Kubernetes' `..data` and its
    timestamped folders) and `lost+found` are ignored silently, as are plain files."""
    models = tmp_path / "models"
    models.mkdir()
    good = sources.good["good-sk"]
    shutil.copytree(good, models / "iris")
    served = ["Iris", "iris", "iris.v2", "iris_v2", "x" * 128]  # the names people use
    for name in served:
        if name != "iris":
            shutil.copytree(good, models / name)
    for bad in ("-iris", "x" * 129, "iris v2", "iris:v2"):
        shutil.copytree(good, models / bad)
    (models / "no-metadata").mkdir()
    (models / "no-metadata" / "model.skops").write_bytes((good / "model.skops").read_bytes())
    shutil.copytree(good, models / ".hidden")
    (models / "..2024_01_01_00_00_00.123").mkdir()
    os.symlink("..2024_01_01_00_00_00.123", models / "..data")
    (models / "lost+found").mkdir()
    (models / "README.md").write_text("models live here\n")

    srv = servers(models, FAST_PATH_CHECK_ROWS="100")
    doc = srv.startup(timeout=120)
    assert doc is not None, srv.logs()[-2000:]
    assert doc["models_loaded"] == sorted(served) and doc["ready"] is True, doc
    ignored = {e["name"]: e["reason"] for e in doc["ignored"]}
    assert sorted(ignored) == sorted(["-iris", "x" * 129, "iris v2", "iris:v2",
                                      "no-metadata"]), ignored
    for bad in ("-iris", "iris v2", "iris:v2"):
        assert "not starting with '.' or '-'" in ignored[bad], ignored[bad]
    assert "129 characters long" in ignored["x" * 129]
    assert "no metadata.json" in ignored["no-metadata"]
    logs = [json.loads(line) for line in srv.logs().splitlines() if line.startswith("{")]
    warned = {rec.get("folder") for rec in logs if rec.get("message") == "model folder ignored"}
    assert warned == set(ignored), warned
