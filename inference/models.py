"""Several text-to-image models in one worker: `engine.model` plus `engine.extra_models`, each its own
`DiffusersEngine`, and a job's `model` picks which one runs it (the batch key keeps models apart).

Loaded once at start, one after another on the same device; they share the safety classifier.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.engine_api import (
    BatchItem,
    Engine,
    EngineError,
    EngineWrapper,
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
            "upscaler": extra.upscaler or settings.upscaler,
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


@dataclass
class ModelSet(EngineWrapper):
    """An `Engine` serving a main model (`inner`) and extra ones: each batch runs on the engine its
    model names. Everything else (name, adapters, edit model, device) is the main model's."""

    extras: dict[str, Engine] = field(default_factory=dict)
    # One batch at a time on the shared device, whichever model runs it.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _engine(self, model: str | None) -> Engine:
        if model is None or model == self.inner.model_name:
            return self.inner
        engine = self.extras.get(model)
        if engine is None:
            raise EngineError(f"unknown model {model!r}; this worker serves {list(self.served_models)}")
        return engine

    @property
    def served_models(self) -> dict[str, ModelDefaults]:
        served = dict(self.inner.served_models)
        for name, engine in self.extras.items():
            served[name] = engine.model_defaults
        return served

    def defaults(self, kind: JobKind, model: str | None = None) -> KindDefaults:
        engine = self._engine(model)
        return engine.defaults(kind, None if engine is self.inner else model)

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
