"""The floor under a Flotilla request: the server CPU one unary etcd call
costs on a bare grpc.aio server that does nothing (an empty PutResponse).

    .venv/bin/python scripts/bench_grpc_floor.py [CALLS] [IN_FLIGHT]

The server runs in this process; a client process makes CALLS Puts with
IN_FLIGHT in flight over one channel (defaults 20000 and 64). It prints the
server's CPU (utime + stime from /proc) per call, measured from the
client's first timed call to its last. Every store of Flotilla pays at
least this for each client request it answers, before any Raft work
(README, "Benchmarks").
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import grpc.aio  # noqa: E402

from flotillapb.etcd.etcdserverpb import rpc_pb2 as epb  # noqa: E402
from flotillapb.etcd.etcdserverpb import rpc_pb2_grpc as epb_grpc  # noqa: E402


class EmptyKV(epb_grpc.KVServicer):
    async def Put(self, request: epb.PutRequest, context: grpc.aio.ServicerContext) -> epb.PutResponse:  # noqa: N802
        return epb.PutResponse()


def cpu_s() -> float:
    fields = Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def serve(calls: int, in_flight: int) -> None:
    server = grpc.aio.server()
    epb_grpc.add_KVServicer_to_server(EmptyKV(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    client = subprocess.Popen(
        [sys.executable, __file__, "--client", str(port), str(calls), str(in_flight)], stdout=subprocess.PIPE, text=True
    )
    assert client.stdout is not None
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, client.stdout.readline)  # "go": warmed up
    before = cpu_s()
    await loop.run_in_executor(None, client.stdout.readline)  # "done"
    used = cpu_s() - before
    client.wait(timeout=30)
    await server.stop(0)
    print(f"bare grpc.aio server: {1e6 * used / calls:.1f} us of CPU per unary Put ({calls} calls, {in_flight} in flight)")


async def drive(port: int, calls: int, in_flight: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        kv = epb_grpc.KVStub(ch)
        req = epb.PutRequest(key=b"k", value=b"v" * 256)
        for _ in range(200):
            await kv.Put(req)
        print("go", flush=True)
        left = calls

        async def one() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await kv.Put(req)

        await asyncio.gather(*(one() for _ in range(in_flight)))
        print("done", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        asyncio.run(drive(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
    else:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
        k = int(sys.argv[2]) if len(sys.argv) > 2 else 64
        asyncio.run(serve(n, k))
