"""Run a writer process that prints ``ready <index>`` and then ``ack <index>``
per durable write, read acknowledgements against a deadline, SIGKILL it by
its pid: the kill -9 tests of the log store and of the apply step share it."""

from __future__ import annotations

import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest


def run_and_kill(argv: list[str], acks_wanted: int, log_path: Path, deadline_s: float, *, first_follows_ready: bool) -> tuple[int, int]:
    """Start argv, read until acks_wanted acknowledgements (or the deadline),
    SIGKILL it. Acks must be consecutive; with first_follows_ready the first
    one must be the index after `ready`'s. Returns (the index it started
    from, the highest acked index)."""
    with open(log_path, "ab") as stderr:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=stderr)
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(b"")  # EOF

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + deadline_s
    start = acked = -1
    acks = 0
    try:
        while acks < acks_wanted:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                pytest.fail(f"writer acknowledged only {acks} writes in {deadline_s} s; stderr in {log_path}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if not line:
                pytest.fail(f"writer exited early (rc={proc.wait()}); stderr:\n{log_path.read_text()}")
            word, value = line.split()
            if word == b"ready":
                start = int(value)
            else:
                assert word == b"ack", line
                if acked != -1:
                    assert int(value) == acked + 1, line
                elif first_follows_ready:
                    assert int(value) == start + 1, line
                acked = int(value)
                acks += 1
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=deadline_s)
        reader.join(timeout=deadline_s)
        assert proc.stdout is not None
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return start, acked
