#!/usr/bin/env python3
"""Regenerate flotillapb/ from the .proto sources under proto/.

    python scripts/gen_proto.py            # writes <repo>/flotillapb/
    python scripts/gen_proto.py --out DIR  # writes DIR/flotillapb/ (the freshness test)

Runs `grpc_tools.protoc -I proto --python_out --pyi_out --grpc_python_out`
on every .proto under proto/. The sources live under proto/flotillapb/, so
the output lands in flotillapb/ and the generated imports are absolute
(`from flotillapb import raft_pb2`): no post-processing (grpc#29459). Every
directory that receives generated code gets an `__init__.py`.

The output is committed and never edited by hand; tests/unit/test_genproto.py
regenerates it into a temporary directory and fails if anything differs.
"""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto"
PACKAGE = "flotillapb"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")  # what --python_out, --pyi_out, --grpc_python_out write
INIT_TEXT = '"""Code generated from proto/ by scripts/gen_proto.py. Do not edit."""\n'


def proto_files(proto_root: Path) -> list[Path]:
    """Every .proto under proto_root, in a stable order."""
    return sorted(proto_root.rglob("*.proto"))


def generate(out: Path, proto_root: Path = PROTO_ROOT) -> list[Path]:
    """Generate the stubs of every .proto under proto_root into out; return the files written."""
    try:
        from grpc_tools import protoc
    except ImportError as exc:
        raise SystemExit("scripts/gen_proto.py needs grpcio-tools: pip install -e '.[test]'") from exc

    sources = proto_files(proto_root)
    if not sources:
        raise SystemExit(f"no .proto files under {proto_root}")
    out.mkdir(parents=True, exist_ok=True)
    # The well-known types (google/protobuf/*.proto) ship inside grpc_tools.
    well_known = resources.files("grpc_tools") / "_proto"
    args = [
        "grpc_tools.protoc",
        f"--proto_path={proto_root}",
        f"--proto_path={well_known}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *(str(p) for p in sources),
    ]
    status = protoc.main(args)
    if status != 0:
        raise SystemExit(f"protoc failed with status {status}")

    written: list[Path] = []
    for src in sources:
        rel = src.relative_to(proto_root).with_suffix("")
        for suffix in GENERATED_SUFFIXES:
            written.append(out / rel.parent / f"{rel.name}{suffix}")
    # Stubs of .proto files that no longer exist would linger: remove them.
    keep = set(written)
    for path in sorted((out / PACKAGE).rglob("*")):
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES) and path not in keep:
            path.unlink()
    # An __init__.py in every generated package directory, up to out/flotillapb.
    for pkg_dir in sorted({p.parent for p in written}):
        d = pkg_dir
        while d != out and d.is_relative_to(out):
            init = d / "__init__.py"
            if not init.exists():
                init.write_text(INIT_TEXT, encoding="utf-8")
            d = d.parent
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--out",
        type=Path,
        default=REPO_ROOT,
        help="directory that receives flotillapb/ (default: the repository root)",
    )
    parser.add_argument("--proto-root", type=Path, default=PROTO_ROOT, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    generate(ns.out.resolve(), ns.proto_root.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
