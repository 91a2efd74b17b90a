"""The per-tile fast paths of the imaging engine against what they replace.

Each shortcut taken for the 64 x 64 tile budget is checked against a direct computation: the cached E0
smoothing matrices and the cached fit projectors of the stack path of ``pre_edge`` against the one-spectrum
path, the one-partition median against ``np.median``, the sparse half-step search and the column-windowed
white-line and pre-edge features against full-width computations, the sine-transform preconditioner basis
against the dense 1-D operator, the float32 window solves stopped at a field tolerance against a dense solve,
the running block statistics against sums from scratch, the one-step estimate of re-smoothed class features
against a re-solve, and the incremental map against the batch solve at the benchmark's noise level; also the
preconditioner's transforms as matrix products against scipy's fast transforms, the hyperparameter search of
many maps at once against one map at a time, the phase model's whitened log-likelihoods against scipy's
multivariate normal, the E0 edge pick against a per-row loop, and the features of a tile with failed
normalisations against those of its good rows alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from xafs_stream.simulated_devices.phantom import make_phantom

from xafs_stream.engines.imaging import ImagingSettings, MapModel
from xafs_stream.engines.imaging import gmrf as G
from xafs_stream.engines.imaging.features import _row_median, half_step_energy, preedge_peak, white_line
from xafs_stream.engines.imaging.incremental import StopRule, WindowMap, local_gmrf_many
from xafs_stream.engines.imaging.pipeline import stack_features
from xafs_stream.engines.xafs import e0 as e0_module
from xafs_stream.engines.xafs import pre_edge

E = np.concatenate([np.linspace(7080, 7105, 26), np.linspace(7105.5, 7150, 90), np.linspace(7152, 7250, 50)])


def _spectra(n, rng, noise=0.02):
    centres = rng.uniform(7118, 7128, n)
    steps = rng.uniform(0.5, 2.0, n)
    edge = 0.5 + np.arctan((E[None, :] - centres[:, None]) / 2.0) / np.pi
    wl = 0.6 * np.exp(-0.5 * ((E[None, :] - centres[:, None] - 9.0) / 2.5) ** 2)
    line = 0.1 + 1e-4 * (E - E[0])
    return steps[:, None] * (edge + wl) + line[None, :] + rng.normal(0, noise, (n, E.size))


def test_stack_pre_edge_with_cached_operators_equals_single_spectra():
    """>= 64 spectra take the cached fused E0 operators and fit projectors; each row equals the single path."""
    rng = np.random.default_rng(0)
    mu = _spectra(80, rng)
    batch = pre_edge(E, mu)
    assert batch.ok.all()
    for i in range(0, 80, 7):
        one = pre_edge(E, mu[i])
        assert batch.e0[i] == one.e0
        assert batch.edge_step[i] == pytest.approx(one.edge_step, rel=1e-12)
        assert np.allclose(batch.norm[i], one.norm, atol=1e-12)


def test_fused_e0_smoothing_equals_the_fft_path(monkeypatch):
    rng = np.random.default_rng(1)
    mu = _spectra(200, rng, noise=0.05)
    fused = e0_module.search_e0(E, mu)
    monkeypatch.setattr(e0_module, "_FUSED_MIN_SPECTRA", 10**9)
    fft = e0_module.search_e0(E, mu)
    assert np.array_equal(fused.index, fft.index)
    assert np.array_equal(fused.found, fft.found)


@pytest.mark.parametrize("width", [97, 98])
def test_row_median_equals_numpy(width):
    a = np.random.default_rng(width).normal(size=(300, width))
    assert np.array_equal(_row_median(a.copy()), np.median(a, axis=1))


def _half_step_dense(energy, norm, e0):
    """Reference: every crossing interpolated, the nearest to E0 taken (the first of equal distance)."""
    below, above = norm[:, :-1] < 0.5, norm[:, 1:] >= 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = (0.5 - norm[:, :-1]) / (norm[:, 1:] - norm[:, :-1])
    e_cross = energy[:-1][None, :] + frac * np.diff(energy)[None, :]
    dist = np.where(below & above, np.abs(e_cross - e0[:, None]), np.inf)
    k = np.argmin(dist, axis=1)
    rows = np.arange(norm.shape[0])
    out = e_cross[rows, k]
    out[~np.isfinite(dist[rows, k])] = np.nan
    return out


def test_sparse_half_step_search_equals_the_dense_search():
    rng = np.random.default_rng(2)
    norm = pre_edge(E, _spectra(300, rng, noise=0.08)).norm  # noisy: several crossings per spectrum
    norm[5] = 0.2  # no crossing
    e0 = rng.uniform(7115, 7130, 300)
    np.testing.assert_array_equal(half_step_energy(E, norm, e0), _half_step_dense(E, norm, e0))


def test_windowed_white_line_and_pre_edge_peak_equal_full_width_sums():
    rng = np.random.default_rng(3)
    norm = pre_edge(E, _spectra(200, rng)).norm
    start = rng.uniform(7115, 7130, 200)
    start[7] = np.nan
    e_pk, h_pk = white_line(E, norm, start, 30.0)
    # full width: maximum over the window, then a quadratic least-squares fit by np.polyfit
    for i in np.flatnonzero(np.isfinite(start))[:40]:
        inside = (E >= start[i]) & (E <= start[i] + 30.0)
        k = np.flatnonzero(inside)[np.argmax(norm[i, inside])]
        idx = np.clip(np.arange(k - 2, k + 3), 0, E.size - 1)
        c2, c1, c0 = np.polyfit(E[idx] - E[k], norm[i, idx], 2)
        vertex = -c1 / (2 * c2)
        if c2 < 0 and (E[idx] - E[k]).min() <= vertex <= (E[idx] - E[k]).max():
            assert e_pk[i] == pytest.approx(E[k] + vertex, abs=1e-8)
            assert h_pk[i] == pytest.approx(c0 - c1**2 / (4 * c2), abs=1e-10)
        else:
            assert e_pk[i] == E[k]
    assert np.isnan(e_pk[7]) and np.isnan(h_pk[7])
    edge = rng.uniform(7118, 7128, 200)
    centroid, area = preedge_peak(E, norm, edge, (-16.0, -5.0))
    grad = np.gradient(E)
    for i in range(0, 200, 9):
        lo, hi = edge[i] - 16.0, edge[i] - 5.0
        inside = (E >= lo) & (E <= hi)
        y_lo, y_hi = np.interp([lo, hi], E, norm[i])
        base = y_lo + (E - lo) / (hi - lo) * (y_hi - y_lo)
        w = np.where(inside, np.clip(norm[i] - base, 0, None), 0.0) * grad
        if w.sum() > 0:
            assert area[i] == pytest.approx(w.sum(), rel=1e-10)
            assert centroid[i] == pytest.approx((w * E).sum() / w.sum(), rel=1e-12)


@pytest.mark.parametrize("kind", ["N", "D"])
def test_preconditioner_bases_diagonalise_the_free_and_held_chains(kind):
    n = 9
    lap = np.diag(np.r_[1.0, np.full(n - 2, 2.0), 1.0]) - np.eye(n, k=1) - np.eye(n, k=-1)
    if kind == "D":  # a fixed outside neighbour at each end
        lap[0, 0] += 1.0
        lap[-1, -1] += 1.0
    basis = G._axis_inverse(np.eye(n)[None], kind, 2)[0]  # row j: the basis vector of coefficient j
    assert np.allclose(basis @ basis.T, np.eye(n))
    assert np.allclose(basis @ lap, G._axis_eigenvalues(kind, n)[:, None] * basis)
    x = np.random.default_rng(0).normal(size=(2, n, 3))
    assert np.allclose(G._axis_inverse(G._axis_forward(x, kind, 1), kind, 1), x)


def _dense_window(y, valid, labels, lam, bsum, bcnt):
    ny, nx = y.shape
    idx = np.arange(ny * nx).reshape(ny, nx)
    a = np.diag(np.where(valid.ravel(), 1.0 + lam * bcnt.ravel(), 1.0))
    h, v = G.grid_edges(valid, labels)
    for p, q in [(idx[i, j], idx[i, j + 1]) for i, j in zip(*np.nonzero(h))] + \
                [(idx[i, j], idx[i + 1, j]) for i, j in zip(*np.nonzero(v))]:
        a[p, p] += lam
        a[q, q] += lam
        a[p, q] -= lam
        a[q, p] -= lam
    rhs = np.where(valid, np.where(valid, y, 0.0) + lam * bsum, 0.0).ravel()
    return np.linalg.solve(a, rhs).reshape(ny, nx)


def test_float32_window_solve_to_a_field_tolerance_matches_the_dense_solution():
    """Cuts, missing pixels and a held boundary; stopped at 2.5e-4 noise sd (the map model's default) the
    float32 solve is within 5e-3 noise sd of the exact solution, 4x inside the 0.02 sd ring check."""
    rng = np.random.default_rng(4)
    ny, nx = 28, 31
    labels = (np.add.outer(np.arange(ny), np.arange(nx)) // 15) % 2
    valid = rng.uniform(size=(ny, nx)) > 0.05
    y = 7120.0 + labels + rng.normal(0, 1.0, (ny, nx))  # an offset map (edge energies)
    bcnt = np.zeros((ny, nx))
    bcnt[0, :] = bcnt[:, 0] = 1.0  # held on two sides
    bcnt[~valid] = 0.0
    bsum = np.where(bcnt > 0, 7120.3, 0.0)
    for lam in (2.0, 30.0):
        p = G.GmrfParams(s2=1.0, lam=lam, eta=0.0)
        ref = _dense_window(y, valid, labels, lam, bsum, bcnt)
        x, _ = G.solve_maps(y[None], valid[None], [p], labels=labels, boundary=bsum[None], boundary_edges=bcnt[None],
                            stop=[StopRule(rtol=None, field_tol=2.5e-4)])
        assert G.side_kinds(valid[None], bcnt[None]) == ("D", "D")
        assert np.nanmax(np.abs(x[0] - ref)[valid]) < 5e-3
        assert np.isnan(x[0][~valid]).all()


def test_batched_window_update_reproduces_the_global_solve():
    rng = np.random.default_rng(5)
    n = 96
    labels = (np.arange(n)[None, :] > 50).astype(int) * np.ones((n, 1), int)
    valid = np.ones((n, n), bool)
    maps, news = [], []
    region = (slice(30, 54), slice(40, 64))
    for lam, cut in ((0.3, False), (4.0, True), (25.0, True)):
        p = G.GmrfParams(s2=1.0, lam=lam, eta=0.0)
        y = rng.normal(size=(n, n)) + 3 * labels
        old, _ = G.solve_map(y, valid, p, labels=labels if cut else None, rtol=1e-12)
        y2 = y.copy()
        y2[region] += rng.normal(0, 1.0, (24, 24)) + 1.0
        news.append(G.solve_map(y2, valid, p, labels=labels if cut else None, rtol=1e-12)[0])
        maps.append(WindowMap(y=y2, valid=valid, current=old, params=p, cut=cut, ring_tol=0.02,
                              stop=StopRule(rtol=None, field_tol=2.5e-4)))
    solved, _ = local_gmrf_many(maps, region, labels)
    for m, new, (x, win) in zip(maps, news, solved):
        upd = m.current.copy()
        upd[win] = x
        assert np.max(np.abs(upd - new)) < 0.03  # ring tolerance 0.02 + CG error


def _phantom_values(n, noise, seed):
    ph = make_phantom((n, n), n_domains=12, seed=seed)
    rng = np.random.default_rng(seed + 100)
    stack = ph.absorption_stack() + rng.normal(0, noise, (ph.energy.size, n, n))
    settings = ImagingSettings(refs=ph.refs, ref_names=ph.phases)
    raw, _ = stack_features(ph.energy, stack, settings)
    config = settings.map_config()
    return {k: raw[k] for k in dict.fromkeys(config.class_features + config.smooth)}, config


def test_running_block_statistics_equal_sums_from_scratch(monkeypatch):
    from xafs_stream.engines.imaging import mapmodel

    monkeypatch.setattr(mapmodel, "_BLOCK_BATCH", 5)  # several transform batches per update
    values, config = _phantom_values(64, 0.3, 7)
    inc = MapModel((64, 64), config)
    for y, x in [(32, 0), (0, 32), (0, 0), (32, 32), (16, 16)]:  # overlapping re-sent tile last
        inc.add_tile(y, x, {k: v[y:y + 32, x:x + 32] for k, v in values.items()})
    fresh = MapModel((64, 64), config)
    fresh.set_pixels(0, 0, values)
    fresh.labels = inc.labels.copy()
    fresh._update_blocks(None)
    for key in inc._stat_keys:
        assert inc._stat_n[key] == fresh._stat_n[key]
        np.testing.assert_allclose(inc._stat_sum[key], fresh._stat_sum[key], rtol=1e-10, atol=1e-14)
    # the blocks of all maps are transformed in one call: each block's power equals the one-block function
    for n in config.class_features + config.smooth:
        for i, j in zip(*np.nonzero(fresh._block_ok[n])):
            block = values[n][16 * i:16 * i + 16, 16 * j:16 * j + 16]
            np.testing.assert_allclose(fresh._block_power[n][i, j], G.block_power(block), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("lam_old, lam_new", [(0.2, 0.4), (0.3, 0.05), (0.01, 0.3)])
def test_class_shift_estimates_the_re_smoothed_class_features(lam_old, lam_new):
    values, config = _phantom_values(64, 0.3, 8)
    model = MapModel.batch((64, 64), config, values)
    sample = model._sample()
    new, exact = {}, []
    for n in config.class_features:
        old = G.GmrfParams(s2=1.0, lam=lam_old, eta=0.0)
        model.gmrf_class[n] = old
        model.class_smoothed[n] = G.solve_map(model.raw[n], model.valid(n), old, rtol=1e-12)[0]
        new[n] = G.GmrfParams(s2=1.0, lam=lam_new, eta=0.0)
        x, _ = G.solve_map(model.raw[n], model.valid(n), new[n], rtol=1e-12)
        flat = model._lat_flat[sample]
        exact.append(x.ravel()[flat] - model.class_smoothed[n].ravel()[flat])
    est = model._class_shift(sample, new)
    for j, d in enumerate(exact):
        # one Jacobi step (lam <= FLIP_CHECK_MAX_LAM = 0.5 px^2): the right direction, within 35 % in size
        assert np.corrcoef(d, est[:, j])[0, 1] > 0.94
        assert np.linalg.norm(est[:, j] - d) < 0.35 * np.linalg.norm(d)


def test_incremental_equals_batch_at_the_benchmark_noise_level():
    """The decision rules (stage-1 drift by label flips, window solves to a field tolerance) keep the tile
    path within the stated tolerance of the batch solve at the benchmark's noise (0.05), and most tiles
    after the first rows are window updates."""
    values, config = _phantom_values(128, 0.05, 9)
    tiles = [(y, x) for y in range(0, 128, 32) for x in range(0, 128, 32)]
    inc = MapModel((128, 128), config)
    kinds = []
    for i, (y, x) in enumerate(tiles):
        log = inc.add_tile(y, x, {k: v[y:y + 32, x:x + 32] for k, v in values.items()})
        kinds.append(log.kind)
        if i % 3 != 2 and i != len(tiles) - 1:
            continue
        batch = MapModel((128, 128), config)
        for yy, xx in tiles[:i + 1]:
            batch.set_pixels(yy, xx, {k: v[yy:yy + 32, xx:xx + 32] for k, v in values.items()})
        batch.solve_from_scratch()
        obs = batch.observed
        assert np.mean(inc.labels[obs] == batch.labels[obs]) >= 0.98, (i, log)
        for n, p in batch.gmrf.items():
            if p is not None:
                d = (inc.smoothed[n] - batch.smoothed[n]) / np.sqrt(p.s2)
                assert float(np.sqrt(np.nanmean(d**2))) <= 0.15, (i, n, log)
    assert kinds.count("local") >= 3, kinds  # the windowed path is exercised


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matrix_transforms_of_the_preconditioner_equal_the_fast_transforms(dtype):
    rng = np.random.default_rng(11)
    k, ny, nx = 3, 37, 44
    vf = (rng.uniform(size=(k, ny * nx)) > 0.1).astype(dtype)
    lam, eta = np.array([0.5, 4.0, 30.0])[:, None, None], np.zeros((k, 1, 1))
    r = rng.normal(size=(k, ny * nx)).astype(dtype)
    for kinds in (("N", "N"), ("D", "D"), ("N", "D"), ("D", "N")):
        pre = G._DctPreconditioner(vf, lam, eta, (ny, nx), dtype, kinds=kinds)
        assert pre.mats is not None  # small windows take the matrix products
        z = pre(r)
        pre.mats = None  # scipy's DCT / DST
        ref = pre(r)
        tol = 1e-5 if dtype is np.float32 else 1e-12
        assert np.max(np.abs(z - ref)) <= tol * np.max(np.abs(ref))
        sel = np.array([True, False, True])
        assert np.allclose(pre.keep(sel)(r[sel]), ref[sel], rtol=0, atol=tol * np.max(np.abs(ref)))


def test_hyperparameters_of_many_maps_at_once_equal_one_at_a_time():
    rng = np.random.default_rng(12)
    mu = G.block_eigenvalues((16, 16))
    stats = []
    for lam in (1e-4, 0.02, 0.3, 3.0, 30.0, 300.0, 1e4, 1e7):  # inside and at both ends of the search range
        st = G.BlockStats()
        st.add((1.0 + 1.0 / (lam * mu + 1e-300)) * rng.chisquare(1, size=(16, 16)) * 0.7, int(rng.integers(1, 40)))
        stats.append(st)
    stats.append(G.BlockStats())  # no blocks
    two = G.BlockStats()  # two block shapes: learned on its own
    two.add(rng.chisquare(1, size=(16, 16)), 3)
    two.add(rng.chisquare(1, size=(8, 16)), 2)
    stats.append(two)
    many = G.learn_params_many(stats)
    for st, p in zip(stats, many):
        q = G.learn_params(st)
        if q is None:
            assert p is None
            continue
        assert (p.lam, p.s2, p.nll, p.n_blocks) == pytest.approx((q.lam, q.s2, q.nll, q.n_blocks), rel=1e-12)


def test_phase_model_log_likelihood_equals_scipy_multivariate_normal(monkeypatch):
    from scipy.stats import multivariate_normal

    from xafs_stream.engines.imaging import decomposition
    from xafs_stream.engines.imaging.decomposition import PhaseModel

    monkeypatch.setattr(decomposition, "_LL_CHUNK", 128)  # several row blocks
    rng = np.random.default_rng(13)
    d, c = 3, 4
    means = rng.normal(size=(c, d)) * 2
    a = rng.normal(size=(c, d, d))
    covs = a @ a.transpose(0, 2, 1) + 0.3 * np.eye(d)
    weights = np.array([0.1, 0.2, 0.3, 0.4])
    scale = np.array([0.5, 2.0, 1.5])
    model = PhaseModel(means, covs, weights, scale, component_phase=np.array([0, 1, 1, 2]))
    x = rng.normal(size=(500, d)) * 2
    x[7, 1] = np.nan
    comp = model.component_log_likelihood(x)
    # the densities are of the scaled features x / scale: log N(x) + sum(log scale)
    ref = np.array([np.log(weights[k]) + multivariate_normal(means[k], covs[k]).logpdf(x) for k in range(c)])
    ref += np.sum(np.log(scale))
    good = np.ones(500, bool)
    good[7] = False
    np.testing.assert_allclose(comp[:, good], ref[:, good], rtol=1e-12, atol=1e-10)
    assert np.isnan(comp[:, 7]).all()
    ll = model.log_likelihood(x)
    np.testing.assert_allclose(ll[0, good], ref[0, good], rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(ll[1, good], np.logaddexp(ref[1, good], ref[2, good]), rtol=1e-12, atol=1e-10)
    assert np.isnan(ll[:, 7]).all()


def _pick_edge_loop(d):
    """Reference for the E0 edge pick, one row at a time (the rules of e0._pick_edge's docstring)."""
    m, length = d.shape
    nmin = max(3, int(length * 0.02))
    index, found = np.zeros(m, dtype=np.intp), np.zeros(m, dtype=bool)
    frac = 0.60 if length > 20 else 0.30
    for i, row in enumerate(d):
        core = row[nmin:length - nmin]
        dmin, ptp = core.min(), max(1e-10, core.max() - core.min())
        high = row > dmin + frac * ptp
        if high.sum() < 3:
            h2, h4 = row > dmin + frac / 2 * ptp, row > dmin + frac / 4 * ptp
            high = h2 if h2.sum() > 3 else (h4 if h4.sum() >= 3 else row > dmin)
        best = None
        for j in range(nmin, length - nmin + 1):
            if high[j - 1] and high[j] and high[j + 1] and (best is None or row[j] > row[best]):
                best = j
        if best is not None:
            index[i], found[i] = best, True
    return index, found


def test_e0_edge_pick_equals_a_per_row_loop():
    rng = np.random.default_rng(14)
    for length in (12, 40, 99):
        d = rng.normal(size=(60, length))
        d[:10] = 0.0
        d[np.arange(10), rng.integers(0, length, 10)] = 5.0  # one spike: fewer than 3 high points
        d[10:15] = rng.normal(size=(5, length)) * 0.01
        d[10:15, length // 2 - 1:length // 2 + 2] = 3.0  # a clear edge
        index, found = e0_module._pick_edge(d)
        ref_index, ref_found = _pick_edge_loop(d)
        np.testing.assert_array_equal(found, ref_found)
        np.testing.assert_array_equal(index[found], ref_index[found])


def test_features_of_a_tile_with_failed_normalisations_equal_those_of_its_good_rows():
    from xafs_stream.engines.imaging.features import pixel_features

    rng = np.random.default_rng(15)
    mu = _spectra(120, rng, noise=0.05)
    mu[::7] = 0.3 + rng.normal(0, 0.05, (mu[::7].shape[0], E.size))  # no edge: normalisation fails
    refs = np.stack([mu[1], mu[2]])
    full = pixel_features(E, mu, refs=refs)
    ok = full.normalized
    assert 0 < (~ok).sum() < 120
    good = pixel_features(E, mu[ok], refs=refs)
    for name, v in full.values.items():  # equal up to rounding (sums over differently sized stacks)
        np.testing.assert_allclose(v[ok], good.values[name], rtol=1e-12, atol=1e-12, err_msg=name)
    for name in ("edge_step", "e0", "edge_position", "whiteline_energy", "whiteline_height", "preedge_centroid",
                 "preedge_area"):
        assert np.isnan(full.values[name][~ok]).all(), name
