"""The inference endpoints, independent of how the HTTP request reached them.

`POST /predict`, `/predict/batch` and `/v2/models/{name}/infer` are answered by the
methods of `HotHandlers`: each takes a body reader and the X-Correlation-ID header and
returns a `Reply` (status, JSON-ready content, correlation id for the response header:
always one that follows the correlation id rule — the request's if it does, else a fresh
one — so a hostile header is never echoed).
Two callers share them, so validation, messages, metrics and wire format are the same:
the FastAPI routes (`app.py`, used by the docs, TestClient and any other path) and the
hot-path ASGI layer (`hot_path.py`), which reads the body and writes the response
with raw ASGI messages, skipping Starlette's Request/Response objects (measured ~10 us
of a ~35-60 us single-row request in-process).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

from serving_runtime.errors import (
    ModelNotFoundError,
    ServingError,
    VersionNotFoundError,
    encodable,
)
from serving_runtime.models.folder import LoadedModel
from serving_runtime.models.inference import (
    PreparedGroup,
    accepted_correlation_id,
    body_correlation_id,
    infer_v2,
    model_name_of,
    new_correlation_id,
    parse_json,
    prepare_batch,
    prepare_predict,
    run_batch,
    run_explain,
    run_predict,
    run_predict_keeping_outputs,
    valid_correlation_id,
)
from serving_runtime.server.logs import correlation_id_var
from serving_runtime.server.metrics import UNKNOWN_MODEL, RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.rollout import Challenger, ShadowQueue

log = logging.getLogger("serving_runtime.server.app")

# Requests with at least this many rows are predicted in a worker thread: below it the
# thread hop costs more than the event-loop time it would free.
OFFLOAD_MIN_ROWS = 256

BodyReader = Callable[[], Awaitable[bytes]]
Offload = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class Reply:
    status: int
    content: Any  # JSON-ready, or bytes when media_type is set
    correlation_id: str | None = None
    media_type: str | None = None  # None: JSON


def _body_cid(body: Any) -> str | None:
    """The body's correlation_id for an error answer, only if it follows the rule."""
    if type(body) is dict:
        cid = body.get("correlation_id")
        if valid_correlation_id(cid):
            return cid
    return None


class _Request:
    """What a request has revealed so far: a failure is counted against the model known
    by then and answered with the best correlation id known by then."""

    __slots__ = ("body", "cid", "model")

    def __init__(self, cid: str | None) -> None:
        self.cid = cid
        self.model = UNKNOWN_MODEL
        self.body: Any = None

    def error_cid(self) -> str:
        return self.cid or _body_cid(self.body) or new_correlation_id()


# what a request's work returns: content, the response's correlation id, and the
# (model, answered requests) pairs its success counts for
Outcome = tuple[Any, str, Iterable[tuple[str, int]]]


