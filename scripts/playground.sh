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

# shellcheck source=scripts/venv.sh
source "$repo_root/scripts/venv.sh"

exec "$venv/bin/flotilla" playground "$@"
