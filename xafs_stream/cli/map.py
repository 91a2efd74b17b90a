"""``xafs-stream map STACK [--refs A.txt B.txt] [--plot out.png]``: μ-XANES phase and feature maps of a stack.

STACK is an NPZ / HDF5 / TIFF stack with energies, or an STXM ``.hdr`` (+ ``.xim`` images); see
:mod:`xafs_stream.io.stack`. Transmission intensities need ``--i0`` (unless the file holds I0). Reference spectra
(``--refs``, any spectrum file on or covering the stack's energies) give linear-combination fractions and one
phase per reference; references stored in an NPZ/HDF5 stack are used when ``--refs`` is not given.
Prints phase fractions, domain sizes, correlation lengths and the learned MRF hyperparameters.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .errors import CliError


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "map",
        help="μ-XANES imaging: per-pixel features, LCF fractions, MRF phase labels and smoothed maps",
        description="Per-pixel XANES features (edge step and position, white line, pre-edge centroid), linear-"
        "combination fractions against reference spectra, phase labels from a Gaussian mixture and a "
        "Potts MRF, and GMRF-smoothed maps; every MRF hyperparameter is learned from the data.",
    )
    p.add_argument("stack", help="image stack: .npz, .h5/.hdf5, .tif/.tiff (+ energies) or STXM .hdr")
    p.add_argument("--refs", nargs="+", metavar="FILE", help="reference spectra (one phase each)")
    p.add_argument("--i0", metavar="FILE", help="incident intensity (energy, counts) for intensity stacks")
    p.add_argument("--energies", metavar="FILE", help="energies (eV), one per line, for stacks without them")
    p.add_argument("--background-phase", action="store_true",
                   help="add a phase 'none' for pixels without the element (empty substrate)")
    p.add_argument("--n-phases", type=int, help="number of phases (default: one per reference, or 3)")
    p.add_argument("--lcf-background", choices=("none", "constant", "linear"), default="linear",
                   help="free background in the linear-combination fit (default linear)")
    p.add_argument("--use-mask", action="store_true", help="restrict to the region mask stored with the stack")
    p.add_argument("--plot", metavar="PNG", help="write a figure: labels, fraction, thickness, uncertainty")
    p.add_argument("--out", metavar="NPZ", help="write all maps (raw, smoothed, sd, fractions, labels) as NPZ")
    p.add_argument("--json", metavar="FILE", help="write the statistics as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engines.imaging.pipeline import ImagingSettings, analyze_stack, refs_from_spectra
    from ..io import read_spectrum
    from ..io.stack import read_stack

    stack = read_stack(args.stack, i0=args.i0, energies=args.energies)
    if args.refs:
        spectra = {}
        for path in args.refs:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: no such reference file")
            s = read_spectrum(path)
            spectra[Path(path).stem] = (s.energy, s.mu)
        names, refs = refs_from_spectra(spectra, stack.energy)
    elif stack.refs:
        names, refs = tuple(stack.refs), np.vstack(list(stack.refs.values()))
    else:
        names, refs = (), None
    if args.n_phases is not None and args.n_phases < 1:
        raise CliError(f"--n-phases must be >= 1, got {args.n_phases}")
    mask = None
    if args.use_mask:
        if stack.mask is None:
            raise CliError(f"{args.stack}: --use-mask given but the stack stores no mask")
        mask = stack.mask
    settings = ImagingSettings(refs=refs, ref_names=names, background_phase=args.background_phase,
                               n_phases=args.n_phases, lcf_background=args.lcf_background)
    result = analyze_stack(stack.energy, stack.stack, settings, mask=mask)
    _print_table(args.stack, stack, result)
    if args.plot:
        plot_maps(result, settings, args.plot, title=Path(args.stack).name)
        print(f"figure: {args.plot}")
    if args.out:
        save_maps(result, args.out)
        print(f"maps: {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"stack": str(args.stack), "phases": list(result.phase_names),
             "statistics": {k: (v if np.isfinite(v) else None) for k, v in result.statistics.items()},
             "masked": result.reasons}, indent=2))
        print(f"statistics: {args.json}")
    return 0


def _print_table(path, stack, result) -> None:
    m = result.model
    ny, nx = m.shape
    print(f"{Path(path).name}: {stack.energy.size} energies {stack.energy[0]:.2f}-{stack.energy[-1]:.2f} eV, "
          f"{ny} x {nx} pixels")
    print(f"masked pixels: {result.reasons}")
    print(f"Potts coupling beta = {m.beta:.3f} (pseudo-likelihood)")
    print(f"{'phase':<22}{'pixels %':>10}")
    for name in result.phase_names:
        print(f"{name:<22}{100 * result.statistics.get(f'label_fraction.{name}', float('nan')):>10.1f}")
    st = result.statistics
    print(f"domains: {int(st['domain.n'])}, median {st['domain.median_area_px']:.0f} px, "
          f"area-weighted mean {st['domain.area_weighted_px']:.0f} px")
    print(f"{'map':<28}{'noise sd':>12}{'smoothing px':>14}{'corr length px':>16}")
    for n in m.config.smooth:
        p = m.gmrf[n]
        noise = f"{p.s2 ** 0.5:.4g}" if p is not None else "-"
        smooth = f"{p.smoothing_length_px:.3g}" if p is not None else "-"
        corr = st.get(f"corr_length.{n}", float("nan"))
        print(f"{n:<28}{noise:>12}{smooth:>14}{corr:>16.3g}")


def save_maps(result, path: str) -> None:
    import numpy as np

    m = result.model
    arrays = {"labels": m.labels, "label_uncertainty": 1.0 - m.prob_max,
              "phase_names": np.array(list(result.phase_names))}
    for n, v in result.raw.items():
        arrays[f"raw.{n}"] = v
    for n in m.config.smooth:
        arrays[f"smoothed.{n}"] = m.smoothed[n]
        arrays[f"sd.{n}"] = m.sd[n]
    for n, v in result.fractions.items():
        arrays[f"fraction.{n}"] = v
    np.savez_compressed(path, **arrays)


def plot_maps(result, settings, path: str, title: str = "") -> None:
    """Labels, first fraction (or edge position), thickness and label uncertainty, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap

    m = result.model
    k = m.config.n_phases
    panels = []
    labels = np.where(m.labels >= 0, m.labels, np.nan)
    cmap = ListedColormap(plt.get_cmap("tab10").colors[:k])
    panels.append(("phase labels (MRF)", labels, cmap, -0.5, k - 0.5))
    if result.fractions:
        name, frac = next(iter(result.fractions.items()))
        panels.append((f"fraction {name} (MRF)", frac, "coolwarm", 0, 1))
    elif "edge_position" in m.smoothed:
        panels.append(("edge position (eV, MRF)", m.smoothed["edge_position"], "viridis", None, None))
    thick = "lcf_total" if "lcf_total" in m.smoothed else "edge_step"
    if thick in m.smoothed:
        panels.append((f"{thick} (MRF)", m.smoothed[thick], "viridis", None, None))
    panels.append(("label uncertainty", 1.0 - m.prob_max, "magma", 0, 1))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.2))
    for ax, (label, data, cm, lo, hi) in zip(np.atleast_1d(axes), panels):
        im = ax.imshow(data, cmap=cm, vmin=lo, vmax=hi, interpolation="nearest")
        ax.set_title(label, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        if label.startswith("phase"):
            cb.set_ticks(range(k))
            cb.set_ticklabels(list(result.phase_names))
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
