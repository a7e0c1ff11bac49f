"""Hostile-input test fixtures: the real tiny engine, loaded once per module (from the inference tests)."""

from tests.inference.conftest import engine_settings, tiny_edit_model_dir, tiny_model_dir, tiny_models
from tests.inference.fixtures_worker import tiny_engine

__all__ = ["engine_settings", "tiny_edit_model_dir", "tiny_engine", "tiny_model_dir", "tiny_models"]
