"""rpc/polling.py: a server process asks gRPC for the poller-thread I/O before gRPC starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rpc import polling

REPO_ROOT = Path(__file__).resolve().parents[2]


def _fresh_python(code: str, env: dict[str, str]) -> str:
    """Run code in a new interpreter (no grpc imported yet); return its stdout."""
    env = {**env, "PYTHONPATH": str(REPO_ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


def _env_without_experiments() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "GRPC_EXPERIMENTS"}


def test_a_server_command_sets_the_experiments_before_grpc_is_imported() -> None:
    code = (
        "import os, sys\n"
        "from flotilla import cli\n"
        "assert 'grpc' not in sys.modules\n"
        "try:\n"
        "    cli.main(['-v', 'server', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'grpc' in sys.modules\n"
        "print(os.environ.get('GRPC_EXPERIMENTS'))\n"
    )
    assert _fresh_python(code, _env_without_experiments()).splitlines()[-1] == polling.SERVER_EXPERIMENTS


def test_a_client_command_keeps_grpc_defaults() -> None:
    code = (
        "import os\n"
        "from flotilla import cli\n"
        "try:\n"
        "    cli.main(['bench', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(os.environ.get('GRPC_EXPERIMENTS'))\n"
    )
    assert _fresh_python(code, _env_without_experiments()).splitlines()[-1] == "None"


def test_the_users_choice_is_kept() -> None:
    env = {"GRPC_EXPERIMENTS": "event_engine_client"}
    assert not polling.use_server_polling(env)
    assert env == {"GRPC_EXPERIMENTS": "event_engine_client"}


def test_nothing_changes_once_grpc_is_imported() -> None:
    import grpc  # noqa: F401  (this process has it already; the variable would come too late)

    env: dict[str, str] = {}
    assert not polling.use_server_polling(env)
    assert env == {}
