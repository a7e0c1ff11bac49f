"""GPU-side speed switches of the engine, each off unless configured (docs/models.md, "The speed switches").

- Batch-size buckets: a batch is padded to the next configured size with copies of its last row, so a
  compiled denoiser only ever sees those shapes; the copies' pictures are dropped before anything else
  sees them.
- `torch.compile` of the denoiser with a mode (CUDA graphs with "reduce-overhead"), static shapes when
  buckets are set, inductor's caches kept in a configured folder across restarts, and a warm-up of every
  bucket at every configured size before the worker serves.
- A prompt-embedding cache: re-rolls and variations encode the same prompt again; the cache keeps encoded
  prompts (LRU, bounded by entries and bytes) and passes them to the pipeline as `prompt_embeds`.
- Tiled (and sliced) VAE decoding for pictures of at least a configured size.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from inference.settings import EngineSettings

log = logging.getLogger(__name__)

# The pipeline classes whose `encode_prompt(prompt, device, num_images_per_prompt, do_cfg)` gives one
# prompt's embeddings and whose call takes them as `prompt_embeds`/`negative_prompt_embeds` (SD 1.x/2.x).
# Left out on purpose: SDXL (two text encoders and pooled embeddings; its call already encodes prompts
# itself to zero the negative rows, inference/families.py), InstructPix2Pix (its embeddings carry the
# image-guidance rows), SD3 and FLUX (three or two encoders, pooled embeddings).
PROMPT_CACHE_PIPELINES = frozenset(
    {"StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline", "StableDiffusionInpaintPipeline"}
)


def next_bucket(n: int, buckets: list[int]) -> int:
    """The smallest bucket holding `n` rows; `n` itself when there are none or it is past the largest."""
    return next((b for b in buckets if b >= n), n)


# The call arguments that hold one entry per picture (lists of `n`, or tensors of `n` rows).
ROW_ARGUMENTS = frozenset(
    {
        "prompt",
        "negative_prompt",
        "generator",
        "image",
        "mask_image",
        "prompt_embeds",
        "negative_prompt_embeds",
        "pooled_prompt_embeds",
        "negative_pooled_prompt_embeds",
    }
)


def pad_call(kwargs: dict[str, Any], n: int, target: int) -> dict[str, Any]:
    """The call's per-row arguments (`ROW_ARGUMENTS`) padded from `n` to `target` rows with copies of the
    last one. Each added generator is a fresh clone of the last one's state, so the real rows draw
    exactly the noise they would unpadded (a shared generator would advance between rows and steps)."""
    if target <= n:
        return kwargs
    extra = target - n
    padded = dict(kwargs)
    for key in ROW_ARGUMENTS & kwargs.keys():
        value = kwargs[key]
        if key == "generator" and isinstance(value, list):
            padded[key] = value + [_clone(value[-1]) for _ in range(extra)]
        elif isinstance(value, list):
            padded[key] = value + [value[-1]] * extra
        elif isinstance(value, torch.Tensor):
            padded[key] = torch.cat([value, value[-1:].expand(extra, *value.shape[1:])])
        if len(padded[key]) != target:
            raise ValueError(f"{key} has {len(value)} rows, not the batch's {n}")
    return padded


def _clone(generator: torch.Generator) -> torch.Generator:
    clone = torch.Generator(generator.device)
    clone.set_state(generator.get_state())
    return clone


# ---------------------------------------------------------------- compile


def compile_denoiser(denoiser: torch.nn.Module, settings: EngineSettings, device: torch.device) -> None:
    """`torch.compile` the denoiser in place (so every pipeline sharing it runs the compiled one)."""
    mode = settings.compile_mode
    if mode == "reduce-overhead" and device.type != "cuda":
        log.warning("compile_mode 'reduce-overhead' (CUDA graphs) needs a CUDA device; compiling 'default'")
        mode = "default"
    if settings.compile_cache_dir is not None:
        use_compile_cache(settings.compile_cache_dir)
    if settings.batch_buckets:
        # Every bucket at every warm-up size, with and without classifier-free guidance (twice the rows),
        # must stay compiled: raise dynamo's per-function recompile limit to hold them all, on top of what
        # it holds already (another model of the same class compiled in this worker shares the function).
        shapes = 2 * len(settings.batch_buckets) * max(1, len(settings.compile_warmup_sizes))
        torch._dynamo.config.recompile_limit += shapes
    # Static shapes with buckets (each bucket its own graph); without, torch's default (dynamic after the
    # second shape it sees).
    dynamic = False if settings.batch_buckets else None
    denoiser.compile(mode=mode, dynamic=dynamic)
    log.info("denoiser compiled: mode %s, buckets %s", mode, settings.batch_buckets or "none")


def use_compile_cache(folder: Path) -> None:
    """Inductor's on-disk caches (FX graphs, AOT autograd, Triton kernels) in `folder`, so a restarted
    worker loads its compiled graphs instead of compiling them again. Both caches are on by default in
    torch; their default home is under /tmp, which containers and reboots wipe."""
    folder.mkdir(parents=True, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder)
    os.environ.setdefault("TRITON_CACHE_DIR", str(folder / "triton"))
    torch._inductor.config.fx_graph_cache = True
    torch._functorch.config.enable_autograd_cache = True


def warm_up(settings: EngineSettings, run_batch: Callable[..., Any]) -> float:
    """With `compile`: one text-to-image batch per bucket per warm-up size through the engine's own
    `run_batch`, with the model's defaults, pictures discarded, so every graph is compiled (or loaded
    from the cache) before the worker serves. Seconds it took."""
    if not settings.compile:
        return 0.0
    from inference.engine_api import BatchItem
    from inference.protocol import JobRequest
    from inference.vocabulary import WorkerJobId

    d = settings.defaults
    sizes = settings.compile_warmup_sizes or [(d.width, d.height)]
    started = time.perf_counter()
    for width, height in sizes:
        for images in settings.batch_buckets or [1]:
            request = JobRequest(idempotency_key="warm-up", user="warm-up", prompt="warm-up")
            items = [
                BatchItem(
                    job_id=WorkerJobId(f"warm-up-{i}"),
                    request=request,
                    seed=i,
                    width=width,
                    height=height,
                    steps=d.steps,
                    guidance=d.guidance,
                )
                for i in range(images)
            ]
            run_batch(items, lambda _: None, lambda: False)
    seconds = time.perf_counter() - started
    log.info(
        "warm-up: %d batch sizes at %d sizes in %.1f s",
        len(settings.batch_buckets or [1]),
        len(sizes),
        seconds,
    )
    return seconds


# ---------------------------------------------------------------- tiled VAE


def set_vae_tiling(pipe: Any, settings: EngineSettings, width: int, height: int) -> bool:
    """Tiled and sliced decoding for pictures of at least `vae_tiling_min_pixels`, whole otherwise; whether
    this call tiles. Tiles of `vae_tile_size` pixels (diffusers' default is the model's training size,
    which for SDXL is 1024 and would never tile a 1024² picture)."""
    vae = getattr(pipe, "vae", None)
    if vae is None or not hasattr(vae, "enable_tiling") or settings.vae_tiling_min_pixels is None:
        return False
    tile = width * height >= settings.vae_tiling_min_pixels
    if tile:
        if hasattr(vae, "tile_sample_min_size"):
            scale = 2 ** (len(vae.config.block_out_channels) - 1)
            vae.tile_sample_min_size = settings.vae_tile_size
            vae.tile_latent_min_size = settings.vae_tile_size // scale
        vae.enable_tiling()
        vae.enable_slicing()
    else:
        vae.disable_tiling()
        vae.disable_slicing()
    return tile


# ---------------------------------------------------------------- prompt embeddings


@dataclass
class PromptCacheStats:
    hits: int = 0
    misses: int = 0
    entries: int = 0
    bytes: int = 0


class PromptCache:
    """Encoded prompts, least recently used dropped first past `max_entries` or `max_bytes`.

    Keyed by the text encoder (its identity, device and dtype) and the text, so two models or a model's
    inpainting pipeline with its own encoder never share an entry. A batch's texts that are not cached
    are encoded together in one call, as the pipeline itself would encode them (so a prompt's embedding
    may differ by float rounding with the batch that first encoded it, as pictures do with their batch).
    """

    def __init__(self, max_entries: int, max_bytes: int) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.stats = PromptCacheStats()
        self._entries: OrderedDict[tuple[Any, ...], torch.Tensor] = OrderedDict()

    def usable(self, pipe: Any, kwargs: dict[str, Any], adapter: str | None) -> bool:
        """Whether this call can take cached embeddings: an SD 1.x/2.x pipeline, prompts as text, and no
        switchable LoRA adapter on (it may change the text encoder)."""
        return (
            self.max_entries > 0
            and adapter is None
            and type(pipe).__name__ in PROMPT_CACHE_PIPELINES
            and isinstance(kwargs.get("prompt"), list)
            and "prompt_embeds" not in kwargs
        )

    def apply(self, pipe: Any, kwargs: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """`kwargs` with its prompts (and negative prompts, when guidance uses them) as embeddings, encoded
        on `device` (the engine's: diffusers' `_execution_device` walks every module, milliseconds a call)."""
        out = dict(kwargs)
        out["prompt_embeds"] = self._rows(pipe, out.pop("prompt"), device)
        negatives = out.pop("negative_prompt", None)
        if negatives is not None and out.get("guidance_scale", 0.0) > 1.0:
            out["negative_prompt_embeds"] = self._rows(pipe, negatives, device)
        return out

    def _rows(self, pipe: Any, texts: list[str], device: torch.device) -> torch.Tensor:
        """One row per text: cached ones from the cache, the others encoded together in one call (on a
        GPU a text encoder at batch one is launch-bound: sixteen calls cost many times one of sixteen)."""
        encoder = pipe.text_encoder
        scope = (id(encoder), str(device), str(encoder.dtype))
        missing = list(dict.fromkeys(t for t in texts if (*scope, t) not in self._entries))
        fresh: dict[str, torch.Tensor] = {}
        if missing:
            with torch.no_grad():
                encoded: torch.Tensor = pipe.encode_prompt(missing, device, 1, False)[0]
            fresh = {text: encoded[n : n + 1].clone() for n, text in enumerate(missing)}
        rows = []
        for text in texts:  # every row read before anything is stored, so no bound evicts one in use
            if text in fresh:
                rows.append(fresh[text])
                continue
            key = (*scope, text)
            self._entries.move_to_end(key)
            rows.append(self._entries[key])
        self.stats.misses += len(missing)  # a text repeated in the batch (a job's pictures) is one miss
        self.stats.hits += len(texts) - len(missing)
        for text, embeds in fresh.items():
            self._keep((*scope, text), embeds)
        self.stats.entries = len(self._entries)
        return torch.cat(rows)

    def _keep(self, key: tuple[Any, ...], embeds: torch.Tensor) -> None:
        size = embeds.element_size() * embeds.nelement()
        if size > self.max_bytes:
            return
        self._entries[key] = embeds
        self.stats.bytes += size
        while len(self._entries) > self.max_entries or self.stats.bytes > self.max_bytes:
            _, old = self._entries.popitem(last=False)
            self.stats.bytes -= old.element_size() * old.nelement()
