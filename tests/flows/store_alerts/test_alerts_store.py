"""The store-alerts flow on the real PostgreSQL and time-series store, and the alert webhook on a real HTTP server.

Idempotent: the same transition (or event) twice is one row, one point, one notification. A
silenced alert is stored but not posted; a receiver that fails is retried with backoff.
"""

from __future__ import annotations

import json
import threading

import bytewax.operators as op
import psycopg
import pytest
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.testing import TestingSink, TestingSource, run_main

from flows.store_alerts.flow import build_flow
from sinks.alert_store import AlertStore
from sinks.timeseries import alert_event_lines
from sinks.webhook import WebhookNotifier, webhook_payload
from vpp.serde import Serde

from real_services import export_series, wait_for

SERDE = Serde.local()
T0 = 1_767_225_600_000


def alert(state: str, at_s: int, *, subject: str = "d1", started_s: int = 0) -> dict:
    return {"alert_id": f"a-{subject}-{started_s}", "rule": "low_soc", "subject": subject, "node_path": "us/ca",
            "state": state, "severity": "warning", "value": 9.0, "threshold": 10.0, "started_at": T0 + started_s * 1000,
            "at": T0 + at_s * 1000, "summary": f"{subject} {state}"}


def event(kind: str, at_s: int) -> dict:
    return {"event_id": f"e-{kind}-{at_s}", "kind": kind, "subject": "c1", "node_path": "us", "at": T0 + at_s * 1000,
            "detail": {"reason": "x"}}


LIFECYCLE = [alert("pending", 0), alert("firing", 300), alert("resolved", 700)]


def test_the_same_transitions_twice_keep_one_row_each_and_are_new_once(isolated_settings) -> None:
    store = AlertStore(isolated_settings.postgres_dsn)
    items = [("alert", a) for a in LIFECYCLE] + [("event", event("command_accepted", 5))]
    first = store.write(items)
    assert [(a["state"], silenced) for a, silenced in first] == [("pending", False), ("firing", False), ("resolved", False)]
    assert store.write(items) == []
    assert store.write([("alert", LIFECYCLE[1])]) == []  # a late copy of an older state moves nothing back
    store.close()
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        assert conn.execute("SELECT state, fired_at IS NOT NULL, ended_at IS NOT NULL FROM alerts").fetchall() == [
            ("resolved", True, True)]
        assert conn.execute("SELECT kind FROM alert_events ORDER BY id").fetchall() == [("pending",), ("firing",), ("resolved",)]
        assert conn.execute("SELECT event_id, detail FROM events").fetchall() == [("e-command_accepted-5", {"reason": "x"})]


class MemoryPorts:
    def __init__(self, msgs: list, written: list):
        self.serde, self._msgs, self._written = SERDE, msgs, written

    def topic(self, name: str) -> str:
        return name

    def read(self, flow, step_id, topics):
        return op.input(step_id, flow, TestingSource(self._msgs, batch_size=3))

    def write(self, step_id, stream) -> None:
        op.output(step_id, stream, TestingSink(self._written))


def test_the_flow_stores_alerts_and_events_once_in_postgres_and_the_time_series(isolated_settings) -> None:
    records = [("fleet.alerts", a) for a in LIFECYCLE] + [("fleet.events", event("command_expired", 9))]
    msgs = [KafkaSourceMessage(b"k", SERDE.encode(topic, rec), topic, partition=0, offset=i)
            for i, (topic, rec) in enumerate(records * 2)]  # every record read twice
    msgs.append(KafkaSourceMessage(b"k", b"not avro", "fleet.events", partition=0, offset=99))
    written: list = []
    run_main(build_flow(isolated_settings, ports=MemoryPorts(msgs, written)))
    assert [SERDE.decode(m.value)["reason"] for m in written] == ["malformed_avro"]
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        assert conn.execute("SELECT count(*), min(state) FROM alerts").fetchone() == (1, "resolved")
        assert conn.execute("SELECT count(*) FROM alert_events").fetchone() == (3,)
        assert conn.execute("SELECT count(*) FROM events").fetchone() == (1,)
    url = isolated_settings.timeseries_url
    # the series are shared by every test run: pick this test's subject and time
    def points() -> list:
        return [(labels["state"], ts) for labels, stamps, _ in export_series(url, "alert_value", T0, T0 + 800_000)
                if labels.get("subject") == "d1" for ts in stamps]
    wait_for(lambda: len(points()) >= 3, 30, "alert points")
    assert sorted(points()) == [("firing", T0 + 300_000), ("pending", T0), ("resolved", T0 + 700_000)]


