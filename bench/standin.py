"""BENCH STAND-IN, never a serving option: a diffusers pipeline whose model call is a calibrated wait.

`bench/gpu_rate.py` measures the whole stack at the rate a GPU would feed it, on a machine without one.
Only the model call is replaced: `standin_pipeline()` is a real `StableDiffusionPipeline` (microscopic
real components, so `DiffusersEngine.from_pipeline` wraps it exactly as it wraps a loaded model) whose
`__call__` sleeps for as long as the calibrated model would run (`time.sleep`, which releases the GIL as
a GPU wait does), calls the engine's step callback with latents at every step, and then hands the
batch's pictures to diffusers' own `image_processor.postprocess` for the output type the engine asked
for, so the conversion the pipeline does on the CPU (float -> uint8 -> PIL) stays real and counted.
Everything after it (the engine's encoding, previews, scheduler, HTTP RPC, the bot's job service) is the
real code. The class is named `StableDiffusionPipeline` only because the engine tells model families
apart by class name; nothing outside bench/ imports this module.

The pictures are realistic in what matters to an encoder: the tiny model's scenes (tools/tiny/data.py)
drawn at the target size with soft edges, over smooth gradients, with a texture whose spectrum falls off
as 1/f like a photograph's (not white noise, which compresses unlike any real picture).

Calibration (seconds per batch = fixed + per_image * batch, on one H100-class GPU, bf16/fp16):
  sd-turbo, 512x512, 1 step: ~100 ms for a batch of 16 (about 160 images/s) -- issue 23's figure for an
  SD-Turbo-class model on an H100; batch 1 ~20 ms, in line with StreamDiffusion's ~91 images/s for
  SD-Turbo at batch 1, 1 step, with a tiny decoder on an RTX 4090 (Kodaira et al. 2023, arXiv:2312.12491).
  sdxl-turbo, 1024x1024, 1 step: ~440 ms for 16 (about 36 images/s, ~4.4x slower per image than sd-turbo
  at 512: four times the pixels on a ~3x larger UNet, partly amortised by batching); batch 1 ~65 ms.
  Stability AI reports 207 ms for one 512x512 SDXL-Turbo image on an A100 including text encoding and
  decoding (SDXL-Turbo announcement, Nov 2023). These are estimates from published figures: no GPU was
  measured here. `--rate` rescales a table so its largest batch runs at exactly that many images/s
  (issue 23's acceptance run uses an SD-Turbo-class stand-in of 100 images/s).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_output import StableDiffusionPipelineOutput
from PIL import Image, ImageFilter

from tools.tiny import data
from tools.tiny.build import build_generate


@dataclass(frozen=True)
class Calibration:
    """A model call's wall time per batch: `fixed_s + per_image_s * batch`, at `size` and `steps`."""

    arch: str
    size: int
    steps: int
    fixed_s: float
    per_image_s: float
    source: str

    def batch_s(self, batch: int) -> float:
        if batch < 1:
            raise ValueError(f"a batch holds at least one image, not {batch}")
        return self.fixed_s + self.per_image_s * batch

    def images_per_s(self, batch: int) -> float:
        return batch / self.batch_s(batch)

    def scaled_to(self, rate: float, batch: int) -> Calibration:
        """The same shape of curve, scaled so a batch of `batch` runs at `rate` images/s."""
        if rate <= 0:
            raise ValueError(f"a rate is positive, not {rate}")
        factor = (batch / rate) / self.batch_s(batch)
        return Calibration(
            self.arch,
            self.size,
            self.steps,
            self.fixed_s * factor,
            self.per_image_s * factor,
            f"{self.source}; scaled to {rate:g} images/s at batch {batch}",
        )


CALIBRATION: dict[str, Calibration] = {
    "sd-turbo": Calibration(
        "sd-turbo",
        512,
        1,
        fixed_s=0.0147,
        per_image_s=0.00533,
        source="issue 23 (~100 ms per batch of 16 at 512x512, 1 step, H100); StreamDiffusion arXiv:2312.12491 (batch 1)",
    ),
    "sdxl-turbo": Calibration(
        "sdxl-turbo",
        1024,
        1,
        fixed_s=0.040,
        per_image_s=0.025,
        source="estimate: 4x the pixels of sd-turbo on a ~3x larger UNet; Stability AI SDXL-Turbo announcement (207 ms, 512x512, A100)",
    ),
}
ARCH_FOR_SIZE = {512: "sd-turbo", 1024: "sdxl-turbo"}
# Where the model's time goes: the denoising steps, then the decoder (the rest of the wait).
STEPS_SHARE = 0.75
POOL = 16


