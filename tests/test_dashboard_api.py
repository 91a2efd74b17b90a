"""The dashboard's JSON API and live channel against a real embedded Tiled server (no browser, no broker).

Truth: raw μ(E) must equal ln(I0/It) of the event table and put the Cu K edge at 8979 eV (xraydb); result
arrays, summaries and PNG bytes must come back exactly as the results store wrote them; a result written
while the dashboard runs must reach the change feed and the event stream.
"""

from __future__ import annotations

import io
import json
import socket
import tempfile
import time

import httpx
import numpy as np
import pytest
import xraydb
from xafs_stream.plans import xafs_scan

from xafs_stream.analyses.registry import AnalysisResult
from xafs_stream.config import DashboardConfig
from xafs_stream.core import ResultRecord
from xafs_stream.engines.xafs import find_e0
from xafs_stream.storage.raw_writer import LiveTiledWriter
from xafs_stream.storage.results import ResultStore
from xafs_stream.testing import free_port
from xafs_stream.web import start_dashboard

REGIONS = [[-60, -10, 5, "E"], [-10, 30, 1, "E"], [30, 60, 5, "E"]]


def _written_live(tiled, plan_of) -> list[tuple[str, dict]]:
    """Run the plan ``plan_of()`` makes with a RunEngine whose documents are written live to
    Tiled; returns every document as (name, doc)."""
    from bluesky import RunEngine

    RE = RunEngine({}, call_returns_result=False)
    writer = LiveTiledWriter(tiled.client, flush_interval_s=0.2)
    RE.subscribe(writer)
    docs: list[tuple[str, dict]] = []
    RE.subscribe(lambda name, doc: docs.append((name, doc)))
    RE(plan_of())
    writer.close()
    return docs


@pytest.fixture(scope="module")
def raw_run(tiled):
    """A short two-repeat Cu scan written live to Tiled; returns its start document."""
    from xafs_stream.simulated_devices.beamline import make_beamline

    bl = make_beamline(sample="Cu", seed=3)
    docs = _written_live(tiled, lambda: xafs_scan([bl.scaler], bl.dcm, REGIONS, element="Cu", sample="Cu-dash",
                                                  repeats=2, dwell_s=0.2))
    return next(doc for name, doc in docs if name == "start")


def _record(uid, analysis, index, result=None, status="ok", error=""):
    return ResultRecord(run_uid=uid, unit_id=f"{uid}:spectrum:{index}", kind="spectrum", index=index,
                        analysis=analysis, version="1", status=status, result=result, error=error,
                        unit_metadata={"sample": "Cu-dash", "element": "Cu", "edge": "K", "xafs_kind": "spectrum"},
                        worker="test-worker")


def _png_bytes(values: np.ndarray) -> np.ndarray:
    import matplotlib.image as mpimg

    buf = io.BytesIO()
    mpimg.imsave(buf, values, format="png", cmap="viridis")
    return np.frombuffer(buf.getvalue(), dtype=np.uint8)


@pytest.fixture(scope="module")
def stored(tiled, raw_run):
    """Known results for the raw run: a merge with one repeat left out, an SpM error, a PNG."""
    uid = raw_run["uid"]
    rng = np.random.default_rng(7)
    energy = np.linspace(8919.0, 9039.0, 121)
    k = np.linspace(0, 12, 241)
    arrays = {"energy": energy, "norm": 1 / (1 + np.exp(-(energy - 8979.0))), "k": k,
              "chi": 0.1 * np.sin(2 * 2.55 * k) * np.exp(-0.02 * k**2), "ok": rng.random(121) > 0.5,
              "png.labels": _png_bytes(rng.random((8, 8)))}
    dims = {"energy": ("energy",), "norm": ("energy",), "ok": ("energy",), "k": ("k",), "chi": ("k",),
            "png.labels": ("byte",)}
    result = AnalysisResult(arrays=arrays, dims=dims, summary={"e0": 8979.0, "edge_step": 1.0, "kweight": 2,
                                                               "n_repeats": 2, "n_repeats_merged": 1})
    store = ResultStore(tiled.client)
    store.write(_record(uid, "xafs.normalize", "merge", result))
    store.write(_record(uid, "spm", "merge", status="error", error="InputError: k range too short for SpM"))
    return {"uid": uid, "arrays": arrays, "store": store}


@pytest.fixture(scope="module")
def dash(tiled, stored):
    handle = start_dashboard(tiled.client, None, DashboardConfig(port=0, interval_s=0.3))
    yield handle
    handle.close()


@pytest.fixture
def http(dash):
    with httpx.Client(base_url=dash.url, trust_env=False, timeout=30) as client:
        yield client


