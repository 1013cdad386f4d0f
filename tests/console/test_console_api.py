"""The operators' API on the real stack: who may do what, every endpoint, refusals as JSON, nothing half-done."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import psycopg
import pytest

from console_fixtures import (PASSWORD, aggregate, insert_alert, produce_readings, seed_market, start_flow, stop,
                              store_aggregates, wait_for)

from vpp.kafka_security import client_config

READS = [("GET", "/api/tree"), ("GET", "/api/nodes/{root}"), ("GET", "/api/nodes/{root}/series"),
         ("GET", "/api/dispatch"), ("GET", "/api/dispatch/cmd-x"), ("GET", "/api/alerts"), ("GET", "/api/market"),
         ("GET", "/api/assets"), ("GET", "/api/assets/x-1/history"), ("GET", "/api/stream"), ("GET", "/api/auth/me")]
WRITES = [("POST", "/api/dispatch"), ("POST", "/api/alerts/a1/ack"), ("POST", "/api/alerts/a1/silence"),
          ("POST", "/api/assets"), ("POST", "/api/assets/x-1/suspend")]


def _commands_on_topic(settings) -> list[dict]:
    """Every record on the test's dispatch.commands topic (decoded)."""
    from confluent_kafka import Consumer, TopicPartition

    from vpp.serde import Serde

    topic = settings.topic("dispatch.commands")
    consumer = Consumer({**client_config(settings), "group.id": "t", "enable.auto.commit": False})
    try:
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        consumer.assign([TopicPartition(topic, 0, 0)])
        out, serde = [], Serde.from_settings(settings)
        while len(out) < high:
            msg = consumer.poll(5)
            assert msg is not None, f"only {len(out)} of {high} records read"
            out.append(serde.decode(msg.value()))
        return out
    finally:
        consumer.close()


@pytest.mark.parametrize("method,path", READS + WRITES + [("GET", "/api/audit")])
def test_without_a_token_every_endpoint_is_401_with_a_json_reason(console_server, method, path):
    with console_server.client() as c:
        r = c.request(method, path.format(root=console_server.root))
    assert r.status_code == 401, r.text
    assert "authentication required" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("header", ["Bearer vpp_not-a-token", "Basic dXNlcjpwdw==", "Bearer"])
def test_a_bad_or_malformed_token_is_401(console_server, header):
    with httpx.Client(base_url=console_server.url, headers={"Authorization": header}) as c:
        r = c.get("/api/tree")
    assert r.status_code == 401 and r.json()["error"]


def test_an_unauthenticated_client_gets_only_the_login_page_and_the_token_endpoint(console_server):
    url = console_server.url
    assert httpx.get(url + "/login").status_code == 200
    assert httpx.post(url + "/api/auth/token", json={"username": "x", "password": "y"}).status_code == 401
    for path in ("/", "/market", "/alerts", "/dispatch", f"/nodes/{console_server.root}"):
        page = httpx.get(url + path)
        assert page.status_code == 303 and page.headers["location"].startswith("/login"), path
    assert httpx.get(url + "/openapi.json").status_code == 401
    assert httpx.get(url + "/docs").status_code == 404  # Swagger UI would load scripts from a CDN


def test_openapi_document_names_every_endpoint(console_server):
    with console_server.client("viewer") as c:
        paths = c.get("/openapi.json").json()["paths"]
    for p in ("/api/auth/token", "/api/tree", "/api/nodes/{path}", "/api/nodes/{path}/series", "/api/dispatch",
              "/api/dispatch/{command_id}", "/api/alerts", "/api/alerts/{alert_id}/ack", "/api/alerts/{alert_id}/silence",
              "/api/market", "/api/stream", "/api/audit"):
        assert p in paths, p
    assert not any(p.startswith(("/login", "/logout", "/nodes/", "/static")) for p in paths)  # pages are not the API


