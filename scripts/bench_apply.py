"""Micro benchmark of the store's apply step for puts: CPU microseconds per put.

Applies N put commands through the real ``ShardStateMachine`` on a real
RocksDB (rocksdict, opened as the store opens it: ``raft.storage.rocks.open_db``)
in a temporary directory, the way the store's ready loop applies committed
entries: per round, a fresh RocksDB WriteBatch, ``sm.apply(entries, wb)``,
``sm.on_applied_index(last, wb)``, then ``db.write(wb)`` (unsynced; the
runtime syncs the log store, not the apply batch). Each command is what
shard/node/writes.py proposes: a router id and seq (so the dedup window is
kept), an HLC stamp, a piggybacked closed timestamp.

The keys are drawn uniformly (seeded) from a key space of ``--keys`` keys, on
an empty shard: early puts create keys, later ones mostly update them. With
``--preload M`` the shard first gets M puts of other keys (untimed), flushed
to SST files, and is reopened (a restart) before the timed puts; with
``--warmup W``, W puts of the timed key space are applied (untimed) first.
Right after a restart the store's key index (shard/keyindex.py) loads each
slot on its first write, one seek per key in it: ``--preload`` alone
charges that to the timed puts, ``--warmup`` measures after it.
Encoding the commands happens before the clock starts; what is timed is
decode + apply + the batch write, as ``time.process_time`` (CPU of this
process, all threads: RocksDB's background flushes are counted too, which is
why the figure is CPU and not wall time on a shared machine).

Usage (from the repository root)::

    .venv/bin/python scripts/bench_apply.py                 # 20,000 puts, 10,000 keys, 8 entries a round
    .venv/bin/python scripts/bench_apply.py -n 50000 --keys 50000 --batch 1
    .venv/bin/python scripts/bench_apply.py --preload 200000  # on a DB holding 200,000 other keys in SST files
    .venv/bin/python scripts/bench_apply.py --preload 200000 --warmup 20000
    .venv/bin/python scripts/bench_apply.py --profile       # cProfile top 25 of the timed part

To compare with another checkout, run this file with that checkout first on
the path: ``PYTHONPATH=/tmp/wt-old .venv/bin/python scripts/bench_apply.py``.
It prints one line: puts, rounds, CPU seconds, µs of CPU per put.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import sys
import tempfile
import time
from pathlib import Path

# The repository root, after anything on PYTHONPATH (which may name another checkout).
sys.path.append(str(Path(__file__).resolve().parent.parent))

from raft.core.types import Entry  # noqa: E402
from raft.storage.rocks import open_db  # noqa: E402
from shard import hlc  # noqa: E402
from shard.codec import encode_command  # noqa: E402
from shard.rocks import RocksEngine  # noqa: E402
from shard.statemachine import ShardStateMachine  # noqa: E402
from shard.statemachine import __file__ as shard_sm_file  # noqa: E402
from shard.types import Command, PutRequest  # noqa: E402


def make_entries(n: int, key_count: int, value_bytes: int, seed: int, first: int = 1, prefix: bytes = b"bench/key/") -> list[Entry]:
    rng = random.Random(seed)
    value = bytes(rng.getrandbits(8) for _ in range(value_bytes))
    base = hlc.from_ms(1_790_000_000_000)  # a fixed wall time: runs are comparable
    out = []
    for i in range(first, first + n):
        key = prefix + b"%08d" % rng.randrange(key_count)
        stamp = base + i * hlc.LANES  # one lane, growing
        cmd = Command(PutRequest(key, value), router_id=1, seq=i, stamp=stamp, closed_ts=stamp - 1, seq_floor=i)
        out.append(Entry(term=1, index=i, data=encode_command(cmd)))
    return out


def apply_rounds(engine: RocksEngine, sm: ShardStateMachine, entries: list[Entry], batch: int) -> None:
    for i in range(0, len(entries), batch):
        run_ = entries[i : i + batch]
        wb = engine.new_batch()
        sm.apply(run_, wb)
        sm.on_applied_index(run_[-1].index, wb)
        engine.write(wb)


def run(
    entries: list[Entry],
    batch: int,
    db_dir: str,
    profile: cProfile.Profile | None,
    preload: list[Entry] | None = None,
    warmup: list[Entry] | None = None,
) -> float:
    db = open_db(db_dir)
    try:
        engine = RocksEngine(db)
        sm = ShardStateMachine(engine, shard_id=1)
        if preload:  # untimed: other keys, flushed to SST files, then a restart
            apply_rounds(engine, sm, preload, 256)
            engine.flush_memtable()
            sm = ShardStateMachine(engine, shard_id=1)
        if warmup:  # untimed: the same key space, before the clock starts
            apply_rounds(engine, sm, warmup, batch)
        rounds = [entries[i : i + batch] for i in range(0, len(entries), batch)]
        if profile is not None:
            profile.enable()
        t0 = time.process_time()
        for run_ in rounds:
            wb = engine.new_batch()
            sm.apply(run_, wb)
            sm.on_applied_index(run_[-1].index, wb)
            engine.write(wb)
        cpu = time.process_time() - t0
        if profile is not None:
            profile.disable()
        return cpu
    finally:
        db.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("-n", type=int, default=20_000, help="puts to apply (default 20000)")
    ap.add_argument("--keys", type=int, default=10_000, help="size of the key space (default 10000)")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--batch", type=int, default=8, help="entries per apply round (default 8)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--preload", type=int, default=0, help="first apply (untimed) this many puts of other keys, flush, reopen")
    ap.add_argument("--warmup", type=int, default=0, help="then apply (untimed) this many puts of the timed key space")
    ap.add_argument("--profile", action="store_true", help="print a cProfile of the timed part (slower)")
    args = ap.parse_args(argv)
    preload = make_entries(args.preload, args.preload, args.value_bytes, args.seed + 1, 1, b"pre/key/") if args.preload else []
    warmup = make_entries(args.warmup, args.keys, args.value_bytes, args.seed + 2, args.preload + 1) if args.warmup else []
    entries = make_entries(args.n, args.keys, args.value_bytes, args.seed, args.preload + args.warmup + 1)
    prof = cProfile.Profile() if args.profile else None
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as d:
        cpu = run(entries, args.batch, d, prof, preload, warmup)
    rounds = -(-args.n // args.batch)
    print(f"code={Path(shard_sm_file).parent.parent} puts={args.n} keys={args.keys} batch={args.batch} preload={args.preload} warmup={args.warmup} rounds={rounds} cpu_s={cpu:.3f} us_per_put={cpu / args.n * 1e6:.1f}")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return 0


if __name__ == "__main__":
    sys.exit(main())
