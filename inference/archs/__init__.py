"""Published model architectures (UNet, VAE, text encoders) written out as configs, for GPU benchmarks.

Random weights cost the same FLOPs as trained ones, so `inference.archs.build` can measure a GPU's real
throughput on these architectures with nothing downloaded. This module only reads the configs.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from inference.settings import ModelDefaults

log = logging.getLogger(__name__)

ARCHS_DIR = Path(__file__).parent
ARCH_NAMES = ("sd-turbo", "sdxl-turbo")


@dataclass(frozen=True, slots=True)
class Arch:
    """One architecture: its folder of configs, its pipeline class and its native generation settings."""

    name: str
    folder: Path
    pipeline: str  # a diffusers pipeline class name
    source: str  # the published model the configs copy
    defaults: ModelDefaults

    def config(self, component: str) -> dict[str, object]:
        return json.loads((self.folder / f"{component}.json").read_text())


def get_arch(name: str) -> Arch:
    """The named architecture; a clear ValueError for an unknown name."""
    if name not in ARCH_NAMES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(ARCH_NAMES)}")
    folder = ARCHS_DIR / name
    meta = json.loads((folder / "arch.json").read_text())
    defaults = ModelDefaults(
        steps=meta["steps"], guidance=meta["guidance"], width=meta["width"], height=meta["height"]
    )
    return Arch(name, folder, meta["pipeline"], meta["source"], defaults)
