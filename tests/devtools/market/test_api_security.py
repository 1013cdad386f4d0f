"""The market API's doors: a bearer token for every request, bounded bid steps, and only the asset registry's nodes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import httpx
import pytest

from sinks.asset_registry import upsert_assets
from vpp.assets import Asset
from devtools.market.api import MarketClock, MarketService
from devtools.market.book import OrderBook
from devtools.market.nodes import AssetNodes, known_nodes_of

T0 = 1_780_000_200_000
STEP = 300_000
TOKEN = "t0ken-for-tests"


def bid(bid_id: str = "bid-1", node_path: str = "us/ca/sf", quantity_w: float = 5000.0) -> dict:
    return {"bid_id": bid_id, "node_path": node_path, "pricing_node": "SP15", "interval_start": T0 + 3 * STEP,
            "pairs": [{"price_usd_per_mwh": 30.0, "quantity_w": quantity_w}]}


def market(**book_options) -> MarketService:
    return MarketService(OrderBook("SP15", STEP, **book_options), MarketClock(T0), log=lambda _: None, token=TOKEN)


def post(url: str, body: dict, token: str | None = TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return httpx.post(url + "/bids", json=body, headers=headers, timeout=10)


@pytest.mark.parametrize("authorization", [None, "Bearer wrong", f"Basic {TOKEN}", "Bearer"],
                         ids=["none", "wrong token", "other scheme", "empty"])
def test_every_request_needs_the_token(authorization):
    headers = {"Authorization": authorization} if authorization else {}
    with market() as m:
        for method, path in (("POST", "/bids"), ("GET", "/bids/bid-1"), ("GET", "/status")):
            response = httpx.request(method, m.url + path, headers=headers, json=bid(), timeout=10)
            assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
            assert "Authorization: Bearer" in response.json()["error"]
        assert m.book.stats()["bids"] == 0


def test_the_token_s_bearer_bids_and_reads():
    with market() as m:
        assert post(m.url, bid()).status_code == 201
        assert httpx.get(m.url + "/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()["bids"] == 1


def test_a_step_beyond_the_limit_is_refused_and_not_kept():
    with market(max_bid_w=10_000.0) as m:
        for quantity in (1e12, -20_000.0):
            response = post(m.url, bid(quantity_w=quantity))
            assert response.status_code == 422 and "exceeds this market's limit of 10000 W" in response.json()["error"]
        assert post(m.url, bid(quantity_w=10_000.0)).status_code == 201
        assert m.book.stats()["bids"] == 1


def test_known_nodes_are_every_region_prefix_and_device():
    assert known_nodes_of([("us/ca/sf/site-1", "pw-1"), ("us/tx/site-2", "pw-2")]) == {
        "us", "us/ca", "us/ca/sf", "us/ca/sf/site-1", "us/ca/sf/site-1/pw-1", "us/tx", "us/tx/site-2",
        "us/tx/site-2/pw-2"}


def test_a_node_the_asset_registry_does_not_hold_is_refused(isolated_settings):
    dsn = isolated_settings.postgres_dsn
    upsert_assets(dsn, [Asset("pw-1", "site-1", "us/ca/sf/site-1", "America/Los_Angeles", 13_500.0, 5_000.0, 5_000.0, 20.0)])
    with market(known_node=AssetNodes.connect(dsn)) as m:
        refused = post(m.url, bid("bid-x", node_path="mars/base"))
        assert refused.status_code == 422 and "'mars/base' is not a node of the asset registry" in refused.json()["error"]
        assert post(m.url, bid("bid-ca", node_path="us/ca")).status_code == 201
        # a node registered after the market started is found: an unknown node re-reads the registry
        upsert_assets(dsn, [Asset("pw-2", "site-9", "eu/de/site-9", "Europe/Berlin", 13_500.0, 5_000.0, 5_000.0, 20.0)])
        time.sleep(1.1)  # re-reads are at most once a second
        assert post(m.url, bid("bid-de", node_path="eu/de")).status_code == 201
        assert m.book.stats()["bids"] == 2


def test_without_a_reachable_asset_registry_no_node_is_checked():
    assert AssetNodes.connect("postgresql://postgres@127.0.0.1:1/vpp") is None


def test_a_registry_that_fails_later_keeps_the_nodes_read_before():
    reads = [[("us/ca/site-1", "pw-1")]]

    def read_rows():
        if not reads:
            raise OSError("database down")
        return reads.pop()

    now = [0.0]
    nodes = AssetNodes(read_rows, refresh_s=30.0, clock=lambda: now[0])
    now[0] = 31.0
    assert nodes("us/ca") and not nodes("us/tx")


def serve(state_dir, *args: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VPP_")}
    return subprocess.Popen([sys.executable, "-m", "cli", "market", "serve", "--no-publish", "--state-dir",
                             str(state_dir), *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_the_command_refuses_to_serve_without_a_token(tmp_path):
    out, err = serve(tmp_path, "--any-node").communicate(timeout=60)
    assert "needs a token" in err and "VPP_MARKET_TOKEN" in err and "Traceback" not in err


def test_the_command_serves_the_stack_s_token_holders(stack):
    proc = serve(stack.state_dir)
    try:
        url = json.loads(proc.stdout.readline())["url"]
        assert httpx.get(url + "/status", timeout=10).status_code == 401
        authorized = {"Authorization": f"Bearer {stack.settings.market_token}"}
        assert httpx.get(url + "/status", headers=authorized, timeout=10).status_code == 200
        soon = (int(time.time() * 1000) // STEP + 3) * STEP
        refused = httpx.post(url + "/bids", json={**bid(node_path="nowhere/at/all"), "interval_start": soon},
                             headers=authorized, timeout=10)
        assert refused.status_code == 422 and "not a node of the asset registry" in refused.json()["error"]
    finally:
        proc.terminate()
        proc.wait(30)
