"""The installed layout: beamline-side folders live under the xafs_stream namespace only."""

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize("name", ["plans", "callbacks", "simulated_devices"])
def test_beamline_side_is_namespaced(name, tmp_path):
    module = importlib.import_module(f"xafs_stream.{name}")
    assert module.__doc__
    # asked in a fresh interpreter outside the repository: with ``python -m pytest`` the repository root is
    # on this process's sys.path, where the folder itself is importable by its own name
    code = f"import importlib.util; print(importlib.util.find_spec({name!r}) is None)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=tmp_path)
    assert out.stdout.strip() == "True", f"the installed package makes a top-level {name!r} importable"


def test_console_script_help_lists_commands(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "xafs_stream.cli.main", "--help"], capture_output=True, text=True, check=True,
        cwd=tmp_path,
    ).stdout
    assert "xafs-stream" in out
