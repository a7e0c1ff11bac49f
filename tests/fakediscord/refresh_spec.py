"""Refresh the vendored Discord OpenAPI description (spec/openapi.json) and record the commit it came from.

    python -m tests.fakediscord.refresh_spec                 # newest commit on discord/discord-api-spec main
    python -m tests.fakediscord.refresh_spec --commit SHA    # a named commit
    python -m tests.fakediscord.refresh_spec --checkout DIR  # a local clone (its HEAD, or --commit)

Needs the network (or a clone); tests never do. Review the diff, run the end-to-end suite, and look at
`DOCS_OVER_SPEC` in schema.py when the new spec refuses something Discord's docs allow.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

from tests.fakediscord.schema import SPEC_DIR, SPEC_FILE

log = logging.getLogger(__name__)

REPO = "discord/discord-api-spec"
PATH = "specs/openapi.json"


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def from_github(commit: str | None) -> tuple[str, bytes]:
    if commit is None:
        info = json.loads(_get(f"https://api.github.com/repos/{REPO}/commits/main"))
        commit = str(info["sha"])
    return commit, _get(f"https://raw.githubusercontent.com/{REPO}/{commit}/{PATH}")


def from_checkout(checkout: Path, commit: str | None) -> tuple[str, bytes]:
    def git(*args: str) -> bytes:
        return subprocess.run(["git", "-C", str(checkout), *args], check=True, capture_output=True).stdout

    sha = git("rev-parse", commit or "HEAD").decode().strip()
    return sha, git("show", f"{sha}:{PATH}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commit", help="a commit of discord/discord-api-spec (default: main's newest)")
    parser.add_argument("--checkout", type=Path, help="read from this local clone instead of GitHub")
    args = parser.parse_args(argv)
    sha, data = from_checkout(args.checkout, args.commit) if args.checkout else from_github(args.commit)
    spec = json.loads(data)  # refuse anything that is not JSON before replacing the vendored copy
    SPEC_FILE.write_bytes(data)
    today = datetime.now(UTC).date().isoformat()
    (SPEC_DIR / "COMMIT").write_text(f"{sha} {REPO} {PATH} (OpenAPI {spec['openapi']}, fetched {today})\n")
    print(f"vendored {REPO}@{sha}: {len(spec['paths'])} paths")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
