"""KServe's model registry and repository extension, as a predictor whose models are all built and
loaded at start needs them.

- `ServedModels`: with `--workers N`, KServe spawns fresh worker processes and hands each the
  registry, models included, by pickle; they serve `kserve.model_server.app` imported anew,
  without what `serving.http.install_http_extras` added in the parent (body limit, aggregated
  /metrics ...). Unpickling the registry runs the same setup in the worker, and has the worker
  load its models when its app starts: after it answers KServe's liveness pings (a worker silent
  for 5 s is killed and respawned), before it accepts a connection (so never a 503 "not ready").
- `LoadedModelsRepository`: KServe answers 503 "not ready" to `/v2/repository/models/M/load` of a
  model name it has never heard of: a server error for a client's typo. Here that is a 404.
  `load` of a model being served reads its model directory again and swaps to the version found
  there if it passes its checks (`ScenerecModel.swap`): 200 once it serves, 400 naming the failed
  check while the old version keeps serving; the same version again is a no-op (200).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kserve.errors import ModelNotFound
from kserve.model_repository import ModelRepository
from kserve.protocol.model_repository_extension import ModelRepositoryExtension


class ServedModels(ModelRepository):
    """The model registry; `worker_setup` (picklable) runs again in every worker that unpickles it."""

    def __init__(self, worker_setup: Callable[[], None]) -> None:
        super().__init__()
        self.worker_setup = worker_setup

    def __setstate__(self, state: dict[str, Any]) -> None:
        from kserve import model_server

        self.__dict__.update(state)
        self.worker_setup()
        model_server.app.router.on_startup.append(self._load_in_worker)

    def _load_in_worker(self) -> None:
        for model in self.models.values():
            if not model.ready:
                model.load()


class LoadedModelsRepository(ModelRepositoryExtension):
    """`load` of an unknown model is a 404 (ModelNotFound), not KServe's 503 (ModelNotReady)."""

    async def load(self, model_name: str) -> None:
        model = self._model_registry.get_model(model_name)
        if model is None:
            raise ModelNotFound(model_name)
        swap = getattr(model, "swap", None)
        if model.ready and swap is not None:
            from kserve.errors import InvalidInput

            from serving.predictor import SwapRefused

            try:  # off the event loop: loading sessions takes ~1 s, requests keep being answered
                await asyncio.get_running_loop().run_in_executor(None, swap)
            except SwapRefused as e:
                raise InvalidInput(f"model {model_name} not swapped, the served version stays: {e}") from e
            return
        await super().load(model_name)