def test_alert_and_event_lines_are_tagged_by_identity_and_stamped_at_their_time() -> None:
    lines = alert_event_lines([("alert", alert("firing", 300)), ("event", {**event("command_accepted", 1), "node_path": ""})])
    assert lines == [f"alert,rule=low_soc,subject=d1,state=firing,severity=warning,node_path=us/ca value=9.0,threshold=10.0 {T0 + 300_000}",
                     f"event,kind=command_accepted,subject=c1 count=1i {T0 + 1000}"]


class Receiver:
    """A real HTTP server (Starlette on uvicorn) that answers 500 to the first ``failures`` posts, then 204; records
    the bodies."""

    def __init__(self, failures: int = 0):
        from starlette.applications import Starlette
        from starlette.responses import Response
        from starlette.routing import Route

        from vpp.asgi import BackgroundServer, ServerLimits

        self.bodies: list[dict] = []
        self.attempts = 0

        async def hook(request) -> Response:
            body = json.loads(await request.body())
            self.attempts += 1
            if self.attempts <= failures:
                return Response(status_code=500)
            self.bodies.append(body)
            return Response(status_code=204)

        app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
        self.server = BackgroundServer(app, "127.0.0.1", 0, ServerLimits(), name="webhook-receiver").start()
        self.url = f"{self.server.url}/hook"

    def close(self) -> None:
        self.server.stop()


@pytest.fixture
def receiver():
    r = Receiver(failures=2)
    yield r
    r.close()


def test_the_webhook_retries_a_failing_receiver_and_posts_each_alert_once(receiver) -> None:
    notifier = WebhookNotifier(receiver.url, first_delay_s=0.01)
    assert notifier.submit(webhook_payload(alert("firing", 300)))
    assert notifier.drain(10)
    notifier.close()
    assert receiver.attempts == 3 and notifier.sent == 1 and notifier.failed == 0
    assert receiver.bodies == [{**alert("firing", 300), "started_at": "2026-01-01T00:00:00Z", "at": "2026-01-01T00:05:00Z"}]


def test_the_webhook_gives_up_after_its_attempts_and_counts_it() -> None:
    r = Receiver(failures=100)
    try:
        notifier = WebhookNotifier(r.url, attempts=3, first_delay_s=0.01)
        notifier.submit({"alert_id": "x"})
        assert notifier.drain(10)
        notifier.close()
        assert (r.attempts, notifier.sent, notifier.failed) == (3, 0, 1)
    finally:
        r.close()


def test_a_full_queue_drops_and_counts_instead_of_blocking() -> None:
    gate = threading.Event()
    notifier = WebhookNotifier("http://127.0.0.1:9/unused", queue_size=1, attempts=1, sleep=lambda s: None)
    notifier._post = lambda payload: gate.wait(10)  # hold the thread on the first notification
    accepted = [notifier.submit({"alert_id": str(i)}) for i in range(5)]
    gate.set()
    notifier.close()
    assert accepted.count(False) == notifier.dropped >= 3


def test_the_store_flow_posts_new_firing_and_resolved_transitions_only_and_not_for_a_silenced_alert(
        isolated_settings, receiver) -> None:
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        conn.execute("INSERT INTO alert_silences (rule, subject, until, created_by) VALUES ('low_soc', 'd2', now() + interval '1 hour', 't')")
    silenced = [alert("pending", 0, subject="d2"), alert("firing", 300, subject="d2")]
    records = [("fleet.alerts", a) for a in LIFECYCLE + silenced]
    msgs = [KafkaSourceMessage(b"k", SERDE.encode(t, r), t, partition=0, offset=i) for i, (t, r) in enumerate(records * 2)]
    settings = isolated_settings.replace(alert_webhook_url=receiver.url)
    run_main(build_flow(settings, ports=MemoryPorts(msgs, [])))  # at its end the sink waits for the queue (5 s at most)
    assert [(b["subject"], b["state"]) for b in receiver.bodies] == [("d1", "firing"), ("d1", "resolved")]
    with psycopg.connect(isolated_settings.postgres_dsn) as conn:
        assert conn.execute("SELECT subject, silenced_until IS NOT NULL FROM alerts ORDER BY subject").fetchall() == [
            ("d1", False), ("d2", True)]
