#!/usr/bin/env bash
# Try Flotilla with one command:
#
#     bash scripts/playground.sh [arguments for `flotilla playground`...]
#
# Installs into the same virtualenv as scripts/test.sh (.venv/) and runs
# `flotilla playground`: a whole local cluster on 127.0.0.1 (3 placement
# servers, 3 store nodes, an etcd router on port 2379, data and logs in
# ./flotilla-data). It prints `ready` once etcdctl can talk to it; Ctrl-C
# stops it; run it again to restart the same cluster with its data.
# `bash scripts/playground.sh --help` lists the options.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python="${PYTHON:-python3}"
venv="$repo_root/.venv"

if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "scripts/playground.sh: $python is older than 3.11; set PYTHON=python3.11" >&2
        exit 1
    fi
    "$python" -m venv "$venv" || {
        echo "scripts/playground.sh: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi

stamp="$venv/.flotilla-installed"
want="$("$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())' <pyproject.toml)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
fi

exec "$venv/bin/flotilla" playground "$@"
