"""GPAW started from a given pseudo valence density (a model's prediction, SAED, or a converged calculation's).

What chgdata's densities are in GPAW's terms: ρ = ``get_pseudo_density()`` = ñ (pseudo density with the pseudo
core) + n̂, the compensation charges of the PAW atomic density matrices D_asii. Handing ρ to GPAW therefore takes a
choice of D_asii: those of a converged calculation (``paw.npz`` of a compute folder), or GPAW's atomic ones (the
superposition of free-atom occupations, with the initial moments). Then ñ = ρ − n̂(D), normalised to the valence
count, and the Kohn–Sham potential of (ñ, D) gives the first wave functions (LCAO, diagonalised in that potential).

* :func:`calculation_from_density` builds an ASE calculator in that state; ``atoms.get_potential_energy()`` then
  converges it as usual (SCF), or with ``fixed=True`` only the bands are converged with ρ fixed (NSCF).
* NSCF with ``relax_paw`` (``chgdata dft --nscf --paw relaxed``): ρ stays fixed but the D_asii follow the wave
  functions (ñ = ρ − n̂(D) after each update) until they are self-consistent with ρ. A model predicts ρ, not D_asii,
  and the atomic D_asii are far from a crystal's: on the exact density of LiF they put the bands off by 120 meV
  (relaxed: 0), on the model's LiF density of 2026-12-01 103 meV (relaxed: 36, as with the converged D_asii).

GPAW internals used (gpaw ≥ 26.7, ``gpaw.new``): the component builder, ``Density.nt_sR`` (e/Bohr³) and
``D_asii``, ``PotentialCalculator.calculate_without_orbitals`` and ``DFT.from_components``, as
``ASECalculator.fixed_density`` uses them.
"""

from __future__ import annotations

import numpy as np

from chgdata.dft.settings import SHARED, DFTSettings, gpaw_parameters

#: Bohr³ in Å³ (GPAW's grids hold e/Bohr³).
BOHR3 = 0.52917721067 ** 3


def gpaw_grid(atoms, settings: DFTSettings = SHARED) -> tuple[int, int, int]:
    """The (coarse) density grid GPAW uses for ``atoms`` with ``settings``: where a prediction must be made."""
    from gpaw import GPAW

    shell = GPAW(**gpaw_parameters(atoms, settings), txt=None)
    return tuple(int(n) for n in shell.params.dft_component_builder(atoms, log=shell.log).grid.size)


def compensation_density(density, relpos_ac, setups) -> np.ndarray:
    """n̂ of ``density.D_asii`` on the coarse grid, per spin, e/Å³ (GPAW's ``pseudo_densities`` with ñ = 0)."""
    from gpaw.densities import Densities

    zero = density.nt_sR.new()
    zero.data[:] = 0.0
    return Densities(zero, density.D_asii, relpos_ac, setups).pseudo_densities().data.copy()


def set_pseudo_density(density, rho_sR: np.ndarray, relpos_ac, setups, background_charge: float) -> None:
    """ñ = ρ − n̂(D_asii) on GPAW's grid (e/Bohr³), normalised to the valence count."""
    nhat = compensation_density(density, relpos_ac, setups)
    density.nt_sR.data[:density.ndensities] = (rho_sR - nhat[:density.ndensities]) * BOHR3
    density.normalize(background_charge)


def fix_pseudo_density(density, rho_sR: np.ndarray, relpos_ac, setups, background_charge: float) -> None:
    """Make every density update of the SCF loop keep ρ = ñ + n̂(D) at ``rho_sR`` (e/Å³): the D_asii follow the
    wave functions, ñ = ρ − n̂(D) follows them."""
    update = density.update

    def constrained(ibzwfs, ked=False):
        update(ibzwfs, ked=ked)
        set_pseudo_density(density, rho_sR, relpos_ac, setups, background_charge)

    density.update = constrained


def calculation_from_density(atoms, rho_sR: np.ndarray, D_asii: list[np.ndarray] | None = None,
                             settings: DFTSettings = SHARED, txt=None, fixed: bool = False,
                             parameters: dict | None = None, relax_paw: bool = False):
    """An ASE GPAW calculator for ``atoms`` whose initial state is the pseudo density ``rho_sR`` (e/Å³, shape
    (nspins, *grid), grid = :func:`gpaw_grid`) with the atomic density matrices ``D_asii`` (per atom (nspins, ni,
    ni); None: GPAW's atomic ones). ``fixed``: ρ stays as given (NSCF; E_F from the new eigenvalues), and so do the
    D_asii and the potential unless ``relax_paw``, which converges the D_asii with ρ fixed (module docstring)."""
    from gpaw import GPAW
    from gpaw.new.calculation import DFT

    params = parameters or gpaw_parameters(atoms, settings)
    if fixed:
        params = {**params, "convergence": {"bands": settings.converge_bands,
                                            "eigenstates": settings.converge_eigenstates}}
    shell = GPAW(**params, txt=txt)
    p, log = shell.params, shell.log
    builder = p.dft_component_builder(atoms, log=log, comm=log.comm)
    basis_set = builder.create_basis_set()
    scf_loop = builder.create_scf_loop()
    pot_calc = builder.create_potential_calculator()
    density = builder.density_from_superposition(basis_set)
    rho_sR = np.asarray(rho_sR, dtype=np.float64)
    if rho_sR.shape[0] != density.ndensities or tuple(rho_sR.shape[1:]) != tuple(density.nt_sR.desc.size):
        raise ValueError(f"density of shape {rho_sR.shape}: GPAW needs ({density.ndensities}, "
                         f"{', '.join(map(str, density.nt_sR.desc.size))}) for this cell and settings")
    if D_asii is not None:
        for a, D_sii in density.D_asii.items():
            given = np.asarray(D_asii[a])
            if given.shape != D_sii.shape:
                raise ValueError(f"D_asii of atom {a}: shape {given.shape}, GPAW's {D_sii.shape}")
            D_sii[:] = given
    relpos = np.ascontiguousarray(atoms.get_scaled_positions())
    set_pseudo_density(density, rho_sR, relpos, builder.setups, pot_calc.charge)
    potential, energies, _ = pot_calc.calculate_without_orbitals(density, kpt_band_comm=builder.communicators["D"])
    ibzwfs = builder.create_ibz_wave_functions(basis_set, potential)
    if fixed:
        scf_loop.fix_fermi_level = False
        for name in ("energy", "forces") if relax_paw else ("energy", "density", "forces"):
            scf_loop.convergence.pop(name, None)
        if relax_paw:  # the density criterion now watches the D_asii (ñ follows them)
            fix_pseudo_density(density, rho_sR, relpos, builder.setups, pot_calc.charge)
        else:
            scf_loop.update_density_and_potential = False
    dft = DFT.from_components(atoms, ibzwfs, density, potential, builder.setups, scf_loop, pot_calc, log,
                              params=p, energies=energies, converge=False)
    shell._dft, shell._atoms = dft, atoms.copy()  # the calculator whose log the components write to
    atoms.calc = shell
    return shell
