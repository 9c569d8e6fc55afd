"""`flotilla snapshot`: look into a backup file, and restore one into a new
cluster's data directory.

    flotilla snapshot status FILE [-w simple|table|json]
    flotilla snapshot restore FILE --data-dir DIR [--placement N] [--stores N] [--shards N] [--timeout S]

FILE is what `etcdctl snapshot save` writes, from Flotilla (its backup is an
etcd bbolt database: router/backup.py) or from etcd 3.4/3.5 (migrating to
Flotilla), with the SHA-256 trailer etcd appends, or an etcd `member/snap/db`
copied from a data directory (no trailer); or a backup in Flotilla's format
of before issue #19 (router/maintenance.py's read_backup). A file whose
SHA-256 does not match, that is cut short or that is not a database is
refused with the reason, and nothing is written.

`status` prints what `etcdctl snapshot status` prints (the same hash,
revision, total keys and size, computed as etcdctl does: router/
etcdsnapshot.py). `restore` builds DIR as `flotilla playground --data-dir
DIR` then runs it, holding every key of the file at its revision with its
value, create and mod revisions, version and lease, and the leases
(flotilla/restore.py says how).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from flotilla.restore import RestoreError, Source, restore
from router import etcdsnapshot as es
from router.maintenance import BACKUP_MAGIC, BackupError, decode_backup


class SourceError(Exception):
    """A file that is not an intact backup (said why)."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="snapshot_command", required=True, metavar="SUBCOMMAND")
    st = sub.add_parser("status", help="hash, revision, total keys and size of a backup file (as etcdctl snapshot status)")
    st.add_argument("file")
    st.add_argument("-w", "--write-out", choices=("simple", "table", "json"), default="simple", help="output format (default simple)")
    rs = sub.add_parser("restore", help="a new cluster's data directory holding a backup's keys (Flotilla's or etcd's)")
    rs.add_argument("file")
    rs.add_argument("--data-dir", required=True, help="the new cluster's data directory (must not exist, or be empty)")
    rs.add_argument("--placement", type=int, default=None, help="placement servers of the new cluster (playground default)")
    rs.add_argument("--stores", type=int, default=None, help="store nodes of the new cluster (playground default)")
    rs.add_argument("--shards", type=int, default=None, help="initial shards of the new cluster (playground default)")
    rs.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the new cluster at each step")


def _read(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_source(path: str) -> Source:
    """The keys and leases of a backup file, every check passed."""
    data = _read(path)
    if data.startswith(BACKUP_MAGIC):
        try:
            revision, kvs = decode_backup(data)
        except BackupError as exc:
            raise SourceError(f"{path}: {exc}") from None
        return Source("Flotilla backup (format 1)", revision, tuple(kvs), ())
    try:
        state = es.read_state(es.open_db(data))
    except es.SnapshotError as exc:
        raise SourceError(f"{path}: {exc}") from None
    return Source("etcd snapshot (bbolt)", state.revision, state.kvs, state.leases)


def humanize_bytes(n: int) -> str:
    """go-humanize's Bytes (SI units), as etcdctl prints sizes."""
    if n < 10:
        return f"{n} B"
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    e = min(int(math.floor(math.log(n, 1000))), len(units) - 1)
    val = math.floor(n / 1000**e * 10 + 0.5) / 10
    return f"{val:.0f} {units[e]}" if val >= 10 else f"{val:.1f} {units[e]}"


def status_text(st: es.SnapshotStatus, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(st.as_json(), separators=(",", ":"))
    row = (f"{st.hash:x}", str(st.revision), str(st.total_key), humanize_bytes(st.total_size))
    if fmt == "simple":
        return ", ".join(row)
    heads = ("HASH", "REVISION", "TOTAL KEYS", "TOTAL SIZE")
    widths = [max(len(h), len(c)) for h, c in zip(heads, row)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
    head = "|" + "|".join(f" {h.center(w)} " for h, w in zip(heads, widths)) + "|"
    body = "|" + "|".join(f" {c.rjust(w)} " for c, w in zip(row, widths)) + "|"
    return "\n".join((line, head, line, body, line))


def run_status(path: str, fmt: str) -> int:
    data = _read(path)
    if data.startswith(BACKUP_MAGIC):
        try:
            revision, kvs = decode_backup(data)
        except BackupError as exc:
            raise SourceError(f"{path}: {exc}") from None
        print(f"{path}: Flotilla backup (format 1, before issue #19): revision {revision}, {len(kvs)} keys")
        return 0
    try:
        st = es.status(es.open_db(data))
    except es.SnapshotError as exc:
        raise SourceError(f"{path}: {exc}") from None
    print(status_text(st, fmt))
    return 0


def run_restore(args: argparse.Namespace) -> int:
    src = load_source(args.file)
    print(f"{args.file}: {src.kind}, revision {src.revision}, {len(src.kvs)} keys, {len(src.leases)} leases", flush=True)
    shape = {"placement": args.placement, "stores": args.stores, "shards": args.shards}
    figures = restore(src, Path(args.data_dir), shape, args.timeout, say=lambda text: print(text, flush=True))
    print(
        f"restored {figures['keys']} keys and {figures['leases']} leases at revision {figures['revision']} "
        f"into {Path(args.data_dir).resolve()} ({figures['shards']} shards); start it with: "
        f"flotilla playground --data-dir {args.data_dir}",
        flush=True,
    )
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        if args.snapshot_command == "status":
            return run_status(args.file, args.write_out)
        return run_restore(args)
    except (SourceError, RestoreError) as exc:
        print(f"Error: {exc}", file=sys.stderr, flush=True)
        return 1