def _pink_texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size x 3 texture with a 1/f amplitude spectrum (natural pictures have about this), in [-1, 1]."""
    freq = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
    freq[0, 0] = 1.0
    channels = []
    for _ in range(3):
        spectrum = (rng.normal(size=(size, size)) + 1j * rng.normal(size=(size, size))) / freq
        spectrum[0, 0] = 0
        field = np.fft.ifft2(spectrum).real
        channels.append(field / (np.abs(field).max() + 1e-9))
    return np.stack(channels, axis=-1)


def picture(rng: np.random.Generator, size: int) -> np.ndarray:
    """One realistic size x size picture as float32 HxWx3 in [0, 1]: a scene over a gradient, textured."""
    scene = data.render(data.sample_scene(rng)).resize((size, size), Image.Resampling.BICUBIC)
    scene = scene.filter(ImageFilter.GaussianBlur(size / 256))
    base = np.asarray(scene, dtype=np.float32) / 255.0
    ramp = np.linspace(-0.12, 0.12, size, dtype=np.float32)
    gradient = ramp[None, :, None] * rng.uniform(-1, 1, 3) + ramp[:, None, None] * rng.uniform(-1, 1, 3)
    texture = _pink_texture(rng, size).astype(np.float32)
    return np.clip(base + gradient + 0.10 * texture, 0.0, 1.0)


class _StandInCall:
    """The replaced model call; mixed in before diffusers' StableDiffusionPipeline."""

    calibration: Calibration
    pictures: torch.Tensor  # POOL x 3 x size x size, float32 in [-1, 1] (what the decoder would hand back)
    processed: torch.Tensor  # 2 POOL x 3 x size x size, float32 in [0, 1]: `pictures` post-processed, twice
    latents_pool: torch.Tensor  # POOL x 4 x size/8 x size/8, smooth, for the step callback's previews
    own_cpu_s: float  # thread CPU the stand-in itself spent (copying its pictures), not the stack's
    calls: int
    _interrupt: bool
    _num_timesteps: int

    def __call__(
        self,
        prompt: list[str] | str | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 1,
        guidance_scale: float = 0.0,
        negative_prompt: list[str] | str | None = None,
        num_images_per_prompt: int = 1,
        generator: Any = None,
        output_type: str = "pil",
        callback_on_step_end: Any = None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        **_ignored: Any,
    ) -> StableDiffusionPipelineOutput:
        started = time.perf_counter()
        cpu = time.thread_time()
        rows = (
            len(prompt_embeds)
            if prompt_embeds is not None
            else len(prompt)
            if isinstance(prompt, list)
            else 1
        )
        n = rows * num_images_per_prompt
        size = self.pictures.shape[-1]
        if (width or size, height or size) != (size, size):
            raise ValueError(f"this stand-in draws {size}x{size} pictures, not {width}x{height}")
        if output_type == "latent":
            raise ValueError("the stand-in returns decoded pictures; output_type='latent' is not simulated")
        wait = self.calibration.batch_s(n)
        picks = [(self.calls * 7 + k) % len(self.pictures) for k in range(n)]
        self.calls += 1
        latents = self.latents_pool[picks].clone()
        self._interrupt = False
        self._num_timesteps = num_inference_steps
        own = time.thread_time() - cpu
        for i in range(num_inference_steps):
            _sleep_until(started + wait * STEPS_SHARE * (i + 1) / num_inference_steps)
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, 999 - i, {"latents": latents})
                latents = out.get("latents", latents)
            if self._interrupt:
                break
        # The decoded batch after the pipeline's own post-processing (`postprocess` maps [-1, 1] to
        # [0, 1]): on a GPU both are device work inside the call and cost the host nothing, so for "pt"
        # (what the engine asks for) the stand-in hands out a view of a pool post-processed once, burning
        # no CPU a GPU would not. What the engine does with the pictures after the call is the stack's.
        cpu = time.thread_time()
        if output_type == "pt" and n <= len(self.pictures):
            # The same pictures as `picks` (whose latents the previews showed): the pool is stored twice
            # over, so they are one view.
            result: Any = self.processed[picks[0] : picks[0] + n]
        else:
            image_processor: Any = getattr(self, "image_processor")  # noqa: B009  (diffusers sets it at init)
            result = image_processor.postprocess(self.pictures[picks].clone(), output_type=output_type)
        own += time.thread_time() - cpu
        with _own_cpu_lock:
            self.own_cpu_s += own
        _sleep_until(started + wait)
        return StableDiffusionPipelineOutput(images=result, nsfw_content_detected=None)

    def encode_prompt(
        self, prompt: list[str] | str, device: Any, num_images_per_prompt: int, *_args: Any, **_kwargs: Any
    ) -> tuple[torch.Tensor, None]:
        """The text encoder's stand-in (the engine's prompt cache calls it on a miss): zero embeddings of
        the real shape at no host CPU; a GPU's text encoder time is inside the calibrated wait."""
        n = (len(prompt) if isinstance(prompt, list) else 1) * num_images_per_prompt
        config = self.text_encoder.config  # type: ignore[attr-defined]
        return torch.zeros(n, self.tokenizer.model_max_length, config.hidden_size, device=device), None  # type: ignore[attr-defined]


_own_cpu_lock = threading.Lock()


def _sleep_until(deadline: float) -> None:
    left = deadline - time.perf_counter()
    if left > 0:
        time.sleep(left)


# Named as the engine's family table knows it; bench-only (see the module's docstring).
StandInPipeline = type("StableDiffusionPipeline", (_StandInCall, StableDiffusionPipeline), {})


def standin_pipeline(calibration: Calibration, seed: int = 23, pool: int = POOL) -> Any:
    """A stand-in pipeline drawing `calibration.size` pictures at the calibrated wall time per batch."""
    base = build_generate()
    pipe: Any = StandInPipeline(**base.components)
    rng = np.random.default_rng(seed)
    pictures = torch.from_numpy(np.stack([picture(rng, calibration.size) for _ in range(pool)]))
    pipe.pictures = pictures.permute(0, 3, 1, 2).contiguous() * 2 - 1
    # The pool as a "pt" call returns it, twice over, so any `max_batch` pictures from any start are a view.
    processed = pipe.image_processor.postprocess(pipe.pictures, output_type="pt")
    pipe.processed = torch.cat([processed, processed])
    # Smooth latents (the pictures pooled 8x, plus their mean as a fourth channel), so previews look real.
    pooled = torch.nn.functional.avg_pool2d(pipe.pictures, 8)
    pipe.latents_pool = torch.cat([pooled, pooled.mean(dim=1, keepdim=True)], dim=1)
    pipe.calibration = calibration
    pipe.own_cpu_s = 0.0
    pipe.calls = 0
    return pipe
