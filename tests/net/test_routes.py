"""Devnet peer routes (``[node].peer_routes``): how a benchmark puts delay proxies between nodes. Refused
outside devnet mode; malformed routes are refused by name."""

from __future__ import annotations

import pytest

from derot.net.peers import Endpoint, EndpointError, parse_routes
from derot.service.config import ConfigError, load_config


def test_routes_parse_and_rewrite_only_the_routed_addresses():
    from derot.net.peers import PeerPool

    routes = parse_routes(" 127.0.0.1:7001=127.0.0.1:9001 , 127.0.0.1:8001=127.0.0.1:9002,")
    assert routes == {"127.0.0.1:7001": "127.0.0.1:9001", "127.0.0.1:8001": "127.0.0.1:9002"}
    pool = PeerPool.__new__(PeerPool)
    pool.routes = routes
    assert pool.route(Endpoint.parse("public=127.0.0.1:7001;peer=127.0.0.1:8001")) == Endpoint(
        "127.0.0.1:9001", "127.0.0.1:9002")
    unrouted = Endpoint.parse("public=127.0.0.1:7002;peer=127.0.0.1:8002")
    assert pool.route(unrouted) == unrouted


@pytest.mark.parametrize("text", ["127.0.0.1:7001", "127.0.0.1:7001=nowhere", "x=127.0.0.1:1"])
def test_malformed_routes_are_refused(text):
    with pytest.raises(EndpointError):
        parse_routes(text)


def test_routes_are_refused_outside_devnet_mode(tmp_path):
    env = {"DEROT_NODE_PEER_ROUTES": "127.0.0.1:7001=127.0.0.1:9001"}
    with pytest.raises(ConfigError, match="outside devnet"):
        load_config(None, env)
    roots = tmp_path / "roots"
    config = load_config(None, dict(env, DEROT_ATTEST_MODE="devnet", DEROT_ATTEST_DEVNET_ROOTS=str(roots)))
    assert config.node.peer_routes == env["DEROT_NODE_PEER_ROUTES"]
    with pytest.raises(ConfigError, match="peer_routes"):
        load_config(None, dict(env, DEROT_NODE_PEER_ROUTES="bad", DEROT_ATTEST_MODE="devnet",
                               DEROT_ATTEST_DEVNET_ROOTS=str(roots)))


def test_inconsistent_hedge_limits_are_refused():
    with pytest.raises(ConfigError, match="hedge"):
        load_config(None, {"DEROT_LIMITS_HEDGE_FLOOR": "1.0", "DEROT_LIMITS_HEDGE_CAP": "0.1"})
