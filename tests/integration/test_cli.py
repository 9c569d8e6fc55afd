"""The `flotilla` command, run as a real process."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flotilla", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_help() -> None:
    proc = _run("--help")
    assert proc.returncode == 0, proc.stderr
    assert "demo" in proc.stdout


def test_demo_elects_replicates_and_survives_losing_the_leader() -> None:
    proc = _run("demo", "--seed", "1")
    out = proc.stdout
    assert proc.returncode == 0, f"stdout:\n{out}\nstderr:\n{proc.stderr}"
    lines = out.splitlines()

    assert "committed on nodes 1, 2, 3: x=1 x=2 x=3" in lines, out

    stop_line = next(i for i, ln in enumerate(lines) if re.fullmatch(r"node \d stopped: no messages to or from it", ln))
    stopped = int(lines[stop_line].split()[1])
    leader_re = re.compile(r"term \d+: node (\d) became leader")
    before = [int(m.group(1)) for ln in lines[:stop_line] if (m := leader_re.fullmatch(ln))]
    after = [int(m.group(1)) for ln in lines[stop_line:] if (m := leader_re.fullmatch(ln))]
    assert before and before[-1] == stopped, f"the stopped node was not the leader:\n{out}"
    assert any(n != stopped for n in after), f"no second leader elected:\n{out}"

    survivors = ", ".join(str(n) for n in (1, 2, 3) if n != stopped)
    assert f"committed on nodes {survivors}: y=4 y=5" in lines, out

    for n in (1, 2, 3):
        assert f"  node {n}: x=1 x=2 x=3 y=4 y=5" in lines, out
    assert lines[-1] == "all 3 nodes applied the same 5 entries", out
