"""Golden interaction scripts (etcd's raft/testdata/*.txt) run through the
interaction environment. The expected output in each file is the assertion:
`pytest --rewrite` regenerates it, and the diff must then be read."""

from __future__ import annotations

from pathlib import Path

import pytest

from raft.testing.datadriven import Args, run_file
from raft.testing.interaction import run_interaction_file

TESTDATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(TESTDATA.glob("*.txt"))


def test_scripts_exist() -> None:
    assert SCRIPTS, f"no golden scripts in {TESTDATA}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction(path: Path, rewrite: bool) -> None:
    run_interaction_file(path, rewrite=rewrite)


# -- the datadriven runner itself -------------------------------------------------
def _echo(cmd: str, args: Args) -> str:
    if cmd == "blank":
        return "first\n\nafter a blank line"
    if cmd == "input":
        return args.input.upper()
    parts = [cmd, *args.positional()]
    parts += [f"{a.key}={','.join(a.vals)}" for a in args if a.vals]
    return " ".join(parts)


def test_runner_rewrites_then_passes(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text(
        "# a comment\n\necho 1 k=v l=(a, b)\n----\nstale\n\nblank\n----\n\ninput\nline one\nline two\n----\n"
    )
    run_file(f, _echo, rewrite=True)
    assert f.read_text() == (
        "# a comment\n\necho 1 k=v l=(a, b)\n----\necho 1 k=v l=a,b\n\n"
        "blank\n----\n----\nfirst\n\nafter a blank line\n----\n----\n\n"
        "input\nline one\nline two\n----\nLINE ONE\nLINE TWO\n"
    )
    run_file(f, _echo)  # the rewritten file passes, fenced output included
    run_file(f, _echo, rewrite=True)  # and rewriting again changes nothing
    assert "----\n----\n" in f.read_text()


def test_runner_mismatch_shows_a_diff(tmp_path: Path) -> None:
    f = tmp_path / "t.txt"
    f.write_text("echo 1\n----\necho 2\n")
    with pytest.raises(AssertionError, match=r"t.txt:1: output of `echo 1`.*\n(.*\n)*-echo 2\n\+echo 1"):
        run_file(f, _echo)
