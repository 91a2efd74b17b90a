"""``xafs-stream map``: runs on the packaged STXM stack and on a synthetic stack; clear errors."""

from pathlib import Path

import numpy as np

from xafs_stream.cli.main import main

DATA = Path(__file__).parent / "data" / "stxm_fe_L.npz"


def test_map_stxm_with_stored_refs(tmp_path, capsys):
    plot = tmp_path / "map.png"
    out = tmp_path / "maps.npz"
    rc = main(["map", str(DATA), "--background-phase", "--plot", str(plot), "--out", str(out),
               "--json", str(tmp_path / "s.json")])
    text = capsys.readouterr().out
    assert rc == 0
    assert "123 energies 700.00-730.35 eV, 125 x 125 pixels" in text
    # an L-edge window has no K-edge features: no pixel is counted as "without an edge" for that (before, every
    # pixel was, and the map was called bad); the references fit
    assert [line for line in text.splitlines() if line.startswith("quality: ")] == ["quality: ok"]
    for phase in ("reduced", "oxidized", "none"):
        assert phase in text
    assert plot.stat().st_size > 10_000
    with np.load(out) as maps:
        assert maps["labels"].shape == (125, 125)
        assert list(maps["phase_names"]) == ["oxidized", "reduced", "none"]


def test_map_with_reference_files(tmp_path, capsys):
    from xafs_stream.simulated_devices.phantom import make_phantom

    ph = make_phantom((24, 24), n_phases=2, seed=1)
    rng = np.random.default_rng(0)
    stack = ph.absorption_stack() + rng.normal(0, 0.02, (ph.energy.size, 24, 24))
    np.savez(tmp_path / "s.npz", energy=ph.energy, stack=stack)
    refs = []
    for name, spec in zip(("fe2", "fe3"), ph.refs):
        p = tmp_path / f"{name}.txt"
        np.savetxt(p, np.column_stack([ph.energy, spec]))
        refs.append(str(p))
    rc = main(["map", str(tmp_path / "s.npz"), "--refs", *refs])
    text = capsys.readouterr().out
    assert rc == 0 and "quality: ok" in text.splitlines()  # every pixel shows the edge; references fit
    lines = {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
             if line.split() and line.split()[0] in ("fe2", "fe3")}
    truth = [100 * np.mean(ph.labels == k) for k in (0, 1)]
    assert abs(lines["fe2"] - truth[0]) < 3 and abs(lines["fe3"] - truth[1]) < 3


def test_a_map_without_the_element_says_bad_and_exits_3(tmp_path, capsys):
    """A stack of noise around a flat absorption (no edge anywhere): one line naming why, exit code 3; the
    --json file carries the same verdict."""
    from xafs_stream.simulated_devices.phantom import make_phantom

    ph = make_phantom((16, 16), n_phases=2, seed=1)
    flat = np.full((ph.energy.size, 16, 16), 0.3) + np.random.default_rng(0).normal(0, 0.02, (ph.energy.size, 16, 16))
    np.savez(tmp_path / "flat.npz", energy=ph.energy, stack=flat)
    rc = main(["map", str(tmp_path / "flat.npz"), "--json", str(tmp_path / "s.json")])
    text = capsys.readouterr().out
    assert rc == 3
    # noise passes the edge test in a pixel or two (a 1 % false-alarm level): "99 % show no edge" or "no pixel"
    line = next(x for x in text.splitlines() if x.startswith("quality: "))
    assert line.startswith("quality: bad (") and ("show no edge" in line or "no pixel shows" in line), line
    import json

    quality = json.loads((tmp_path / "s.json").read_text())["quality"]
    assert quality["verdict"] == "bad" and line == f"quality: bad ({'; '.join(quality['reasons'])})"


def test_map_errors_exit_2(tmp_path, capsys):
    assert main(["map", str(tmp_path / "none.npz")]) == 2
    assert "no stack file" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, energy=np.arange(5.0), stack=np.ones((6, 3, 3)))
    assert main(["map", str(bad)]) == 2
    assert "5 energies but the stack has 6 images" in capsys.readouterr().err
    ref = tmp_path / "r.txt"
    np.savetxt(ref, np.column_stack([np.linspace(7000, 7050, 20), np.ones(20)]))
    assert main(["map", str(DATA), "--refs", str(ref)]) == 2
    assert "references are not extrapolated" in capsys.readouterr().err
    assert main(["map", str(DATA), "--use-mask", "--n-phases", "0"]) == 2
