"""A store's data directory written with the pre-#17 revision encoding
(unix_ms << 16) is refused at start, with a message naming the change and
what to do, before the node serves anything (issue #17; shard/keys.py,
STATE_VERSION)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from flotilla.procs import child_env, flotilla_argv
from raft.storage import open_db
from shard import keys
from shard.rocks import RocksEngine
from shard.statemachine import ShardStateMachine
from shard.types import PutRequest
from tests.unit.shard.conftest import ShardHarness

OLD_REV = 1_767_225_600_000 << 16  # 2026-01-01 as the previous build encoded it


def write_pre_17_shard(data_dir: Path, shard_id: int = 1) -> None:
    """The data the previous build left: a shard with a key at an old-encoding
    revision, and its STATE record at version 1."""
    db = open_db(data_dir / "db")
    try:
        engine = RocksEngine(db)
        shard = ShardHarness(engine, ShardStateMachine(engine, shard_id, 16, ((0, 16),)))
        assert shard.apply(PutRequest(b"k", b"v"), stamp=OLD_REV).revision == OLD_REV
        raw = engine.get(keys.state_key(shard_id))
        assert raw is not None
        wb = engine.new_batch()
        wb.put(keys.state_key(shard_id), bytes([keys.STATE_VERSION_PRE_17]) + raw[1:])
        engine.write(wb)
    finally:
        db.close()


def test_store_refuses_a_data_directory_of_the_old_encoding(tmp_path: Path) -> None:
    data_dir = tmp_path / "n1"
    write_pre_17_shard(data_dir)
    argv = flotilla_argv(
        "server", "--store", "--node-id", "1", "--data-dir", str(data_dir), "--listen", "127.0.0.1:0",
        "--shards", "1", "--slots", "16", "--voters", "1",
    )
    done = subprocess.run(argv, cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"flotilla server: node 1: data directory {data_dir}: ")
    assert "pre-#17 revision encoding (unix_ms << 16" in last and "new data directory" in last
    assert "Traceback" not in done.stderr
