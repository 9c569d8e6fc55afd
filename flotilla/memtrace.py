"""Where a server process's memory goes (issue #20): off unless
FLOTILLA_TRACEMALLOC names a file prefix.

With it set, the process traces its Python allocations from the start
(``tracemalloc``, FLOTILLA_TRACEMALLOC_FRAMES frames each, default 1) and,
on each SIGUSR1, writes ``<prefix>.<pid>.txt``: the traced total beside the
process's RSS and glibc's malloc figures (in use, and free but kept: the
difference between RSS and the traced total is native memory, RocksDB,
gRPC, protobuf, the interpreter, or freed memory not returned), the
figures the process registered (``add_figure``: RocksDB's memtables and
caches), then the largest sites by file:line and, with more than one
frame, by traceback. A playground passes the variable to its children:

    FLOTILLA_TRACEMALLOC=/tmp/mem flotilla playground --shards 1000 ...
    kill -USR1 <store pid>

Tracing slows the process down (a third or more) and costs memory of its
own; it is a measuring tool, never on in production.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import os
import signal
import tracemalloc
from collections.abc import Callable
from pathlib import Path

ENV = "FLOTILLA_TRACEMALLOC"
ENV_FRAMES = "FLOTILLA_TRACEMALLOC_FRAMES"
TOP = 60
_figures: dict[str, Callable[[], object]] = {}


def add_figure(name: str, read: Callable[[], object]) -> None:
    """A figure each dump shows (read then), e.g. a RocksDB property."""
    _figures[name] = read


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _malloc_line() -> str:
    """glibc's malloc, summed over its arenas: bytes in use, and free but kept from the OS."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        m = libc.mallinfo2()
    except (OSError, AttributeError):
        return "malloc: (no glibc mallinfo2)"
    return f"malloc: in use {(m.uordblks + m.hblkhd) / 2**20:.1f} MiB (mmapped {m.hblkhd / 2**20:.1f}); free but kept {m.fordblks / 2**20:.1f} MiB"


def start_from_env() -> None:
    """Start tracing and dump on SIGUSR1 if FLOTILLA_TRACEMALLOC is set (call in the running loop)."""
    prefix = os.environ.get(ENV)
    if not prefix:
        return
    frames = int(os.environ.get(ENV_FRAMES, "1"))
    tracemalloc.start(frames)
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, dump, Path(f"{prefix}.{os.getpid()}.txt"))


def _rss_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def dump(path: Path) -> None:
    """Write the traced total, the RSS and the top allocation sites to path."""
    gc.collect()
    snap = tracemalloc.take_snapshot().filter_traces((tracemalloc.Filter(False, tracemalloc.__file__),))
    traced, peak = tracemalloc.get_traced_memory()
    lines = [
        f"rss {_rss_bytes() / 2**20:.1f} MiB; traced {traced / 2**20:.1f} MiB (peak {peak / 2**20:.1f} MiB); "
        f"tracemalloc's own {tracemalloc.get_tracemalloc_memory() / 2**20:.1f} MiB",
        _malloc_line(),
    ]
    for name, read in _figures.items():
        try:
            lines.append(f"{name}: {read()}")
        except Exception as exc:  # noqa: BLE001 - a figure that cannot be read says so; the dump goes on
            lines.append(f"{name}: ({exc!r})")
    lines += ["", "by file:line (size, blocks):"]
    for st in snap.statistics("lineno")[:TOP]:
        f = st.traceback[0]
        lines.append(f"{st.size:>12,} {st.count:>9,}  {f.filename}:{f.lineno}")
    if tracemalloc.get_traceback_limit() > 1:
        lines += ["", "by traceback:"]
        for st in snap.statistics("traceback")[:TOP]:
            lines.append(f"{st.size:>12,} {st.count:>9,}")
            lines += [f"    {ln}" for ln in st.traceback.format(most_recent_first=True)]
    path.write_text("\n".join(lines) + "\n")
