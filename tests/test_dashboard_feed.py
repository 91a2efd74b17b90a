"""Dashboard pieces without a server: the change feed and its cursors, progress and time left, run flags."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from xafs_stream.web.app import _resume_cursor
from xafs_stream.web.catalog import expected_units, plain, progress, run_flags, thin, total_events
from xafs_stream.web.feed import ChangeFeed


def test_feed_numbers_changes_and_returns_those_after_a_cursor():
    feed = ChangeFeed()
    assert feed.cursor == 0
    ids = [feed.publish("result", uid="a", unit=f"repeat_{i}") for i in range(3)]
    assert ids == [1, 2, 3]
    changes, lost = feed.since(1)
    assert [c["unit"] for c in changes] == ["repeat_1", "repeat_2"] and not lost
    assert feed.since(3) == ([], False)


def test_feed_reports_lost_changes_when_the_cursor_fell_out_of_the_buffer():
    feed = ChangeFeed(maxlen=3)
    for i in range(1, 11):
        feed.publish("run", uid=f"u{i}")  # change i has id i
    changes, lost = feed.since(2)
    assert lost and [c["id"] for c in changes] == [8, 9, 10]
    assert feed.since(6)[1]  # change 7 is gone
    changes, lost = feed.since(7)  # 8, 9, 10 all still held
    assert not lost and [c["uid"] for c in changes] == ["u8", "u9", "u10"]
    # a cursor from the future (another server's epoch) cannot be served either
    assert feed.since(99) == ([], True)


def test_feed_wait_returns_as_soon_as_a_change_arrives():
    feed = ChangeFeed()
    threading.Timer(0.2, lambda: feed.publish("run", uid="x")).start()
    t0 = time.monotonic()
    feed.wait(0, timeout_s=10)
    assert time.monotonic() - t0 < 5 and feed.cursor == 1


def test_status_version_changes_only_when_the_snapshot_changes():
    feed = ChangeFeed()
    feed.set_status({"broker": {"pending": 1}})
    v = feed.status_version
    feed.set_status({"broker": {"pending": 1}})
    assert feed.status_version == v
    feed.set_status({"broker": {"pending": 0}})
    assert feed.status_version == v + 1


def test_resume_cursor_uses_last_event_id_of_this_epoch_only():
    feed = ChangeFeed()
    for _ in range(5):
        feed.publish("run", uid="u")
    assert _resume_cursor(feed, f"{feed.epoch}-2", None) == (2, False)
    assert _resume_cursor(feed, "deadbeef-2", None) == (5, True)  # server restarted: reload
    assert _resume_cursor(feed, None, 3) == (3, False)
    assert _resume_cursor(feed, None, None) == (5, False)


def test_progress_uses_the_measured_event_rate():
    start = {"xafs_kind": "spectrum", "n_points": 50, "repeats": 2, "time": 1000.0, "scan_time_estimate_s": 999.0}
    times = 1000.0 + 0.5 * np.arange(20)  # 2 events per second
    p = progress(start, None, times, now=1010.0)
    assert p["done"] == 20 and p["total"] == 100 and p["running"]
    assert p["fraction"] == pytest.approx(0.2)
    assert p["remaining_s"] == pytest.approx(80 / 2.0)
    assert p["elapsed_s"] == pytest.approx(10.0)


def test_progress_falls_back_to_the_plan_estimate_before_five_events():
    start = {"xafs_kind": "map", "n_points": 100, "time": 0.0, "scan_time_estimate_s": 200.0}
    p = progress(start, None, np.array([0.0, 1.0]), now=1.0)
    assert p["remaining_s"] == pytest.approx(200.0 * 98 / 100)


def test_progress_of_a_stopped_run_counts_its_events_from_the_stop_document():
    start = {"xafs_kind": "spectrum", "n_points": 10, "repeats": 1, "time": 0.0}
    p = progress(start, {"time": 7.0, "exit_status": "abort", "num_events": {"primary": 4}}, None)
    assert p == {"done": 4, "total": 10, "running": False, "elapsed_s": 7.0, "fraction": 0.4, "remaining_s": 0.0}


def test_expected_units_and_event_totals():
    assert expected_units({"xafs_kind": "spectrum", "repeats": 3}) == ["repeat_0", "repeat_1", "repeat_2", "merge"]
    assert expected_units({"xafs_kind": "map", "n_tiles": 2}) == ["tile_0", "tile_1"]
    assert expected_units({}) == []
    assert total_events({"xafs_kind": "spectrum", "n_points": 362, "repeats": 2}) == 724
    assert total_events({"xafs_kind": "map", "n_points": 120}) == 120
    assert total_events({}) is None


def test_run_flags_name_what_is_wrong():
    flags = run_flags({}, {"exit_status": "abort", "reason": "beam dump"}, {"spm": "error", "xafs_normalize": "ok"},
                      {"n_repeats": 3, "n_repeats_merged": 2, "n_glitches": 1})
    assert flags == ["run abort: beam dump", "spm: error", "1 of 3 repeats left out of the merge", "1 glitch point(s)"]
    assert run_flags({}, {"exit_status": "success"}, {"spm": "ok"}, {"n_repeats": 2, "n_repeats_merged": 2}) == []


def test_thin_keeps_ends_and_limits_length():
    a = np.arange(10_001, dtype=float)
    t = thin(a, 1000)
    assert t.size <= 1001 and t[0] == 0 and t[-1] == 10_000
    assert np.all(np.diff(t) > 0)
    assert thin(a[:50], 1000).size == 50


def test_plain_turns_nan_into_null_and_mappings_into_dicts():
    from types import MappingProxyType

    out = plain(MappingProxyType({"a": np.float64("nan"), "b": (1, np.int64(2)), "c": {"d": np.array([1.0, np.inf])}}))
    assert out == {"a": None, "b": [1, 2], "c": {"d": [1.0, None]}}
