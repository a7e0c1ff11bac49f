"""brushfire's command line: run the worker and the bot, manage the database, or make images locally.

python run.py                      worker + bot (the worker is restarted with backoff if it crashes)
python run.py bot | worker         one of the two (worker flags: --host --port --model --edit-model
                                   --device --max-batch, over the settings)
python run.py serve --ray [--replicas N] [--address ADDR]   the worker's RPC on Ray Serve, many GPUs
python run.py db migrate | backup PATH | restore PATH   (restore: with the bot and worker stopped)
python run.py imagine "a red fox" -o fox.png
python run.py edit fox.png "make it snowy" -o snowy.png

Relative paths in the settings (database.path, backup_dir, sync_state_file, cache_dir) are read from the
config file's folder, or with no config file from the project folder (where run.py is), never from the
folder the command happens to be started in. Arguments a user types are checked before any model loads:
a bad one ends the command at once with exit status 2 and a message naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import psutil
from pydantic import ValidationError

from bot.core import terminal
from bot.core.command_text import EDIT, IMAGINE
from bot.core.errors import BrushfireError
from bot.core.jobs import JobService
from bot.core.lifecycle import CrashPoint, ProcessOwner, describe_server, die_with_parent, port_in_use
from bot.core.logs import LEVELS, job_context, setup_logging
from bot.core.outcomes import JobOutcome
from bot.core.plans import LOCAL_USER, SAMPLERS, Controls, ImagineOptions, JobPlan, Planner, parse_lane
from bot.core.progress import ProgressUpdater
from bot.core.records import GuildSettings, extension
from bot.core.services import Services, open_services
from bot.core.settings import Settings, SettingsError, anchor_paths, load_settings
from bot.core.styles import StyleBook
from inference.engine_api import EngineError
from inference.protocol import WorkerInfo
from inference.settings import EngineSettings, WorkerSettings
from inference.vocabulary import JobId

log = logging.getLogger(__name__)

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
STABLE_AFTER_S = 60.0  # a worker that ran this long before crashing starts the backoff over


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0])
    p.add_argument("--config", type=Path, help="TOML settings file (or $BRUSHFIRE_CONFIG)")
    p.add_argument(
        "--log-level", type=str.upper, choices=LEVELS, default=None, help="over the settings' log_level"
    )
    p.add_argument(
        "--log-format", choices=["text", "json"], default=None, help="over the settings' log_format"
    )
    sub = p.add_subparsers(dest="command")
    sub.add_parser("all", help="worker and bot together (the default)")
    sub.add_parser("bot", help="the Discord bot alone (the worker runs elsewhere: worker_url)")
    worker = sub.add_parser("worker", help="the inference worker alone (flags override the settings)")
    worker.add_argument("--host", help="bind address (a non-loopback one needs worker.token)")
    worker.add_argument("--port", type=int)
    worker.add_argument("--model", help="Hugging Face id or local folder (default: the bundled tiny model)")
    worker.add_argument("--edit-model", help="an instruction-editing pipeline (default: img2img)")
    worker.add_argument("--device", choices=["auto", "cuda", "mps", "cpu"])
    worker.add_argument("--max-batch", type=int, help="images per pipeline call")
    worker.add_argument("--parent-pid", type=int, help=argparse.SUPPRESS)  # set by `run.py` (both)
    serve = sub.add_parser("serve", help="the worker's RPC from many GPUs and machines (Ray Serve)")
    serve.add_argument("--ray", action="store_true", help="serve on Ray Serve (the only mode so far)")
    serve.add_argument("--replicas", type=int, default=1, help="model replicas, one per GPU")
    serve.add_argument("--max-replicas", type=int, help="autoscale from --replicas up to this many")
    serve.add_argument("--address", help="join the Ray cluster at HOST:PORT (default: start a local one)")
    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    db_sub.add_parser("migrate", help="create or upgrade the database file")
    backup = db_sub.add_parser("backup", help="copy the live database safely")
    backup.add_argument("path", type=Path)
    restore = db_sub.add_parser("restore", help="replace the database with a checked backup (bot stopped)")
    restore.add_argument("path", type=Path)
    # The job commands' help is the slash commands' own descriptions (bot.core.command_text).
    output_help = "where to write the image (several: numbered beside it)"
    imagine = sub.add_parser("imagine", help=IMAGINE.description, description=IMAGINE.description)
    said = IMAGINE.options
    imagine.add_argument("prompt", help=said["prompt"])
    imagine.add_argument("-o", "--output", type=Path, default=Path("out.png"), help=output_help)
    imagine.add_argument("--style", help=said["style"])
    imagine.add_argument("--negative", default="", help=said["negative"])
    imagine.add_argument("--aspect", help=said["aspect"])
    imagine.add_argument("--count", type=int, default=1, help=said["count"])
    imagine.add_argument("--seed", type=int, help=said["seed"])
    imagine.add_argument("--lane", choices=["auto", "fast", "relax"], default="auto", help=said["lane"])
    imagine.add_argument("--steps", type=int, help=said["steps"])
    imagine.add_argument("--guidance", type=float, help=said["guidance"])
    imagine.add_argument("--width", type=int, help=said["width"])
    imagine.add_argument("--height", type=int, help=said["height"])
    imagine.add_argument("--sampler", choices=list(SAMPLERS), help=said["sampler"])
    imagine.add_argument("--model", help=said["model"])
    edit = sub.add_parser("edit", help=EDIT.description, description=EDIT.description)
    said = EDIT.options
    edit.add_argument("image", type=Path, help=said["image"])
    edit.add_argument("instruction", help=said["instruction"])
    edit.add_argument("-o", "--output", type=Path, default=Path("out.png"), help=output_help)
    edit.add_argument("--strength", type=float, help=said["strength"])
    edit.add_argument("--seed", type=int, help=said["seed"])
    edit.add_argument("--lane", choices=["auto", "fast", "relax"], default="auto", help=said["lane"])
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(args.config)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings = anchor_paths(settings, settings_folder(args.config))
    # The one-shot commands print their own result: keep the bar readable and say each thing once.
    quiet = "WARNING" if args.command in ("imagine", "edit", "db") else settings.log_level
    setup_logging(args.log_level or quiet, args.log_format or settings.log_format)
    command = args.command or "all"
    try:
        return _dispatch(command, args, settings)
    except KeyboardInterrupt:
        return 130


def settings_folder(config: Path | None) -> Path:
    """Where relative paths in the settings are read from: the config file's folder; with no file, the
    project folder holding run.py (a checkout), or ~/.local/share/brushfire for an installed copy."""
    path = config or (Path(os.environ["BRUSHFIRE_CONFIG"]) if os.environ.get("BRUSHFIRE_CONFIG") else None)
    if path is not None:
        return path.resolve().parent
    here = Path(__file__).resolve().parent
    return here if (here / "pyproject.toml").is_file() else Path.home() / ".local" / "share" / "brushfire"


def _dispatch(command: str, args: argparse.Namespace, settings: Settings) -> int:
    if command == "worker":
        from inference.server import WorkerConfigError, run_worker

        try:
            worker, engine = worker_settings(settings, args)
            run_worker(worker, engine, parent_pid=args.parent_pid)
        except (WorkerConfigError, ValidationError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        except EngineError as exc:
            print(f"error: the model could not be loaded: {exc}", file=sys.stderr)
            return 1
        return 0
    if command == "serve":
        return _serve_ray(args, settings)
    if command == "db":
        return asyncio.run(_db(args, settings))
    if command in ("imagine", "edit"):
        return asyncio.run(_local_job(args, settings, CrashPoint.from_env(dict(os.environ))))
    from bot.client import run_bot

    if settings.discord_token is None:
        print(
            "error: set DISCORD_TOKEN to the bot's token (try `run.py imagine` without Discord)",
            file=sys.stderr,
        )
        return 2
    crash = CrashPoint.from_env(dict(os.environ))  # inert unless the crash-matrix tests set it
    if command == "bot":
        return asyncio.run(run_bot(settings, crash=crash))
    logs = [
        f"--{name.replace('_', '-')}={value}"
        for name in ("log_level", "log_format")
        if (value := getattr(args, name))
    ]
    return asyncio.run(_bot_and_worker(settings, args.config, crash, logs))


# --- worker and bot together ---


class PortTaken(RuntimeError):
    """The worker's port is served by something this run.py did not start; the message says what."""


