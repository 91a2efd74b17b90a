"""The installed layout: beamline-side folders live under the xafs_stream namespace only."""

import importlib
import importlib.util
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["plans", "callbacks", "simulated_devices"])
def test_beamline_side_is_namespaced(name):
    module = importlib.import_module(f"xafs_stream.{name}")
    assert module.__doc__
    assert importlib.util.find_spec(name) is None, f"a top-level {name!r} module is importable"


def test_console_script_help_lists_commands(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "xafs_stream.cli.main", "--help"], capture_output=True, text=True, check=True,
        cwd=tmp_path,
    ).stdout
    assert "xafs-stream" in out
