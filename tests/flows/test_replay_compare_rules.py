"""The rules by which live and replayed ``fleet.aggregates`` are compared (tests/support/replay_compare.py).

Pure: small hand-made runs of one region with two sites of one device each, three 10 s windows.
"""

from __future__ import annotations

from replay_compare import compare_aggregates, missing_live

W = 10_000
DEVICES = {"d1": "r/s1", "d2": "r/s2"}  # device -> its site path


def record(node: str, window: int, *, battery_w: float = 100.0, late: int = 0, known: int = 1) -> dict:
    depth = node.count("/") + 1
    return {"node_path": node, "depth": depth, "window_start": window * W, "window_end": (window + 1) * W,
            "devices_known": known, "battery_w": battery_w, "late": late}


def run(*records: dict) -> dict:
    return {(r["node_path"], r["window_start"]): r for r in records}


def full_window(window: int, **d1) -> list[dict]:
    """Root, both sites and both leaves of one window; ``d1`` overrides d1's leaf."""
    return [record("r", window), record("r/s1", window), record("r/s2", window),
            record("r/s1/d1", window, **d1), record("r/s2/d2", window)]


def test_identical_runs_compare_clean():
    live = run(*full_window(0), *full_window(1), *full_window(2))
    problems, counts = compare_aggregates(live, dict(live), DEVICES)
    assert problems == [] and counts["compared"] == 15
    assert missing_live(live, dict(live), DEVICES) == []


def test_a_leaf_whose_only_reading_live_dropped_as_late_may_be_absent_live_with_its_site():
    replay = run(*full_window(0), *full_window(1), *full_window(2))
    # live: d1's reading of window 0 arrived after the window closed; window 1 reports it late
    live = run(record("r", 0, battery_w=50.0), record("r/s2", 0), record("r/s2/d2", 0),
               *full_window(1, late=1, battery_w=90.0), *full_window(2))
    assert missing_live(live, replay, DEVICES) == []
    problems, counts = compare_aggregates(live, replay, DEVICES)
    assert problems == []
    assert counts["replay_only_late"] == 2  # d1's leaf and its site in window 0


def test_a_missing_leaf_is_a_problem_when_no_run_counted_a_late_reading_of_it():
    replay = run(*full_window(0), *full_window(1), *full_window(2))
    live = run(record("r", 0), record("r/s2", 0), record("r/s2/d2", 0), *full_window(1), *full_window(2))
    assert missing_live(live, replay, DEVICES) == [("r/s1", 0), ("r/s1/d1", 0)]
    problems, _ = compare_aggregates(live, replay, DEVICES)
    assert problems == ["aggregate: device d1 differs in windows [0] (or is in one run only) but the runs counted 0 late "
                        "readings of it (last reported in window None)"]


def test_a_missing_site_with_its_device_present_is_a_problem_even_when_the_device_was_late():
    replay = run(*full_window(0), *full_window(1, late=1), *full_window(2))
    live = run(record("r", 0), record("r/s1/d1", 0), record("r/s2", 0), record("r/s2/d2", 0),
               *full_window(1, late=1), *full_window(2))
    assert missing_live(live, replay, DEVICES) == [("r/s1", 0)]
    problems, _ = compare_aggregates(live, replay, DEVICES)
    assert problems == [f"aggregate: window ('r/s1', 0) closed in replay, missing live: {replay[('r/s1', 0)]}"]


def test_one_late_reading_excuses_at_most_two_windows_of_its_device():
    replay = run(*full_window(0), *full_window(1), *full_window(2), *full_window(3))
    live = run(record("r", 0, battery_w=1.0), record("r/s2", 0), record("r/s2/d2", 0),
               *full_window(1, late=1, battery_w=1.0), *full_window(2, battery_w=1.0), *full_window(3))
    problems, _ = compare_aggregates(live, replay, DEVICES)
    assert problems == [f"aggregate: device d1 differs in windows [0, {W}, {2 * W}] (or is in one run only) but the runs "
                        f"counted 1 late readings of it (last reported in window {W})"]


def test_a_node_that_differs_with_no_late_device_under_it_is_a_problem():
    replay = run(*full_window(0), *full_window(1))
    live = run(*full_window(0), *full_window(1))
    live[("r/s2", W)] = record("r/s2", 1, battery_w=7.0)
    problems, _ = compare_aggregates(live, replay, DEVICES)
    assert len(problems) == 1 and problems[0].startswith("aggregate: window ('r/s2', 10000) differs")
