#!/bin/sh
# Container entrypoint: read Docker secrets into the environment variables brushfire already knows, then run
# `python run.py` with the container's arguments (the same entry point as outside a container).
#
#   /run/secrets/discord_token -> DISCORD_TOKEN
#   /run/secrets/worker_token  -> BRUSHFIRE_WORKER__TOKEN and BRUSHFIRE_WORKER_TOKEN (the worker's bearer
#                                 token, and the one the bot sends to it)
# A variable already set in the environment wins over a secret file.
set -eu

secrets_dir="${BRUSHFIRE_SECRETS_DIR:-/run/secrets}"

read_secret() {
    # $1: file name under the secrets folder. Prints its content without a trailing newline.
    if [ -r "$secrets_dir/$1" ]; then
        tr -d '\r\n' < "$secrets_dir/$1"
    fi
}

if [ -z "${DISCORD_TOKEN:-}" ]; then
    value="$(read_secret discord_token)"
    if [ -n "$value" ]; then export DISCORD_TOKEN="$value"; fi
fi
worker_token="$(read_secret worker_token)"
if [ -n "$worker_token" ]; then
    if [ -z "${BRUSHFIRE_WORKER__TOKEN:-}" ]; then export BRUSHFIRE_WORKER__TOKEN="$worker_token"; fi
    if [ -z "${BRUSHFIRE_WORKER_TOKEN:-}" ]; then export BRUSHFIRE_WORKER_TOKEN="$worker_token"; fi
fi

cd "${BRUSHFIRE_APP_DIR:-/app}"
exec "${BRUSHFIRE_PYTHON:-python}" run.py "$@"
