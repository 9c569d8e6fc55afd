"""flotilla/router_main.py: options, alone or prefixed beside another command's."""

from __future__ import annotations

import argparse

import pytest

from flotilla import router_main


def test_options_build_the_config() -> None:
    p = argparse.ArgumentParser()
    router_main.add_arguments(p)
    cfg = router_main.config_from(p.parse_args(["--listen", "127.0.0.1:0", "--static-shards", "4", "--store-peers", "1=a:1,2=b:2"]))
    assert cfg.static_shards == 4 and cfg.store_peers == {1: "a:1", 2: "b:2"} and cfg.use_forward_stream


def test_prefixed_options_sit_beside_a_servers_own() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--listen")
    router_main.add_arguments(p, prefix="router-")
    args = p.parse_args(["--listen", "x:1", "--router-listen", "y:2", "--router-placement", "p:3", "--router-no-forward-stream"])
    cfg = router_main.config_from(args, prefix="router-")
    assert cfg.listen == "y:2" and cfg.placement == "p:3" and not cfg.use_forward_stream


def test_bad_peers_are_refused() -> None:
    with pytest.raises(SystemExit):
        router_main.parse_peers("1=a:1,oops")


def test_router_node_id_and_several_placement_servers() -> None:
    p = argparse.ArgumentParser()
    router_main.add_arguments(p, prefix="router-")
    args = p.parse_args(["--router-placement", "a:1,b:2", "--router-node-id", "1001", "--router-heartbeat-ms", "250"])
    cfg = router_main.config_from(args, prefix="router-")
    assert cfg.placement == "a:1,b:2" and cfg.node_id == 1001 and cfg.heartbeat_s == 0.25


def test_server_takes_the_router_role_beside_its_own() -> None:
    from flotilla import cli

    args = cli._build_parser().parse_args(
        ["server", "--router", "--join", "p:1,p:2", "--router-listen", "127.0.0.1:0", "--listen", "127.0.0.1:7000"]
    )
    assert args.router and args.router_listen == "127.0.0.1:0" and args.listen == "127.0.0.1:7000" and args.join == "p:1,p:2"
    from flotilla.server import _router_placement

    assert _router_placement(args, "", {}) == "p:1,p:2"
    args = cli._build_parser().parse_args(["server", "--router", "--placement", "--node-id", "2", "--data-dir", "d"])
    assert _router_placement(args, "h:2", {1: "h:1", 2: "h:2", 3: "h:3"}) == "h:2,h:1,h:3"


def test_a_store_takes_etcds_listen_client_urls() -> None:
    """--listen-client-urls http://HOST:PORT: the store serves etcd clients there (--router --router-listen)."""
    from flotilla import cli
    from flotilla.server import apply_client_urls

    parse = cli._build_parser().parse_args
    args = parse(["server", "--store", "--listen-client-urls", "http://127.0.0.1:2379"])
    assert not args.router
    apply_client_urls(args)
    assert args.router and args.router_listen == "127.0.0.1:2379"
    args = parse(["server", "--store", "--listen-client-urls", "https://10.0.0.1:2379",
                  "--router-cert-file", "c.crt", "--router-key-file", "c.key"])
    apply_client_urls(args)
    assert args.router and args.router_listen == "10.0.0.1:2379"
    args = parse(["server", "--store"])
    apply_client_urls(args)
    assert not args.router and args.router_listen == "127.0.0.1:2379"  # the flag's default, unused
    for bad, says in (
        (["--listen-client-urls", "127.0.0.1:2379"], "want http://HOST:PORT"),
        (["--listen-client-urls", "http://a:1,http://b:2"], "one URL"),
        (["--listen-client-urls", "https://a:1"], "needs --router-cert-file"),
        (["--listen-client-urls", "http://a:1", "--router-cert-file", "c", "--router-key-file", "k"], "use https://"),
    ):
        with pytest.raises(SystemExit, match=says):
            apply_client_urls(parse(["server", "--store", *bad]))


def test_playground_options() -> None:
    from flotilla import cli

    args = cli._build_parser().parse_args(["playground", "--client-port", "0", "--routers", "2"])
    assert args.client_port == 0 and args.routers == 2 and args.placement is None and args.data_dir == "./flotilla-data"