class WorkerSupervisor:
    """Runs the worker as a child process and restarts it with backoff when it exits unasked.

    The child dies with this process (Linux `PR_SET_PDEATHSIG`, plus a parent watch in the worker), runs
    in its own process group (stopped as a whole), and is recorded in `pidfile`, so a worker a killed
    run.py left behind is recognised and stopped. A port served by anything else is reported, not
    fought over with restarts.
    """

    def __init__(
        self,
        command: list[str],
        backoff_s: Sequence[float] = RESTART_BACKOFF_S,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        pidfile: Path | None = None,
    ) -> None:
        self._command = command
        self._backoff = backoff_s
        self._host, self._port = host, port
        self._pidfile = pidfile
        self._process: asyncio.subprocess.Process | None = None
        self._stopping = False
        self.starts = 0

    async def run(self) -> None:
        failures = 0
        while not self._stopping:
            if self._port is not None:
                await asyncio.to_thread(self._claim_port)
            self._process = await asyncio.create_subprocess_exec(
                *self._command, preexec_fn=die_with_parent, process_group=0
            )
            self._record(self._process.pid)
            self.starts += 1
            started = time.monotonic()
            code = await self._process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > STABLE_AFTER_S:
                failures = 0
            delay = self._backoff[min(failures, len(self._backoff) - 1)]
            failures += 1
            log.warning("worker exited with code %s; restarting in %.0f s", code, delay)
            await asyncio.sleep(delay)

    def _claim_port(self) -> None:
        """Make sure the port is free: stop our own orphaned worker there, or refuse with what serves it."""
        if self._port is None or not port_in_use(self._host, self._port):
            return
        orphan = self._orphan()
        if orphan is not None:
            log.warning("stopping worker %d, left behind by a run.py that died", orphan.pid)
            orphan.terminate()
            try:
                orphan.wait(45)
            except psutil.TimeoutExpired:
                orphan.kill()
            for _ in range(50):
                if not port_in_use(self._host, self._port):
                    return
                time.sleep(0.1)
        what = describe_server(self._host, self._port)
        raise PortTaken(
            f"port {self._port} on {self._host} is already served by {what}. Stop that process, or set "
            "[worker] port to a free port; to use a worker that is already running, start only the bot "
            "(`run.py bot`) with worker_url pointing at it."
        )

    def _orphan(self) -> psutil.Process | None:
        """The worker our pidfile names, if it still runs and the run.py that started it does not."""
        if self._pidfile is None:
            return None
        try:
            record = json.loads(self._pidfile.read_text(encoding="utf-8"))
            worker = ProcessOwner.parse(record["worker"])
            parent = ProcessOwner.parse(record["parent"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if worker is None or parent is None or not worker.alive() or parent.alive():
            return None
        with contextlib.suppress(psutil.Error):
            return psutil.Process(worker.pid)
        return None

    def _record(self, pid: int) -> None:
        if self._pidfile is None:
            return
        with contextlib.suppress(OSError, psutil.Error):
            worker = ProcessOwner("worker", pid, round(psutil.Process(pid).create_time(), 2))
            record = {"worker": str(worker), "parent": str(ProcessOwner.current("run"))}
            self._pidfile.parent.mkdir(parents=True, exist_ok=True)
            self._pidfile.write_text(json.dumps(record), encoding="utf-8")

    async def stop(self, grace_s: float = 40.0) -> None:
        """Ask the worker to finish its batch and exit; kill its process group if it takes longer."""
        self._stopping = True
        proc = self._process
        if proc is None or proc.returncode is not None:
            return
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), grace_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        if self._pidfile is not None:
            self._pidfile.unlink(missing_ok=True)


def worker_settings(settings: Settings, args: argparse.Namespace) -> tuple[WorkerSettings, EngineSettings]:
    """The worker's and engine's settings with `run.py worker` flags laid over them (validated again)."""

    def given(**flags: object) -> dict[str, object]:
        return {k: v for k, v in flags.items() if v is not None}

    worker = WorkerSettings.model_validate(
        {
            **settings.worker.model_dump(exclude_unset=True),
            **given(host=args.host, port=args.port, max_batch=args.max_batch),
        }
    )
    engine = EngineSettings.model_validate(
        {
            **settings.engine.model_dump(exclude_unset=True),
            **given(model=args.model, edit_model=args.edit_model, device=args.device),
        }
    )
    return worker, engine


def worker_command(config: Path | None, logs: Sequence[str] = ()) -> list[str]:
    """This same script in worker mode, with the same config file and log flags (the environment is
    inherited); the worker watches this process and stops if it goes away."""
    args = [sys.executable, str(Path(__file__).resolve()), *logs]
    if config is not None:
        args += ["--config", str(config)]
    return [*args, "worker", "--parent-pid", str(os.getpid())]


async def _bot_and_worker(
    settings: Settings, config: Path | None, crash: CrashPoint, logs: Sequence[str] = ()
) -> int:
    from bot.client import run_bot

    supervisor = WorkerSupervisor(
        worker_command(config, logs),
        host=settings.worker.host,
        port=settings.worker.port,
        pidfile=settings.database.path.parent / "worker.pid",
    )
    task = asyncio.create_task(supervisor.run(), name="worker-supervisor")
    bot = asyncio.create_task(run_bot(settings, crash=crash), name="bot")
    try:
        await asyncio.wait({task, bot}, return_when=asyncio.FIRST_COMPLETED)
        if task.done() and isinstance(task.exception(), PortTaken):
            print(f"error: {task.exception()}", file=sys.stderr)
            bot.cancel()
            await asyncio.gather(bot, return_exceptions=True)
            return 2
        return await bot
    finally:
        await supervisor.stop(settings.worker.shutdown_grace_s + 10)
        for t in (task, bot):
            t.cancel()
        await asyncio.gather(task, bot, return_exceptions=True)


def _serve_ray(args: argparse.Namespace, settings: Settings) -> int:
    """The worker's RPC on Ray Serve: a local cluster, or the one at --address."""
    if not args.ray:
        print("error: `serve` needs --ray (for a single GPU run `run.py worker`)", file=sys.stderr)
        return 2
    try:
        from inference.ray_app import RayClusterUnreachable, RayScaleSettings, run_ray
    except ImportError as exc:
        print(f"error: Ray Serve is not installed ({exc}); pip install 'brushfire[ray]'", file=sys.stderr)
        return 2
    from pydantic import ValidationError

    from inference.server import WorkerConfigError

    try:
        scale = RayScaleSettings(
            min_replicas=args.replicas,
            max_replicas=args.max_replicas or args.replicas,
            num_gpus=0.0 if settings.engine.device == "cpu" else 1.0,
        )
        run_ray(settings.engine, settings.worker, scale, args.address)
    except (RayClusterUnreachable, WorkerConfigError, ValidationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


async def _db(args: argparse.Namespace, settings: Settings) -> int:
    from storage.cli import backup, migrate, restore
    from storage.db import DatabaseError

    try:
        if args.db_command == "migrate":
            version = await migrate(settings.database.path)
            print(f"{settings.database.path}: schema version {version}")
            return 0
        if args.db_command == "restore":
            done = await restore(args.path, settings.database.path)
            kept = f"; the previous file is {done.previous}" if done.previous else ""
            print(
                f"restored {settings.database.path} from {args.path} (schema version {done.schema_version}){kept}"
            )
            return 0
        await backup(settings.database.path, args.path)
    except DatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    target = args.path / settings.database.path.name if args.path.is_dir() else args.path
    print(f"backed up {settings.database.path} to {target}")
    return 0


# --- making images from the terminal, through the same job service as Discord users ---


@asynccontextmanager
async def worker_for(settings: Settings) -> AsyncIterator[str]:
    """The worker's URL: the configured one if it answers, else one started in this process.

    Starting one here lets `run.py imagine` work on a fresh machine with nothing else running; it
    listens on a free loopback port so it never collides with a real worker.
    """
    from inference.client import WorkerClient

    async with WorkerClient(settings.resolved_worker_url, token=settings.resolved_worker_token) as probe:
        if await probe.health():
            yield settings.resolved_worker_url
            return
    if settings.worker_url:
        raise SettingsError(f"the worker at {settings.worker_url} is not answering")
    from inference.models import load_engine
    from inference.server import start_worker

    log.info("no worker running; loading the model in this process")
    engine = await asyncio.to_thread(load_engine, settings.engine)
    running = await start_worker(settings.worker.model_copy(update={"host": "127.0.0.1", "port": 0}), engine)
    try:
        yield running.url
    finally:
        await running.stop()


async def _local_job(args: argparse.Namespace, settings: Settings, crash: CrashPoint) -> int:
    try:
        image = _check_first(args, settings)
    except (terminal.ArgumentError, BrushfireError) as exc:
        print(f"error: {terminal.plain(str(exc))}", file=sys.stderr)
        return 2
    owner = ProcessOwner.current("cli")
    code = 0
    try:
        async with (
            worker_for(settings) as url,
            open_services(settings, url, owner=owner, crash=crash) as services,
        ):
            jobs = services.jobs
            # First what an earlier `run.py imagine/edit` left when it was killed: follow or refund.
            await jobs.reconcile(_report_earlier(jobs), kinds=frozenset({"cli"}))
            outcome = await _run_local(args, services, image)
            with job_context(outcome.job.job_id):
                if outcome.ok:
                    crash.reached("delivery")
                    code = _deliver(outcome, args.output, settings.database.path.parent / "outputs")
                await jobs.mark_delivered(outcome.job.job_id)
    except (BrushfireError, SettingsError) as exc:
        print(f"error: {terminal.plain(str(exc))}", file=sys.stderr)
        return 1
    except EngineError as exc:
        print(f"error: the model could not be loaded: {exc}", file=sys.stderr)
        return 1
    if not outcome.ok:
        print(f"error: {terminal.plain(str(outcome.message))}", file=sys.stderr)
        return 1
    return code


def _check_first(args: argparse.Namespace, settings: Settings) -> bytes | None:
    """Everything about the arguments that can be checked without a model, checked before one loads:
    the options as the planner will see them, the input image, and that the output can be written.

    The job is planned again once the worker has said which model it serves (its sizes and edit mode);
    this is the same planner on the settings' own view of that model. Returns the input image's bytes.
    """
    planner = Planner(settings, StyleBook(settings.styles, settings.aspects))
    if not settings.worker_url:  # the worker this machine runs: its model is the one the settings name
        engine = settings.engine
        has_edit_model = engine.edit_model is not None or engine.model is None
        main, *_ = models = engine.served_models
        info = WorkerInfo(model=main, defaults=engine.defaults, has_edit_model=has_edit_model, models=models)
        planner.adopt_worker_defaults(info)
    image = terminal.read_input(args.image) if args.command == "edit" else None
    plan = _plan(args, planner, GuildSettings(guild_id=LOCAL_USER.guild_id), image)
    terminal.check_output(args.output, plan.count)
    return image


def _plan(args: argparse.Namespace, planner: Planner, guild: GuildSettings, image: bytes | None) -> JobPlan:
    """The job `run.py imagine/edit` asks for, planned as the local user's (refusals raise); the output
    file's name picks the format the worker encodes (`.webp`, `.jpg`, anything else PNG)."""
    guild = dataclasses.replace(guild, output_format=terminal.format_for(args.output))
    lane = parse_lane(args.lane)
    if args.command == "imagine":
        options = ImagineOptions(
            prompt=args.prompt,
            style=args.style,
            negative=args.negative,
            aspect=args.aspect,
            count=args.count,
            seed=args.seed,
            lane=lane,
            controls=Controls(
                steps=args.steps,
                guidance=args.guidance,
                width=args.width,
                height=args.height,
                sampler=args.sampler,
                model=args.model,
            ),
        )
        return planner.plan_imagine(LOCAL_USER, options, guild)
    assert image is not None
    return planner.plan_edit(
        LOCAL_USER,
        image=image,
        instruction=args.instruction,
        strength=args.strength,
        guild=guild,
        lane=lane,
        seed=args.seed,
    )


def _report_earlier(jobs: JobService) -> Callable[[JobOutcome], Awaitable[None]]:
    """How the command line hands over an earlier run's job: a line on stderr (its images, if any, are
    in the database), then it counts as delivered."""

    async def report(outcome: JobOutcome) -> None:
        what = (
            "finished; its images are in the database"
            if outcome.ok
            else f"refunded ({terminal.plain(str(outcome.message))})"
        )
        print(f"job {outcome.job.job_id} from an earlier run that was stopped: {what}", file=sys.stderr)
        await jobs.mark_delivered(outcome.job.job_id)

    return report


async def _run_local(args: argparse.Namespace, services: Services, image: bytes | None) -> JobOutcome:
    jobs = services.jobs
    await jobs.worker.learn_model()  # a worker elsewhere may serve another model than the settings here name
    plan = _plan(args, jobs.planner, await services.guilds.settings(LOCAL_USER.guild_id), image)
    ticket = await jobs.start(LOCAL_USER, plan)
    with job_context(ticket.job.job_id):
        note = " (out of fast credits: relax lane)" if ticket.fell_back_to_relax else ""
        size = terminal.size_note(
            plan, jobs.planner.native_size(), args.aspect if args.command == "imagine" else None
        )
        print(
            f"job {ticket.job.job_id}: {ticket.cost} credit(s), {ticket.lane.value} lane{note}{size}",
            file=sys.stderr,
        )
        bar = terminal.TerminalBar(sys.stderr)
        updater = ProgressUpdater(bar, interval_s=0.1)
        updater.start()
        unhook = _cancel_on_interrupt(jobs, ticket.job.job_id)
        try:
            outcome = await jobs.follow(ticket.job, updater.update)
        finally:
            unhook()
            await updater.close(flush=True)
            bar.finish()
    status = await jobs.quota_status(LOCAL_USER)
    print(f"{status.remaining} of {status.limit} credits left", file=sys.stderr)
    return outcome


def _cancel_on_interrupt(jobs: JobService, job_id: JobId) -> Callable[[], None]:
    """Ctrl-C cancels the job at the worker (and so refunds it) instead of leaving it running."""
    loop = asyncio.get_running_loop()
    pending: set[asyncio.Task[object]] = set()

    def cancel() -> None:
        print("\ncancelling…", file=sys.stderr)
        task = loop.create_task(jobs.cancel(job_id, LOCAL_USER))
        pending.add(task)
        task.add_done_callback(pending.discard)

    def unhook() -> None:
        loop.remove_signal_handler(signal.SIGINT)

    try:
        loop.add_signal_handler(signal.SIGINT, cancel)
    except (NotImplementedError, RuntimeError):  # not the main thread, or no signals on this platform
        return lambda: None
    return unhook


def _deliver(outcome: JobOutcome, output: Path, keep_dir: Path) -> int:
    """Write the images and print their paths. If they cannot be written where asked (the folder went
    away, the disk filled), they are written to `keep_dir` instead and the command fails, saying where:
    the job is paid for, so its result is never lost (it is in the database too)."""
    gens = sorted(outcome.generations, key=lambda g: g.index)
    try:
        paths = terminal.write_images(output, [g.image for g in gens])  # in the format its name asked for
    except OSError as exc:
        images = [g.image for g in gens]
        kept = terminal.write_images(keep_dir / f"{outcome.job.job_id}.{extension(images[0])}", images)
        print(f"error: cannot write {output}: {exc.strerror or exc}; the result is kept at:", file=sys.stderr)
        for path in kept:
            print(path)
        return 1
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
