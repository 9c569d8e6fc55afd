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