def test_page_and_vendored_scripts_are_served_locally(http):
    page = http.get("/")
    assert page.status_code == 200 and "<title>xafs-stream dashboard</title>" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # nothing from the internet
    for path in ("static/app.js", "static/style.css", "static/vendor/uplot/uPlot.iife.min.js",
                 "static/vendor/uplot/uPlot.min.css", "static/vendor/uplot/LICENSE"):
        assert http.get(path).status_code == 200, path


def test_run_list_shows_state_status_and_flags(http, stored, raw_run):
    runs = http.get("/api/runs", params={"limit": 20}).json()["runs"]
    row = next(r for r in runs if r["uid"] == stored["uid"])
    assert row["sample"] == "Cu-dash" and row["plan_name"] == "xafs_scan" and not row["running"]
    assert row["exit_status"] == "success"
    assert row["status"] == {"xafs_normalize": "ok", "spm": "error"}
    assert "1 of 2 repeats left out of the merge" in row["flags"] and "spm: error" in row["flags"]
    assert [r["uid"] for r in http.get("/api/runs", params={"q": "cu-DASH"}).json()["runs"]] == [stored["uid"]]
    assert http.get("/api/runs", params={"q": "no-such-sample"}).json()["runs"] == []


def test_run_detail_has_progress_and_result_metadata(http, stored, raw_run):
    d = http.get(f"/api/runs/{stored['uid']}").json()
    n_events = 2 * raw_run["n_points"]
    assert d["progress"]["done"] == d["progress"]["total"] == n_events
    assert d["progress"]["fraction"] == 1.0 and d["progress"]["remaining_s"] == 0.0
    assert d["expected_units"] == ["repeat_0", "repeat_1", "merge"]
    merge = d["results"]["xafs_normalize"]["merge"]
    assert merge["status"] == "ok" and merge["summary"]["e0"] == 8979.0 and merge["worker"] == "test-worker"
    assert d["results"]["spm"]["merge"]["error"] == "InputError: k range too short for SpM"
    assert d["summary"]["edge_step"] == 1.0


def test_raw_spectra_are_ln_i0_over_it_with_the_cu_edge(http, tiled, raw_run):
    raw = http.get(f"/api/runs/{raw_run['uid']}/raw").json()
    assert [r["repeat"] for r in raw["repeats"]] == [0, 1]
    table = tiled.client[raw_run["uid"]]["primary"].base["internal"].read()
    first = table[table["repeat"] == 0]
    expected = np.log(first["scaler_i0"].to_numpy() / first["scaler_it"].to_numpy())
    np.testing.assert_allclose(raw["repeats"][0]["mu"], expected, rtol=1e-12)
    e0 = float(np.squeeze(find_e0(np.array(raw["repeats"][0]["energy"]), np.array(raw["repeats"][0]["mu"]))))
    assert abs(e0 - xraydb.xray_edge("Cu", "K").energy) < 1.0


def test_result_arrays_come_back_as_written(http, stored):
    url = f"/api/runs/{stored['uid']}/results/xafs_normalize/merge"
    body = http.get(url).json()
    a = stored["arrays"]
    for name in ("energy", "norm", "k", "chi"):
        np.testing.assert_allclose(body["arrays"][name], a[name], rtol=1e-15, err_msg=name)
    assert body["arrays"]["ok"] == a["ok"].astype(int).tolist()
    assert body["pngs"] == ["png.labels"] and "png.labels" not in body["arrays"]
    picked = http.get(url, params={"names": "k,chi"}).json()["arrays"]
    assert sorted(picked) == ["chi", "k"]
    png = http.get(f"{url}/png/png.labels")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content == a["png.labels"].tobytes()


def test_a_result_stored_as_one_array_node_comes_back_by_name(http, stored):
    """A map tile's features are one stacked array node (no container): the API serves its layers by name,
    integer layers with their own values."""
    rng = np.random.default_rng(11)
    arrays = {"f.edge": rng.normal(size=(4, 5)), "f.step": rng.normal(size=(4, 5)),
              "mask": (rng.random((4, 5)) > 0.5).astype(np.int64)}
    event = stored["store"].write(_record(stored["uid"], "imaging.features", 3, AnalysisResult(
        arrays=arrays, dims={k: ("y", "x") for k in arrays})))
    assert event["family"] == "array"
    url = f"/api/runs/{stored['uid']}/results/imaging_features/{event['unit']}"
    body = http.get(url).json()
    assert body["metadata"]["status"] == "ok" and body["pngs"] == []
    for name, arr in arrays.items():
        assert body["arrays"][name] == arr.tolist(), name
    assert http.get(url, params={"names": "mask"}).json()["arrays"] == {"mask": arrays["mask"].tolist()}