def test_login_issues_a_token_that_works_and_a_wrong_password_is_401(console_server):
    with console_server.client() as c:
        good = c.post("/api/auth/token", json={"username": "viewer", "password": PASSWORD})
        bad = c.post("/api/auth/token", json={"username": "viewer", "password": "wrong one"})
        assert good.status_code == 200 and bad.status_code == 401
        body = good.json()
        assert set(body) >= {"token", "expires_at"} and body["role"] == "viewer"
        me = c.get("/api/auth/me", headers={"Authorization": f"Bearer {body['token']}"}).json()
        assert me == {"name": "viewer", "role": "viewer", "via": "bearer"}
    # only the token's hash is stored
    with psycopg.connect(console_server.settings.postgres_dsn) as conn:
        stored = [r[0] for r in conn.execute("SELECT token_sha256 FROM api_tokens")]
    assert body["token"] not in stored and all(len(s) == 64 for s in stored)


def test_failed_logins_are_rate_limited_per_user(console_server):
    name = "nobody-" + uuid.uuid4().hex[:6]
    with console_server.client() as c:
        codes = [c.post("/api/auth/token", json={"username": name, "password": "guess-" + str(i)}).status_code
                 for i in range(7)]
    assert codes[:5] == [401] * 5 and codes[5:] == [429, 429]


@pytest.mark.parametrize("method,path", WRITES)
def test_a_viewer_cannot_change_anything(console_server, method, path):
    with console_server.client("viewer") as c:
        r = c.request(method, path, json={"node_path": console_server.root, "target_w": 100, "minutes": 5}
                      if path == "/api/dispatch" else None)
    assert r.status_code == 403 and "needs 'operator'" in r.json()["error"]


@pytest.mark.parametrize("role,status", [("viewer", 403), ("operator", 403), ("admin", 200)])
def test_only_an_admin_reads_the_audit_log(console_server, role, status):
    with console_server.client(role) as c:
        assert c.get("/api/audit").status_code == status


@pytest.mark.parametrize("method,path", READS[:-2])
def test_a_viewer_reads_everything(console_server, method, path):
    with console_server.client("viewer") as c:
        r = c.request(method, path.format(root=console_server.root))
    assert r.status_code in (200, 404), r.text  # 404: the command id is unknown
    assert r.headers["content-type"].startswith("application/json")


def test_tree_shows_the_fields_of_vpp_tree_and_refuses_an_unknown_node(console_server):
    root = console_server.root
    with console_server.client("viewer") as c:
        tree = c.get("/api/tree", params={"path": root, "depth": 2}).json()
        missing = c.get("/api/tree", params={"path": root + "/nowhere"})
        too_deep = c.get("/api/tree", params={"depth": 99})
    paths = [n["node_path"] for n in tree["nodes"]]
    assert paths == [root, f"{root}/ca", f"{root}/ca/site0", f"{root}/ca/site1"]
    node = tree["nodes"][0]
    for f in ("battery_w", "solar_w", "load_w", "grid_w", "energy_available_wh", "soc_pct", "devices_known",
              "devices_reporting", "estimated_devices", "window_end"):
        assert f in node
    assert node["battery_w"] == 4001.0 and node["devices_known"] == 4
    assert missing.status_code == 404 and "no node" in missing.json()["error"]
    assert too_deep.status_code == 422


def test_node_and_its_history_from_the_time_series_store(console_server):
    node = f"{console_server.root}/ca/site0"
    with console_server.client("viewer") as c:
        latest = c.get(f"/api/nodes/{node}").json()
        assert latest["node_path"] == node and latest["battery_w"] == 2001.0

        def history():
            return c.get(f"/api/nodes/{node}/series", params={"field": "battery_w", "from": int(time.time() * 1000) - 600_000})
        wait_for(lambda: len(history().json()["points"]) == 6, 30, "six points in the time-series store")
        points = history().json()["points"]
        assert [p["value"] for p in points] == [2006.0, 2005.0, 2004.0, 2003.0, 2002.0, 2001.0]
        assert c.get(f"/api/nodes/{node}/series", params={"field": "nope"}).status_code == 422
        assert c.get(f"/api/nodes/{node}/series", params={"from": "yesterday"}).status_code == 422
        assert c.get(f"/api/nodes/{node}/series", params={"from": "2026-01-02", "to": "2026-01-01"}).status_code == 422
        assert c.get(f"/api/nodes/{console_server.root}/nowhere").status_code == 404


