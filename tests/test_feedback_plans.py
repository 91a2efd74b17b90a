"""Feedback plans on the simulated beamline with the real service: stop at a target, rescan bad repeats."""

from __future__ import annotations

import time

import numpy as np
import pytest
from xafs_stream.plans import PlanArgumentError, xafs_scan_until
from xafs_stream.plans.feedback import combined_uncertainty
from xafs_stream.simulated_devices.beamline import make_beamline

from xafs_stream.client.feedback import EventFeedback, TiledFeedback
from xafs_stream.service import Service, subscribe
from xafs_stream.storage.layout import RESULTS_ROOT

from .test_pipeline_e2e import make_config

REGIONS = [[-100, -30, 10, "E"], [-30, 40, 1.0, "E"], [3.2, 12, 0.1, "k"]]


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    cfg = make_config(tmp_path_factory.mktemp("fb"), worker={"analyses": "xafs.normalize,xafs.quality"})
    svc = Service(cfg).start(reconcile=False)
    yield svc
    svc.stop()


@pytest.fixture
def session(service, RE):
    s = subscribe(RE, service.config, tiled_client=service.tiled.client, frontend=service.frontend)
    yield s
    s.close()


def test_combined_uncertainty_is_the_inverse_variance_merge():
    assert combined_uncertainty([0.2, 0.2, 0.2, 0.2]) == pytest.approx(0.1)
    assert combined_uncertainty([]) == float("inf")


def test_stops_when_the_merged_noise_reaches_the_target(service, session, RE, collect):
    bl = make_beamline(sample="Cu", seed=11, flux_cps=2e6)  # low flux: visible counting noise
    feedback = TiledFeedback(service.tiled.client)
    # first a single repeat to learn this sample's per-repeat noise, then ask for ~1/sqrt(3) of it
    reason = RE(xafs_scan_until([bl.scaler], bl.dcm, REGIONS, element="Cu", sample="Cu", feedback=feedback,
                                target_noise=1e-12, max_repeats=1, dwell_s=0.5))
    first = collect[0][1]["uid"]
    eps1 = feedback.repeat_result(first, 0)["noise_chi"]
    target = eps1 / np.sqrt(2.5)
    collect.clear()
    RE(xafs_scan_until([bl.scaler], bl.dcm, REGIONS, element="Cu", sample="Cu", feedback=feedback,
                       target_noise=target, max_repeats=8, dwell_s=0.5))
    uid = collect[0][1]["uid"]
    stop = [d for n, d in collect if n == "stop"][0]
    assert stop["reason"].startswith("target reached")
    decisions = [d["data"] for n, d in collect if n == "event" and d["data"].get("feedback_reason") is not None]
    n_good = decisions[-1]["feedback_n_good"]
    noises = [feedback.repeat_result(uid, r)["noise_chi"] for r in range(n_good)]
    # it stopped at the first repeat count whose merged noise is below the target, not later
    assert combined_uncertainty(noises) <= target < combined_uncertainty(noises[:-1])
    assert n_good >= 2


def test_beam_dump_repeat_is_flagged_rescanned_and_kept_in_the_catalog(service, session, RE, collect):
    bl = make_beamline(sample="Fe", seed=12, flux_cps=2e6)
    bl.set_faults(beam_dump_after_points=20, beam_dump_points=6)  # hits the first repeat only
    # decided from the broker's result events (no Tiled polling), Tiled only as the fallback for missed events
    tiled = TiledFeedback(service.tiled.client)
    with EventFeedback(service.events, fallback=tiled, fallback_after_s=60) as feedback:
        assert feedback.wait_ready()  # the broker has the subscription
        RE(xafs_scan_until([bl.scaler], bl.dcm, REGIONS, element="Fe", sample="Fe", feedback=feedback,
                           target_noise=1e9, max_repeats=3, dwell_s=0.5))  # any good repeat meets this target
        uid = collect[0][1]["uid"]
        first, second = feedback.repeat_result(uid, 0), feedback.repeat_result(uid, 1)
        assert feedback.from_events >= 2 and feedback.from_fallback == 0
    assert first == tiled.repeat_result(uid, 0) and second == tiled.repeat_result(uid, 1)  # the same numbers
    assert first["quality.bad"] is True and "beam dump" in first["quality.reasons"]
    assert second["quality.bad"] is False
    stop = [d for n, d in collect if n == "stop"][0]
    assert "after 1 good repeat" in stop["reason"]
    session.flush()
    assert service.wait_idle(60, publisher=session.publisher)
    run = service.tiled.client[RESULTS_ROOT][uid]
    merge = run["xafs_quality"]["merge"].metadata["summary"]["quality"]
    assert merge["n_bad_repeats"] == 1 and merge["bad_repeats"] == "0"
    norm = run["xafs_normalize"]["merge"].metadata
    assert norm["summary"]["n_repeats_merged"] == 1  # the bad repeat stays out of the merge
    assert "flagged" in norm["diagnostics"]["repeats_excluded"]["0"]


def test_bad_feedback_arguments_fail_before_motion(RE, beamline):
    with pytest.raises(PlanArgumentError, match="target_noise"):
        RE(xafs_scan_until([beamline.scaler], beamline.dcm, REGIONS, element="Cu", feedback=object()))
    with pytest.raises(PlanArgumentError, match="repeat_result"):
        RE(xafs_scan_until([beamline.scaler], beamline.dcm, REGIONS, element="Cu", feedback=object(),
                           target_noise=0.1))
    assert beamline.dcm.moves == 0


def test_event_feedback_asks_its_fallback_only_for_a_repeat_whose_events_it_missed(wait_for):
    import zmq

    from xafs_stream.transport import protocol as P

    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")

    class Fallback:
        def repeat_result(self, run_uid, repeat):
            return {"noise_chi": 0.5, "asked": (run_uid, repeat)}

    def event(analysis, **summary):
        path = f"xafs_results/run-1/{analysis.replace('.', '_')}/repeat_0"
        body = P.encode_stored({"run_uid": "run-1", "analysis": analysis, "unit": "repeat_0", "path": path,
                                "status": "ok", "family": "table", "summary": summary})
        pub.send_multipart([P.stored_topic("run-1", analysis), P.PROTOCOL, P.STORED, body])

    with EventFeedback(f"tcp://127.0.0.1:{port}", fallback=Fallback(), fallback_after_s=0.3) as feedback:
        # the handshake the broker gives (HELLO), given by this bare publisher until the subscriber has one
        while not feedback.wait_ready(0.05):
            pub.send_multipart([P.HELLO_TOPIC, P.PROTOCOL, P.HELLO])
        event("xafs.normalize", noise_chi=2e-4, e0=8979.0)
        assert feedback.repeat_result("run-1", 0) is None  # quality not stored yet
        event("xafs.quality", quality={"bad": False})
        got = wait_for(lambda: feedback.repeat_result("run-1", 0), 5, poll_s=0.02)
        assert got == {"status.xafs.normalize": "ok", "noise_chi": 2e-4, "e0": 8979.0,
                       "status.xafs.quality": "ok", "quality.bad": False}
        assert feedback.repeat_result("run-1", 1) is None  # missed (never published): not at once ...
        time.sleep(0.35)
        assert feedback.repeat_result("run-1", 1) == {"noise_chi": 0.5, "asked": ("run-1", 1)}  # ... then asked
        assert (feedback.from_events, feedback.from_fallback) == (1, 1)
    pub.close(0)
