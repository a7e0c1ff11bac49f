"""Several text-to-image models in one worker: `engine.model` plus `engine.extra_models`, each its own
`DiffusersEngine`, and a job's `model` picks which one runs it (the batch key keeps models apart).

Loaded once at start, one after another on the same device; they share the safety classifier.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from inference.engine_api import (
    BatchItem,
    DeviceMemory,
    Engine,
    EngineError,
    GeneratedImage,
    KindDefaults,
    StepUpdate,
)
from inference.settings import EngineSettings, ExtraModelSettings, ModelDefaults
from inference.vocabulary import JobKind

log = logging.getLogger(__name__)


def extra_settings(settings: EngineSettings, extra: ExtraModelSettings) -> EngineSettings:
    """An extra model's engine settings: the worker's device, dtype and limits, the model's own weights,
    scheduler and defaults; no adapters, edit model, preset or preview/final decoders (those belong to
    the main model's family)."""
    return settings.model_copy(
        update={
            "preset": None,
            "model": extra.model,
            "edit_model": None,
            "preview_decoder": None,
            "final_decoder": None,
            "scheduler": extra.scheduler,
            "timestep_spacing": extra.timestep_spacing,
            "defaults": extra.defaults,
            "adapters": [],
            "extra_models": [],
        }
    )


def load_engine(settings: EngineSettings) -> Engine:
    """The worker's engine: the main model alone, or a `ModelSet` with the extra models too."""
    from inference.engine import DiffusersEngine  # torch only where a model really loads

    main = DiffusersEngine.load(settings)
    extras: dict[str, Engine] = {}
    for extra in settings.extra_models:
        log.info("loading extra model %s (%s)", extra.name, extra.model)
        extras[extra.name] = DiffusersEngine.load(
            extra_settings(settings, extra), model_name=extra.name, safety=main.safety
        )
    return ModelSet(main, extras) if extras else main


class ModelSet:
    """An `Engine` serving a main model and extra ones: each batch runs on the engine its model names.

    Everything else (name, adapters, edit model, device) is the main model's.
    """

    def __init__(self, main: Engine, extras: dict[str, Engine]) -> None:
        self._main = main
        self._extras = dict(extras)
        self._lock = threading.Lock()  # one batch at a time on the shared device, whichever model

    def _engine(self, model: str | None) -> Engine:
        if model is None or model == self._main.model_name:
            return self._main
        engine = self._extras.get(model)
        if engine is None:
            raise EngineError(f"unknown model {model!r}; this worker serves {list(self.served_models)}")
        return engine

    @property
    def model_name(self) -> str:
        return self._main.model_name

    @property
    def device_name(self) -> str:
        return self._main.device_name

    @property
    def adapter_names(self) -> list[str]:
        return self._main.adapter_names

    @property
    def model_defaults(self) -> ModelDefaults:
        return self._main.model_defaults

    @property
    def has_edit_model(self) -> bool:
        return self._main.has_edit_model

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        served = dict(self._main.served_models)
        for name, engine in self._extras.items():
            served[name] = engine.model_defaults
        return served

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        engine = self._engine(model)
        return engine.defaults(kind, None if engine is self._main else model)

    def memory(self) -> DeviceMemory:
        return self._main.memory()  # one device: any engine reports the same

    def run_batch(
        self,
        items: list[BatchItem],
        on_step: Callable[[StepUpdate], None],
        should_stop: Callable[[], bool],
    ) -> list[list[GeneratedImage]]:
        if not items:
            return []
        models = {it.request.model for it in items}
        if len(models) != 1:
            raise EngineError(f"batch mixes models: {sorted(map(str, models))}")
        with self._lock:
            return self._engine(models.pop()).run_batch(items, on_step, should_stop)
