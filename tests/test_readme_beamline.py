"""The README's "Using it at a beamline" section runs as written: its shell block starts a real ``serve`` and
its Python blocks run, in order, in a fresh interpreter against it (real Tiled, broker, worker, RunEngine)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from xafs_stream.testing import free_port

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## Using it at a beamline")
    end = text.index("\n## ", start + 5)
    return text[start:end]


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", _section(), flags=re.DOTALL)


def test_the_beamline_section_runs_as_written(tmp_path):
    pytest.importorskip("ophyd")
    (cmd,) = _blocks("bash")
    python = _blocks("python")
    assert cmd.strip() == "xafs-stream serve --config xafs-stream.toml" and len(python) >= 2
    # the configuration a user writes: the defaults (data_dir "xafs-data"), free ports, no dashboard
    (tmp_path / "xafs-stream.toml").write_text(
        f'[broker]\nfrontend = "tcp://127.0.0.1:{free_port()}"\nbackend = "tcp://127.0.0.1:{free_port()}"\n'
        f'events = "tcp://127.0.0.1:{free_port()}"\n[dashboard]\nenabled = false\n')
    exe = Path(sys.executable).parent / "xafs-stream"
    serve = subprocess.Popen([str(exe), *cmd.split()[1:]], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "xafs-data" / "service.json").exists():
            assert serve.poll() is None, serve.stdout.read()
            assert time.monotonic() < deadline
            time.sleep(0.2)
        script = tmp_path / "readme_blocks.py"
        script.write_text("\n\n".join(python) + "\nsession.close()\nprint('README blocks done')\n")
        res = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
                             timeout=400)
        assert res.returncode == 0, res.stderr[-3000:]
        assert "README blocks done" in res.stdout
    finally:
        serve.send_signal(signal.SIGTERM)
        serve.wait(60)