@pytest.fixture(scope="module")
def adaptive_run(tiled):
    """An adaptive Fe scan written live to Tiled; returns every document it emitted as (name, doc)."""
    from xafs_stream.plans import xafs_scan_adaptive
    from xafs_stream.simulated_devices.beamline import make_beamline

    bl = make_beamline(sample="Fe", seed=3, flux_cps=2e5)
    return _written_live(tiled, lambda: xafs_scan_adaptive([bl.scaler], bl.dcm, element="Fe", sample="Fe-adaptive",
                                                           target={"e0": 0.1, "whiteline": 0.1}))


def test_an_adaptive_scan_shows_its_decisions_points_band_and_why_it_stopped(http, adaptive_run):
    """The adaptive endpoint gives what the run's documents hold: every decision of the ``adaptive`` stream in
    order (points chosen, estimates, sd, verdict), every measured point, the last decision's posterior band of
    each target's local fit and the stop document's reason."""
    start = next(d for n, d in adaptive_run if n == "start")
    stop = next(d for n, d in adaptive_run if n == "stop")
    streams = {d["uid"]: d["name"] for n, d in adaptive_run if n == "descriptor"}
    decisions = [d["data"] for n, d in adaptive_run if n == "event" and streams[d["descriptor"]] == "adaptive"]
    points = [d["data"] for n, d in adaptive_run if n == "event" and streams[d["descriptor"]] == "primary"]
    body = http.get(f"/api/runs/{start['uid']}/adaptive").json()
    assert body["target"] == {"e0": 0.1, "whiteline": 0.1} and body["running"] is False
    assert body["stop_reason"] == stop["reason"] and body["stop_reason"].startswith("targets met")
    assert [d["decision"] for d in body["decisions"]] == [d["adaptive_decision"] for d in decisions]
    for got, want in zip(body["decisions"], decisions):
        assert got["energies"] == json.loads(want["adaptive_energies"]) and got["reason"] == want["adaptive_reason"]
        assert got["beam_time_s"] == pytest.approx(want["adaptive_beam_time_s"])
        assert got["verdict"] == want["adaptive_verdict"]
    last = json.loads(decisions[-1]["adaptive_report"])
    assert body["verdict"] == last["verdict"] and body["verdict_reasons"] == last["verdict_reasons"]
    assert body["band"] == last["band"] and set(body["band"]) == {"e0", "whiteline"}
    assert body["decisions"][-1]["e0_sd"] <= 0.1
    np.testing.assert_allclose(body["points"]["energy"], [p["dcm"] for p in points])
    np.testing.assert_allclose(body["points"]["mu"], [np.log(p["scaler_i0"] / p["scaler_it"]) for p in points])
    r = http.get("/api/runs/no-such-run/adaptive")
    assert r.status_code == 404


def test_an_adaptive_scans_band_is_read_again_only_after_a_new_decision(tiled, adaptive_run):
    """The reports column (the band's source, the bulk of the stream) is read when the number of decisions
    changed, not at every refresh of the page."""
    from xafs_stream.web.catalog import Catalog

    uid = next(d for n, d in adaptive_run if n == "start")["uid"]
    catalog = Catalog(tiled.client)
    reads = []

    def hook(request) -> None:
        if "adaptive_report" in str(request.url):
            reads.append(str(request.url))

    hooks = tiled.client.context.http_client.event_hooks["request"]
    hooks.append(hook)
    try:
        first = catalog.adaptive(uid)
        assert len(reads) == 1 and first["band"]
        again = catalog.adaptive(uid)
        assert len(reads) == 1 and again["band"] == first["band"]
        catalog._bands[uid] = (0, {})  # as if the last call had seen fewer decisions
        assert catalog.adaptive(uid)["band"] == first["band"] and len(reads) == 2
    finally:
        hooks.remove(hook)


def test_a_conventional_scan_is_not_an_adaptive_one(http, raw_run):
    r = http.get(f"/api/runs/{raw_run['uid']}/adaptive")
    assert r.status_code == 404 and "is not an adaptive scan" in r.json()["detail"]


@pytest.mark.parametrize("path, words", [
    ("/api/runs/no-such-run", "no run 'no-such-run'"),
    ("/api/runs/no-such-run/raw", "no run 'no-such-run'"),
    ("/api/runs/{uid}/results/spm/repeat_7", "no result spm/repeat_7"),
    ("/api/runs/{uid}/results/xafs_normalize/merge?names=chi,nope", "no array(s) ['nope']"),
    ("/api/runs/{uid}/results/xafs_normalize/merge/png/png.nope", "no PNG 'png.nope'"),
    ("/api/runs/{uid}/results/xafs_normalize/merge/png/energy", "no PNG 'energy'"),
])
def test_unknown_things_are_404_with_a_reason(http, stored, path, words):
    r = http.get(path.format(uid=stored["uid"]))
    assert r.status_code == 404 and words in r.json()["detail"]


