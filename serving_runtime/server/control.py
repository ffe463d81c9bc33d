"""The routes that are not inference: health, metrics, reload, V2 server and model
metadata. Like `handlers.HotHandlers`, each method takes the correlation id the answer
carries (and the route's path parameters) and returns a `Reply`; `app.py` turns it into
a response. Their paths and docs are in `routes.py`."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from serving_runtime import __version__
from serving_runtime.errors import ModelNotFoundError, ServingError
from serving_runtime.models.inference import model_metadata_v2
from serving_runtime.server.handlers import HotHandlers, Reply
from serving_runtime.server.lifecycle import DRAINING_REASON, Lifecycle
from serving_runtime.server.metrics import RuntimeMetrics
from serving_runtime.server.registry import ModelRegistry
from serving_runtime.server.reload_broadcast import ReloadBroadcast

Spawn = Callable[[Coroutine[Any, Any, Any]], None]
SERVER_NAME = "n1v1-ml-serving"


class ControlHandlers:
    def __init__(self, registry: ModelRegistry, metrics: RuntimeMetrics, hot: HotHandlers,
                 lifecycle: Lifecycle, broadcast: ReloadBroadcast | None,
                 spawn: Spawn) -> None:
        self.registry = registry
        self.runtime_metrics = metrics  # `metrics` is the /metrics handler
        self.hot = hot
        self.lifecycle = lifecycle
        self.broadcast = broadcast
        self.spawn = spawn

    async def health(self, cid: str) -> Reply:
        doc = self.registry.health()
        if self.lifecycle.draining:
            doc.update(status="degraded", ready=False)
            doc["reasons"].insert(0, DRAINING_REASON)
        return Reply(200 if doc["ready"] else 503, doc, cid)

    async def metrics(self, cid: str) -> Reply:
        data, content_type = self.runtime_metrics.exposition()
        return Reply(200, data, cid, media_type=content_type)

    async def reload(self, cid: str, model_name: str) -> Reply:
        # A served model whose folder vanished still gets a reload attempt: it fails, the
        # old version keeps serving, and /health says why (a 404 would be a lie).
        registry = self.registry
        if model_name not in registry.models and not registry.has_folder(model_name):
            return self.hot.native_error(ModelNotFoundError(model_name), cid)
        if self.broadcast is not None:
            self.broadcast.announce(model_name)  # every worker process reloads
        else:
            self.spawn(registry.reload(model_name))
        return Reply(202, {"message": f"Reloading model {model_name}"}, cid)

    # --- Open Inference Protocol v2 -----------------------------------------------------

    async def v2_server_metadata(self, cid: str) -> Reply:
        return Reply(200, {"name": SERVER_NAME, "version": __version__, "extensions": []},
                     cid)

    async def v2_live(self, cid: str) -> Reply:
        return Reply(200, {"live": True}, cid)

    async def v2_ready(self, cid: str) -> Reply:
        ready = self.registry.ready() and not self.lifecycle.draining  # a drain leaves
        return Reply(200 if ready else 503, {"ready": ready}, cid)  # the Service

    def model_metadata(self, cid: str, name: str, version: str | None) -> Reply:
        try:
            return Reply(200, model_metadata_v2(self.hot.v2_model(name, version)), cid)
        except ServingError as exc:
            return self.hot.v2_error(exc, cid)

    def model_ready(self, cid: str, name: str, version: str | None) -> Reply:
        try:
            self.hot.v2_model(name, version)
        except ServingError as exc:
            if exc.status_code != 503:
                return self.hot.v2_error(exc, cid)
            return Reply(503, {"name": name, "ready": False}, cid)
        ready = not self.lifecycle.draining
        return Reply(200 if ready else 503, {"name": name, "ready": ready}, cid)

    async def v2_model_metadata(self, cid: str, name: str) -> Reply:
        return self.model_metadata(cid, name, None)

    async def v2_model_metadata_version(self, cid: str, name: str, version: str) -> Reply:
        return self.model_metadata(cid, name, version)

    async def v2_model_ready(self, cid: str, name: str) -> Reply:
        return self.model_ready(cid, name, None)

    async def v2_model_ready_version(self, cid: str, name: str, version: str) -> Reply:
        return self.model_ready(cid, name, version)


__all__ = ["ControlHandlers", "Spawn"]
