"""The README's main job (the demo) and the deployment description."""

import shutil
import subprocess
from pathlib import Path

import pytest

from xafs_stream.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_quick_demo_runs_the_whole_service_path(tmp_path, capsys):
    rc = main(["demo", "--quick", "--data-dir", str(tmp_path / "data")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "Browse: http://127.0.0.1:" in out
    assert "Cu foil" in out and "mu-XANES map" in out
    assert "E0 8979" in out  # the Cu foil's edge, from the live normalisation
    assert "xafs_normalize" in out and "p95" in out  # per-unit latency was reported
    assert "xafs-stream watch --events tcp://127.0.0.1:" in out  # how to follow results live (own port)
    assert (tmp_path / "data" / "tiled" / "catalog.db").exists()


def test_readme_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    test_command = (ROOT / ".ci" / "test-command").read_text().strip()
    assert test_command in readme
    assert 'pip install -e ".[test]" && xafs-stream demo' in readme


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid():
    result = subprocess.run(["docker-compose", "config", "-q"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_docker_compose_has_no_default_secrets_and_authenticates_the_broker():
    """Every secret must be given (``${VAR:?...}``), and the broker and workers, which listen and connect
    beyond loopback, use CURVE keys."""
    import yaml

    text = (ROOT / "docker-compose.yml").read_text()
    assert "change-me" not in text and ":-" not in text
    compose = yaml.safe_load(text)
    for name in ("broker", "worker"):
        service = compose["services"][name]
        assert service["environment"]["XAFS_STREAM_SECURITY_KEYS"] == "/keys"
        assert "./keys:/keys:ro" in service["volumes"]
    assert compose["services"]["tiled"]["command"].count("${TILED_API_KEY:?") == 1
