"""flotillapb/ is what scripts/gen_proto.py makes of proto/, and pyproject's
grpcio/protobuf floors admit the stubs (etcd's verify_genproto.sh).

An older runtime than the one the stubs were generated for raises
RuntimeError at import, so the floors must be at least the versions the
stubs embed."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GENERATED = REPO_ROOT / "flotillapb"


def _generated_files(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    if importlib.util.find_spec("grpc_tools") is None:
        pytest.skip("grpcio-tools is not installed (pip install -e '.[test]'); cannot regenerate flotillapb/")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "scripts" / "gen_proto.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh = _generated_files(tmp_path / "flotillapb")
    committed = _generated_files(GENERATED)
    assert fresh, "gen_proto.py generated nothing"
    remedy = "flotillapb/ is stale: run `python scripts/gen_proto.py` and commit the result"
    assert sorted(committed) == sorted(fresh), remedy
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert stale == [], f"{remedy} (differs: {stale})"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _floor(dependencies: list[str], name: str) -> tuple[int, ...]:
    for dep in dependencies:
        m = re.fullmatch(rf"\s*{re.escape(name)}\s*>=\s*([0-9.]+)\s*(?:,.*)?", dep)
        if m:
            return _version(m.group(1))
    raise AssertionError(f"pyproject.toml has no `{name}>=X.Y.Z` dependency: {dependencies}")


def _embedded_versions() -> tuple[set[tuple[int, ...]], set[tuple[int, ...]]]:
    grpc_versions: set[tuple[int, ...]] = set()
    protobuf_versions: set[tuple[int, ...]] = set()
    for path in sorted(GENERATED.rglob("*_pb2_grpc.py")):
        m = re.search(r"^GRPC_GENERATED_VERSION = '([0-9.]+)'$", path.read_text(encoding="utf-8"), re.M)
        assert m, f"{path}: no GRPC_GENERATED_VERSION"
        grpc_versions.add(_version(m.group(1)))
    for path in sorted(GENERATED.rglob("*_pb2.py")):
        m = re.search(
            r"ValidateProtobufRuntimeVersion\(\s*_runtime_version\.Domain\.PUBLIC,\s*(\d+),\s*(\d+),\s*(\d+),",
            path.read_text(encoding="utf-8"),
        )
        assert m, f"{path}: no ValidateProtobufRuntimeVersion(...)"
        protobuf_versions.add(tuple(int(g) for g in m.groups()))
    return grpc_versions, protobuf_versions


def test_pyproject_floors_admit_the_generated_stubs() -> None:
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        dependencies = tomllib.load(f)["project"]["dependencies"]
    grpc_versions, protobuf_versions = _embedded_versions()
    assert grpc_versions and protobuf_versions, "no generated stubs under flotillapb/"
    grpc_floor, protobuf_floor = _floor(dependencies, "grpcio"), _floor(dependencies, "protobuf")
    assert grpc_floor >= max(grpc_versions), f"grpcio floor {grpc_floor} < stubs' {max(grpc_versions)}"
    assert protobuf_floor >= max(protobuf_versions), (
        f"protobuf floor {protobuf_floor} < stubs' {max(protobuf_versions)}"
    )


def test_generated_stubs_import() -> None:
    from flotillapb import raft_pb2, raft_pb2_grpc

    assert raft_pb2.DESCRIPTOR.package == "flotillapb.raft"
    assert hasattr(raft_pb2_grpc, "RaftTransportStub")