def test_dispatch_refusals_are_4xx_and_send_nothing(console_server):
    root = console_server.root
    refused = [
        ({"node_path": root + "/nowhere", "target_w": 100, "minutes": 5}, 422, "no node"),
        ({"node_path": root, "target_w": 1e9, "minutes": 5}, 422, "out of range"),
        ({"node_path": root, "target_w": -30_000, "minutes": 5}, 422, "out of range"),
        ({"node_path": root, "target_w": 100, "minutes": 0}, 422, "minutes"),
        ({"node_path": root, "target_w": 100, "minutes": 10 ** 9}, 422, "longer than"),
        ({"node_path": root, "target_w": "lots", "minutes": 5}, 422, "target_w"),
        ({"node_path": root, "target_w": 100, "minutes": 5, "extra": 1}, 422, "extra"),
    ]
    with console_server.client("operator") as c:
        for body, status, words in refused:
            r = c.post("/api/dispatch", json=body)
            assert r.status_code == status and words in r.json()["error"], (body, r.text)
        malformed = c.post("/api/dispatch", content=b'{"node_path": ', headers={"content-type": "application/json"})
        huge = c.post("/api/dispatch", content=b'{"node_path": "' + b"x" * 200_000 + b'"}',
                      headers={"content-type": "application/json"})
    assert malformed.status_code == 422 and "JSON" in malformed.json()["error"]
    assert huge.status_code == 413 and "larger than" in huge.json()["error"]
    assert _commands_on_topic(console_server.settings) == []


def test_an_operator_dispatches_as_themselves_and_sees_what_the_dispatch_flow_made_of_it(console_server, tmp_path):
    settings = console_server.settings
    with console_server.client("operator") as c:
        r = c.post("/api/dispatch", json={"node_path": console_server.root + "/ca", "target_w": 3000, "minutes": 5})
        assert r.status_code == 201, r.text
        command_id = r.json()["command_id"]
        sent = [m for m in _commands_on_topic(settings) if m["command_id"] == command_id]
        assert len(sent) == 1 and sent[0]["issued_by"] == "operator" and sent[0]["target_w"] == 3000.0
        assert c.get(f"/api/dispatch/{command_id}").status_code == 404  # the flow has not read it yet
        flow = start_flow(settings, "dispatch", tmp_path / "dispatch.log")
        try:
            def decided():
                assert flow.poll() is None, (tmp_path / "dispatch.log").read_text()[-2000:]
                produce_readings(settings, console_server.root, int(time.time() * 1000))  # the devices report
                found = c.get(f"/api/dispatch/{command_id}").json()
                return found.get("statuses") and len(found["latest_setpoints"]) == 4
            wait_for(decided, 120, "the dispatch flow's status and set points of the command")
        finally:
            stop(flow)
        shown = c.get(f"/api/dispatch/{command_id}").json()
    assert shown["command"]["issued_by"] == "operator" and shown["command"]["node_path"] == console_server.root + "/ca"
    assert shown["statuses"][0]["state"] == "accepted" and shown["statuses"][0]["requested_w"] == 3000.0
    assert {p["device_id"] for p in shown["latest_setpoints"]} == {f"{console_server.root}-dev-{i}" for i in range(4)}
    assert shown["node"]["battery_w"] == 4001.0
    with console_server.client("viewer") as c:
        assert command_id in [x["command_id"] for x in c.get("/api/dispatch").json()["commands"]]