def test_new_result_reaches_the_long_poll_and_the_event_stream(http, dash, stored, wait_for):
    assert wait_for(lambda: http.get("/api/status").json().get("active") is not None, 20)  # watcher ran
    cursor = http.get("/api/health").json()["cursor"]
    with http.stream("GET", "/api/stream") as stream:
        lines = stream.iter_lines()
        hello = _next_event(lines)
        assert hello["event"] == "hello" and hello["data"]["epoch"] == dash.feed.epoch
        written_at = time.time()
        result = AnalysisResult(arrays={"energy": np.arange(5.0), "norm": np.ones(5)},
                                dims={"energy": ("energy",), "norm": ("energy",)}, summary={"e0": 8979.5})
        stored["store"].write(_record(stored["uid"], "xafs.normalize", 0, result))
        change = _next_event(lines, "change", timeout_s=20)
        seen_after = time.time() - written_at
    assert change["data"]["uid"] == stored["uid"]
    assert (change["data"]["analysis"], change["data"]["unit"], change["data"]["status"]) == \
        ("xafs_normalize", "repeat_0", "ok")
    assert change["id"] == f"{dash.feed.epoch}-{change['data']['id']}"
    # the run stopped before the dashboard started, so this is the reprocessing case: found by the rescan of
    # recent runs (every 5 s), not the 0.3 s poll of watched runs; generous for a loaded machine
    assert seen_after < 20
    polled = http.get("/api/changes", params={"since": cursor, "wait_s": 5}).json()
    assert any(c["unit"] == "repeat_0" and c["uid"] == stored["uid"] for c in polled["changes"])
    assert not polled["reset"]
    # a reconnecting browser sends Last-Event-ID and gets what it missed
    with http.stream("GET", "/api/stream", headers={"Last-Event-ID": f"{dash.feed.epoch}-{cursor}"}) as stream:
        lines = stream.iter_lines()
        assert _next_event(lines)["event"] == "hello"
        replay = _next_event(lines, "change")
    assert replay["data"]["id"] > cursor and replay["data"]["uid"] == stored["uid"]
    # ... and one from a previous server life is told to reload
    with http.stream("GET", "/api/stream", headers={"Last-Event-ID": "0000-5"}) as stream:
        lines = stream.iter_lines()
        assert _next_event(lines)["event"] == "hello"
        assert _next_event(lines)["event"] == "reset"


@pytest.fixture
def no_retries():
    """Tiled's client retries a refused connection for up to 45 s (stamina); here one attempt is enough."""
    import stamina

    with stamina.set_testing(True, attempts=1):
        yield


class _TiledDown:
    """Stands in for a Tiled client whose server went away: every call raises what the real client raises
    once its retries are used up. (A second embedded Tiled server in this process cannot be used instead: tiled
    0.2.20 keeps the single-user API key in process-global settings, so starting one invalidates the key of
    the session's server.)"""

    def _refuse(self, *args, **kwargs):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    items = keys = search = __getitem__ = __contains__ = _refuse


def test_tiled_down_gives_503_and_the_page_banner_says_why(wait_for):
    with start_dashboard(_TiledDown(), None, DashboardConfig(port=0, interval_s=0.2)) as dash, \
            httpx.Client(base_url=dash.url, trust_env=False, timeout=30) as http:
        for path in ("/api/runs", "/api/runs/some-uid", "/api/runs/some-uid/results/spm/merge"):
            r = http.get(path)
            assert r.status_code == 503, path
            assert r.json()["detail"] == "backend unavailable: ConnectError: [Errno 111] Connection refused"
        assert wait_for(lambda: "tiled" in http.get("/api/status").json().get("errors", {}), 20)
        assert http.get("/api/status").json()["errors"]["tiled"] == "Tiled: ConnectError: [Errno 111] Connection refused"
        assert http.get("/").status_code == 200  # the page itself still loads and shows the banner


# ------------------------------------------------------------------------------------------- CLI


@pytest.fixture
def cli(monkeypatch):
    import xafs_stream.cli.main as main_module

    if "dashboard" not in main_module.SUBCOMMANDS:  # until the subcommand is listed in cli/main.py
        monkeypatch.setattr(main_module, "SUBCOMMANDS", (*main_module.SUBCOMMANDS, "dashboard"))
    return main_module.main


