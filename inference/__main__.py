"""`python -m inference`: start the GPU worker from command-line flags."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError

from inference.server import WorkerConfigError, run_worker
from inference.settings import EngineSettings, WorkerSettings

log = logging.getLogger(__name__)

TOKEN_ENV = "BRUSHFIRE_WORKER_TOKEN"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = WorkerSettings()
    p = argparse.ArgumentParser(prog="python -m inference", description=__doc__.splitlines()[0])
    p.add_argument("--host", default=defaults.host, help="bind address (default %(default)s)")
    p.add_argument("--port", type=int, default=defaults.port, help="port (default %(default)s)")
    p.add_argument("--token", default=None, help=f"bearer token clients must send (or ${TOKEN_ENV})")
    p.add_argument("--model", default=None, help="Hugging Face id or local folder (default: bundled tiny)")
    p.add_argument("--edit-model", default=None, help="instruction-editing pipeline (default: img2img)")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    p.add_argument("--compile", action="store_true", help="torch.compile the UNet")
    p.add_argument("--cpu-threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where downloaded weights are cached")
    p.add_argument("--max-batch", type=int, default=defaults.max_batch, help="images per pipeline call")
    p.add_argument("--relax-share", type=float, default=defaults.relax_share)
    p.add_argument("--max-pixels", type=int, default=defaults.max_pixels, help="per output image")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        worker = WorkerSettings(
            host=args.host,
            port=args.port,
            token=args.token or os.environ.get(TOKEN_ENV) or None,
            max_batch=args.max_batch,
            relax_share=args.relax_share,
            max_pixels=args.max_pixels,
        )
        engine = EngineSettings(
            model=args.model,
            edit_model=args.edit_model,
            device=args.device,
            dtype=args.dtype,
            compile=args.compile,
            cpu_threads=args.cpu_threads,
            cache_dir=args.cache_dir,
        )
        run_worker(worker, engine)
    except (WorkerConfigError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
