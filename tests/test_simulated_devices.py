"""Simulated beamline: physics of the channels, mono behaviour, and each injectable fault in the data."""

import time

import numpy as np
import pytest

from xafs_stream.plans import xafs_scan
from xafs_stream.simulated_devices.beam import Faults
from xafs_stream.simulated_devices.beamline import make_beamline
from xafs_stream.simulated_devices.devices import MonoFailedToReachPosition

REGIONS = [[-60, 60, 2, "E"]]


def _table(docs):
    events = [d["data"] for n, d in docs if n == "event"]
    return {k: np.array([e[k] for e in events]) for k in events[0]}


def test_faults_are_off_by_default():
    bl = make_beamline()
    assert bl.beam.faults.active() == {}


def test_transmission_follows_beer_lambert(RE, beamline, collect):
    RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", dwell_s=1.0))
    t = _table(collect)
    mu = np.log(t["scaler_i0"] / t["scaler_it"])
    expected = beamline.beam.sample.mu_t(t["dcm"]) + np.log(beamline.beam.i0_efficiency / beamline.beam.it_efficiency)
    assert np.max(np.abs(mu - expected)) < 1e-3  # 1e8 counts: Poisson noise ~1e-4
    mu_ref = np.log(t["scaler_it"] / t["scaler_iref"])
    assert np.max(np.abs(mu_ref - beamline.beam.reference.mu_t(t["dcm"]))) < 1e-3


def test_energy_offset_shifts_the_photon_energy():
    bl = make_beamline(energy_offset_ev=2.5)
    bl.dcm.set(9000.0).wait()
    assert bl.dcm.position == pytest.approx(9000.0)
    assert bl.dcm.true_energy == pytest.approx(9002.5)


def test_settle_time_and_backlash_cost_time():
    bl = make_beamline(settle_time_s=0.05, backlash_ev=0.5)
    bl.dcm.set(9000.0).wait()
    t0 = time.monotonic()
    bl.dcm.set(9010.0).wait()
    up = time.monotonic() - t0
    t0 = time.monotonic()
    bl.dcm.set(9000.0).wait()
    down = time.monotonic() - t0
    assert up >= 0.05
    assert down >= 0.1  # overshoot and return: two settles


def test_beam_dump_drops_i0_for_the_requested_points(RE, beamline, collect):
    beamline.set_faults(beam_dump_after_points=10, beam_dump_points=5)
    RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", dwell_s=1.0))
    i0 = _table(collect)["scaler_i0"]
    normal = np.median(i0)
    dumped = np.flatnonzero(i0 < 1e-2 * normal)
    assert list(dumped) == list(range(10, 15))


def test_glitch_gives_spikes_at_fixed_energies(RE, beamline, collect):
    beamline.set_faults(glitch_energies_ev=(8949.0, 9011.0), glitch_depth=0.3)
    RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", dwell_s=1.0))
    t = _table(collect)
    mu = np.log(t["scaler_i0"] / t["scaler_it"])
    clean = beamline.beam.sample.mu_t(t["dcm"]) + np.log(beamline.beam.i0_efficiency / beamline.beam.it_efficiency)
    excess = mu - clean
    spikes = t["dcm"][excess > 0.1]
    assert list(spikes) == [8949.0, 9011.0]
    assert excess[excess > 0.1] == pytest.approx([-np.log(0.7)] * 2, abs=1e-3)


def test_saturation_clips_counts_at_the_rate_limit(RE, beamline, collect):
    beamline.set_faults(saturation_rate_cps=5.0e7)
    RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", dwell_s=1.0))
    t = _table(collect)
    assert np.all(t["scaler_it"] <= 5.0e7)
    assert np.mean(t["scaler_it"] == 5.0e7) > 0.5  # It would be ~1e8: it sits at the limit


def test_mono_that_fails_to_reach_position_fails_the_run(RE, beamline, collect):
    beamline.set_faults(mono_stuck_above_ev=9000.0)
    with pytest.raises(Exception) as info:
        RE(xafs_scan([beamline.scaler], beamline.dcm, REGIONS, element="Cu", dwell_s=1.0))
    assert "failed to reach" in str(info.value) or isinstance(info.value.__cause__, MonoFailedToReachPosition)
    stop = [d for n, d in collect if n == "stop"][0]
    assert stop["exit_status"] == "fail"
    assert "failed to reach" in stop["reason"]
    energies = _table(collect)["dcm"]
    assert energies.max() <= 9000.0 and len(energies) > 0


def test_faults_switch_per_run(RE, beamline, collect):
    beamline.set_faults(Faults(glitch_energies_ev=(8950.0,)))
    assert beamline.beam.faults.active()["glitch_energies_ev"] == [8950.0]
    beamline.set_faults()
    assert beamline.beam.faults.active() == {}


def test_map_detector_images_the_phantom_tile():
    bl = make_beamline(seed=3)
    bl.stage.x.set(16.0).wait()
    bl.stage.y.set(32.0).wait()
    bl.dcm.set(7150.0).wait()
    bl.mapdet.trigger()
    image, i0 = bl.mapdet.image.get(), bl.mapdet.i0.get()
    od = np.log(i0 / image)
    truth = bl.phantom.absorption_at(7150.0, slice(32, 48), slice(16, 32))
    assert np.corrcoef(od.ravel(), truth.ravel())[0, 1] > 0.99