def _tiled_args(tiled):
    return ["--tiled-uri", tiled.uri.split("?")[0], "--api-key", tiled.api_key]


def test_cli_serves_the_dashboard_over_a_tiled_uri(cli, tiled, capsys, tmp_path):
    rc = cli(["dashboard", *_tiled_args(tiled), "--no-broker", "--port", "0", "--run-for", "0.5",
              "--data-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "dashboard: http://127.0.0.1:" in out and "broker:    (none)" in out


def test_cli_reports_an_unreachable_tiled_in_one_line(cli, capsys, tmp_path, no_retries):
    rc = cli(["dashboard", "--tiled-uri", f"http://127.0.0.1:{free_port()}/api/v1", "--no-broker", "--port", "0",
              "--run-for", "0", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot connect to Tiled" in err[0]


def test_cli_reports_a_busy_port(cli, tiled, capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        rc = cli(["dashboard", *_tiled_args(tiled), "--no-broker", "--port", str(s.getsockname()[1]),
                  "--run-for", "0", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "did not start" in err


@pytest.mark.parametrize("args, words", [(["--port", "70000"], "--port must be 0..65535"),
                                         (["--interval", "0"], "--interval must be > 0")])
def test_cli_rejects_bad_options(cli, capsys, args, words):
    assert cli(["dashboard", *args]) == 2
    assert words in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- helpers


def _next_event(lines, wanted: str | None = None, timeout_s: float = 20.0) -> dict:
    """The next SSE event (of type ``wanted``) as {"event", "id", "data"}; status events are skipped."""
    deadline = time.monotonic() + timeout_s
    event: dict = {}
    for line in lines:
        if time.monotonic() > deadline:
            break
        if line.startswith("id: "):
            event["id"] = line[4:]
        elif line.startswith("event: "):
            event["event"] = line[7:]
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line == "" and "event" in event:
            if (wanted is None and event["event"] != "status") or event["event"] == wanted:
                return event
            event = {}
    raise AssertionError(f"no {wanted or 'non-status'} event within {timeout_s} s")


def test_with_result_events_a_new_result_reaches_the_page_without_reading_tiled(tiled, stored, wait_for):
    """Fed by the broker's result events, the dashboard publishes a stored result at once and does not read
    the result trees for it (before: one tree read per watched run and poll)."""
    import threading

    import zmq

    from xafs_stream.config import BrokerConfig
    from xafs_stream.transport import protocol as P
    from xafs_stream.transport.broker import Broker

    broker = Broker(BrokerConfig(frontend="tcp://127.0.0.1:0", backend="tcp://127.0.0.1:0",
                                 events="tcp://127.0.0.1:0", store_dir=tempfile.mkdtemp()))
    threading.Thread(target=broker.run, daemon=True).start()
    worker = zmq.Context.instance().socket(zmq.DEALER)  # announces what it stores, as a worker does
    worker.setsockopt(zmq.LINGER, 0)
    worker.connect(broker.backend_address)
    worker.send_multipart([P.PROTOCOL, P.READY, b'{"credit": 0}'])
    with start_dashboard(tiled.client, broker.frontend_address, DashboardConfig(port=0, interval_s=0.3),
                         events=broker.events_address) as dash:
        reads = []
        fingerprint = dash.catalog.fingerprint
        dash.catalog.fingerprint = lambda uid: reads.append(uid) or fingerprint(uid)
        watcher = dash._watcher
        assert wait_for(lambda: watcher.events.ready.is_set(), 20)  # the broker confirmed the subscription
        time.sleep(1.0)  # past the watcher's first look
        reads.clear()
        cursor = dash.feed.cursor
        result = AnalysisResult(arrays={"energy": np.arange(5.0), "norm": np.ones(5)},
                                dims={"energy": ("energy",), "norm": ("energy",)}, summary={"e0": 8979.7})
        t0 = time.monotonic()
        event = stored["store"].write(_record(stored["uid"], "xafs.normalize", 1, result))
        worker.send_multipart([P.PROTOCOL, P.STORED, P.encode_stored(event)])
        change = wait_for(lambda: next((c for c in dash.feed.since(cursor)[0] if c["unit"] == "repeat_1"), None),
                          10, poll_s=0.01)
        assert change and (change["uid"], change["analysis"], change["status"]) == (
            stored["uid"], "xafs_normalize", "ok")
        assert time.monotonic() - t0 < 2.0
        time.sleep(2.0)
        assert reads == []  # no result tree was read for it (the 30 s rescan has not come)
    worker.close(0)
    broker.stop()
