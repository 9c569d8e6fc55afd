#!/usr/bin/env bash
# The one command that installs Flotilla and runs its whole test suite:
#
#     bash scripts/test.sh [pytest arguments...]
#
# Works from any directory and on a fresh Debian machine with python3.11
# (and python3-venv). Idempotent: the virtualenv (.venv/, gitignored) is
# created once and the editable install is redone only when pyproject.toml
# changes. Arguments are passed to pytest, e.g. `-m slow`, `-k election`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

python="${PYTHON:-python3}"
venv="$repo_root/.venv"

# --- system packages ----------------------------------------------------------
# Later issues add what the tests need from Debian here, for example
#     apt-get install -y --no-install-recommends etcd-client
# (guarded so that the script still runs where apt-get is absent or the
# packages are already present).
install_system_packages() {
    # etcdctl for tests/compat/test_etcdctl.py: only when it is missing, apt-get
    # exists and we are root. Non-fatal: without it those tests skip, saying why.
    if ! command -v etcdctl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-client >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-client >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install etcd-client; the etcdctl compat tests will skip" >&2
    fi
}
install_system_packages

# --- virtualenv ----------------------------------------------------------------
if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "scripts/test.sh: $python is older than 3.11; set PYTHON=python3.11" >&2
        exit 1
    fi
    "$python" -m venv "$venv" || {
        echo "scripts/test.sh: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi

# --- install (editable, with the test extra) -------------------------------------
stamp="$venv/.flotilla-installed"
want="$("$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())' <pyproject.toml)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[test]'
    echo "$want" >"$stamp"
fi

exec "$venv/bin/python" -m pytest "$@"
