"""Tests of chgdata.dos (raw DOS reading, Gaussian-smeared DOS windows) and chgdata.plots.plot_dos."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from chgdata.dos import FWHM_PER_SIGMA, RawDos, band_gap, count_states, cumulative_states, smear_window
from chgdata.dos_io import from_pymatgen, read_dos
from tests.conftest import SHARED_DATA as DATA


def _shared_dos_files() -> list[Path]:
    files = sorted((DATA / "vasp").glob("*/vasprun.xml.gz"))
    files += sorted((DATA / "vasp").glob("*/complete_dos*.json.gz"))
    files += sorted((DATA / "gpaw").glob("gpaw-*/dos.json.gz"))
    return files


SHARED_FILES = _shared_dos_files()
needs_data = pytest.mark.skipif(not SHARED_FILES, reason=f"shared DOS data not found under {DATA}")


def _read(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns about missing POTCARs etc.
        return read_dos(path)


def _raw(energies, densities, efermi=0.0, natoms=1, **kw) -> RawDos:
    d = np.atleast_2d(np.asarray(densities, dtype=float))
    return RawDos(np.asarray(energies, float), d, efermi, natoms, d.shape[0] == 2, **kw)


def _spike(center: float, step: float, lo: float = -8.0, hi: float = 8.0, states: float = 1.0) -> RawDos:
    """Single-point spike (a triangle of half-width ``step``) holding ``states`` states, non-spin."""
    e = lo + step * np.arange(int(round((hi - lo) / step)) + 1)
    d = np.zeros_like(e)
    i = int(np.argmin(np.abs(e - center)))
    d[i] = states / step
    return _raw(e, d)


def _fwhm(x: np.ndarray, y: np.ndarray) -> float:
    """Full width at half maximum of a single peak by linear interpolation of the half-max crossings."""
    i = int(np.argmax(y))
    half = 0.5 * y[i]
    left = i - int(np.argmax(y[i::-1] < half))
    right = i + int(np.argmax(y[i:] < half))
    xl = np.interp(half, [y[left], y[left + 1]], [x[left], x[left + 1]])
    xr = np.interp(half, [y[right], y[right - 1]], [x[right], x[right - 1]])
    return float(xr - xl)


# ------------------------------------------------------------------------------------------ real data


@needs_data
@pytest.mark.parametrize("path", SHARED_FILES, ids=lambda p: f"{p.parent.parent.name}/{p.parent.name}")
def test_states_conserved_on_shared_data(path: Path) -> None:
    raw = _read(path)
    win = smear_window(raw, sigma=0.1, emin=-10.0, emax=10.0, npoints=400)
    assert win.absolute.shape == (2, 400) and win.normalised.shape == (2, 400)
    assert win.absolute.dtype == np.float32 and win.normalised.dtype == np.float32
    h = win.spacing
    assert h == pytest.approx(20.0 / 399)
    # the samples hold exactly the smeared states of the window cells ...
    assert float(win.absolute.astype(np.float64).sum() * h) == pytest.approx(win.states, rel=1e-5)
    # ... which equal the raw states in the same cells within 1 %
    expected_raw = count_states(raw, -10.0 - h / 2, 10.0 + h / 2).sum() / raw.natoms
    assert win.states_raw == pytest.approx(expected_raw, rel=1e-12)
    assert win.states_raw > 0.1
    assert abs(win.states - win.states_raw) <= 0.01 * win.states_raw
    # normalisation recoverable and max-normalised over both channels
    assert float(win.normalised.max()) == pytest.approx(1.0, abs=1e-7)
    np.testing.assert_allclose(win.normalised * win.norm_const, win.absolute, rtol=2e-7, atol=1e-9)
    assert np.all(win.absolute >= -1e-6 * win.norm_const)


@needs_data
def test_states_raw_matches_independent_trapezoid_on_fine_gpaw_grid() -> None:
    gpaw = [p for p in SHARED_FILES if "gpaw" in p.parts[-3]]
    if not gpaw:
        pytest.skip("no GPAW DOS files")
    raw = _read(gpaw[0])
    win = smear_window(raw)
    x = raw.energies - raw.efermi
    lo, hi = -10.0 - win.spacing / 2, 10.0 + win.spacing / 2
    fine = np.linspace(lo, hi, 200_001)
    dens = np.interp(fine, x, raw.total, left=0.0, right=0.0)
    ref = np.trapezoid(dens, fine) / raw.natoms
    assert win.states_raw == pytest.approx(ref, rel=1e-6)


@needs_data
def test_json_and_vasprun_of_same_calculation_agree() -> None:
    folder = DATA / "vasp" / "LiFe4P4O16_HSE06"
    if not (folder / "vasprun.xml.gz").exists() or not (folder / "complete_dos.json.gz").exists():
        pytest.skip("LiFe4P4O16_HSE06 files missing")
    a, b = _read(folder / "vasprun.xml.gz"), _read(folder / "complete_dos.json.gz")
    assert a.natoms == b.natoms == 25 and a.spin_polarized and b.spin_polarized
    assert a.efermi == pytest.approx(b.efermi)
    np.testing.assert_allclose(a.energies, b.energies)
    np.testing.assert_allclose(a.densities, b.densities)


@needs_data
def test_real_spin_and_nonspin_files() -> None:
    by_name = {p.parent.name: p for p in SHARED_FILES if p.parent.parent.name == "vasp"}
    if "Si_static" not in by_name or "Al_fcc" not in by_name:
        pytest.skip("Si_static / Al_fcc missing")
    si = _read(by_name["Si_static"])  # ISPIN=2 with zero moment
    assert si.spin_polarized and si.densities.shape[0] == 2
    w = smear_window(si)
    occ = w.energies < 0  # zero moment: equal occupied up and down states (empty bands differ slightly)
    moment = float((w.absolute[0, occ] - w.absolute[1, occ]).sum() * w.spacing)
    assert abs(moment) < 0.01
    assert np.max(np.abs(w.absolute[0] - w.absolute[1])) < 0.02 * w.norm_const
    gap = w.band_gap
    assert gap is not None and 0.4 < gap < 0.9  # PBE Si: ~0.6 eV
    al = _read(by_name["Al_fcc"])  # ISPIN=1
    assert not al.spin_polarized and al.densities.shape[0] == 1
    wa = smear_window(al)
    np.testing.assert_array_equal(wa.absolute[0], wa.absolute[1])
    assert wa.band_gap is None
    # non-spin channels each hold half of the total
    assert wa.absolute[0].sum() * wa.spacing == pytest.approx(0.5 * wa.states, rel=1e-5)


@needs_data
def test_window_beyond_raw_range_is_flagged_and_counted() -> None:
    h2o = DATA / "vasp" / "H2O_molecule" / "vasprun.xml.gz"
    if not h2o.exists():
        pytest.skip("H2O_molecule missing")
    raw = _read(h2o)
    w = smear_window(raw)
    assert raw.energies[-1] - raw.efermi < 10.0
    assert w.truncated and w.raw_range[1] < 10.0
    assert abs(w.conservation_error) < 0.01
    # nothing beyond the raw range but what smearing carried over the edge (< 8 sigma)
    beyond = w.energies > w.raw_range[1] + 8 * w.sigma
    assert np.all(w.absolute[:, beyond] == 0.0)


# ------------------------------------------------------------------------------------------ synthetic


def test_cumulative_count_exact_for_piecewise_linear() -> None:
    rng = np.random.default_rng(0)
    e = np.sort(rng.uniform(-5, 5, 50))
    e = np.concatenate([[-6.0], e, [6.0]])
    d = 2.0 + 0.3 * e  # linear, positive on [-6, 6]
    raw = _raw(e, d)
    x = rng.uniform(-7, 7, 200)
    xc = np.clip(x, -6, 6)
    exact = 2.0 * (xc + 6) + 0.15 * (xc**2 - 36)
    np.testing.assert_allclose(cumulative_states(raw, x)[0], exact, rtol=1e-12, atol=1e-12)
    assert count_states(raw, -1.0, 2.0)[0] == pytest.approx(2.0 * 3 + 0.15 * (4 - 1), rel=1e-12)


def test_constant_dos_window_is_exact() -> None:
    e = np.linspace(-30, 30, 3001)
    raw = _raw(e, np.full_like(e, 3.0), efermi=1.7, natoms=3)
    w = smear_window(raw, sigma=0.2)
    np.testing.assert_allclose(w.absolute, 0.5, rtol=1e-6)  # 3 states/eV/cell / 3 atoms / 2 spins
    assert w.states == pytest.approx(w.states_raw, rel=1e-10)
    assert w.states == pytest.approx(1.0 * 400 * w.spacing, rel=1e-10)
    assert not w.truncated


@pytest.mark.parametrize(
    ("sigma", "step"),
    [(0.05, 0.001), (0.05, 0.01), (0.1, 0.001), (0.1, 0.01), (0.1, 0.02), (0.3, 0.01), (0.3, 0.05)],
)
def test_delta_spike_gives_gaussian_of_requested_width(sigma: float, step: float) -> None:
    center = 0.4321
    raw = _spike(center, step, states=2.0)
    c0 = raw.energies[np.argmax(raw.total)]
    w = smear_window(raw, sigma=sigma, emin=-3.0, emax=3.0, npoints=6001)  # 1 meV samples
    y = w.absolute.sum(axis=0).astype(np.float64)  # states/eV/atom, both spins
    fwhm = _fwhm(w.energies, y)
    assert fwhm == pytest.approx(FWHM_PER_SIGMA * sigma, rel=0.01)
    # whole profile is the Gaussian holding the spike's states (sigma in eV, independent of the raw step)
    gauss = 2.0 * np.exp(-0.5 * ((w.energies - c0) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    assert np.max(np.abs(y - gauss)) < 0.02 * gauss.max()
    assert w.states == pytest.approx(2.0, rel=1e-6)


def test_sigma_is_in_ev_on_the_default_window() -> None:
    widths = {}
    for step in (0.005, 0.02):
        for sigma in (0.2, 0.4):
            w = smear_window(_spike(1.0, step), sigma=sigma)
            widths[step, sigma] = _fwhm(w.energies, w.absolute[0].astype(float))
    for sigma in (0.2, 0.4):
        assert widths[0.005, sigma] == pytest.approx(widths[0.02, sigma], rel=0.02)
        # coarse 0.05 eV samples of cell averages: variance sigma^2 + h^2/12
        assert widths[0.005, sigma] == pytest.approx(FWHM_PER_SIGMA * sigma, rel=0.03)
    assert widths[0.005, 0.4] == pytest.approx(2 * widths[0.005, 0.2], rel=0.03)


def test_isolated_peak_positions_preserved() -> None:
    rng = np.random.default_rng(1234)
    for _ in range(20):
        step = float(rng.choice([0.01, 0.05, 0.13]))
        sigma = float(rng.choice([0.05, 0.1, 0.2]))
        e = np.arange(-15.0, 15.0, step)
        centers = np.sort(rng.uniform(-9.0, 9.0, 3))
        while np.min(np.diff(centers)) < 2.0:
            centers = np.sort(rng.uniform(-9.0, 9.0, 3))
        heights = np.array([1.0, 2.5, 1.5])[rng.permutation(3)]
        width = max(0.03, step)
        d = sum(hh * np.exp(-0.5 * ((e - c) / width) ** 2) for hh, c in zip(heights, centers, strict=True))
        raw = _raw(e, d, efermi=0.0, natoms=2)
        w = smear_window(raw, sigma=sigma)
        raw_peak = e[np.argmax(d)]
        win_peak = w.energies[np.argmax(w.absolute[0])]
        assert abs(win_peak - raw_peak) <= sigma + w.spacing, (step, sigma, raw_peak, win_peak)


def test_sigma_zero_gives_cell_averages() -> None:
    rng = np.random.default_rng(7)
    e = np.linspace(-12, 12, 1201)
    d = rng.uniform(0, 2, (2, e.size))
    raw = _raw(e, d, efermi=0.3, natoms=4)
    w = smear_window(raw, sigma=0.0, npoints=41)
    h = w.spacing
    for j in (0, 17, 40):
        lo, hi = w.energies[j] - h / 2, w.energies[j] + h / 2
        expected = count_states(raw, lo, hi) / raw.natoms / h
        np.testing.assert_allclose(w.absolute[:, j], expected, rtol=1e-6)
    assert w.states == pytest.approx(w.states_raw, rel=1e-12)


def test_spin_vs_nonspin_handling() -> None:
    rng = np.random.default_rng(3)
    e = np.linspace(-12, 12, 2401)
    total = rng.uniform(0, 4, e.size)
    nonspin = _raw(e, total, efermi=0.5, natoms=2)
    spin = _raw(e, np.stack([total / 2, total / 2]), efermi=0.5, natoms=2)
    wn, ws = smear_window(nonspin), smear_window(spin)
    assert not wn.spin_polarized and ws.spin_polarized
    np.testing.assert_allclose(wn.absolute, ws.absolute, rtol=1e-6)
    assert wn.norm_const == pytest.approx(ws.norm_const)
    up_only = _raw(e, np.stack([total, np.zeros_like(total)]), efermi=0.5, natoms=2)
    wu = smear_window(up_only)
    assert np.all(wu.absolute[1] == 0.0)
    np.testing.assert_allclose(wu.absolute[0], 2 * wn.absolute[0], rtol=1e-6)
    assert wu.normalised.max() == pytest.approx(1.0)


def test_normalisation_recoverable() -> None:
    rng = np.random.default_rng(11)
    e = np.linspace(-13, 13, 2601)
    raw = _raw(e, rng.gamma(2.0, 1.0, (2, e.size)), efermi=-0.2, natoms=5)
    w = smear_window(raw)
    assert float(w.normalised.max()) == pytest.approx(1.0, abs=1e-7)
    assert w.norm_const == pytest.approx(float(w.absolute.max()), rel=1e-6)
    np.testing.assert_allclose(w.normalised.astype(np.float64) * w.norm_const, w.absolute, rtol=3e-7)


def test_partial_window_counted_and_flagged() -> None:
    e = np.linspace(-5, 5, 1001)  # raw DOS stops inside the [-10, 10] window
    raw = _raw(e, np.full_like(e, 2.0))
    w = smear_window(raw, sigma=0.1)
    assert w.truncated and w.raw_range == (pytest.approx(-5.0), pytest.approx(5.0))
    assert w.states_raw == pytest.approx(20.0, rel=1e-12)  # 2 states/eV x 10 eV, outside counts zero
    assert w.states == pytest.approx(20.0, rel=1e-9)  # smearing moves states only within the window
    assert np.all(w.absolute[:, np.abs(w.energies) > 6.0] == 0.0)
    assert not smear_window(_raw(np.linspace(-20, 20, 401), np.ones(401))).truncated


def test_band_gap_detection() -> None:
    e = np.linspace(-10, 10, 2001)
    d = np.where((e < -0.5) | (e > 1.0), 1.0, 0.0)
    gap = band_gap(_raw(e, d, efermi=0.0))
    assert gap is not None and gap == pytest.approx(1.5, abs=0.03)
    # E_F at the valence-band top (VASP convention) still finds the gap
    assert band_gap(_raw(e, d, efermi=-0.5)) == pytest.approx(gap)
    assert band_gap(_raw(e, np.ones_like(e))) is None
    # a gap far from E_F is not the band gap
    assert band_gap(_raw(e, np.where(np.abs(e - 5) < 0.5, 0.0, 1.0), efermi=0.0)) is None
    assert smear_window(_raw(e, d)).band_gap == pytest.approx(gap)


# ------------------------------------------------------------------------------------------ validation

_E = np.linspace(-1, 1, 5)
_D = np.ones(5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"efermi": None}, "Fermi energy"),
        ({"efermi": float("nan")}, "Fermi energy"),
        ({"energies": np.array([]), "densities": np.zeros((1, 0))}, "empty"),
        ({"energies": np.array([0.0]), "densities": np.ones((1, 1))}, "empty"),
        ({"densities": np.zeros((1, 5))}, "empty"),
        ({"densities": np.array([[1, 1, np.nan, 1, 1]])}, "NaN"),
        ({"densities": np.array([[1, 1, np.inf, 1, 1]])}, "NaN or inf"),
        ({"energies": np.array([0, 1, 1, 2, 3.0])}, "strictly increasing"),
        ({"energies": np.array([0, 1, 3, 2, 4.0])}, "strictly increasing"),
        ({"energies": np.array([0, 1, np.nan, 2, 4.0])}, "NaN"),
        ({"densities": np.array([[1, 1, -0.5, 1, 1]])}, "negative"),
        ({"densities": np.ones((1, 4))}, "shape"),
        ({"densities": np.ones((3, 5)), "spin_polarized": True}, "spin channels"),
        ({"densities": np.ones((2, 5)), "spin_polarized": False}, "spin_polarized"),
        ({"natoms": 0}, "natoms"),
    ],
)
def test_bad_input_raises_clear_error(kwargs: dict, match: str) -> None:
    args = {"energies": _E, "densities": _D[None, :], "efermi": 0.0, "natoms": 1, "spin_polarized": False}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match) as err:
        RawDos(**args)
    assert "\n" not in str(err.value)


def test_rounding_negatives_accepted() -> None:
    RawDos(_E, np.array([[1, 1, -1e-9, 1, 1]]), 0.0, 1, False)


def test_bad_window_arguments() -> None:
    raw = _raw(_E, _D)
    with pytest.raises(ValueError, match="sigma"):
        smear_window(raw, sigma=-0.1)
    with pytest.raises(ValueError, match="emin < emax"):
        smear_window(raw, emin=1.0, emax=-1.0)
    with pytest.raises(ValueError, match="npoints"):
        smear_window(raw, npoints=1)
    with pytest.raises(ValueError, match="no states"):
        smear_window(raw, emin=50.0, emax=60.0)


def test_readers_errors_and_pymatgen(tmp_path: Path) -> None:
    from pymatgen.electronic_structure.core import Spin
    from pymatgen.electronic_structure.dos import Dos

    dos = Dos(0.1, np.linspace(-5, 5, 11), {Spin.up: np.ones(11), Spin.down: 2 * np.ones(11)})
    with pytest.raises(ValueError, match="natoms"):
        from_pymatgen(dos)
    raw = from_pymatgen(dos, natoms=2)
    assert raw.spin_polarized and raw.densities.shape == (2, 11) and raw.efermi == 0.1
    bad = tmp_path / "x.txt"
    bad.write_text("hello")
    with pytest.raises(ValueError, match="unknown DOS file type"):
        read_dos(bad)
    with pytest.raises(FileNotFoundError):
        read_dos(tmp_path / "missing.json")
    j = tmp_path / "dos.json"
    j.write_text('{"efermi": null, "energies": [0, 1, 2], "densities": {"1": [1, 1, 1]}}')
    with pytest.raises(ValueError, match="Fermi energy"):
        read_dos(j, natoms=1)


def test_plot_dos_writes_png(tmp_path: Path) -> None:
    from chgdata.plots import plot_dos

    e = np.linspace(-12, 12, 2401)
    d = np.stack([np.exp(-((e - 1) ** 2)), 0.5 * np.exp(-((e + 2) ** 2))])
    raw = _raw(e, d, efermi=0.0, natoms=1)
    out = plot_dos(raw, smear_window(raw), tmp_path / "dos.png", title="synthetic")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