class HotHandlers:
    def __init__(self, registry: ModelRegistry, metrics: RuntimeMetrics,
                 offload: Offload, shadow: ShadowQueue | None = None) -> None:
        self.registry = registry
        self.metrics = metrics
        self.offload = offload
        #: the registry's challengers (docs/rollouts.md); empty: every request takes the
        #: plain path below, one falsy test away from the code without rollouts
        self.challengers = registry.challengers
        self.shadow = shadow or ShadowQueue(
            registry.settings.shadow_queue_rows, metrics.shadow_evaluated,
            metrics.shadow_dropped, metrics.shadow_failed,
            budget=registry.settings.shadow_budget_percent / 100)

    # --- errors ------------------------------------------------------------------------

    @staticmethod
    def native_error(exc: ServingError, cid: str) -> Reply:
        # messages echo request text: made encodable, so the answer is always valid JSON
        message = encodable(exc.message)
        if log.isEnabledFor(logging.DEBUG):
            correlation_id_var.set(cid)
            log.debug("request refused", extra={"status": exc.status_code, "error": message})
        return Reply(exc.status_code, {"detail": message, "correlation_id": cid}, cid)

    @staticmethod
    def v2_error(exc: ServingError, cid: str) -> Reply:
        """The V2 protocol's error body (`{"error"}`); the id goes in the header."""
        return Reply(exc.status_code, {"error": encodable(exc.message)}, cid)

    @staticmethod
    def internal_error(what: str, cid: str, *, v2: bool = False) -> Reply:
        """The traceback of an unexpected failure is logged with the id the caller gets."""
        correlation_id_var.set(cid)
        log.exception("internal error", extra={"during": what})
        if v2:
            return Reply(500, {"error": f"internal error; correlation id {cid}"}, cid)
        return Reply(500, {"detail": f"internal error during {what}; correlation id {cid}",
                           "correlation_id": cid}, cid)

    # --- the one scaffold: in-flight gauge, outcome counters, latency, error shapes ------

    async def _serve(self, req: _Request, work: Awaitable[Outcome], what: str, *,
                     v2: bool = False, timed: bool = True) -> Reply:
        started = time.perf_counter()
        metrics = self.metrics
        metrics.in_flight.inc()
        try:
            content, cid, answered = await work
        except ServingError as exc:
            metrics.for_model(req.model).failed(exc.status_code).inc()
            cid = req.error_cid()
            return self.v2_error(exc, cid) if v2 else self.native_error(exc, cid)
        except Exception:
            metrics.for_model(req.model).server_error.inc()
            return self.internal_error(what.format(model=req.model), req.error_cid(), v2=v2)
        finally:
            metrics.in_flight.dec()
        # Each (sub-)request counts as an answered request; the latency histogram gets
        # one observation per HTTP request and model: the time the caller waited.
        elapsed = time.perf_counter() - started
        for name, count in answered:
            ok, _, _, latency = metrics.for_model(name)
            ok.inc(count)
            if timed:
                latency.observe(elapsed)
        return Reply(200, content, cid)

    # --- native API --------------------------------------------------------------------

    async def predict(self, read: BodyReader, header_cid: str | None,
                      pin: str | None = None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid))
        return await self._serve(req, self._predict(req, read, pin),
                                 "prediction with model {model}")

    async def _predict(self, req: _Request, read: BodyReader, pin: str | None) -> Outcome:
        req.body = body = parse_json(await read())
        model = self.registry.get(model_name_of(body))
        req.model = model.name
        if self.challengers or pin is not None:
            return await self._predict_versions(req, body, model, pin)
        out = await self._run_predict(model, body, req.cid)
        return out, out["correlation_id"], ((model.name, 1),)

    async def _run(self, n_rows: int, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`: in a worker thread for OFFLOAD_MIN_ROWS rows or more, else here."""
        if n_rows >= OFFLOAD_MIN_ROWS:
            return await self.offload(fn, *args)
        return fn(*args)

    async def _run_predict(self, model: LoadedModel, body: Any,
                           cid: str | None) -> dict[str, Any]:
        prepared = prepare_predict(model, body, correlation_id=cid)
        return await self._run(prepared.n_rows, run_predict, prepared)

    async def predict_batch(self, read: BodyReader, header_cid: str | None,
                            pin: str | None = None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid) or new_correlation_id())
        return await self._serve(req, self._predict_batch(req, read, pin), "batch prediction")

    async def _predict_batch(self, req: _Request, read: BodyReader, pin: str | None) -> Outcome:
        cid = req.cid
        assert cid is not None  # set before the body is read
        body = parse_json(await read())
        if self.challengers or pin is not None:
            groups, outs = await self._batch_versions(body, cid, pin)
        else:
            groups, outs = await self._run_batch(self.registry.get, body, cid)
        answered: Counter[str] = Counter()
        for g in groups:
            answered[g.model.name] += g.n_requests
        return outs, cid, answered.items()

    async def _run_batch(self, get_model: Callable[[str], LoadedModel], body: Any,
                         cid: str) -> tuple[list[PreparedGroup], list[dict[str, Any]]]:
        groups, batch_size = prepare_batch(get_model, body, correlation_id=cid)
        outs = await self._run(sum(g.n_rows for g in groups), run_batch, groups, batch_size)
        return groups, outs

    # --- explanations (docs/explanations.md) -------------------------------------------

    async def explain(self, read: BodyReader, header_cid: str | None,
                      pin: str | None = None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid))
        # counted as a request of the model, but not in its latency histogram: the latency
        # alerts and autoscaling are about predictions, and an explanation costs more
        return await self._serve(req, self._explain(req, read, pin),
                                 "explanation with model {model}", timed=False)

    async def _explain(self, req: _Request, read: BodyReader, pin: str | None) -> Outcome:
        req.body = body = parse_json(await read())
        model = self.registry.get(model_name_of(body))
        if pin is not None:  # the served version unless one is pinned: no canary split
            model = self.v2_model(model.name, pin)
        req.model = model.name
        prepared = prepare_predict(model, body, correlation_id=req.cid)
        out = await self.offload(run_explain, prepared)  # milliseconds: off the loop
        return out, out["correlation_id"], ((model.name, 1),)

    # --- Open Inference Protocol v2 ----------------------------------------------------

    def v2_model(self, name: str, version: str | None) -> LoadedModel:
        model = self.registry.get(name)
        if version is None:
            return model
        named = self._named_version(model, self.challengers.get(name), version)
        if named is None:
            raise ModelNotFoundError(f"{name} version {version}")
        return named

    async def v2_infer(self, read: BodyReader, header_cid: str | None, name: str,
                       version: str | None = None, pin: str | None = None) -> Reply:
        async def load() -> Any:
            return parse_json(await read())

        return await self.v2_infer_body(load, header_cid, name, version, pin)

    async def v2_infer_body(self, load: Callable[[], Awaitable[Any]], header_cid: str | None,
                            name: str, version: str | None = None,
                            pin: str | None = None) -> Reply:
        """V2 inference with the body from `load()` (parsed JSON, or a gRPC request made
        into it: server/grpc_server.py), which may raise a ServingError."""
        req = _Request(accepted_correlation_id(header_cid))
        return await self._serve(req, self._v2_infer(req, load, name, version or pin),
                                 "v2 inference with {model}", v2=True)

    async def _v2_infer(self, req: _Request, load: Callable[[], Awaitable[Any]], name: str,
                        version: str | None) -> Outcome:
        model = self.v2_model(name, version)
        req.model = model.name
        body = await load()
        ch = self.challengers.get(model.name) if self.challengers else None
        if ch is not None and version is None and ch.mode == "canary":
            rid = body.get("id") if type(body) is dict else None
            key = req.cid or (rid if type(rid) is str else new_correlation_id())
            target = self._pick(model, ch, key, None)

            async def infer(m: LoadedModel) -> dict[str, Any]:
                return infer_v2(m, body, request_id=req.cid)

            if target is not model:
                out = await self._canary(ch, target, model, infer)
            else:
                started = time.perf_counter()
                out = await infer(model)
                self._count_version(model, "champion", "success", time.perf_counter() - started)
        else:
            out = infer_v2(model, body, request_id=req.cid)
        # the V2 id is free text: in the header only if it also follows the id rule
        rid = out["id"]
        cid = req.cid or (rid if valid_correlation_id(rid) else new_correlation_id())
        return out, cid, ((model.name, 1),)

    # --- champion and challenger (server/rollout.py, docs/rollouts.md) ------------------

    @staticmethod
    def _named_version(champion: LoadedModel, ch: Challenger | None,
                       version: str) -> LoadedModel | None:
        """The champion or the serving challenger whose version is `version`, or None."""
        if version == champion.version:
            return champion
        if ch is not None and ch.model is not None and version == ch.version:
            return ch.model
        return None

    def _pick(self, champion: LoadedModel, ch: Challenger | None, key: str,
              pin: str | None) -> LoadedModel:
        """The version that answers: the pinned one, else the canary for its share of keys,
        else the champion."""
        if pin is not None:
            named = self._named_version(champion, ch, pin)
            if named is not None:
                return named
            serving = f"{champion.version} (champion)"
            if ch is not None and ch.model is not None:
                serving += f", {ch.version} ({ch.mode})"
            raise VersionNotFoundError(champion.name, pin, serving)
        if ch is not None and ch.mode == "canary":
            canary = ch.model
            if canary is not None and ch.takes(key):
                return canary
        return champion

    async def _predict_versions(self, req: _Request, body: Any, champion: LoadedModel,
                                pin: str | None) -> Outcome:
        ch = self.challengers.get(champion.name)
        if ch is not None and ch.mode == "canary" and pin is None:
            # the split needs the id before the version is chosen
            key = body_correlation_id(body, req.cid) if type(body) is dict else req.cid
            key = key or new_correlation_id()
        else:
            key = req.cid  # None: prepare_predict takes the body's or makes one
        target = self._pick(champion, ch, key or "", pin)
        if ch is None:
            out = await self._run_predict(target, body, key)
        elif pin is not None and target is not champion:
            # the challenger asked for by name: its own answer, errors included; counted
            # as its answer, but not toward its limits (testers' requests)
            started = time.perf_counter()
            out = await self._run_predict(target, body, key)
            self._count_version(target, ch.mode, "success", time.perf_counter() - started)
        elif target is champion and ch.mode == "shadow" and pin is None and ch.model is not None:
            prepared = prepare_predict(champion, body, correlation_id=key)
            out, outputs, seconds = await self._run(prepared.n_rows,
                                                    run_predict_keeping_outputs, prepared)
            # the answer is built; the shadow compares with these outputs later, never awaited
            self.shadow.offer(ch, champion, prepared.X, outputs, seconds)
        elif target is champion:
            started = time.perf_counter()
            out = await self._run_predict(champion, body, key)
            if ch.mode == "canary":
                self._count_version(champion, "champion", "success",
                                    time.perf_counter() - started)
        else:
            out = await self._canary(
                ch, target, champion, lambda m: self._run_predict(m, body, key))
        return out, out["correlation_id"], ((champion.name, 1),)

    async def _canary(self, ch: Challenger, canary: LoadedModel, champion: LoadedModel,
                      attempt: Callable[[LoadedModel], Awaitable[Any]]) -> Any:
        """`attempt(canary)`; if the canary fails, `attempt(champion)` answers and the
        failure counts against the canary. If the champion fails too, the request itself
        was at fault: its error goes back and the canary is not charged."""
        started = time.perf_counter()
        try:
            result = await attempt(canary)
        except Exception as exc:
            failure: Exception = exc
        else:
            self._canary_answered(ch, canary, True, time.perf_counter() - started)
            return result
        started = time.perf_counter()
        result = await attempt(champion)
        self._count_version(champion, "champion", "success", time.perf_counter() - started)
        status = (failure.status_code if isinstance(failure, ServingError) else 500)
        self._canary_answered(ch, canary, False, 0.0, status)
        log.warning("canary failed a request the champion answered", extra={
            "model_name": champion.name, "version": canary.version,
            "error": encodable(getattr(failure, "message", None) or repr(failure))[:300]})
        return result

    def _canary_answered(self, ch: Challenger, canary: LoadedModel, ok: bool, seconds: float,
                         status: int = 200) -> None:
        if ok:
            self._count_version(canary, "canary", "success", seconds)
        else:
            self._count_version(canary, "canary",
                                "client_error" if status < 500 else "server_error", None)
        kind = ch.observe(ok, seconds)
        if kind is not None:
            self.registry.challenger_rolled_back(ch, kind)

    def _count_version(self, model: LoadedModel, role: str, status: str,
                       seconds: float | None, n: int = 1) -> None:
        m = self.metrics
        m.rollout_requests.labels(model.name, model.version, role, status).inc(n)
        if seconds is not None:
            m.rollout_latency.labels(model.name, model.version, role).observe(seconds)

    async def _batch_versions(self, body: Any, cid: str, pin: str | None
                              ) -> tuple[list[PreparedGroup], list[dict[str, Any]]]:
        """A batch of models with challengers: each model's requests go to one version,
        picked by the batch's correlation id (or the pin); a canary that fails the batch
        hands it to the champions."""
        chosen: dict[str, tuple[Challenger, LoadedModel]] = {}

        def pick(name: str) -> LoadedModel:
            champion = self.registry.get(name)
            ch = self.challengers.get(name)
            target = self._pick(champion, ch, cid, pin)
            if ch is not None and target is not champion and pin is None:
                chosen[name] = (ch, target)
            return target

        started = time.perf_counter()
        try:
            groups, outs = await self._run_batch(pick, body, cid)
        except Exception as exc:
            if not chosen:
                raise
            groups, outs = await self._run_batch(self.registry.get, body, cid)
            status = exc.status_code if isinstance(exc, ServingError) else 500
            for ch, canary in chosen.values():
                self._canary_answered(ch, canary, False, 0.0, status)
            for g in groups:  # the champions answered those requests
                if g.model.name in chosen:
                    self._count_version(g.model, "champion", "success", None, g.n_requests)
        else:
            for ch, canary in chosen.values():
                self._canary_answered(ch, canary, True, time.perf_counter() - started)
            answered: Counter[str] = Counter()  # each request of the batch is one answer
            for g in groups:
                if g.model.name in chosen and g.model is chosen[g.model.name][1]:
                    answered[g.model.name] += g.n_requests
            for name, total in answered.items():
                self._count_version(chosen[name][1], "canary", "success", None, total - 1)
        if pin is None:
            for g in groups:
                other = self.challengers.get(g.model.name)
                if other is None:
                    continue
                if other.mode == "shadow" and other.model is not None:
                    self.shadow.offer(other, g.model, g.X)
                elif other.mode == "canary" and g.model.name not in chosen:
                    self._count_version(g.model, "champion", "success",
                                        time.perf_counter() - started, g.n_requests)
        return groups, outs
