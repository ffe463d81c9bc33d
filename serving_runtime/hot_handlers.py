"""The inference endpoints, independent of how the HTTP request reached them.

`POST /predict`, `/predict/batch` and `/v2/models/{name}/infer` are answered by the
methods of `HotHandlers`: each takes a body reader and the X-Correlation-ID header and
returns a `Reply` (status, JSON-ready content, correlation id for the response header:
always one that follows the correlation id rule — the request's if it does, else a fresh
one — so a hostile header is never echoed).
Two callers share them, so validation, messages, metrics and wire format are the same:
the FastAPI routes (`app.py`, used by the docs, TestClient and any other path) and the
hot-path ASGI layer (`fastpath/asgi.py`), which reads the body and writes the response
with raw ASGI messages, skipping Starlette's Request/Response objects (measured ~10 us
of a ~35-60 us single-row request in-process).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from serving_runtime.errors import ModelNotFoundError, ServingError, encodable
from serving_runtime.inference import (
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
from serving_runtime.logs import correlation_id_var
from serving_runtime.metrics import UNKNOWN_MODEL, RuntimeMetrics
from serving_runtime.registry import ModelRegistry

log = logging.getLogger("serving_runtime.app")

# Requests with at least this many rows are predicted in a worker thread: below it the
# thread hop costs more than the event-loop time it would free.
OFFLOAD_MIN_ROWS = 256

BodyReader = Callable[[], Awaitable[bytes]]
Offload = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class Reply:
    status: int
    content: Any
    correlation_id: str | None = None


def _body_cid(body: Any) -> str | None:
    """The body's correlation_id for an error answer, only if it follows the rule."""
    if type(body) is dict:
        cid = body.get("correlation_id")
        if valid_correlation_id(cid):
            return cid
    return None


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
    def _log_internal(what: str, cid: str) -> None:
        """The traceback of an unexpected failure, with the id the caller was given."""
        correlation_id_var.set(cid)
        log.exception("internal error", extra={"during": what})

    @classmethod
    def internal_error(cls, what: str, cid: str) -> Reply:
        cls._log_internal(what, cid)
        return Reply(500, {"detail": f"internal error during {what}; correlation id {cid}",
                           "correlation_id": cid}, cid)

    # --- native API --------------------------------------------------------------------

    async def predict(self, read: BodyReader, header_cid: str | None) -> Reply:
        started = time.perf_counter()
        header_cid = accepted_correlation_id(header_cid)
        metrics = self.metrics
        metrics.in_flight.inc()
        name = UNKNOWN_MODEL
        body: Any = None
        try:
            body = parse_json(await read())
            model = self.registry.get(model_name_of(body))
            name = model.name
            prepared = prepare_predict(model, body, correlation_id=header_cid)
            if prepared.n_rows >= OFFLOAD_MIN_ROWS:
                out = await self.offload(run_predict, prepared)
            else:
                out = run_predict(prepared)
        except ServingError as exc:
            metrics.for_model(name).failed(exc.status_code).inc()
            return self.native_error(exc, header_cid or _body_cid(body) or new_correlation_id())
        except Exception:
            metrics.for_model(name).server_error.inc()
            return self.internal_error(f"prediction with model {name}",
                                       header_cid or _body_cid(body) or new_correlation_id())
        finally:
            metrics.in_flight.dec()
        ok, _, _, latency = metrics.for_model(name)
        ok.inc()
        latency.observe(time.perf_counter() - started)
        return Reply(200, out, out["correlation_id"])

    async def predict_batch(self, read: BodyReader, header_cid: str | None) -> Reply:
        started = time.perf_counter()
        metrics = self.metrics
        cid = accepted_correlation_id(header_cid) or new_correlation_id()
        metrics.in_flight.inc()
        try:
            body = parse_json(await read())
            groups, batch_size = prepare_batch(self.registry.get, body, correlation_id=cid)
            if sum(g.n_rows for g in groups) >= OFFLOAD_MIN_ROWS:
                outs = await self.offload(run_batch, groups, batch_size)
            else:
                outs = run_batch(groups, batch_size)
        except ServingError as exc:
            metrics.for_model(UNKNOWN_MODEL).failed(exc.status_code).inc()
            return self.native_error(exc, cid)
        except Exception:
            metrics.for_model(UNKNOWN_MODEL).server_error.inc()
            return self.internal_error("batch prediction", cid)
        finally:
            metrics.in_flight.dec()
        elapsed = time.perf_counter() - started
        # Each sub-request counts as an answered request; the latency histogram gets one
        # observation per HTTP request and model: the time the caller waited.
        answered: Counter[str] = Counter()
        for g in groups:
            answered[g.model.name] += g.n_requests
        for name, count in answered.items():
            ok, _, _, latency = metrics.for_model(name)
            ok.inc(count)
            latency.observe(elapsed)
        return Reply(200, outs, cid)

    # --- Open Inference Protocol v2 ----------------------------------------------------

    def v2_model(self, name: str, version: str | None) -> Any:
        model = self.registry.get(name)
        if version is not None and version != model.version:
            raise ModelNotFoundError(f"{name} version {version}")
        return model

    async def v2_infer(self, read: BodyReader, header_cid: str | None, name: str,
                       version: str | None = None) -> Reply:
        started = time.perf_counter()
        header_cid = accepted_correlation_id(header_cid)
        metrics = self.metrics
        metrics.in_flight.inc()
        label = UNKNOWN_MODEL
        try:
            model = self.v2_model(name, version)
            label = model.name
            body = parse_json(await read())
            out = infer_v2(model, body, request_id=header_cid)
        except ServingError as exc:
            metrics.for_model(label).failed(exc.status_code).inc()
            return self.v2_error(exc, header_cid or new_correlation_id())
        except Exception:
            metrics.for_model(label).server_error.inc()
            cid = header_cid or new_correlation_id()
            self._log_internal(f"v2 inference with {label}", cid)
            return Reply(500, {"error": f"internal error; correlation id {cid}"}, cid)
        finally:
            metrics.in_flight.dec()
        ok, _, _, latency = metrics.for_model(label)
        ok.inc()
        latency.observe(time.perf_counter() - started)
        # the V2 id is free text: in the header only if it also follows the id rule
        rid = out["id"]
        return Reply(200, out, header_cid or (rid if valid_correlation_id(rid)
                                              else new_correlation_id()))
