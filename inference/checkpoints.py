"""Where a model's weights come from, beyond a diffusers folder: the Hugging Face Hub (checked once, quickly,
and read from the local cache when it is there) and single-file checkpoints (.safetensors or .ckpt, the
form most community models ship in) loaded with diffusers' `from_single_file`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import diffusers

from inference.engine_api import EngineError

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")
HUB_CHECK_TIMEOUT_S = 10.0
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_single_file(source: str) -> bool:
    return source.lower().endswith(SINGLE_FILE_SUFFIXES)


def hub_access(source: str, cache_dir: Path | None) -> dict[str, Any]:
    """How to load a Hub id: from the local cache only when it is there (no network, no retries), else
    after one short check that the Hub answers, so an unreachable Hub is one clear line, not minutes of
    retries ending in a misleading "no file named model_index.json"."""
    if Path(source).exists() or not _REPO_ID.fullmatch(source):
        return {}  # a local folder, or something from_pretrained will name the problem with
    import huggingface_hub
    from huggingface_hub import constants, errors

    try:
        huggingface_hub.snapshot_download(source, cache_dir=cache_dir, local_files_only=True)
        return {"local_files_only": True}
    except (errors.LocalEntryNotFoundError, OSError, ValueError):
        pass  # not cached
    todo = (
        f"download it where the Hub is reachable (`hf download {source}`, then copy the cache: HF_HOME), "
        "or set engine.model to a local folder or checkpoint file"
    )
    if constants.HF_HUB_OFFLINE:
        raise EngineError(f"model {source!r} is not in the local cache and HF_HUB_OFFLINE is set: {todo}")
    try:
        huggingface_hub.HfApi(endpoint=constants.ENDPOINT).model_info(source, timeout=HUB_CHECK_TIMEOUT_S)
    except errors.GatedRepoError:
        raise EngineError(
            f"model {source!r} is gated: accept its licence on its Hub page and set HF_TOKEN"
        ) from None
    except errors.RepositoryNotFoundError:
        raise EngineError(
            f"there is no model {source!r} on the Hugging Face Hub (check the id; a private one needs HF_TOKEN)"
        ) from None
    except Exception as exc:  # connection refused, DNS, proxy, timeout, a 5xx
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise EngineError(
            f"cannot reach the Hugging Face Hub ({constants.ENDPOINT}) to download model {source!r}: {reason}. "
            f"Check the network or proxy (HTTPS_PROXY), or {todo}"
        ) from None
    return {}


def from_single_file(loader: Any, source: str, load_kwargs: dict[str, Any]) -> Any:
    """A single-file checkpoint (.safetensors/.ckpt, as community models ship) through diffusers'
    `from_single_file`; an auto pipeline becomes the family's own class, found from the file's keys."""
    if not Path(source).is_file():
        raise EngineError(f"cannot load model {source!r}: no such checkpoint file")
    kwargs = {k: v for k, v in load_kwargs.items() if k != "use_safetensors"}
    try:
        cls = single_file_class(loader, source)
        return cls.from_single_file(source, **kwargs)
    except EngineError:
        raise
    except Exception as exc:
        raise EngineError(
            f"cannot load single-file checkpoint {source!r}: {type(exc).__name__}: {str(exc)[:500]}"
        ) from exc


# diffusers' names for what a single-file checkpoint holds, and the text-to-image pipeline that loads it.
_SINGLE_FILE_PIPELINES = {
    "v1": "StableDiffusionPipeline",
    "v2": "StableDiffusionPipeline",
    "xl_base": "StableDiffusionXLPipeline",
    "playground-v2-5": "StableDiffusionXLPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "sd35_large": "StableDiffusion3Pipeline",
    "sd35_medium": "StableDiffusion3Pipeline",
    "flux-dev": "FluxPipeline",
    "flux-schnell": "FluxPipeline",
}


def single_file_class(loader: Any, source: str) -> Any:
    """The class whose `from_single_file` loads `source`: `loader` itself when it has one, else the
    text-to-image pipeline of the model type diffusers reads from the checkpoint's keys."""
    if hasattr(loader, "from_single_file"):
        return loader
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type, load_single_file_checkpoint

    kind = infer_diffusers_model_type(load_single_file_checkpoint(source))
    name = _SINGLE_FILE_PIPELINES.get(kind)
    if name is None:
        raise EngineError(
            f"checkpoint {source!r} holds a {kind!r} model, which brushfire cannot load from a single file; "
            f"use a diffusers folder or Hub id (single files load for: {', '.join(sorted(_SINGLE_FILE_PIPELINES))})"
        )
    return getattr(diffusers, name)
