"""One processing path: ``xafs-stream analyze``, the live service and ``reprocess`` give the same numbers for
one spectrum with the same settings, including settings that were unreachable before (``nclamp``,
``bkg_kmin``, ``min_edge_snr``). Real RunEngine, broker and worker processes, Tiled."""

from __future__ import annotations

import json

import numpy as np
import pytest
from xafs_stream.plans import xafs_scan

from xafs_stream.cli.main import main
from xafs_stream.config import load_config
from xafs_stream.service import Service, subscribe
from xafs_stream.storage.layout import RESULTS_ROOT, read_arrays

SETTINGS = {"rbkg": 1.1, "kmin": 2.5, "kmax": 11.5, "nclamp": 4, "bkg_kmin": 0.5, "min_edge_snr": 2.0,
            "calibrate": False}
COMPARED = ("e0", "edge_step", "edge_snr", "noise_chi", "noise_chir", "kmin", "kmax", "kmax_suggest", "kmax_data",
            "n_glitches", "has_exafs")


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    cfg = load_config(overrides={
        "service": {"data_dir": str(tmp_path_factory.mktemp("onepath")), "workers": 1, "reconcile_recent": 0},
        "broker": {"frontend": "tcp://127.0.0.1:0", "backend": "tcp://127.0.0.1:0", "events": "",
                   "heartbeat_s": 0.5},
        "worker": {"analyses": "xafs.normalize"},
        "dashboard": {"enabled": False},
    })
    cfg.analysis["xafs.normalize"] = dict(SETTINGS)
    svc = Service(cfg).start(reconcile=False)
    yield svc
    svc.stop()


def test_analyze_live_and_reprocess_agree(service, RE, beamline, collect, tmp_path, capsys):
    session = subscribe(RE, service.config, tiled_client=service.tiled.client, frontend=service.frontend)
    try:
        RE(xafs_scan([beamline.scaler], beamline.dcm, element="Cu", sample="Cu", repeats=1, dwell_s=0.2))
        session.flush()
        assert service.wait_idle(120, publisher=session.publisher)
    finally:
        session.close()
    uid = collect[0][1]["uid"]
    node = service.tiled.client[RESULTS_ROOT][uid]["xafs_normalize"]["repeat_0"]
    live = node.metadata
    assert live["status"] == "ok", live["error"]
    assert live["params"]["settings"]["nclamp"] == 4 and live["params"]["autobk"]["kmin"] == 0.5
    assert live["verdict"] in ("ok", "warn", "bad") and isinstance(live["verdict_reasons"], list)

    # the same spectrum (the unit's energy and μ as the worker saw them) through the CLI with the same settings
    arrays = read_arrays(node)
    path = tmp_path / "repeat0.dat"  # every digit, so that the file holds exactly the worker's numbers
    np.savetxt(path, np.column_stack([arrays["energy"], arrays["mu"]]), fmt="%.17g", header="energy mu")
    options = [f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items() if k != "calibrate"]
    assert main(["analyze", str(path), "--json", *options]) in (0, 3)
    row = json.loads(capsys.readouterr().out)[0]
    for name in COMPARED:
        assert row[name] == live["summary"][name], name
    assert (row["quality"], row["quality_reasons"]) == (live["verdict"], live["verdict_reasons"])

    # reprocess from the raw data in Tiled, with the service's configuration
    toml = tmp_path / "svc.toml"
    toml.write_text("[analysis.\"xafs.normalize\"]\n" + "".join(
        f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in SETTINGS.items()))
    uri = service.tiled.uri.split("?")[0]
    assert main(["reprocess", uid, "--analysis", "xafs.normalize", "--force", "--config", str(toml),
                 "--tiled-uri", uri, "--api-key", service.tiled.api_key]) == 0
    capsys.readouterr()
    again = service.tiled.client[RESULTS_ROOT][uid]["xafs_normalize"]["repeat_0"].metadata
    assert again["written"] > live["written"]
    for name in COMPARED:
        assert again["summary"][name] == live["summary"][name], name
    assert again["verdict"] == live["verdict"]
    again_arrays = read_arrays(service.tiled.client[RESULTS_ROOT][uid]["xafs_normalize"]["repeat_0"])
    assert np.array_equal(again_arrays["chi"], arrays["chi"])


def test_every_processing_setting_is_reachable_from_config_and_cli():
    """Each field of the settings object is a config key of ``xafs.normalize`` and an ``analyze`` option."""
    import argparse
    from dataclasses import fields

    from xafs_stream.analyses.registry import default_registry
    from xafs_stream.cli.analyze import add_parser
    from xafs_stream.engines.xafs import ProcessSettings

    accepted = set(default_registry()["xafs.normalize"].settings)
    names = {f.name for f in fields(ProcessSettings)}
    assert names <= accepted and accepted - names == {"calibrate"}
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    options = {a.dest for a in parser._subparsers._group_actions[0].choices["analyze"]._actions}
    assert names <= options
