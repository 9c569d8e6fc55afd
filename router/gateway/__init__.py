"""etcd's HTTP/JSON gateway (grpc-gateway v1 as etcd 3.5 serves it) over the
router's own servicers: codec.py is the pure part (routes, JSON, errors),
server.py the aiohttp server. See router/gateway/codec.py for what is
reproduced and how it was checked against etcd."""

from router.gateway.server import GatewayAbort, GatewayContext, HttpGateway, parse_listen_url

__all__ = ["GatewayAbort", "GatewayContext", "HttpGateway", "parse_listen_url"]
