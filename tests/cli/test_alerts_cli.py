"""`vpp alerts list|show|ack|silence` on the real PostgreSQL, over alerts the store wrote."""

from __future__ import annotations

import argparse
import json
from datetime import timedelta

import pytest

from cli.alerts import parse_duration
from sinks.alert_store import AlertStore
from cli.main import main

T0 = 1_767_225_600_000


def alert(subject: str, state: str, at_s: int, *, rule: str = "low_soc", node: str = "us/ca/pge") -> dict:
    return {"alert_id": f"{rule}-{subject}", "rule": rule, "subject": subject, "node_path": node, "state": state,
            "severity": "warning", "value": 9.0, "threshold": 10.0, "started_at": T0, "at": T0 + at_s * 1000,
            "summary": f"{subject} is low"}


@pytest.fixture
def vpp(isolated_settings, monkeypatch, capsys):
    monkeypatch.setenv("VPP_POSTGRES_DSN", isolated_settings.postgres_dsn)
    store = AlertStore(isolated_settings.postgres_dsn)
    store.write([("alert", alert("d1", "pending", 0)), ("alert", alert("d1", "firing", 300)),
                 ("alert", alert("d2", "pending", 0)), ("alert", alert("d3", "firing", 10, node="us/tx")),
                 ("alert", alert("d3", "resolved", 99, node="us/tx")),
                 ("alert", alert("d4", "pending", 0)), ("alert", alert("d4", "dropped", 5))])
    store.close()

    def run(*argv: str) -> tuple[int, str, str]:
        code = main(list(argv))
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def ids(out: str) -> list[str]:
    return sorted(row["subject"] for row in json.loads(out))


def test_list_filters_by_state_and_node_and_hides_dropped_alerts_unless_asked(vpp) -> None:
    assert ids(vpp("alerts", "list", "--json")[1]) == ["d1", "d2", "d3"]
    assert ids(vpp("alerts", "list", "--state", "firing", "--json")[1]) == ["d1"]
    assert ids(vpp("alerts", "list", "--state", "pending", "--json")[1]) == ["d2"]
    assert ids(vpp("alerts", "list", "--state", "dropped", "--json")[1]) == ["d4"]
    assert ids(vpp("alerts", "list", "--node", "us/ca", "--json")[1]) == ["d1", "d2"]
    assert ids(vpp("alerts", "list", "--node", "us/c", "--json")[1]) == []  # a node, not a text prefix
    code, out, _ = vpp("alerts", "list")
    assert code == 0 and "low_soc-d1" in out


def test_show_gives_the_history_and_ack_records_who(vpp) -> None:
    assert vpp("alerts", "ack", "low_soc-d1", "--by", "ana")[0] == 0
    code, out, _ = vpp("alerts", "show", "low_soc-d1")
    shown = json.loads(out)
    assert code == 0 and shown["acked_by"] == "ana"
    assert [(h["kind"], h["actor"]) for h in shown["history"]] == [("pending", None), ("firing", None), ("ack", "ana")]


def test_silence_by_id_or_identity_is_shown_and_recorded(vpp) -> None:
    assert vpp("alerts", "silence", "low_soc-d1", "--for", "30m", "--by", "ana")[0] == 0
    code, out, _ = vpp("alerts", "silence", "--rule", "low_soc", "--subject", "d2", "--for", "2h")
    assert code == 0 and "1 open alert" in out
    rows = {r["subject"]: r for r in json.loads(vpp("alerts", "list", "--json")[1])}
    assert rows["d1"]["silenced"] and rows["d2"]["silenced"] and not rows["d3"]["silenced"]
    history = json.loads(vpp("alerts", "show", "low_soc-d1")[1])["history"]
    assert history[-1]["kind"] == "silence" and history[-1]["actor"] == "ana"


def test_unknown_ids_and_bad_arguments_are_one_line_errors(vpp) -> None:
    assert vpp("alerts", "show", "nope")[0:3:2] == (1, "vpp: error: no alert with id 'nope' (see: vpp alerts list)\n")
    assert vpp("alerts", "ack", "nope", "--by", "x")[0] == 1
    assert vpp("alerts", "silence", "--rule", "low_soc", "--for", "1h")[0] == 1
    with pytest.raises(SystemExit):
        vpp("alerts", "silence", "low_soc-d1", "--for", "soon")


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("30m", 1800), ("2h", 7200), ("1d", 86400), ("1h30m", 5400)])
def test_durations(text, seconds) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "0s", "5", "1x", "-1h", "400d"])
def test_bad_durations(text) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_duration(text)
