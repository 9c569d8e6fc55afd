#!/usr/bin/env bash
# The one command that installs Flotilla and runs its whole test suite:
#
#     bash scripts/test.sh [pytest arguments...]
#
# Works from any directory and on a fresh Debian machine with python3.11
# (and python3-venv). Idempotent: the virtualenv (.venv/, gitignored) is
# created once and the editable install is redone only when pyproject.toml
# changes or a top-level package appears (scripts/venv.sh). Arguments are
# passed to pytest, e.g. `-m slow`, `-k election`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

# --- system packages ----------------------------------------------------------
# What the tests need from Debian, each guarded so that the script still runs
# where apt-get is absent or the package is already present.
install_system_packages() {
    # etcdctl for tests/compat/test_etcdctl.py: only when it is missing, apt-get
    # exists and we are root. Non-fatal: without it those tests skip, saying why.
    if ! command -v etcdctl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-client >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-client >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install etcd-client; the etcdctl compat tests will skip" >&2
    fi
    # curl for tests/integration/test_gateway.py (etcd's HTTP/JSON gateway, driven as etcd's docs drive it): same guard.
    if ! command -v curl >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends curl >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install curl; the gateway integration tests will skip" >&2
    fi
}
install_system_packages

# --- virtualenv and editable install (shared with playground.sh) -----------------
# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"

exec "$venv/bin/python" -m pytest "$@"
