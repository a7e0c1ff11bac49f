"""Shared test setup: no network, ever, and small thread pools so tests run side by side on 2 cores."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# --- the strict fake Discord's report: every end-to-end request checked, nobody pinged by accident ---

import pytest

from tests.fakediscord.strict import LEDGER, StrictStats

END_TO_END = "tests/bot/"  # the bot's end-to-end suite; the fake's own tests break limits on purpose
MIN_VALIDATED = 1000  # a full run of the suite sends far more; fewer means the checks stopped running


def _end_to_end() -> tuple[StrictStats, int]:
    total, tests = StrictStats(), set()
    for nodeid, stats in LEDGER:
        if not nodeid.startswith(END_TO_END):
            continue
        tests.add(nodeid)
        total.requests += stats.requests
        total.bodies += stats.bodies
        total.pings += stats.pings
        for name in ("schema_failures", "refusals", "undocumented", "stray_pings"):
            getattr(total, name).extend(f"{nodeid}: {line}" for line in getattr(stats, name))
    return total, len(tests)


def _whole_suite(config: pytest.Config) -> bool:
    return config.args_source is pytest.Config.ArgsSource.TESTPATHS and not config.option.keyword


def strict_fake_problems(config: pytest.Config) -> list[str]:
    total, tests = _end_to_end()
    problems = [*total.schema_failures, *total.refusals, *total.undocumented, *total.stray_pings]
    if tests and _whole_suite(config) and total.requests < MIN_VALIDATED:
        problems.append(f"only {total.requests} requests were validated (a full run needs {MIN_VALIDATED})")
    return problems


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    total, tests = _end_to_end()
    if not tests:
        return
    terminalreporter.write_sep("-", "strict fake Discord")
    terminalreporter.write_line(
        f"{tests} end-to-end tests: {total.requests} requests validated against Discord's API description "
        f"({total.bodies} bodies against their schema); {len(total.schema_failures)} failed validation, "
        f"{len(total.refusals)} broke a limit, {len(total.undocumented)} undocumented routes; "
        f"{total.pings} pings, {len(total.stray_pings)} to anyone but a job's author"
    )
    for line in strict_fake_problems(config)[:20]:
        terminalreporter.write_line(f"  STRICT FAKE: {line}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if strict_fake_problems(session.config) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
