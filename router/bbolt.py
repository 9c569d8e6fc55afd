"""bbolt database files, read and written (PURE: bytes in, bytes out).

etcd keeps its key space in a bbolt file, and `etcdctl snapshot save` copies
one. This module writes such a file from sorted key-values and reads one back,
from bbolt's published on-disk format (etcd-io/bbolt: page.go, node.go,
freelist.go, bucket.go, db.go); the code is ours. Integers are little-endian
(what bbolt writes on the machines etcd runs on).

The file is a sequence of pages of ``page_size`` bytes (4096 here), page id
``n`` at offset ``n * page_size``. Every page starts with a 16-byte header::

    u64 id | u16 flags | u16 count | u32 overflow

``overflow`` is the number of further pages the node continues on (a leaf
holding a value larger than a page). Flags: 0x01 branch, 0x02 leaf, 0x04
meta, 0x10 freelist.

- Pages 0 and 1 are meta pages. After the header, the meta::

      u32 magic 0xED0CDAED | u32 version 2 | u32 page_size | u32 flags
      | u64 root bucket's root page | u64 root bucket's sequence
      | u64 freelist page | u64 page count (the high water mark) | u64 txid
      | u64 checksum: FNV-64a of the 64 bytes before it

  A reader takes the valid meta with the higher txid.
- A leaf page: ``count`` element headers of 16 bytes (``u32 flags | u32 pos
  | u32 ksize | u32 vsize``; ``pos`` counts from the element's own header),
  then the keys and values. Flag 0x01 marks a value that is a sub-bucket.
- A branch page: ``count`` element headers (``u32 pos | u32 ksize | u64
  child page``), then the keys: each child's first key.
- A bucket value: ``u64 root page | u64 sequence``; root 0 means the bucket is
  inline: the rest of the value is a leaf page (header and elements) of its
  own. bbolt inlines a leaf-only bucket without sub-buckets whose whole value
  fits in a quarter page.
- The freelist page lists free page ids (``u64`` each; a count of 0xFFFF
  means the real count is the first ``u64``). A file written here has none.

The writer lays pages out in id order as it goes (``BoltWriter``): leaves as
the sorted items arrive, then the branch levels above them; a bucket small
enough is inlined. The meta pages name the root bucket's page and the
freelist, which come last, so the caller puts ``finish()``'s head in front
of the pages it was given through ``emit`` and its tail after them. The
reader (``BoltReader``) checks what bbolt's ``tx.Check`` checks (every page
below the high water mark reachable exactly once or free, page types, key
order) and raises ``BoltError`` for anything that is not a sound database.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

MAGIC = 0xED0CDAED
VERSION = 2
PAGE_SIZE = 4096

BRANCH_PAGE = 0x01
LEAF_PAGE = 0x02
META_PAGE = 0x04
FREELIST_PAGE = 0x10
BUCKET_LEAF_FLAG = 0x01

PAGE_HEADER = struct.Struct("<QHHI")
LEAF_ELEMENT = struct.Struct("<IIII")
BRANCH_ELEMENT = struct.Struct("<IIQ")
BUCKET_HEADER = struct.Struct("<QQ")
META = struct.Struct("<IIIIQQQQQ")  # everything the checksum covers
_U64 = struct.Struct("<Q")
META_SIZE = META.size + 8  # and the checksum
NO_FREELIST = (1 << 64) - 1
MAX_COUNT = 0xFFFF

_FNV_OFFSET = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


class BoltError(ValueError):
    """Bytes that are not a sound bbolt database (what bbolt calls invalid or corrupt)."""


def fnv64a(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _MASK64
    return h


# -- writing ---------------------------------------------------------------------------


def _leaf_node(items: list[tuple[bytes, bytes, int]]) -> bytes:
    """A leaf node's bytes after its page header: element headers, then data."""
    heads = bytearray()
    data = bytearray()
    n = len(items)
    for i, (k, v, flags) in enumerate(items):
        pos = (n - i) * LEAF_ELEMENT.size + len(data)  # from this element's header to its key
        heads += LEAF_ELEMENT.pack(flags, pos, len(k), len(v))
        data += k
        data += v
    return bytes(heads + data)


def _branch_node(children: list[tuple[bytes, int]]) -> bytes:
    heads = bytearray()
    data = bytearray()
    n = len(children)
    for i, (k, pgid) in enumerate(children):
        pos = (n - i) * BRANCH_ELEMENT.size + len(data)
        heads += BRANCH_ELEMENT.pack(pos, len(k), pgid)
        data += k
    return bytes(heads + data)


