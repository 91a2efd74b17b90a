"""docs/architecture.md's worked example runs as written, and a misspelt setting stops startup.

The example registers an analysis in the process-wide registry, so it runs in a subprocess (with the doc's
code saved as the plugin module its TOML names), on a synthetic spectrum whose white line is known.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

RUN_EXAMPLE = r"""
import json, sys
import numpy as np
from xafs_stream.analyses.registry import load_registry
from xafs_stream.config import ConfigError, load_config
from xafs_stream.core import UnitEnvelope, WorkUnit
from xafs_stream.worker.processing import process_unit

cfg = load_config("example.toml")
registry = load_registry(cfg.worker.plugins)
registry.check_config(cfg.analysis, cfg.worker.analyses)
# an Fe K-edge-like spectrum: unit step at 7112 eV plus a white line (Gaussian) at 7125 eV
energy = np.concatenate([np.arange(6950.0, 7100.0, 5.0), np.arange(7100.0, 7200.0, 0.5),
                         np.arange(7200.0, 7600.0, 4.0)])
model = 0.5 + np.arctan((energy - 7112.0) / 1.5) / np.pi + 0.6 * np.exp(-0.5 * ((energy - 7125.0) / 4.0) ** 2)
unit = WorkUnit("run-1", "spectrum", 0, {"energy": energy, "mu": model}, {"element": "Fe", "edge": "K"})
records = process_unit(UnitEnvelope(unit, analyses=["example.whiteline"]), registry, cfg.analysis)
out = {"records": [(r.analysis, r.status, r.error) for r in records],
       "summary": records[-1].result.summary if records[-1].result else {},
       "true_energy": float(energy[np.argmax(model)]), "true_height": float(model.max())}
errors = {}
for name, settings in (("misspelt", {"window": 40}), ("negative", {"window_ev": -1})):
    try:
        registry.check_config({"example.whiteline": settings})
    except ConfigError as exc:
        errors[name] = str(exc)
out["errors"] = errors
print(json.dumps(out))
"""


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def example_dir(tmp_path):
    (python,) = _blocks("python")
    (toml,) = _blocks("toml")
    (tmp_path / "whiteline_plugin.py").write_text(python)
    (tmp_path / "example.toml").write_text(toml)
    return tmp_path


def _env(path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(path), os.environ.get("PYTHONPATH")) if p)}


def test_the_documented_analysis_runs_through_the_registry(example_dir):
    assert len(_blocks("python")[0].strip().splitlines()) <= 30  # a short example, as the doc promises
    out = subprocess.run([sys.executable, "-c", RUN_EXAMPLE], cwd=example_dir, env=_env(example_dir),
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.splitlines()[-1])
    assert got["records"] == [["xafs.normalize", "ok", ""], ["example.whiteline", "ok", ""]]
    # the peak of the noiseless model, on the grid; its height is normalised by a unit edge step
    assert got["summary"]["whiteline.energy"] == pytest.approx(got["true_energy"], abs=0.5)
    assert got["summary"]["whiteline.height"] == pytest.approx(got["true_height"], abs=0.05)
    assert got["errors"]["misspelt"] == ('[analysis."example.whiteline"] window: unknown setting; '
                                         "valid: window_ev")
    assert got["errors"]["negative"] == '[analysis."example.whiteline"]: window_ev must be > 0 eV, got -1'


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_misspelt_setting_stops_startup_with_one_line(command, tmp_path):
    config = tmp_path / "xafs-stream.toml"
    config.write_text('[analysis."xafs.normalize"]\nkweigth = 2\n')
    tiled = ["--tiled-uri", "http://127.0.0.1:9/api/v1"]
    where = tiled if command == "worker" else ["--data-dir", str(tmp_path)]
    cli = [sys.executable, "-m", "xafs_stream.cli.main", command, "--config", str(config), *where]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        f'xafs-stream {command}: error: [analysis."xafs.normalize"] kweigth: unknown setting; valid: '
        "bkg_dk, bkg_kmax, bkg_kmin, bkg_kweight, calibrate, clamp_hi, clamp_lo, deglitch, dk, dk2, e0, kmax, "
        "kmin, kweight, min_edge_snr, nclamp, nknots, nnorm, norm1, norm2, npre, pre1, pre2, rbkg, rmax_out, "
        "smooth_ev, window"]
    assert not (tmp_path / "logs").exists()  # nothing was started


@pytest.mark.parametrize("section, name", [('[analysis."xafs.normalise"]\nkweight = 2\n', "xafs.normalise"),
                                           ('[worker]\nanalyses = ["xafs.normalise"]\n', "xafs.normalise")])
def test_a_misspelt_analysis_name_stops_startup_naming_the_valid_ones(section, name, tmp_path):
    config = tmp_path / "xafs-stream.toml"
    config.write_text(section)
    cli = [sys.executable, "-m", "xafs_stream.cli.main", "worker", "--config", str(config),
           "--tiled-uri", "http://127.0.0.1:9/api/v1"]
    out = subprocess.run(cli, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert f"unknown analysis {name!r}; valid: bayes.xanes, imaging.features, spm, xafs.normalize" in line
