"""The one table from Flotilla's outcomes to what an etcd client sees.

etcd clients match error *messages* (clientv3's rpctypes.Error compares the
status message), so every row carries exactly the gRPC code and text that
etcd 3.5 sends, as listed in etcd's api/v3rpc/rpctypes/error.go. Rows that
etcd has no equivalent for (a cross-shard txn, a write whose outcome is
unknown, leases without placement) say what happened and what to change,
with the code an etcd client treats the right way (INVALID_ARGUMENT: do not
retry; UNAVAILABLE: retry elsewhere or later).

Everything the router answers with an error goes through ``EtcdError`` and
``abort_with``; nowhere else maps to a gRPC status. Store nodes' KV errors
arrive typed (store.proto KvError.Code) and map through ``KV_CODES``.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
import grpc.aio

from flotillapb import store_pb2 as spb
from router.etcd_texts import TEXTS

log = logging.getLogger(__name__)

C = grpc.StatusCode

# name -> (code, message), from the one table (router/etcd_texts.py).
ROWS: dict[str, tuple[grpc.StatusCode, str]] = {name: (grpc.StatusCode[code], text) for name, (code, text) in TEXTS.items()}


class EtcdError(Exception):
    """A final answer for the client: a gRPC status code and message."""

    def __init__(self, name: str, detail: str = "") -> None:
        code, message = ROWS[name]
        # etcd's rows keep etcd's exact text (clients match it); the detail
        # goes to the router's debug log. Our own rows carry it.
        if detail and not message.startswith("etcdserver:"):
            message = f"{message}: {detail}"
        elif detail:
            log.debug("%s: %s", message, detail)
        super().__init__(message)
        self.name = name
        self.code = code
        self.message = message
        self.detail = detail

    def __repr__(self) -> str:
        return f"EtcdError({self.code.name}, {self.message!r})"


def error(name: str, detail: str = "") -> EtcdError:
    return EtcdError(name, detail)


K = spb.KvError
_KV_NAMES = {
    "COMPACTED": "compacted",
    "FUTURE_REVISION": "future_rev",
    "KEY_NOT_FOUND": "key_not_found",
    "DUPLICATE_KEY": "duplicate_key",
    "TOO_MANY_OPS": "too_many_ops",
    "REQUEST_TOO_LARGE": "request_too_large",
    "NO_SPACE": "no_space",
    "OUTCOME_UNKNOWN": "outcome_unknown",
    "EMPTY_KEY": "empty_key",
    "VALUE_PROVIDED": "value_provided",
    "LEASE_PROVIDED": "lease_provided",
    "INVALID_REQUEST": "invalid_request",
    "LEASE_NOT_FOUND": "lease_not_found",
}
# By name, so a code store.proto has not grown yet is simply absent.
KV_CODES: dict[int, str] = {
    v.number: _KV_NAMES[v.name] for v in K.Code.DESCRIPTOR.values if v.name in _KV_NAMES
}


def from_kv_error(kv: spb.KvError) -> EtcdError:
    """A store node's typed KV error as etcd's status. The detail of
    INVALID_REQUEST says what to change; etcd's own rows keep etcd's text."""
    name = KV_CODES.get(kv.code, "invalid_request")
    return EtcdError(name, kv.detail if name == "invalid_request" else "")


async def abort_with(context: grpc.aio.ServicerContext, err: EtcdError) -> NoReturn:
    await context.abort(err.code, err.message)
    raise AssertionError("unreachable: abort raises")
