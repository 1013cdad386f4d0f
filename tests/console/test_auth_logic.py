"""Pure rules of who may do what: roles, tokens, signed cookies, login rate limits, live-event routing."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import given, strategies as st

from console.auth import (RateLimit, check_role, login_refusal, new_token, password_problem, role_at_least, sign,
                          token_sha256, unsign, valid_user_name)
from console.live import matches, sse_frame
from sinks.market_view import market_rows
from sinks.series import parse_export, series_query


@pytest.mark.parametrize("role,needed,allowed", [
    ("viewer", "viewer", True), ("viewer", "operator", False), ("viewer", "admin", False),
    ("operator", "viewer", True), ("operator", "operator", True), ("operator", "admin", False),
    ("admin", "viewer", True), ("admin", "operator", True), ("admin", "admin", True),
    ("root", "viewer", False), ("admin", "superuser", False),
])
def test_roles_are_ordered_viewer_operator_admin(role, needed, allowed):
    assert role_at_least(role, needed) is allowed
    assert (check_role(role, needed) is None) is allowed


def test_a_token_is_random_and_only_its_sha256_is_kept():
    token, digest = new_token()
    other, _ = new_token()
    assert token.startswith("vpp_") and len(token) > 40 and token != other
    assert digest == token_sha256(token) and len(digest) == 64 and token not in digest


@given(st.text(min_size=1, max_size=80).filter(lambda v: "." not in v))
def test_a_signed_value_comes_back_only_under_its_key(value):
    key, other = b"k" * 32, b"o" * 32
    signed = sign(value, key)
    assert unsign(signed, key) == value
    assert unsign(signed, other) is None
    assert unsign(signed[:-1] + ("A" if signed[-1] != "A" else "B"), key) is None


@pytest.mark.parametrize("text", ["", ".", "abc", "abc.", ".mac"])
def test_unsign_refuses_what_was_never_signed(text):
    assert unsign(text, b"k" * 32) is None


@pytest.mark.parametrize("user,address,refused", [(0, 0, None), (4, 19, None), (5, 0, "this user"), (0, 20, "this address")])
def test_login_refusal_per_user_and_per_address(user, address, refused):
    reason = login_refusal(user, address, RateLimit(per_user=5, per_address=20))
    assert (reason is None) if refused is None else (refused in reason)


@pytest.mark.parametrize("name,ok", [("alice", True), ("ops.team@site-1", True), ("", False), ("a b", False),
                                     ("x" * 65, False), ("robert'); drop", False)])
def test_user_names(name, ok):
    assert valid_user_name(name) is ok


def test_password_rules():
    assert password_problem("short") and password_problem("x" * 2000)
    assert password_problem("long enough") is None


def test_sse_frame_is_one_event_with_one_line_of_json():
    assert sse_frame("alert", {"a": [1, 2]}, 7) == 'id: 7\nevent: alert\ndata: {"a":[1,2]}\n\n'


@pytest.mark.parametrize("path,node,wanted", [(None, "us/ca", True), ("us", "us/ca", True), ("us/ca", "us", True),
                                              ("us/ca", "us/tx", False), ("us/c", "us/ca", False)])
def test_a_page_gets_the_events_of_its_subtree_and_ancestors(path, node, wanted):
    assert matches(frozenset({"aggregate"}), path, "aggregate", {"node_path": node}) is wanted
    assert not matches(frozenset({"alert"}), path, "aggregate", {"node_path": node})


@pytest.mark.parametrize("depth,max_depth,wanted", [(1, None, True), (5, None, True), (2, 2, True), (3, 2, False)])
def test_a_page_gets_aggregates_only_down_to_the_depth_it_shows(depth, max_depth, wanted):
    assert matches(frozenset({"aggregate"}), None, "aggregate", {"node_path": "a", "depth": depth}, max_depth) is wanted
    assert matches(frozenset({"alert"}), None, "alert", {"node_path": "a", "depth": depth}, max_depth)


def test_series_query_quotes_the_node_and_refuses_unknown_fields():
    assert series_query('us/"x', "battery_w") == '{__name__="fleet_node_battery_w",node_path="us/\\"x"}'
    with pytest.raises(ValueError):
        series_query("us", "password")


def test_parse_export_merges_series_in_time_order():
    text = '{"metric":{},"values":[2,1],"timestamps":[20,10]}\n\n{"metric":{},"values":[3],"timestamps":[30]}\n'
    assert parse_export(text) == [(10, 1), (20, 2), (30, 3)]


def test_market_rows_join_forecast_actual_plan_bid_and_award():
    t0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)
    t1 = datetime(2026, 12, 7, 12, 5, tzinfo=timezone.utc)
    ms0 = int(t0.timestamp() * 1000)
    workflows = [{"node_path": "us", "interval_start": t0, "status": "dispatched", "reason": None, "bid_id": "b0"}]
    facts = [
        {"node_path": "us", "interval_start": t0, "step": "forecast", "fact": {"prices_usd_per_mwh": [42.0, 43.0]}},
        {"node_path": "us", "interval_start": t0, "step": "optimized", "fact": {"first_discharge_w": 900.0, "first_charge_w": 0.0}},
        {"node_path": "us", "interval_start": t0, "step": "bid_submitted", "fact": {"pairs": [{"price_usd_per_mwh": 40, "quantity_w": 900}]}},
        {"node_path": "us", "interval_start": t0, "step": "awarded", "fact": {"awarded_w": 900.0, "clearing_price_usd_per_mwh": 41.0}},
        {"node_path": "us", "interval_start": t1, "step": "fetched",
         "fact": {"newest_price_interval_start": ms0, "newest_price_usd_per_mwh": 45.5}},
    ]
    (row,) = market_rows(workflows, facts)
    assert row == {"node_path": "us", "interval_start": ms0, "status": "dispatched", "reason": None, "bid_id": "b0",
                   "forecast_price_usd_per_mwh": 42.0, "actual_price_usd_per_mwh": 45.5, "planned_w": 900.0,
                   "bid_pairs": [{"price_usd_per_mwh": 40, "quantity_w": 900}], "awarded_w": 900.0,
                   "clearing_price_usd_per_mwh": 41.0}
