"""The market on the real broker and registry: bids, prices and awards published as Avro, decoded by the registry serde."""

from __future__ import annotations

import json
import time

import httpx

from sinks.kafka_tools import read_topic
from devtools.market.api import KafkaDelivery, MarketClock, MarketService
from devtools.market.book import OrderBook
from devtools.market.clearing import awarded_w
from devtools.market.prices import price_series
from held_clock import HeldWall
from vpp.serde import Serde
from vpp.kafka_security import client_config

T0 = 1_780_000_200_000
STEP = 300_000
PAIRS = [(-20.0, -2000.0), (30.0, 5000.0)]


def post(url: str, body: dict) -> int:
    return httpx.post(url, content=json.dumps(body).encode(), timeout=10).raise_for_status().status_code


def test_bids_prices_and_awards_reach_their_topics(isolated_settings):
    settings = isolated_settings
    book, wall = OrderBook("SP15", gate_closure_ms=STEP), HeldWall()
    service = MarketService(book, MarketClock(T0 - 2 * STEP + 1000, 600, wall), seed=4,
                            deliver=KafkaDelivery(settings), log=lambda _: None)
    with service:
        assert post(service.url + "/bids", {
            "bid_id": "bid-A", "node_path": "us/ca/sf", "pricing_node": "SP15", "interval_start": "2026-05-28T20:30:00Z",
            "pairs": [{"price_usd_per_mwh": p, "quantity_w": q} for p, q in PAIRS],
        }) == 201
        wall.release()
        deadline = time.monotonic() + 20
        while not book.is_cleared(T0 + STEP):
            assert time.monotonic() < deadline, "intervals were not cleared"
            time.sleep(0.1)

    serde = Serde.from_settings(settings)
    prices = read_topic(settings, settings.topic("market.prices"), serde.decode)
    awards = read_topic(settings, settings.topic("market.awards"), serde.decode)
    bids = read_topic(settings, settings.topic("market.bids"), serde.decode)
    expected = price_series(T0 - 2 * STEP, 4, seed=4)
    assert [p["interval_start"] for p in prices[:4]] == [T0 - 2 * STEP + k * STEP for k in range(4)]
    assert [p["price_usd_per_mwh"] for p in prices[:4]] == list(expected)
    assert all(p["pricing_node"] == "SP15" and p["interval_end"] - p["interval_start"] == STEP for p in prices)
    assert [(b["bid_id"], b["interval_start"], b["pairs"]) for b in bids] == [
        ("bid-A", T0, [{"price_usd_per_mwh": p, "quantity_w": q} for p, q in PAIRS])]
    assert T0 - 2 * STEP <= bids[0]["submitted_at"] < T0 - STEP  # market time when it was accepted
    price = float(expected[2])
    assert awards == [{
        "bid_id": "bid-A", "node_path": "us/ca/sf", "interval_start": T0, "interval_end": T0 + STEP,
        "clearing_price_usd_per_mwh": price, "awarded_w": awarded_w(PAIRS, price),
    }]


def test_backfill_publishes_past_prices_keyed_by_pricing_node(isolated_settings):
    from confluent_kafka import Consumer, TopicPartition

    from devtools.market.api import price_record

    delivery = KafkaDelivery(isolated_settings)
    values = price_series(T0, 288, seed=1)
    delivery.publish_prices([price_record("SP15", T0 + k * STEP, float(v)) for k, v in enumerate(values)])
    topic = isolated_settings.topic("market.prices")
    consumer = Consumer(client_config(isolated_settings, **{"group.id": "t", "enable.partition.eof": True}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    keys, serde = [], Serde.from_settings(isolated_settings)
    decoded = []
    while True:
        msg = consumer.poll(10)
        assert msg is not None
        if msg.error():
            break
        keys.append(msg.key())
        decoded.append(serde.decode(msg.value())["price_usd_per_mwh"])
    consumer.close()
    assert set(keys) == {b"SP15"} and decoded == list(values)
