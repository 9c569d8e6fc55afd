"""The Node `etcd3` npm client (tests/compat/node/: package.json and
package-lock.json pinned, node_modules/ installed by scripts/test.sh with
`npm ci`) against a router joined to placement (3 placement servers, 3 store
nodes, 4 shards: flotilla/cluster.py). etcd3_client.js reads and watches
from revisions Flotilla gave it: put, get's header revision, a watch from it
+ 1 that sees the next put, a get at a past revision, a prefix read and
prefix watch over every shard, a watch from now.

Skips, saying why, when node is not installed or the package is not (run
`npm ci` in tests/compat/node, or scripts/test.sh). The script's run is
bounded in time."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flotilla.cluster import Cluster
from tests.integration.routerproc import cluster_with_router
from flotilla.storecluster import wait_until

pytestmark = pytest.mark.integration

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")

if NODE is None:
    pytest.skip("node is not installed (Node.js 20; Debian: apt-get install nodejs npm)", allow_module_level=True)
if not (NODE_DIR / "node_modules" / "etcd3" / "package.json").exists():
    pytest.skip(
        "the etcd3 npm package is not installed: run `npm ci` in tests/compat/node (scripts/test.sh does it when npm is there)",
        allow_module_level=True,
    )


def _node(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    assert NODE is not None
    return subprocess.run([NODE, *args], cwd=NODE_DIR, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("node-etcd3")
    with cluster_with_router(Cluster(tmp, initial_shards=4), tmp) as router:
        address = router.address
        probe = "const {Etcd3}=require('etcd3');const c=new Etcd3({hosts:'http://%s'});c.get('warmup').string().then(()=>process.exit(0),()=>process.exit(1))"
        wait_until(lambda: _node("-e", probe % address, timeout=30).returncode == 0, timeout=60, what="etcd3 reaching the router")
        yield address

def test_etcd3_reads_and_watches_from_revisions_flotilla_gave_it(endpoint: str) -> None:
    p = _node("etcd3_client.js", endpoint, "node/")
    print(p.stdout)
    assert p.returncode == 0 and p.stdout.splitlines()[-1] == "ok", f"etcd3_client.js failed ({p.returncode}):\n{p.stderr}\n{p.stdout}"
