"""Bad input to the SpM engine gets one clear InputError naming what was wrong."""

from __future__ import annotations

import numpy as np
import pytest

from xafs_stream.data import FEFF_DIR
from xafs_stream.engines.errors import InputError
from xafs_stream.engines.spm import path_chi, refine_shells, spm_fit
from xafs_stream.engines.spm.shells import ShellSeed
from xafs_stream.engines.spm.transform import make_fit_space
from xafs_stream.io.feff import read_feff_dir

PATHS = read_feff_dir(FEFF_DIR / "cu_fcc_a3.615_feff6l").paths
K = 0.05 * np.arange(1, 341)  # to 17 1/Å
CHI = path_chi(PATHS[0], K, n=12, r=2.55, sigma2=0.0085)


def test_nan_in_chi():
    chi = CHI.copy()
    chi[100] = np.nan
    with pytest.raises(InputError, match=r"chi: 1 NaN.*k = 5\.05"):
        spm_fit(K, chi, PATHS)


def test_k_range_outside_the_data():
    with pytest.raises(InputError, match="outside the data's k range"):
        spm_fit(K, CHI, PATHS, kmax=18.0)


def test_k_range_outside_the_paths():
    k = 0.05 * np.arange(1, 501)  # data to 25 1/Å, FEFF tables end at 20
    chi = path_chi(PATHS[0], np.minimum(k, 19.9), n=12, r=2.55, sigma2=0.0085)
    with pytest.raises(InputError, match="outside path 'feff0001.dat' tables"):
        spm_fit(k, chi, PATHS, kmax=21.0)


def test_empty_dictionary():
    with pytest.raises(InputError, match="empty dictionary"):
        spm_fit(K, CHI, PATHS, sigma2_grid=[])
    with pytest.raises(InputError, match="r_range"):
        spm_fit(K, CHI, PATHS, r_range=(3.0, 2.0))
    with pytest.raises(InputError, match=r"pairs: \['Cu-O'\] not among"):
        spm_fit(K, CHI, PATHS, pairs=("Cu-O",))
    ms_only = [p for p in PATHS if p.nleg > 2]
    with pytest.raises(InputError, match="no single-scattering"):
        spm_fit(K, CHI, ms_only)


def test_no_paths_and_wrong_types():
    with pytest.raises(InputError, match="paths: no FEFF paths"):
        spm_fit(K, CHI, [])
    with pytest.raises(InputError, match="ScatteringPath"):
        spm_fit(K, CHI, ["feff0001.dat"])


def test_shape_order_and_settings():
    with pytest.raises(InputError, match="equal length"):
        spm_fit(K, CHI[:-1], PATHS)
    with pytest.raises(InputError, match="strictly increasing"):
        spm_fit(K[::-1], CHI, PATHS)
    with pytest.raises(InputError, match="space"):
        spm_fit(K, CHI, PATHS, space="q")
    with pytest.raises(InputError, match="unknown settings"):
        spm_fit(K, CHI, PATHS, kmaxx=12)
    with pytest.raises(InputError, match="kmin, kmax"):
        spm_fit(K, CHI, PATHS, kmin=10, kmax=5)
    with pytest.raises(InputError, match="select_kweights"):
        spm_fit(K, CHI, PATHS, select_kweights=(2, 5))
    with pytest.raises(InputError, match="select_kweights"):
        spm_fit(K, CHI, PATHS, select_kweights=())


def test_no_signal_gives_a_clear_error():
    with pytest.raises(InputError, match="sparse solution is empty"):
        spm_fit(K, np.zeros_like(CHI), PATHS)


def test_fit_s02_needs_fixed_n():
    fs = make_fit_space(0.05, space="k", kmin=3, kmax=14, kweight=2, k_limit=17)
    cols = np.round(fs.k / 0.05).astype(int) - 1
    seeds = [ShellSeed("Cu-Cu", 12, 2.55, 0.008, PATHS[0])]
    with pytest.raises(InputError, match="fixed_n"):
        refine_shells(fs, CHI[cols], seeds, fit_s02=True)
    fit = refine_shells(fs, CHI[cols] * 0.9, seeds, fit_s02=True, fixed_n=[12])
    assert fit.s02 == pytest.approx(0.9, abs=1e-4)  # noise-free data: S0² exactly back
