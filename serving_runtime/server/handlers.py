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

from serving_runtime.errors import ModelNotFoundError, ServingError, encodable
from serving_runtime.models.folder import LoadedModel
from serving_runtime.models.inference import (
    accepted_correlation_id,
    infer_v2,
    model_name_of,
    new_correlation_id,
    parse_json,
    prepare_batch,
    prepare_predict,
    run_batch,
    run_predict,
    valid_correlation_id,
)
from serving_runtime.server.logs import correlation_id_var
from serving_runtime.server.metrics import UNKNOWN_MODEL, RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry

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
                 offload: Offload) -> None:
        self.registry = registry
        self.metrics = metrics
        self.offload = offload

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
                     v2: bool = False) -> Reply:
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
            latency.observe(elapsed)
        return Reply(200, content, cid)

    # --- native API --------------------------------------------------------------------

    async def predict(self, read: BodyReader, header_cid: str | None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid))
        return await self._serve(req, self._predict(req, read),
                                 "prediction with model {model}")

    async def _predict(self, req: _Request, read: BodyReader) -> Outcome:
        req.body = body = parse_json(await read())
        model = self.registry.get(model_name_of(body))
        req.model = model.name
        prepared = prepare_predict(model, body, correlation_id=req.cid)
        if prepared.n_rows >= OFFLOAD_MIN_ROWS:
            out = await self.offload(run_predict, prepared)
        else:
            out = run_predict(prepared)
        return out, out["correlation_id"], ((model.name, 1),)

    async def predict_batch(self, read: BodyReader, header_cid: str | None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid) or new_correlation_id())
        return await self._serve(req, self._predict_batch(req, read), "batch prediction")

    async def _predict_batch(self, req: _Request, read: BodyReader) -> Outcome:
        cid = req.cid
        assert cid is not None  # set before the body is read
        body = parse_json(await read())
        groups, batch_size = prepare_batch(self.registry.get, body, correlation_id=cid)
        if sum(g.n_rows for g in groups) >= OFFLOAD_MIN_ROWS:
            outs = await self.offload(run_batch, groups, batch_size)
        else:
            outs = run_batch(groups, batch_size)
        answered: Counter[str] = Counter()
        for g in groups:
            answered[g.model.name] += g.n_requests
        return outs, cid, answered.items()

    # --- Open Inference Protocol v2 ----------------------------------------------------

    def v2_model(self, name: str, version: str | None) -> LoadedModel:
        model = self.registry.get(name)
        if version is not None and version != model.version:
            raise ModelNotFoundError(f"{name} version {version}")
        return model

    async def v2_infer(self, read: BodyReader, header_cid: str | None, name: str,
                       version: str | None = None) -> Reply:
        req = _Request(accepted_correlation_id(header_cid))
        return await self._serve(req, self._v2_infer(req, read, name, version),
                                 "v2 inference with {model}", v2=True)

    async def _v2_infer(self, req: _Request, read: BodyReader, name: str,
                        version: str | None) -> Outcome:
        model = self.v2_model(name, version)
        req.model = model.name
        out = infer_v2(model, parse_json(await read()), request_id=req.cid)
        # the V2 id is free text: in the header only if it also follows the id rule
        rid = out["id"]
        cid = req.cid or (rid if valid_correlation_id(rid) else new_correlation_id())
        return out, cid, ((model.name, 1),)
