"""The models a runtime serves, their load state, and hot reload.

Served models live in a plain dict of immutable LoadedModel objects: a reload loads and
checks the new version beside the old one (in a worker thread), then replaces the dict
entry in one assignment. A request looks its model up once, so it never sees a mix of
versions, and a failed reload leaves the old version serving.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio.to_thread

from serving_runtime.errors import ModelLoadError, ModelNotFoundError, ModelNotReadyError
from serving_runtime.models.folder import LoadedModel, load_model
from serving_runtime.models.folder_format import (
    METADATA_FILE,
    challenger_folder,
    is_valid_model_name,
    model_name_problem,
    validate_model_name,
)
from serving_runtime.models.runtimes.native_errors import clean_native_error
from serving_runtime.schemas import health_document
from serving_runtime.server.heap import settle_after_load
from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.rollout import FAILED, ROLLED_BACK, Challenger, compatibility_problem
from serving_runtime.server.settings import Settings

log = logging.getLogger("serving_runtime.server.registry")

#: longest load error kept for /health, the logs and metrics-adjacent messages
MAX_ERROR_CHARS = 1000
#: entries of MODELS_DIR skipped without a word: a volume root's lost+found (hidden
#: entries - `.git`, a ConfigMap volume's `..data` and `..<timestamp>` - are skipped too)
SILENTLY_IGNORED = frozenset({"lost+found"})


def load_error_text(exc: BaseException) -> str:
    """One bounded line for /health and the log: the loader's own message, or the type
    and text of an unexpected exception, native stack text removed."""
    msg = getattr(exc, "message", None) or str(exc)
    if not isinstance(exc, ModelLoadError | ValueError):
        msg = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return clean_native_error(msg, MAX_ERROR_CHARS)


@dataclass(slots=True)
class ModelState:
    name: str
    state: str = "loading"  # loading | ready | failed
    error: str | None = None
    last_attempt: float | None = None


class ModelRegistry:
    def __init__(self, settings: Settings, metrics: RuntimeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, LoadedModel] = {}
        self.states: dict[str, ModelState] = {}
        self.expected: list[str] = []
        self.startup_done = False
        self.startup_problem: str | None = None
        #: folders of MODELS_DIR that discovery could not serve: {"name", "reason"}
        self.ignored: list[dict[str, str]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        #: each model's challenger (CHALLENGERS); empty for nearly every runtime
        self.challengers: dict[str, Challenger] = {
            name: Challenger(name, conf) for name, conf in settings.challenger_configs.items()}

    # --- lookups (hot path) ------------------------------------------------------------

    def get(self, name: str) -> LoadedModel:
        model = self.models.get(name)
        if model is None:
            st = self.states.get(name)
            if st is not None and st.state == "loading":
                raise ModelNotReadyError(name)
            raise ModelNotFoundError(name)
        return model

    def folder_of(self, name: str) -> Path:
        return self.settings.models_dir / name

    def has_folder(self, name: str) -> bool:
        # lexists: a metadata.json that is a FIFO or a link is refused by the load, with
        # the reason in /health, rather than answered 404
        return is_valid_model_name(name) and os.path.lexists(self.folder_of(name) / METADATA_FILE)

    # --- loading -------------------------------------------------------------------------

    def discover(self) -> list[str]:
        """Expected models: PRELOAD_MODELS, or every model folder found at start."""
        names = self.settings.preload_model_names
        if names:
            return names
        root = self.settings.models_dir
        if not root.is_dir():
            self.startup_problem = f"models directory {root} does not exist"
            return []
        found: list[str] = []
        self.ignored = []
        for entry in sorted(root.iterdir(), key=lambda p: p.name):
            name = entry.name
            if name.startswith(".") or name in SILENTLY_IGNORED or not entry.is_dir():
                continue  # hidden entries, lost+found, plain files: never model folders
            reason = model_name_problem(name)
            if reason is None and not os.path.lexists(entry / METADATA_FILE):
                reason = f"no {METADATA_FILE} in the folder"
            if reason is None:
                found.append(name)
                continue
            # a folder someone meant as a model: say why it is not served
            self.ignored.append({"name": name, "reason": reason})
            log.warning("model folder ignored", extra={"folder": name, "reason": reason})
        if not found:
            self.startup_problem = f"no model folders (with {METADATA_FILE}) in {root}"
            if self.ignored:
                self.startup_problem += "; ignored: " + "; ".join(
                    f"{i['name']} ({i['reason']})" for i in self.ignored)
        return found

    async def load_expected(self) -> None:
        self.expected = self.discover()
        for name in self.expected:
            self.states.setdefault(name, ModelState(name))
        for name in self.expected:
            await self.reload(name, settle=False)
        for name in self.challengers:  # before ready: the split holds from the first request
            await self.load_challenger(name)
        settle_after_load()  # once for all models (serving_runtime/server/heap.py)
        self.startup_done = True
        log.info("startup loading finished", extra={
            "models_loaded": sorted(self.models), "expected": self.expected})

    async def reload(self, name: str, *, settle: bool = True) -> bool:
        """Load `name` from its folder beside the current version, check it, swap it in.
        Returns whether the new version now serves. Reloads of one model run one at a time
        (a reload asked for during another picks up the files as they are then). `settle`
        collects and re-freezes the heap afterwards (serving_runtime/server/heap.py); start-up does
        that once for all its models instead."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            state = self.states.setdefault(name, ModelState(name))
            state.last_attempt = time.time()
            if name not in self.models:
                state.state = "loading"
            old = self.models.get(name)
            started = time.perf_counter()
            try:
                validate_model_name(name)
                new = await anyio.to_thread.run_sync(self._load, name)
            except Exception as exc:  # any failure keeps the old version serving
                msg = load_error_text(exc)
                state.error = msg
                state.state = "ready" if old is not None else "failed"
                self.metrics.load_failures.labels(name).inc()
                self.metrics.load_failed.labels(name).set(1)
                self.metrics.reloads.labels(name, "failure").inc()
                log.error(
                    "model load failed",
                    extra={"model_name": name, "error": msg,
                           "serving_version": old.version if old else None},
                )
                return False
            self.models[name] = new  # the atomic swap
            state.state, state.error = "ready", None
            self.metrics.model_swapped(name, old.version if old else None, new.version)
            fast = new.fast_path
            self.metrics.fast_path.labels(name).set(1 if fast is not None and fast.active else 0)
            self.metrics.reloads.labels(name, "success").inc()
            self.metrics.load_failed.labels(name).set(0)
            previous = old.version if old else None
            old = None  # nothing here holds the replaced version any more
            gc_s = settle_after_load() if settle else 0.0
            log.info("model loaded", extra={
                "model_name": name, "version": new.version, "framework": new.framework,
                "previous_version": previous, "sha256": new.sha256,
                "fast_path": fast.state if fast is not None else None,
                "seconds": round(time.perf_counter() - started, 3),
                "gc_settle_ms": round(gc_s * 1000, 1)})
            return True

    async def load_challenger(self, name: str) -> bool:
        """Load model `name`'s challenger from its folder and check that it can answer the
        champion's requests; a failure leaves the champion alone, reported in /health."""
        ch = self.challengers[name]
        champion = self.models.get(name)
        try:
            if champion is None:
                raise ModelLoadError("the champion is not loaded, so nothing to compare with")
            # A shadow runs beside the answers on one thread: a framework's thread pool
            # (OpenMP spinning after each call) would take the cores the answers need.
            threads = 1 if ch.mode == "shadow" else self.settings.inference_threads
            model = await anyio.to_thread.run_sync(
                self._load_folder, challenger_folder(self.settings.models_dir, name), threads)
            problem = compatibility_problem(champion, model, ch.mode)
            if problem is not None:
                raise ModelLoadError(f"version {model.version} cannot stand in for the "
                                     f"champion {champion.version}: {problem}")
        except Exception as exc:
            msg = load_error_text(exc)
            ch.failed(msg)
            self.metrics.rollbacks.labels(name, "unknown", "load_failed").inc()
            log.error("challenger load failed", extra={
                "model_name": name, "mode": ch.mode, "error": msg})
            return False
        ch.loaded(model)
        self.metrics.challenger_serving.labels(name, model.version, ch.mode).set(1)
        log.info("challenger loaded", extra={
            "model_name": name, "mode": ch.mode, "version": model.version,
            "champion_version": champion.version, "weight": ch.config.weight,
            "fast_path": model.fast_path.state if model.fast_path is not None else None})
        return True

    def challenger_rolled_back(self, ch: Challenger, kind: str) -> None:
        """Metrics of a rollback the limits decided (the challenger already stopped)."""
        self.metrics.rollbacks.labels(ch.name, ch.version or "unknown", kind).inc()
        self.metrics.challenger_serving.labels(ch.name, ch.version or "unknown", ch.mode).set(0)

    def _load(self, name: str) -> LoadedModel:
        return self._load_folder(self.folder_of(name))

    def _load_folder(self, folder: Path, threads: int | None = None) -> LoadedModel:
        return load_model(
            folder,
            allow_unsafe=self.settings.allow_unsafe_loading,
            threads=threads or self.settings.inference_threads,
            fast_path=self.settings.fast_path,
            fast_path_check_rows=self.settings.fast_path_check_rows,
            max_artifact_bytes=self.settings.max_artifact_bytes,
        )

    def startup_failures(self) -> list[str]:
        """After start-up loading: why each expected model does not serve (one entry per
        model, `model <name> failed to load: <error>`), or why there is none to serve."""
        if not self.expected:
            return [f"no model to serve: {self.startup_problem or 'no models expected'}"]
        out = []
        for name in self.expected:
            if name not in self.models:
                st = self.states.get(name)
                error = st.error if st is not None and st.error else "not loaded"
                out.append(f"model {name} failed to load: {error}")
        return out

    # --- health --------------------------------------------------------------------------

    def ready(self) -> bool:
        """Every expected model serves (and there is at least one)."""
        return (
            self.startup_done
            and bool(self.expected)
            and all(n in self.models for n in self.expected)
        )

    def health(self) -> dict[str, Any]:
        reasons: list[str] = []
        if not self.startup_done:
            reasons.append("loading models")
        elif not self.expected:
            reasons.append(self.startup_problem or "no models expected")
        names = list(dict.fromkeys([*self.expected, *self.states]))
        models = []
        for name in names:
            st = self.states.get(name) or ModelState(name)
            served = self.models.get(name)
            if st.error and served is not None:
                reasons.append(f"model {name}: reload failed ({st.error}); still serving "
                               f"version {served.version}")
            elif st.error:
                reasons.append(f"model {name}: load failed ({st.error})")
            elif served is None and self.startup_done and name in self.expected:
                reasons.append(f"model {name}: not loaded")
            entry: dict[str, Any] = {
                "name": name, "state": st.state,
                "version": served.version if served else None, "error": st.error,
            }
            ch = self.challengers.get(name)
            if ch is not None:
                entry["challenger"] = ch.status()
                if ch.state in (FAILED, ROLLED_BACK):
                    what = "failed to load" if ch.state == FAILED else "rolled back"
                    reasons.append(f"model {name}: {ch.mode} {ch.version or ''} {what} "
                                   f"({ch.reason}); the champion answers".replace("  ", " "))
            models.append(entry)
        doc = health_document(self.ready(), self.models, models, reasons)
        # reported, not a reason: the expected models decide readiness and status
        doc["ignored"] = list(self.ignored)
        return doc