def test_alerts_are_listed_acked_and_silenced_by_an_operator(console_server):
    alert_id = "al-" + uuid.uuid4().hex[:8]
    insert_alert(console_server.settings, alert_id, console_server.root)
    with console_server.client("operator") as c:
        firing = c.get("/api/alerts", params={"state": "firing"}).json()["alerts"]
        assert alert_id in [a["alert_id"] for a in firing]
        assert alert_id not in [a["alert_id"] for a in c.get("/api/alerts", params={"state": "resolved"}).json()["alerts"]]
        assert c.get("/api/alerts", params={"state": "exploded"}).status_code == 422
        acked = c.post(f"/api/alerts/{alert_id}/ack").json()
        assert acked["acked_by"] == "operator" and acked["acked_at"]
        silenced = c.post(f"/api/alerts/{alert_id}/silence", json={"minutes": 30}).json()
        assert silenced["silenced_until"]
        assert c.post(f"/api/alerts/{alert_id}/silence", json={"minutes": 10 ** 7}).status_code == 422
        assert c.post("/api/alerts/no-such-alert/ack").status_code == 404
    with psycopg.connect(console_server.settings.postgres_dsn) as conn:
        events = [r for r in conn.execute("SELECT kind, actor FROM alert_events WHERE alert_id = %s ORDER BY id", (alert_id,))]
    assert events == [("ack", "operator"), ("silence", "operator")]


def test_market_shows_forecast_and_actual_prices_plans_bids_and_awards(console_server):
    node = console_server.root + "/mkt"
    first = seed_market(console_server.settings, node)
    with console_server.client("viewer") as c:
        body = c.get("/api/market").json()
    assert body["market"] is None  # the market simulator does not answer here
    rows = {r["interval_start"]: r for r in body["intervals"] if r["node_path"] == node}
    assert len(rows) == 6
    second = rows[first + 300_000]
    assert second["forecast_price_usd_per_mwh"] == 41.0 and second["planned_w"] == 1000.0
    assert second["bid_pairs"] == [{"price_usd_per_mwh": 41.0, "quantity_w": 1000.0}]
    assert second["awarded_w"] == 900.0 and second["clearing_price_usd_per_mwh"] == 41.5
    assert rows[first]["actual_price_usd_per_mwh"] == 39.5  # fetched by the next interval's workflow


