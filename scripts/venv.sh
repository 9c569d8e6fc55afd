# Sourced by scripts/test.sh and scripts/playground.sh: make sure .venv/
# exists and holds an up-to-date editable install of Flotilla with its test
# extra. Expects $repo_root; sets $venv.
#
# The editable install maps each top-level package to its directory when it
# is made, so it is redone when pyproject.toml changes or a top-level package
# is added or removed (the stamp hashes both).

python="${PYTHON:-python3}"
venv="$repo_root/.venv"

if [[ ! -x "$venv/bin/python" ]]; then
    if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "flotilla: $python is older than 3.11; set PYTHON=python3.11" >&2
        exit 1
    fi
    "$python" -m venv "$venv" || {
        echo "flotilla: '$python -m venv' failed (on Debian: apt-get install python3-venv)" >&2
        exit 1
    }
fi

stamp="$venv/.flotilla-installed"
want="$(cd "$repo_root" && { cat pyproject.toml; ls -d -- */__init__.py 2>/dev/null; } | "$venv/bin/python" -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$repo_root[test]"
    echo "$want" >"$stamp"
fi
