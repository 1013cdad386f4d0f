"""The autobidder's facts and statuses in PostgreSQL: facts immutable, the newest status wins, replays absorbed."""

from __future__ import annotations

import psycopg

from sinks.autobidder_store import AutobidderStore, store_rows, workflow_facts

T = 1_767_225_600_000


def fact(step: str, at: int, **fact) -> tuple[str, dict]:
    return "fact", {"node_path": "us/ca", "interval_start": T, "step": step, "fact": fact, "at": at}


def status(state: str, at: int) -> tuple[str, dict]:
    return "workflow", {"node_path": "us/ca", "interval_start": T, "status": state, "bid_id": "bid-x", "reason": None,
                        "at": at}


def test_rows_keep_the_first_fact_and_the_last_status_of_a_batch() -> None:
    facts, workflows = store_rows([fact("fetched", 1, n=1), fact("fetched", 2, n=2), status("forecasting", 1),
                                   status("optimizing", 2)])
    assert [f[3] for f in facts] == [{"n": 1}]
    assert [w[2] for w in workflows] == ["optimizing"]


def test_replayed_writes_are_absorbed(isolated_settings) -> None:
    dsn = isolated_settings.postgres_dsn
    part = AutobidderStore(dsn).build("s", 0, 1)
    try:
        part.write_batch([fact("fetched", 1, n=1), status("forecasting", 1)])
        part.write_batch([fact("forecast", 2, method="persistence"), status("optimizing", 2)])
        part.write_batch([fact("fetched", 3, n=99), status("forecasting", 1)])  # a replay after a restart
    finally:
        part.close()
    stored = workflow_facts(dsn, "us/ca", T)
    assert [(f["step"], f["fact"]) for f in stored] == [("fetched", {"n": 1}), ("forecast", {"method": "persistence"})]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM autobidder_workflows").fetchall() == [("optimizing",)]
