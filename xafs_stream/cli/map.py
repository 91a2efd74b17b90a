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
import os
from pathlib import Path

from .errors import CliError


def local_cores() -> int:
    """Cores this process may use (the map model's transforms run on all of them: the command has the host)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


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
                   help="with --none-phase off: a mixture phase 'none' for pixels without the element")
    p.add_argument("--none-phase", choices=("on", "off"), default="on",
                   help="with references: phase 'none' where the LCF total is noise around zero (its error per "
                        "pixel, a Potts MRF), phases by the dominant reference elsewhere (default on; off: the "
                        "mixture-model labels over all pixels)")
    p.add_argument("--edge-features", choices=("auto", "on", "off"), default="auto",
                   help="K-edge features per pixel (edge, white line, pre-edge): auto = not for soft X-ray "
                        "L-edge windows (< 2 keV, < 60 eV wide), where they do not apply")
    p.add_argument("--n-phases", type=int, help="number of phases (default: one per reference, or 3)")
    p.add_argument("--lcf-background", choices=("none", "constant", "linear"), default="linear",
                   help="free background in the linear-combination fit (default linear)")
    p.add_argument("--use-mask", action="store_true", help="restrict to the region mask stored with the stack")
    p.add_argument("--plot", metavar="PNG", help="write a figure: labels, fraction, thickness, uncertainty")
    p.add_argument("--out", metavar="NPZ", help="write all maps (raw, smoothed, sd, fractions, labels) as NPZ")
    p.add_argument("--json", metavar="FILE", help="write the statistics as JSON")
    d = p.add_argument_group("Dask (stacks larger than memory)")
    d.add_argument("--scheduler", metavar="ADDR",
                   help="compute the per-pixel features tile by tile on a Dask cluster: 'local' (a LocalCluster of "
                        "--workers processes) or a scheduler address tcp://host:8786; the stack (HDF5 or zarr) is "
                        "read tile by tile by the workers, never whole")
    d.add_argument("--workers", type=int, default=2, help="worker processes of the local cluster (default 2)")
    d.add_argument("--memory-limit", metavar="SIZE", help="memory limit per local worker, e.g. 2GB")
    d.add_argument("--tile", type=int, default=None, help="tile side in pixels (default 256)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..engines.imaging.pipeline import ImagingSettings, analyze_stack, refs_from_spectra
    from ..engines.imaging.verdict import judge_map
    from ..io import read_spectrum

    if args.scheduler is None and (args.tile is not None or args.memory_limit is not None):
        raise CliError("--tile and --memory-limit apply to a Dask run: give --scheduler local or tcp://host:port")
    if args.tile is not None and args.tile < 1:
        raise CliError(f"--tile: tile size must be >= 1 px, got {args.tile}")
    if args.workers < 1:
        raise CliError(f"--workers must be >= 1, got {args.workers}")
    stack = _open(args)
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
                               n_phases=args.n_phases, lcf_background=args.lcf_background,
                               none_phase=args.none_phase == "on", edge_features=args.edge_features)
    if args.scheduler is not None:
        from ..batch.cluster import dask_client
        from ..batch.stack import TILE_PX, map_stack_on_cluster

        with dask_client(args.scheduler, n_workers=args.workers, memory_limit=args.memory_limit) as client:
            result = map_stack_on_cluster(client, stack, settings, tile=TILE_PX if args.tile is None else args.tile,
                                          mask=mask, fft_workers=local_cores())
    else:
        result = analyze_stack(stack.energy, stack.stack, settings, mask=mask, fft_workers=local_cores())
    verdict = judge_map(result.model)
    _print_table(args.stack, stack, result)
    print(verdict.line())
    if args.plot:
        plot_maps(result, settings, args.plot, title=Path(args.stack).name,
                  pixel_size_um=getattr(stack, "pixel_size_um", None))
        print(f"figure: {args.plot}")
    if args.out:
        save_maps(result, args.out)
        print(f"maps: {args.out}")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"stack": str(args.stack), "phases": list(result.phase_names),
             "statistics": {k: (v if np.isfinite(v) else None) for k, v in result.statistics.items()},
             "masked": result.reasons, "quality": {"verdict": verdict.level, "reasons": verdict.reasons}},
            indent=2))
        print(f"statistics: {args.json}")
    return 3 if verdict.level == "bad" else 0


def _open(args: argparse.Namespace):
    """The stack in memory (:func:`~xafs_stream.io.stack.read_stack`), or with ``--scheduler`` described for
    tile-by-tile reading (:func:`~xafs_stream.io.stack_tiles.open_stack_tiles`)."""
    from ..io.stack import read_stack

    if args.scheduler is None:
        return read_stack(args.stack, i0=args.i0, energies=args.energies)
    from ..io.stack_tiles import open_stack_tiles

    return open_stack_tiles(args.stack, i0=args.i0, energies=args.energies)


def _print_table(path, stack, result) -> None:
    m = result.model
    ny, nx = m.shape
    print(f"{Path(path).name}: {stack.energy.size} energies {stack.energy[0]:.2f}-{stack.energy[-1]:.2f} eV, "
          f"{ny} x {nx} pixels")
    print(f"masked pixels: {result.reasons}")
    if "normalisation" not in result.reasons:
        print("edge features: not applicable (soft X-ray L-edge window; --edge-features on to force them)")
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
    arrays = {"labels": result.labels, "label_uncertainty": result.label_uncertainty,
              "phase_names": np.array(list(result.phase_names))}
    for n, v in result.raw.items():
        arrays[f"raw.{n}"] = v
    for n in m.config.smooth:
        arrays[f"smoothed.{n}"] = m.smoothed[n]
        arrays[f"sd.{n}"] = m.sd[n]
    for n, v in result.fractions.items():
        arrays[f"fraction.{n}"] = v
    np.savez_compressed(path, **arrays)


def plot_maps(result, settings, path: str, title: str = "", pixel_size_um: float | None = None) -> None:
    """The maps a scientist reads: phase labels ("none" where the element is absent), a composite of the
    phases with brightness = amount, each reference's fraction (background masked), the amount, and the label
    uncertainty; axes in µm with a scale bar when the pixel size is known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(result.phase_names)
    k = len(names)
    labels = np.where(result.labels >= 0, result.labels, np.nan).astype(float)
    none = names.index("none") if "none" in names else None
    colours = [plt.get_cmap("tab10").colors[i] for i in range(k)]
    if none is not None:
        colours[none] = (0.25, 0.25, 0.25)
    ny, nx = labels.shape
    if pixel_size_um:
        extent, unit = (0, nx * pixel_size_um, ny * pixel_size_um, 0), "µm"
    else:
        extent, unit = (0, nx, ny, 0), "px"
    thick_name = "lcf_total" if "lcf_total" in result.raw else "edge_step"
    amount = result.model.smoothed.get(thick_name, result.raw.get(thick_name))
    absent = (result.labels == none) if none is not None else np.zeros(labels.shape, bool)
    panels = [("phase labels (Potts MRF)", "labels")]
    if result.fractions:
        panels.append(("composite: colour = phase fractions,\nbrightness = √amount (black: no element)", "rgb"))
        panels += [(name, "fraction") for name in result.fractions]
    if amount is not None:
        panels.append((thick_name, "amount"))
    panels.append(("label uncertainty", "uncertainty"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.3 * len(panels), 4.6))
    for ax, (key, kind) in zip(np.atleast_1d(axes), panels):
        if kind == "labels":
            im = ax.imshow(labels, cmap=ListedColormap(colours), vmin=-0.5, vmax=k - 0.5, interpolation="nearest",
                           extent=extent)
            ax.legend(handles=[Patch(color=c, label=n) for c, n in zip(colours, names)], fontsize=7,
                      loc="lower left", framealpha=0.8)
            ax.set_title(key, fontsize=9)
        elif kind == "rgb":
            fr = np.stack([np.nan_to_num(result.fractions[n]) for n in result.fractions])
            rgb_of = np.array([colours[names.index(n)] if n in names else (1, 1, 1) for n in result.fractions])
            level = np.nanpercentile(amount[~absent], 95) if np.any(~absent) else 1.0
            bright = np.sqrt(np.clip(np.nan_to_num(amount) / (level or 1.0), 0, 1))  # gamma 0.5: thin areas show
            rgb = np.clip(np.einsum("kyx,kc->yxc", fr, rgb_of) * bright[..., None], 0, 1)
            rgb[absent] = 0.0
            ax.imshow(rgb, extent=extent, interpolation="nearest")
            ax.set_title(key, fontsize=9)
            im = None
        elif kind == "fraction":
            cm = plt.get_cmap("coolwarm").copy()
            cm.set_bad((0.8, 0.8, 0.8))
            data = np.where(absent, np.nan, result.fractions[key])
            im = ax.imshow(data, cmap=cm, vmin=0, vmax=1, interpolation="nearest", extent=extent)
            ax.set_title(f"fraction of reference '{key}' (grey: no element)", fontsize=9)
        elif kind == "amount":
            im = ax.imshow(amount, cmap="viridis", interpolation="nearest", extent=extent)
            what = ("element amount: LCF total, in units of the references' optical density" if key == "lcf_total"
                    else "edge step (optical density)")
            ax.set_title(what, fontsize=9)
        else:
            im = ax.imshow(result.label_uncertainty, cmap="magma", vmin=0, vmax=1, interpolation="nearest",
                           extent=extent)
            ax.set_title("label uncertainty (1 - probability of the label;\n'none': probability the element is there)",
                         fontsize=8)
        ax.set_xlabel(f"x ({unit})")
        ax.set_ylabel(f"y ({unit})")
        if im is not None and kind != "labels":
            cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
            cb.set_label({"fraction": "fraction (0-1)", "amount": "OD (× reference)" if key == "lcf_total" else "OD",
                          "uncertainty": "probability"}[kind], fontsize=8)
        if pixel_size_um:
            _scale_bar(ax, nx * pixel_size_um, ny * pixel_size_um)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _scale_bar(ax, width_um: float, height_um: float) -> None:
    """A white scale bar of a round length (about a fifth of the field) in the lower right corner."""
    import numpy as np

    target = width_um / 5.0
    length = float(10 ** np.floor(np.log10(target)))
    for f in (5, 2, 1):
        if f * length <= target:
            length *= f
            break
    x1, y = 0.95 * width_um, 0.93 * height_um
    ax.plot([x1 - length, x1], [y, y], color="white", lw=3, solid_capstyle="butt")
    ax.text(x1 - length / 2, y - 0.03 * height_um, f"{length:g} µm", color="white", ha="center", va="bottom",
            fontsize=8)
