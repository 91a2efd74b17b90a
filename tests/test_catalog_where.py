"""The condition language of catalog queries: parsing, types, the field whitelist, times (no Tiled needed)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from tiled.queries import Comparison, Eq, Like, NotEq

from xafs_stream.client.catalog import (
    QueryError,
    describe_fields,
    find_runs,
    parse_condition,
    parse_time,
    parse_where,
)
from xafs_stream.cli.main import main
from xafs_stream.engines.errors import InputError
from xafs_stream.storage.layout import flatten_summary, lookup_summary


@pytest.mark.parametrize(
    "text, key, op, value, tiled",
    [
        ("spm.shell1.N>10", "spm.shell1.N", ">", 10.0, Comparison("gt", "summary.spm.shell1.N", 10.0)),
        ("spm.shell12.sigma2_err <= 0.001", "spm.shell12.sigma2_err", "<=", 0.001,
         Comparison("le", "summary.spm.shell12.sigma2_err", 0.001)),
        ("bayes.K==2", "bayes.K", "==", 2, Eq("summary.bayes.K", 2)),
        ("bayes.F.K3<100", "bayes.F.K3", "<", 100.0, Comparison("lt", "summary.bayes.F.K3", 100.0)),
        ("status.spm=ok", "status.spm", "==", "ok", Eq("status.spm", "ok")),
        ("status.xafs.normalize!=error", "status.xafs.normalize", "!=", "error", NotEq("status.xafs_normalize", "error")),
        ("sample=='Cu foil'", "sample", "==", "Cu foil", Eq("start.sample", "Cu foil")),
        ('sample == "Fe*"', "sample", "==", "Fe*", Like("start.sample", "Fe%")),
        ("element==cu", "element", "==", "Cu", Eq("start.element", "Cu")),
        ("edge==l3", "edge", "==", "L3", Eq("start.edge", "L3")),
        ("has_exafs==yes", "has_exafs", "==", True, Eq("summary.has_exafs", True)),
        ("exit_status==abort", "exit_status", "==", "abort", Eq("stop.exit_status", "abort")),
        ("imaging.label_fraction.hematite>0.2", "imaging.label_fraction.hematite", ">", 0.2,
         Comparison("gt", "summary.imaging.label_fraction.hematite", 0.2)),
    ],
)
def test_conditions_parse_into_typed_tiled_queries(text, key, op, value, tiled):
    c = parse_condition(text)
    assert (c.key, c.op, c.value) == (key, op, value)
    assert type(c.value) is type(value)
    assert c.tiled_query() == tiled


def test_time_conditions_and_bounds():
    c = parse_condition("time>=2026-11-20")
    assert c.value == datetime(2026, 11, 20).astimezone().timestamp()
    assert c.tiled_query() == Comparison("ge", "start.time", c.value)
    utc = datetime(2026, 11, 25, 10, 0, tzinfo=UTC).timestamp()
    assert parse_time("2026-11-25T10:00:00+00:00") == utc
    assert parse_time("2026-11-25T11:00+01:00") == utc
    assert parse_time(utc) == utc
    assert parse_time("3d", now=1.0e9) == 1.0e9 - 3 * 86400
    assert parse_time("90m", now=1.0e9) == 1.0e9 - 5400
    end = datetime(2026, 11, 25).astimezone().timestamp()
    assert parse_time(date(2026, 11, 24), end_of_day=True) == pytest.approx(end - 1e-6, abs=1e-5)
    assert parse_time("2026-11-24", end_of_day=True) == pytest.approx(end - 1e-6, abs=1e-5)
    assert parse_time("2026-11-24") == (datetime(2026, 11, 25) - timedelta(days=1)).astimezone().timestamp()
    for bad in ("yesterday-ish", "2026-13-01", "", True):
        with pytest.raises(QueryError, match="time"):
            parse_time(bad)


@pytest.mark.parametrize(
    "text, message",
    [
        ("spm.shell1.Q>3", "unknown field 'spm.shell1.Q'"),
        ("temperature>300", "unknown field 'temperature'"),
        ("status.foo==ok", "unknown analysis 'foo'"),
        ("spm.shell1.N>abc", "spm.shell1.N is a number"),
        ("bayes.K==2.5", "bayes.K is an integer"),
        ("sample>Cu", "use == or !="),
        ("has_exafs==maybe", "true or false"),
        ("has_exafs>true", "use == or !="),
        ("status.spm==good", "must be one of ok, error, skipped"),
        ("mode==xray", "must be one of transmission, fluorescence"),
        ("sample!=Fe*", "wildcards"),
        ("spm.shell1.N>", "no value"),
        ("spm.shell1.N 10", "cannot read condition"),
        ("spm.shell1.N>>10", "is a number"),
        ("N ~ 12", "cannot read condition"),
    ],
)
def test_bad_conditions_raise_clear_errors(text, message):
    with pytest.raises(QueryError) as info:
        parse_condition(text)
    assert message in str(info.value)
    assert isinstance(info.value, InputError) and isinstance(info.value, ValueError)


def test_unknown_field_error_lists_the_valid_fields():
    with pytest.raises(QueryError) as info:
        parse_condition("spm.shell1.CN>3")
    text = str(info.value)
    for name in ("sample", "element", "time", "spm.shell<i>.N", "bayes.K", "e0", "status.<analysis>"):
        assert name in text


def test_bad_query_fails_before_any_request():
    # the client is never touched: a bad condition is reported first
    with pytest.raises(QueryError, match="unknown field"):
        find_runs(None, sample="Cu", where=["spm.shell1.Nn>1"])
    with pytest.raises(QueryError, match="limit"):
        find_runs(None, limit=0)
    with pytest.raises(QueryError, match="time"):
        find_runs(None, since="last tuesday")


def test_parse_where_accepts_one_or_many():
    assert parse_where(None) == []
    (one,) = parse_where("bayes.K==2")
    assert parse_where([one, "spm.n_shells>=2"])[0] is one


def test_flatten_and_lookup_are_inverse_views_of_a_summary():
    nested = {"e0": 8979.0, "spm": {"n_shells": 1, "shell1": {"N": 11.5, "pair": "Cu-Cu"}}}
    assert flatten_summary(nested) == {"e0": 8979.0, "spm.n_shells": 1, "spm.shell1.N": 11.5,
                                       "spm.shell1.pair": "Cu-Cu"}
    assert lookup_summary(nested, "spm.shell1.N") == 11.5
    assert lookup_summary(nested, "spm.shell2.N", "missing") == "missing"


def test_cli_lists_fields_and_rejects_bad_conditions_without_tiled(capsys):
    assert main(["query", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "spm.shell<i>.R" in out and "status.<analysis>" in out and out == describe_fields() + "\n"
    # the condition is checked before Tiled is contacted (no server is running here)
    assert main(["query", "--tiled-uri", "http://127.0.0.1:9/api/v1", "--where", "spm.shell1.N=>3"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "xafs-stream query: error" in err
    assert main(["query", "--columns", "nonsense", "--tiled-uri", "http://127.0.0.1:9/api/v1"]) == 2
    assert "unknown field 'nonsense'" in capsys.readouterr().err


def test_cli_never_creates_an_empty_catalog(tmp_path, capsys):
    for command in (["query"], ["export", "-1"], ["report", "-1"]):
        assert main([*command, "--data-dir", str(tmp_path / "nothing")]) == 2
        assert "no Tiled catalog in" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
