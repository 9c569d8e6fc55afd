"""A small runner for golden files in etcd's datadriven format.

A file is a sequence of blocks separated by blank lines; lines starting with
``#`` outside a block are comments::

    # a comment
    command arg1 key=val list=(1,2,3)
    optional input lines
    ----
    expected output

An output that contains blank lines is fenced by a doubled separator::

    command
    ----
    ----
    output with

    a blank line
    ----
    ----

``run_file(path, handler, rewrite)`` runs each block through
``handler(cmd, args)``, compares its output with the expected one and fails
with a diff at the first mismatch; with ``rewrite=True`` it rewrites the
file with the actual outputs instead (comments and layout are kept).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["Arg", "Args", "TestData", "parse_args", "parse_file", "run_file"]

_SEP = "----"
_TOKEN = re.compile(r"[^\s=]+=\([^)]*\)|\S+")


@dataclass(frozen=True, slots=True)
class Arg:
    key: str
    vals: tuple[str, ...] = ()


class Args(list[Arg]):
    """The arguments of a command, plus its input lines and position."""

    input: str = ""
    pos: str = ""

    def positional(self) -> list[str]:
        """Arguments without ``=``, in order."""
        return [a.key for a in self if not a.vals and not a.key.endswith("=")]

    def has(self, key: str) -> bool:
        return any(a.key == key for a in self)

    def get(self, key: str, default: str | None = None) -> str | None:
        for a in self:
            if a.key == key:
                return a.vals[0] if a.vals else ""
        return default

    def get_list(self, key: str) -> tuple[str, ...] | None:
        for a in self:
            if a.key == key:
                return a.vals
        return None


def parse_args(line: str) -> tuple[str, Args]:
    tokens = _TOKEN.findall(line)
    if not tokens:
        raise ValueError(f"empty command line: {line!r}")
    args = Args()
    for tok in tokens[1:]:
        key, eq, val = tok.partition("=")
        if not eq:
            args.append(Arg(tok))
        elif val.startswith("(") and val.endswith(")"):
            args.append(Arg(key, tuple(v.strip() for v in val[1:-1].split(",") if v.strip())))
        else:
            args.append(Arg(key, (val,)))
    return tokens[0], args


@dataclass(slots=True)
class TestData:
    __test__ = False  # not a pytest test class, despite the name
    pos: str
    cmd: str
    args: Args
    head: list[str]  # the command line and input lines, verbatim
    expected: str


# A parsed file: verbatim lines (comments, blank lines) and blocks, in order.
_Piece = str | TestData


def parse_file(path: Path) -> list[_Piece]:
    lines = path.read_text().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    pieces: list[_Piece] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip() or line.lstrip().startswith("#"):
            pieces.append(line)
            i += 1
            continue
        start = i
        head = []
        while i < len(lines) and lines[i] != _SEP:
            if not lines[i].strip():
                raise ValueError(f"{path}:{start + 1}: missing {_SEP!r} after the command")
            head.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: missing {_SEP!r} after the command")
        i += 1
        out: list[str] = []
        if i < len(lines) and lines[i] == _SEP:  # fenced output
            i += 1
            while i + 1 < len(lines) and not (lines[i] == _SEP and lines[i + 1] == _SEP):
                out.append(lines[i])
                i += 1
            if i + 1 >= len(lines):
                raise ValueError(f"{path}:{start + 1}: unterminated {_SEP}/{_SEP} output")
            i += 2
        else:
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
        cmd, args = parse_args(head[0])
        args.input = "\n".join(head[1:])
        args.pos = f"{path.name}:{start + 1}"
        pieces.append(TestData(args.pos, cmd, args, head, "\n".join(out)))
    return pieces


def _render_block(d: TestData, output: str) -> list[str]:
    lines = [*d.head, _SEP]
    if any(not ln.strip() for ln in output.split("\n")) and output:
        return [*lines, _SEP, output, _SEP, _SEP]
    return [*lines, output] if output else lines


def run_file(path: str | Path, handler: Callable[[str, Args], str], rewrite: bool = False) -> None:
    """Run every block of the file through handler(cmd, args)."""
    path = Path(path)
    pieces = parse_file(path)
    rendered: list[str] = []
    for n, piece in enumerate(pieces):
        if isinstance(piece, str):
            rendered.append(piece)
            continue
        try:
            actual = handler(piece.cmd, piece.args)
        except Exception as exc:
            exc.add_note(f"while running {piece.pos}: {piece.head[0]}")
            raise
        actual = "\n".join(ln.rstrip() for ln in actual.rstrip("\n").split("\n"))
        if rewrite:
            rendered.extend(_render_block(piece, actual))
            following = pieces[n + 1] if n + 1 < len(pieces) else ""
            if not isinstance(following, str) or following.strip():
                rendered.append("")  # a block must end with a blank line
        elif actual != piece.expected:
            diff = "\n".join(
                difflib.unified_diff(
                    piece.expected.split("\n"), actual.split("\n"), "expected", "actual", lineterm=""
                )
            )
            raise AssertionError(
                f"{piece.pos}: output of `{piece.head[0]}` differs from the golden file "
                f"(run pytest with --rewrite to accept the new output):\n{diff}"
            )
    if rewrite:
        text = "\n".join(rendered) + "\n"
        if text != path.read_text():
            path.write_text(text)
