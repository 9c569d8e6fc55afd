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
    # etcd (Debian's etcd-server) for the `etcdctl make-mirror` compat test, which mirrors Flotilla into a
    # local etcd: same guard (the test skips, saying why, without /usr/bin/etcd).
    if [[ ! -x /usr/bin/etcd ]] && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install etcd-server; the make-mirror compat test will skip" >&2
    fi
    # iproute2 (`ip netns`, `tc`) for tests/integration/test_netns_cluster.py (a cluster across network
    # namespaces, -m slow): same guard (without `ip` those tests skip, saying why).
    if ! command -v ip >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iproute2 >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install iproute2; the network-namespace tests will skip" >&2
    fi
    # chromium (headless) for tests/integration/test_dashboard.py, which looks at the placement servers'
    # web dashboard as a person would: same guard (without it that test skips, saying why).
    if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1 \
            || { apt-get update >/dev/null 2>&1 \
                 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium >/dev/null 2>&1; } \
            || echo "scripts/test.sh: could not install chromium; the dashboard browser test will skip" >&2
    fi
}
install_system_packages

# --- npm packages -------------------------------------------------------------
# The Node etcd3 client for tests/compat/test_node_etcd3.py, pinned by
# tests/compat/node/package-lock.json: `npm ci` when node and npm exist and it
# is not installed yet. Non-fatal: without it that test skips, saying why.
install_npm_packages() {
    local dir="$repo_root/tests/compat/node"
    if [[ ! -d "$dir/node_modules" ]] && command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
        (cd "$dir" && npm ci --no-audit --no-fund >/dev/null 2>&1) \
            || echo "scripts/test.sh: npm ci in tests/compat/node failed; the Node etcd3 compat test will skip" >&2
    fi
}
install_npm_packages

# --- virtualenv and editable install (shared with playground.sh) -----------------
# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"

exec "$venv/bin/python" -m pytest "$@"