def test_the_stream_sends_aggregates_keep_alives_and_notices_a_client_leaving(console_server):
    broadcaster = console_server.app.state.broadcaster
    node = f"{console_server.root}/ca/site1"
    seen: list[str] = []
    with console_server.client("viewer") as c:
        with c.stream("GET", "/api/stream", params={"events": "aggregate", "path": node}) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = r.iter_lines()
            assert next(lines) == "retry: 3000"
            wait_for(lambda: broadcaster.subscribers, 10, "the subscription")
            time.sleep(0.8)  # the poller's first look sets its starting point
            store_aggregates(console_server.settings, [aggregate(node, int(time.time() * 1000) // 10_000 * 10_000, 1234.5)])
            deadline = time.monotonic() + 20
            for line in lines:
                seen.append(line)
                if line.startswith("data:") and json.loads(line[5:])["battery_w"] == 1234.5:
                    break
                assert time.monotonic() < deadline, seen
            for line in lines:  # keep-alives every second while nothing happens
                if line == ": keep-alive":
                    break
    assert "event: aggregate" in seen
    wait_for(lambda: not broadcaster.subscribers, 10, "the stream to notice the client left")


def test_every_state_changing_request_is_audited_and_the_log_is_append_only(console_server):
    with console_server.client("viewer") as c:
        c.post("/api/alerts/x/ack")
    with console_server.client("admin") as c:
        entries = c.get("/api/audit", params={"limit": 1000}).json()["entries"]
    assert any(e["actor"] == "viewer" and e["action"] == "POST /api/alerts/x/ack" and e["outcome"] == "refused 403"
               and e["address"] == "127.0.0.1" for e in entries)
    assert any(e["action"] == "POST /api/auth/token" for e in entries)
    with psycopg.connect(console_server.settings.postgres_dsn) as conn:
        for statement in ("UPDATE audit_log SET outcome = 'ok'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
            conn.rollback()


def test_a_console_session_needs_the_request_header_to_change_state(console_server):
    with httpx.Client(base_url=console_server.url) as browser:
        login = browser.post("/login", data={"username": "operator", "password": PASSWORD, "next": "//evil.example/"})
        assert login.status_code == 303 and login.headers["location"] == "/"  # no open redirect
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert browser.get("/api/auth/me").json()["via"] == "cookie"
        forged = browser.post("/api/alerts/no-such-alert/ack")  # what a cross-site form could send
        assert forged.status_code == 403 and "x-requested-with" in forged.json()["error"]
        assert browser.post("/api/alerts/no-such-alert/ack", headers={"X-Requested-With": "vpp-console"}).status_code == 404
        browser.post("/logout")
        assert browser.get("/api/auth/me").status_code == 401


def _events_on_topic(settings) -> list[dict]:
    from sinks.kafka_tools import iter_topic
    from vpp.serde import Serde

    serde = Serde.from_settings(settings)
    return [serde.decode(m.value()) for m in iter_topic(settings, settings.topic("fleet.events"), timeout_s=10)]


def test_operators_manage_a_devices_life_through_the_api_and_each_change_is_audited_and_an_event(console_server):
    device = "api-" + uuid.uuid4().hex[:6]
    site = f"{console_server.root}/site-api"
    body = {"device_id": device, "site_id": "site-api", "region_path": site, "timezone": "UTC", "capacity_wh": 10000,
            "max_charge_w": 4000, "max_discharge_w": 4000, "reserve_pct": 10, "status": "active"}
    with console_server.client("viewer") as c:
        assert c.post("/api/assets", json=body).status_code == 403
    with console_server.client("operator") as c:
        r = c.post("/api/assets", json=body)
        assert r.status_code == 201 and r.json()["events"] == ["device_registered"], r.text
        r = c.post(f"/api/assets/{device}/move", json={"region_path": f"{console_server.root}/site-b", "reason": "feeder"})
        assert r.status_code == 200 and r.json()["events"] == ["device_moved"], r.text
        r = c.post(f"/api/assets/{device}/enroll", json={"program": "peak_shaving", "reserve_pct": 30})
        assert r.status_code == 200 and r.json()["changed"]
        r = c.post(f"/api/assets/{device}/commission", json={})
        assert r.status_code == 422 and "active: it cannot become commissioned" in r.json()["error"]
        assert c.post("/api/assets/no-such-device/suspend", json={}).status_code == 404
        assert c.post(f"/api/assets/{device}/decommission", json={}).status_code == 422  # a reason is required
        r = c.post(f"/api/assets/{device}/decommission", json={"reason": "end of life"})
        assert r.status_code == 200 and r.json()["events"] == ["device_removed"] and r.json()["status"] == "decommissioned"
        assert c.post(f"/api/assets/{device}/activate", json={}).status_code == 422  # final
    with console_server.client("viewer") as c:
        versions = c.get(f"/api/assets/{device}/history").json()["versions"]
        assert [v["status"] for v in versions] == ["active", "active", "active", "decommissioned"]
        assert {v["changed_by"] for v in versions} == {"operator"} and versions[1]["reason"] == "feeder"
        assert device not in {a["device_id"] for a in c.get("/api/assets").json()["assets"]}
        past = c.get("/api/assets", params={"at": versions[2]["valid_from"]}).json()["assets"]
        assert [a["enrolled_now"] for a in past if a["device_id"] == device] == [["market", "peak_shaving"]]
    with console_server.client("admin") as c:
        entries = c.get("/api/audit", params={"limit": 1000}).json()["entries"]
    mine = [e for e in entries if e["target"] == device and e["actor"] == "operator"]
    assert {e["action"] for e in mine} >= {"POST /api/assets", f"POST /api/assets/{device}/move",
                                           f"POST /api/assets/{device}/decommission"}
    events = [e for e in _events_on_topic(console_server.settings) if e["subject"] == device]
    assert [e["kind"] for e in events] == ["device_registered", "device_moved", "device_removed"]
    assert set(events[2]) == {"event_id", "kind", "subject", "node_path", "at", "detail"}
    assert events[2]["node_path"] == f"{console_server.root}/site-b/{device}"