@dataclass(frozen=True, slots=True)
class BucketRef:
    """A written bucket: its root page (``root`` > 0), or inline (``inline``:
    the leaf page the bucket value carries after its header)."""

    root: int = 0
    inline: bytes = b""
    sequence: int = 0

    def value(self) -> bytes:
        return BUCKET_HEADER.pack(self.root, self.sequence) + (b"" if self.root else self.inline)


class BoltWriter:
    """Writes a database's pages in id order, from page 2 on, through ``emit``.

    ``bucket(items)`` writes a bucket of sorted, distinct keys (a value may be
    a ``BucketRef``: a sub-bucket written before); ``finish(buckets)`` writes
    the root bucket and the freelist and answers (head, tail): the two meta
    pages to put before everything emitted, and the pages to put after it."""

    def __init__(self, emit: Callable[[bytes], None], page_size: int = PAGE_SIZE) -> None:
        if page_size < 1024 or page_size & (page_size - 1):
            raise ValueError(f"page size {page_size} is not a power of two of at least 1024")
        self.page_size = page_size
        self._emit = emit
        self.next_pgid = 2
        self.finished = False

    def _page(self, flags: int, count: int, body: bytes) -> int:
        """Write one node (on as many pages as it needs); its page id."""
        pgid = self.next_pgid
        size = PAGE_HEADER.size + len(body)
        pages = -(-size // self.page_size)
        self._emit(PAGE_HEADER.pack(pgid, flags, count, pages - 1) + body + bytes(pages * self.page_size - size))
        self.next_pgid += pages
        return pgid

    def bucket(self, items: Iterable[tuple[bytes, bytes | BucketRef]], sequence: int = 0) -> BucketRef:
        limit = self.page_size
        node: list[tuple[bytes, bytes, int]] = []
        node_size = PAGE_HEADER.size
        level: list[tuple[bytes, int]] = []  # (first key, page) of each leaf written
        inlineable = True
        prev: bytes | None = None
        for k, v in items:
            if prev is not None and k <= prev:
                raise ValueError(f"bucket keys must be sorted and distinct: {k!r} after {prev!r}")
            if not k:
                raise ValueError("a bbolt key cannot be empty")
            prev = k
            if isinstance(v, BucketRef):
                inlineable = False  # bbolt inlines only buckets without sub-buckets
                item = (k, v.value(), BUCKET_LEAF_FLAG)
            else:
                item = (k, bytes(v), 0)
            size = LEAF_ELEMENT.size + len(item[0]) + len(item[1])
            if node and node_size + size > limit:
                level.append((node[0][0], self._page(LEAF_PAGE, len(node), _leaf_node(node))))
                node, node_size = [], PAGE_HEADER.size
            node.append(item)
            node_size += size
        if not level and inlineable and BUCKET_HEADER.size + node_size <= self.page_size // 4:
            return BucketRef(inline=PAGE_HEADER.pack(0, LEAF_PAGE, len(node), 0) + _leaf_node(node), sequence=sequence)
        if node or not level:
            level.append((node[0][0] if node else b"", self._page(LEAF_PAGE, len(node), _leaf_node(node))))
        while len(level) > 1:
            above: list[tuple[bytes, int]] = []
            group: list[tuple[bytes, int]] = []
            group_size = PAGE_HEADER.size
            for k, pgid in level:
                size = BRANCH_ELEMENT.size + len(k)
                if len(group) >= 2 and group_size + size > limit:
                    above.append((group[0][0], self._page(BRANCH_PAGE, len(group), _branch_node(group))))
                    group, group_size = [], PAGE_HEADER.size
                group.append((k, pgid))
                group_size += size
            above.append((group[0][0], self._page(BRANCH_PAGE, len(group), _branch_node(group))))
            level = above
        return BucketRef(root=level[0][1], sequence=sequence)

    def finish(self, buckets: Iterable[tuple[bytes, BucketRef]], txid: int = 1) -> tuple[bytes, bytes]:
        """The root bucket over ``buckets`` (sorted by name) and an empty
        freelist, written after everything so far; (head, tail)."""
        if self.finished:
            raise ValueError("finish() was called already")
        self.finished = True
        tail: list[bytes] = []
        emit = self._emit
        self._emit = tail.append
        try:
            root = self.bucket(buckets)
            if not root.root:  # the root bucket is never inline: give it a page
                root = BucketRef(root=self._page(LEAF_PAGE, _count_of(root.inline), root.inline[PAGE_HEADER.size :]))
            freelist = self._page(FREELIST_PAGE, 0, b"")
        finally:
            self._emit = emit
        meta = META.pack(MAGIC, VERSION, self.page_size, 0, root.root, 0, freelist, self.next_pgid, txid)
        meta += _U64.pack(fnv64a(meta))
        head = b"".join(
            (PAGE_HEADER.pack(i, META_PAGE, 0, 0) + meta).ljust(self.page_size, b"\0") for i in (0, 1)
        )
        return head, b"".join(tail)


def _count_of(page: bytes) -> int:
    return PAGE_HEADER.unpack_from(page)[2]


def write_db(buckets: Iterable[tuple[bytes, Iterable[tuple[bytes, bytes]]]], page_size: int = PAGE_SIZE) -> bytes:
    """A whole database in memory: top-level buckets (sorted by name) of sorted items."""
    body: list[bytes] = []
    w = BoltWriter(body.append, page_size)
    refs = [(name, w.bucket(items)) for name, items in buckets]
    head, tail = w.finish(refs)
    return head + b"".join(body) + tail


# -- reading ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Meta:
    page_size: int
    flags: int
    root: int
    sequence: int
    freelist: int
    pgid: int
    txid: int


def _parse_meta(data: memoryview, offset: int) -> Meta | str:
    """The meta at offset (a page start), or why it is not valid."""
    if offset + PAGE_HEADER.size + META_SIZE > len(data):
        return "the file is shorter than a meta page"
    _, flags, _, _ = PAGE_HEADER.unpack_from(data, offset)
    raw = bytes(data[offset + PAGE_HEADER.size : offset + PAGE_HEADER.size + META_SIZE])
    magic, version, page_size, mflags, root, seq, freelist, pgid, txid = META.unpack_from(raw)
    if magic != MAGIC:
        return "no bbolt magic (0xED0CDAED)"
    if version != VERSION:
        return f"bbolt version {version}, not {VERSION}"
    (checksum,) = _U64.unpack_from(raw, META.size)
    if checksum != fnv64a(raw[: META.size]):
        return "meta checksum mismatch"
    if page_size < 512 or page_size & (page_size - 1):
        return f"page size {page_size} is not a power of two"
    return Meta(page_size, mflags, root, seq, freelist, pgid, txid)


class Bucket:
    """One bucket of a database being read: its items in key order."""

    def __init__(self, reader: BoltReader, root: int, inline: memoryview | None, sequence: int) -> None:
        self._r = reader
        self.root = root
        self.inline = inline
        self.sequence = sequence

    def entries(self) -> Iterator[tuple[bytes, bytes, int]]:
        """(key, value, flags) in key order; flags & BUCKET_LEAF_FLAG: a sub-bucket."""
        if self.inline is not None:
            yield from self._r._leaf_entries(self.inline, 0, len(self.inline), "inline bucket")
            return
        yield from self._r._walk(self.root, 0)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the plain items (sub-buckets left out)."""
        for k, v, flags in self.entries():
            if not flags & BUCKET_LEAF_FLAG:
                yield k, v

    def names(self) -> list[bytes]:
        return [k for k, _, flags in self.entries() if flags & BUCKET_LEAF_FLAG]

    def bucket(self, name: bytes) -> Bucket | None:
        for k, v, flags in self.entries():
            if k == name:
                return self._r._bucket_of(v, name) if flags & BUCKET_LEAF_FLAG else None
        return None


class BoltReader:
    """A database in a bytes-like object (the whole file, or an mmap of it).

    Bytes after the last page (etcd's sha256 trailer) are ignored; bytes
    missing before it are an error."""

    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        self.data = memoryview(data)
        metas = []
        first = _parse_meta(self.data, 0)
        if isinstance(first, Meta):
            metas.append(first)
            second = _parse_meta(self.data, first.page_size)
            if isinstance(second, Meta):
                metas.append(second)
        else:
            # page 0 is damaged: bbolt then looks for page 1 at the OS page size; try the usual sizes
            for size in (4096, 8192, 16384, 65536):
                second = _parse_meta(self.data, size)
                if isinstance(second, Meta) and second.page_size == size:
                    metas.append(second)
                    break
        if not metas:
            raise BoltError(f"not a bbolt database: {first}")
        self.meta = max(metas, key=lambda m: m.txid)
        self.page_size = self.meta.page_size
        need = self.meta.pgid * self.page_size
        if len(self.data) < need:
            raise BoltError(f"truncated: {len(self.data)} bytes, the database needs {need} ({self.meta.pgid} pages)")
        if self.meta.root >= self.meta.pgid:
            raise BoltError(f"root page {self.meta.root} beyond the high water mark {self.meta.pgid}")

    @property
    def size(self) -> int:
        """The database's size (bbolt's tx.Size(): pages below the high water mark)."""
        return self.meta.pgid * self.page_size

    def root(self) -> Bucket:
        return Bucket(self, self.meta.root, None, self.meta.sequence)

    def bucket(self, name: bytes) -> Bucket | None:
        return self.root().bucket(name)

    # -- pages ----------------------------------------------------------------------
    def _header(self, pgid: int) -> tuple[int, int, int, int]:
        if pgid < 2 or pgid >= self.meta.pgid:
            raise BoltError(f"page {pgid} out of bounds (high water mark {self.meta.pgid})")
        offset = pgid * self.page_size
        pid, flags, count, overflow = PAGE_HEADER.unpack_from(self.data, offset)
        if pid != pgid:
            raise BoltError(f"page {pgid} says it is page {pid}")
        if pgid + overflow >= self.meta.pgid:
            raise BoltError(f"page {pgid}: overflow {overflow} runs past the high water mark")
        return pid, flags, count, overflow

    def _leaf_entries(self, buf: memoryview, start: int, end: int, where: str) -> Iterator[tuple[bytes, bytes, int]]:
        _, flags, count, _ = PAGE_HEADER.unpack_from(buf, start)
        if flags != LEAF_PAGE:
            raise BoltError(f"{where}: expected a leaf page, flags {flags:#x}")
        base = start + PAGE_HEADER.size
        if base + count * LEAF_ELEMENT.size > end:
            raise BoltError(f"{where}: {count} elements do not fit")
        for i in range(count):
            at = base + i * LEAF_ELEMENT.size
            eflags, pos, ksize, vsize = LEAF_ELEMENT.unpack_from(buf, at)
            k0 = at + pos
            if k0 + ksize + vsize > end:
                raise BoltError(f"{where}: element {i} runs past its page")
            yield bytes(buf[k0 : k0 + ksize]), bytes(buf[k0 + ksize : k0 + ksize + vsize]), eflags

    def _branch_children(self, pgid: int, count: int, end: int) -> list[tuple[bytes, int]]:
        base = pgid * self.page_size + PAGE_HEADER.size
        if base + count * BRANCH_ELEMENT.size > end:
            raise BoltError(f"page {pgid}: {count} branch elements do not fit")
        out = []
        for i in range(count):
            at = base + i * BRANCH_ELEMENT.size
            pos, ksize, child = BRANCH_ELEMENT.unpack_from(self.data, at)
            if at + pos + ksize > end:
                raise BoltError(f"page {pgid}: branch element {i} runs past its page")
            out.append((bytes(self.data[at + pos : at + pos + ksize]), child))
        return out

    def _walk(self, pgid: int, depth: int) -> Iterator[tuple[bytes, bytes, int]]:
        if depth > 64:
            raise BoltError(f"page {pgid}: the tree is deeper than 64 levels (a cycle?)")
        _, flags, count, overflow = self._header(pgid)
        start = pgid * self.page_size
        end = start + (overflow + 1) * self.page_size
        if flags == LEAF_PAGE:
            yield from self._leaf_entries(self.data, start, end, f"page {pgid}")
        elif flags == BRANCH_PAGE:
            for _, child in self._branch_children(pgid, count, end):
                yield from self._walk(child, depth + 1)
        else:
            raise BoltError(f"page {pgid}: invalid type {flags:#x} inside a bucket")

    def _bucket_of(self, value: bytes, name: bytes) -> Bucket:
        if len(value) < BUCKET_HEADER.size:
            raise BoltError(f"bucket {name!r}: value of {len(value)} bytes is shorter than a bucket header")
        root, seq = BUCKET_HEADER.unpack_from(value)
        if root == 0:
            inline = memoryview(value)[BUCKET_HEADER.size :]
            if len(inline) < PAGE_HEADER.size:
                raise BoltError(f"inline bucket {name!r} has no page")
            return Bucket(self, 0, inline, seq)
        return Bucket(self, root, None, seq)

    def freelist(self) -> list[int]:
        """The free page ids (none if the freelist is not synced)."""
        if self.meta.freelist == NO_FREELIST:
            return []
        pgid = self.meta.freelist
        _, flags, count, overflow = self._header(pgid)
        if flags != FREELIST_PAGE:
            raise BoltError(f"freelist page {pgid} has flags {flags:#x}")
        base = pgid * self.page_size + PAGE_HEADER.size
        end = (pgid + overflow + 1) * self.page_size
        first = 0
        if count == MAX_COUNT:
            (count,) = _U64.unpack_from(self.data, base)
            first = 1
        if base + (first + count) * 8 > end:
            raise BoltError(f"freelist page {pgid}: {count} ids do not fit")
        return [_U64.unpack_from(self.data, base + (first + i) * 8)[0] for i in range(count)]

    def check(self) -> list[str]:
        """What bbolt's tx.Check reports: pages reachable twice, unreachable
        and not free, out of bounds, of a wrong type; keys out of order."""
        errors: list[str] = []
        free: set[int] = set()
        try:
            for pgid in self.freelist():
                if pgid in free:
                    errors.append(f"page {pgid}: already freed")
                free.add(pgid)
        except BoltError as exc:
            errors.append(str(exc))
        reachable: set[int] = {0, 1}
        if self.meta.freelist != NO_FREELIST and self.meta.freelist < self.meta.pgid:
            try:
                _, _, _, overflow = self._header(self.meta.freelist)
                reachable.update(range(self.meta.freelist, self.meta.freelist + overflow + 1))
            except BoltError as exc:
                errors.append(str(exc))
        self._check_bucket(self.root(), reachable, free, errors, b"(root)", 0)
        if self.meta.freelist == NO_FREELIST:
            return errors  # an unsynced freelist (NoFreelistSync, as etcd opens bbolt): the free pages are the unreachable ones
        for pgid in range(self.meta.pgid):
            if pgid not in reachable and pgid not in free:
                errors.append(f"page {pgid}: unreachable unfreed")
                if len(errors) > 100:
                    break
        return errors

    def _check_bucket(self, b: Bucket, reachable: set[int], free: set[int], errors: list[str], name: bytes, depth: int) -> None:
        if depth > 32:
            errors.append(f"bucket {name!r}: nested deeper than 32 levels")
            return
        subs: list[tuple[bytes, bytes]] = []
        if b.inline is None:
            self._check_pages(b.root, reachable, free, errors, 0, name, None, None)
        try:
            prev: bytes | None = None
            for k, v, flags in b.entries():
                if prev is not None and k <= prev:
                    errors.append(f"bucket {name!r}: key {k!r} after {prev!r} (out of order)")
                prev = k
                if flags & BUCKET_LEAF_FLAG:
                    subs.append((k, v))
        except BoltError as exc:
            errors.append(f"bucket {name!r}: {exc}")
            return
        for k, v in subs:
            try:
                sub = self._bucket_of(v, k)
            except BoltError as exc:
                errors.append(str(exc))
                continue
            self._check_bucket(sub, reachable, free, errors, k, depth + 1)

    def _check_pages(
        self, pgid: int, reachable: set[int], free: set[int], errors: list[str], depth: int, name: bytes,
        low: bytes | None, high: bytes | None,
    ) -> None:
        if depth > 64:
            errors.append(f"bucket {name!r}: deeper than 64 levels at page {pgid}")
            return
        try:
            _, flags, count, overflow = self._header(pgid)
        except BoltError as exc:
            errors.append(f"bucket {name!r}: {exc}")
            return
        for i in range(pgid, pgid + overflow + 1):
            if i in reachable:
                errors.append(f"page {i}: multiple references")
            if i in free:
                errors.append(f"page {i}: reachable freed")
            reachable.add(i)
        end = (pgid + overflow + 1) * self.page_size
        if flags == BRANCH_PAGE:
            try:
                children = self._branch_children(pgid, count, end)
            except BoltError as exc:
                errors.append(str(exc))
                return
            if not children:
                errors.append(f"page {pgid}: an empty branch page")
            for i, (k, child) in enumerate(children):
                if i and k <= children[i - 1][0]:
                    errors.append(f"page {pgid}: branch keys out of order")
                nxt = children[i + 1][0] if i + 1 < len(children) else high
                self._check_pages(child, reachable, free, errors, depth + 1, name, k, nxt)
        elif flags == LEAF_PAGE:
            try:
                keys = [k for k, _, _ in self._leaf_entries(self.data, pgid * self.page_size, end, f"page {pgid}")]
            except BoltError as exc:
                errors.append(str(exc))
                return
            if keys and low is not None and keys[0] < low:
                errors.append(f"page {pgid}: first key {keys[0]!r} below its branch key {low!r}")
            if keys and high is not None and keys[-1] >= high:
                errors.append(f"page {pgid}: last key {keys[-1]!r} not below the next branch key {high!r}")
        else:
            errors.append(f"page {pgid}: invalid type {flags:#x}")
