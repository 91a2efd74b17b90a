"""A μ-XANES stack mapped on a Dask cluster, tile by tile: each task reads its own tile from disk and computes
the per-pixel features (:func:`~xafs_stream.engines.imaging.pipeline.stack_features`, the code the live tiles
and ``analyze_stack`` run); the client assembles the feature maps and solves the map model
(:func:`~xafs_stream.engines.imaging.pipeline.solve_maps`). The features are per pixel, so the maps equal the
batch and live ones exactly whatever the tiling; only the (ny, nx) maps, never the stack, are in one process.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..engines.imaging.pipeline import ImagingSettings, MapResult, solve_maps, stack_features
from ..io.stack_tiles import StackTiles

#: default tile side (px): a 256 x 256 x 100 float32 tile is 26 MB, its float64 temporaries a few times that
TILE_PX = 256


def tile_features(tiles: StackTiles, settings: ImagingSettings, box: tuple[int, int, int, int]
                  ) -> tuple[tuple[int, int, int, int], dict[str, np.ndarray], dict[str, int]]:
    """One task: read tile ``box`` = (y0, y1, x0, x1) and compute its feature maps and masked-pixel counts."""
    block = tiles.read(*box)
    raw, reasons = stack_features(tiles.energy, block, settings)
    return box, raw, reasons


def features_on_cluster(client: Any, tiles: StackTiles, settings: ImagingSettings, *, tile: int = TILE_PX,
                        progress: Callable[[int, int], Any] | None = None
                        ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Feature maps name -> (ny, nx) of the whole stack, computed tile by tile on the cluster's workers, and the
    counts of masked pixels by reason. ``progress(done, total)`` is called as tiles arrive."""
    from distributed import as_completed

    settings = settings.for_energy(tiles.energy)
    _, ny, nx = tiles.shape
    boxes = tiles.tiles(tile)
    raw = {n: np.full((ny, nx), np.nan) for n in settings.feature_names}
    reasons: dict[str, int] = {}
    shared = client.scatter([tiles, settings], broadcast=True)
    futures = [client.submit(tile_features, shared[0], shared[1], box, pure=False) for box in boxes]
    done = 0
    for future in as_completed(futures):
        (y0, y1, x0, x1), maps, why = future.result()
        future.release()
        for n in settings.feature_names:
            raw[n][y0:y1, x0:x1] = maps[n]
        for k, v in why.items():
            reasons[k] = reasons.get(k, 0) + v
        done += 1
        if progress is not None:
            progress(done, len(boxes))
    return raw, reasons


def map_stack_on_cluster(client: Any, tiles: StackTiles, settings: ImagingSettings, *, tile: int = TILE_PX,
                         mask: np.ndarray | None = None,
                         progress: Callable[[int, int], Any] | None = None, fft_workers: int = 1) -> MapResult:
    """:func:`~xafs_stream.engines.imaging.pipeline.analyze_stack` for a stack on disk, features on the cluster
    (the map model in this process, its transforms on ``fft_workers`` threads)."""
    settings = settings.for_energy(tiles.energy)
    raw, reasons = features_on_cluster(client, tiles, settings, tile=tile, progress=progress)
    return solve_maps(raw, reasons, settings, mask=mask, fft_workers=fft_workers)
