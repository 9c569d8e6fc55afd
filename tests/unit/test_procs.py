"""flotilla/procs.py: the waits and child processes every harness shares,
and the ready file / signal loop of the process mains. The children here
are tiny `python -c` programs; each test ends only the pids it started."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from flotilla import cluster, placementcluster, raftcluster, router_main, storecluster
from flotilla.procs import (
    ManagedProcess,
    ProcessExited,
    ProcessGroup,
    announce_ready,
    log_tail,
    parse_id_addresses,
    serve_until_signalled,
    stop_all,
    wait_until,
    write_ready_file,
)

# Writes its ready file (port 4242, its pid), says so, then waits for a signal.
# SIGTERM ends it with 0 unless it was asked to ignore SIGTERM (argv[2] == "stubborn").
CHILD = """
import json, os, signal, sys
if sys.argv[2:] == ["stubborn"]:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
else:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
print("child up", flush=True)
tmp = sys.argv[1] + ".tmp"
with open(tmp, "w") as f:
    json.dump({"port": 4242, "pid": os.getpid()}, f)
os.replace(tmp, sys.argv[1])
while True:
    signal.pause()
"""


def child(tmp_path: Path, name: str = "child") -> ManagedProcess:
    return ManagedProcess(log_path=tmp_path / f"{name}.log", name=name)


def start(p: ManagedProcess, tmp_path: Path, *extra: str) -> None:
    p.spawn([sys.executable, "-c", CHILD, str(p.ready_file), *extra], cwd=tmp_path)


# -- wait_until ---------------------------------------------------------------------------


def test_wait_until_returns_the_first_truthy_value() -> None:
    values = iter([None, 0, [], {"port": 1}])
    assert wait_until(lambda: next(values), timeout=5, what="a value", interval=0) == {"port": 1}


def test_wait_until_fails_with_the_last_observation() -> None:
    seen = iter(range(1_000_000))

    def answer() -> None:
        raise LookupError(f"attempt {next(seen)}")

    with pytest.raises(AssertionError, match=r"waiting for the answer; last observed: LookupError\('attempt \d+'\)"):
        wait_until(answer, timeout=0.05, what="the answer", interval=0.01)


def test_wait_until_reports_the_last_falsy_value() -> None:
    with pytest.raises(AssertionError, match="waiting for nothing; last observed: 0"):
        wait_until(lambda: 0, timeout=0.02, what="nothing", interval=0.01)


def test_wait_until_fails_at_once_on_a_process_exit() -> None:
    calls = []

    def exited() -> None:
        calls.append(1)
        raise ProcessExited("gone")

    with pytest.raises(ProcessExited, match="gone"):
        wait_until(exited, timeout=60, what="a dead child")
    assert calls == [1]


# -- ManagedProcess -----------------------------------------------------------------------


def test_spawn_reports_port_and_stops_with_sigterm(tmp_path: Path) -> None:
    p = child(tmp_path)
    assert p.ready_file == tmp_path / "child.ready"
    start(p, tmp_path)
    try:
        info = p.await_ready(timeout=30)
        assert p.port == 4242 and p.address == "127.0.0.1:4242"
        assert p.proc is not None and info["pid"] == p.proc.pid
        assert p.alive
        wait_until(lambda: "child up" in p.log_tail(), timeout=10, what="the child's output in its log")
    finally:
        p.stop()
    assert not p.alive and p.returncode == 0


def test_stop_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    p = child(tmp_path)
    start(p, tmp_path, "stubborn")
    p.await_ready(timeout=30)
    p.stop(timeout=0.5)
    assert p.returncode == -signal.SIGKILL


def test_kill_and_pause_by_pid(tmp_path: Path) -> None:
    p = child(tmp_path)
    start(p, tmp_path)
    try:
        p.await_ready(timeout=30)
        p.send_signal(signal.SIGSTOP)
        p.send_signal(signal.SIGCONT)
        assert p.alive
        p.kill()
        assert p.returncode == -signal.SIGKILL
    finally:
        p.stop()


def test_await_ready_fails_at_once_when_the_child_exits(tmp_path: Path) -> None:
    p = child(tmp_path)
    p.spawn([sys.executable, "-c", "import sys; print('bad flag'); sys.exit(3)"], cwd=tmp_path)
    with pytest.raises(ProcessExited, match=r"(?s)child exited with 3:.*bad flag"):
        p.await_ready(timeout=60)


def test_spawn_removes_a_stale_ready_file_and_passes_env(tmp_path: Path) -> None:
    p = child(tmp_path)
    assert p.ready_file is not None
    p.ready_file.write_text(json.dumps({"port": 1}))
    code = "import json, os, sys; json.dump({'port': int(os.environ['PORT_FOR_TEST'])}, open(sys.argv[1], 'w'))"
    p.spawn([sys.executable, "-c", code, str(p.ready_file)], cwd=tmp_path, env={"PORT_FOR_TEST": "77"})
    assert p.proc is not None
    p.proc.wait(timeout=30)
    assert json.loads(p.ready_file.read_text()) == {"port": 77}


def test_process_group_stops_every_member(tmp_path: Path) -> None:
    group = ProcessGroup()
    group.nodes = {1: child(tmp_path, "a"), 2: child(tmp_path, "b")}
    for p in group.nodes.values():
        start(p, tmp_path)
    try:
        for p in group.nodes.values():
            p.await_ready(timeout=30)
        assert group.live() == [1, 2]
        group.kill(1)
        assert group.live() == [2]
    finally:
        group.stop()
    assert group.live() == []
    stop_all(group.nodes.values())  # stopping twice is harmless


def test_log_tail(tmp_path: Path) -> None:
    assert log_tail(tmp_path / "missing.log") == ""
    (tmp_path / "x.log").write_text("".join(f"line {i}\n" for i in range(100)))
    assert log_tail(tmp_path / "x.log", 2) == "line 98\nline 99"


# -- the process mains --------------------------------------------------------------------


def test_write_ready_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "r.ready"
    write_ready_file(None, {"port": 1})  # no --ready-file: nothing to do
    announce_ready(str(path), {"port": 5, "pid": 9}, "ready port=5")
    assert json.loads(path.read_text()) == {"port": 5, "pid": 9}
    assert not Path(str(path) + ".tmp").exists()
    assert capsys.readouterr().out == "ready port=5\n"


def test_parse_id_addresses() -> None:
    assert parse_id_addresses(" 1=a:1, 2=b:2,", complaint="bad") == {1: "a:1", 2: "b:2"}
    with pytest.raises(SystemExit, match="bad, got 'x:1'"):
        parse_id_addresses("x:1", complaint="bad")


def test_serve_until_signalled_stops_on_sigterm() -> None:
    order: list[str] = []

    async def run() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append("cancelled")

    async def before_cancel() -> None:
        order.append("before_cancel")

    async def main() -> None:
        asyncio.get_running_loop().call_soon(os.kill, os.getpid(), signal.SIGTERM)
        await serve_until_signalled(run(), before_cancel=before_cancel)

    asyncio.run(main())
    assert order == ["before_cancel", "cancelled"]


def test_serve_until_signalled_reraises_what_ended_the_run() -> None:
    async def run() -> None:
        raise RuntimeError("host failed")

    with pytest.raises(RuntimeError, match="host failed"):
        asyncio.run(serve_until_signalled(run()))


# -- the harnesses keep their names -------------------------------------------------------


def test_harness_names_stay_importable() -> None:
    assert raftcluster.wait_until is wait_until
    for mod in (storecluster, placementcluster, cluster):
        assert mod.wait_until is wait_until
    assert isinstance(raftcluster.REPO, Path)
    for cls in (raftcluster.RaftNodeProc, storecluster.StoreNodeProc, placementcluster.PlacementProc, router_main.RouterProcess):
        assert issubclass(cls, ManagedProcess)
    for cls in (raftcluster.RaftCluster, storecluster.StoreCluster, placementcluster.PlacementCluster, cluster.Cluster):
        assert callable(cls)
    r = router_main.RouterProcess(Path("/nonexistent"), ["--static-shards", "1"], name="r1")
    assert r.log_path == Path("/nonexistent/r1.log") and r.proc is None and r.port == 0


def test_crash_hook_ends_the_process_at_the_nth_passage() -> None:
    import subprocess
    import sys

    from flotilla import procs

    assert procs.crash_hook_from_env() is None or "FLOTILLA_CRASH_AT" in __import__("os").environ
    code = (
        "from flotilla import procs\n"
        "hook = procs.crash_hook_from_env()\n"
        "for i in range(5):\n"
        "    hook('after_apply'); hook('after_persist'); print('passed', i, flush=True)\n"
    )
    env = {**__import__("os").environ, "FLOTILLA_CRASH_AT": "after_persist:3"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 137
    assert out.stdout.split("\n")[:-1] == ["passed 0", "passed 1"]
    assert "exiting at after_persist" in out.stderr


def test_tune_gc_freezes_what_start_up_made_and_raises_the_young_threshold() -> None:
    """Run in a child, so this test process keeps CPython's defaults."""
    code = (
        "import gc, json\n"
        "from flotilla.procs import GC_GEN0_THRESHOLD, tune_gc\n"
        "kept = [[i] for i in range(1000)]\n"
        "before = gc.get_threshold()\n"
        "tune_gc()\n"
        "print(json.dumps({'before': before, 'after': gc.get_threshold(), 'frozen': gc.get_freeze_count(), 'gen0': GC_GEN0_THRESHOLD}))\n"
    )
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout)
    assert out["after"] == [out["gen0"], out["before"][1], out["before"][2]]
    assert out["gen0"] > out["before"][0]
    assert out["frozen"] >= 1000  # the start-up objects (and the 1,000 lists) are in the permanent generation
