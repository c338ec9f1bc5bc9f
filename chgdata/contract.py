"""The one written data contract: names, shapes and units shared by Zarr, Parquet and torch batches.

A dataset is a directory (or fsspec URL) holding

``dataset.yaml``                 the card: schema version, units, provenance, counts
``structures.parquet/``          the index, a Parquet dataset of fragments, one per committed partition
``failures.parquet/``            one fragment per partition that had failures (material_id, stage, reason)
``dos_raw.parquet/``             raw DOS as ingested (energies in eV, states/eV/cell), one fragment per partition
``arrays/<array>/<partition>``   1-D float32 Zarr v3 arrays, sharded, holding flattened grids end to end

Grids are flattened in C order of ``(nx, ny, nz)`` as pymatgen's ``Chgcar.data`` holds them (x slowest), so
``grid.reshape(nx, ny, nz)`` gives back the array pymatgen returns (divided by the cell volume).
"""

from __future__ import annotations

SCHEMA_VERSION = "1.0"

# ---- Zarr arrays (all 1-D float32 partitions, addressed by the index) -----------------------------------
RHO = "rho"  # total valence electron density, e/Å^3 (CHGCAR total / V_cell)
MAG = "mag"  # magnetisation density rho_up - rho_down, e/Å^3 (CHGCAR diff / V_cell); spin materials only
SAED = "saed"  # reference density: per-element Gaussians of the SAED table (REFERENCE_FILE), e/Å^3 (build-delta)
DELTA = "delta"  # rho - saed, e/Å^3 (build-delta)
RHO_AE = "rho_ae"  # all-electron density AECCAR0 + AECCAR2 over V_cell, e/Å^3 (core under-resolved), if present
GRID_ARRAYS = (RHO, MAG, SAED, DELTA, RHO_AE)

ARRAY_UNITS = {name: "e/Å^3" for name in GRID_ARRAYS}
DOS_ABS = "dos_abs"  # build-dos: smeared DOS windows, states/eV/atom, (n, 2 spins, npoints) per partition
DOS_NORM = "dos_norm"  # dos_abs / norm_const (max over both spin channels = 1)
DOS_ENERGY = "dos_energy"  # energy axis E - E_F of the windows, eV (npoints,)

#: Zarr attribute ``long_name`` of every array the stages write (with ``units`` and ``layout``; CF-style, so
#: xarray shows them). DOS arrays: ``arrays/dos_abs|dos_norm/<partition>`` (n, 2, npoints), ``dos_energy`` (npoints,).
LONG_NAMES = {
    RHO: "valence electron density",
    MAG: "magnetisation density rho_up - rho_down",
    SAED: "SAED reference density (per-element Gaussians of the store's saed_reference.json)",
    DELTA: "density minus the SAED reference (rho - saed)",
    RHO_AE: "all-electron density (AECCAR0 + AECCAR2)",
    "dos_abs": "Gaussian-smeared density of states per atom",
    "dos_norm": "Gaussian-smeared density of states, divided by its maximum",
    "dos_energy": "energy relative to the Fermi level",
}
ARRAY_ATTR_UNITS = {**ARRAY_UNITS, "dos_abs": "states/eV/atom", "dos_norm": "1", "dos_energy": "eV"}
#: How a 1-D partition array holds its grids (the ``layout`` attribute).
FLAT_LAYOUT = ("grids of several materials end to end; each flattened in C order of (nx, ny, nz), x slowest; "
               "offset and shape per material in the index table (structures.parquet: *_offset, grid_shape)")
#: Dimension names of a material's grid (grid point (i, j, k) at fractional coordinates (i/nx, j/ny, k/nz)).
GRID_DIMS = ("x", "y", "z")

# ---- Parquet tables ---------------------------------------------------------------------------------------
INDEX = "structures.parquet"
FAILURES = "failures.parquet"
DOS_RAW = "dos_raw.parquet"
DELTA_INDEX = "delta.parquet"  # build-delta: one row per material with saed/delta (same partitions as rho)
DOS_INDEX = "dos.parquet"  # build-dos: one row per material with DOS windows
SPLITS_TABLE = "splits.parquet"  # chgdata split: material_id, group, split (train|val|test)
AUGMENTATION = "paw_augmentation.parquet"  # ingest: VASP CHGCAR PAW augmentation occupancies (JSON), per material
PAW_MATRICES = "paw_density_matrices.parquet"  # ingest: GPAW PAW atomic density matrices D_asii, per material
REFERENCE_FILE = "saed_reference.json"  # build-delta: the SAED reference table (chgdata.references.ReferenceTable)
CARD = "dataset.yaml"
LOCK = ".chgdata.lock"
ARRAYS_DIR = "arrays"

# Index columns (structures.parquet). OPTIMADE names where one exists.
COL_ID = "material_id"  # e.g. "mp-149" or a folder name for local data
COL_SOURCE = "source"  # "mp" | "vasp" | "gpaw": the code (or database) the density comes from
COL_TASK_ID = "task_id"  # MP task that produced the charge density (None for local data)
# MP task behind the density (None for local data and for rows written before these columns existed):
COL_CALC_TYPE = "calc_type"  # "GGA Static" | "GGA+U Static" (MP mixes both)
COL_RUN_TYPE = "run_type"  # "GGA" | "GGA+U"
COL_DB_VERSION = "database_version"  # MP database version (None for local data)
COL_FORMULA = "chemical_formula_reduced"
COL_NSITES = "nsites"
COL_LATTICE = "lattice_vectors"  # 3x3 row vectors, Å (flattened 9 floats)
COL_SPECIES = "species_at_sites"  # element symbols per site
COL_Z = "atomic_numbers"  # Z per site (int), same order as species_at_sites
COL_FRAC = "fractional_site_positions"  # n x 3 flattened
COL_GRID = "grid_shape"  # [nx, ny, nz]
COL_NPOINTS = "n_grid_points"
COL_VOLUME = "volume"  # Å^3
COL_SPIN = "spin_polarized"
COL_NELECT = "n_electrons"  # ∫ rho dV over the cell, electrons
COL_MAGMOM = "total_magnetization"  # ∫ mag dV, μB per cell (None when not spin-polarised)
COL_EFERMI = "efermi"  # eV, from the DOS (None when no DOS)
COL_HAS_DOS = "has_dos"
COL_PARTITION = "partition"  # name of the partition holding this material's arrays
COL_RHO_OFFSET = "rho_offset"  # start of the grid in arrays/rho/<partition>
COL_MAG_OFFSET = "mag_offset"  # start in arrays/mag/<partition>, -1 when not spin-polarised
COL_AE_OFFSET = "rho_ae_offset"  # start in arrays/rho_ae/<partition>, -1 when no AECCAR0/2
COL_INPUT_SHA = "input_sha256"  # sha256 of the raw input files, sorted by name and concatenated
COL_INPUT_STAT = "input_stat"  # "size:mtime_ns" per input file (local folders; the cheap change pre-check)
COL_RHO_SHA = "rho_sha256"  # sha256 of the stored float32 rho bytes
COL_MAG_SHA = "mag_sha256"
COL_AE_SHA = "rho_ae_sha256"
COL_FILES = "input_files"  # paths (local) or MP endpoints the material came from
COL_RETRIEVED = "retrieved_at"  # ISO 8601 UTC
COL_STATUS = "status"  # "ok" | "flagged: <reason>"
COL_PROTOTYPE = "prototype"  # structure prototype as the source records it (GPAW meta.json), else None
COL_DFT_CODE = "dft_code"  # "vasp" | "gpaw" | None when unknown
COL_DFT_SETTINGS = "dft_settings"  # JSON object text: xc, cutoff (eV), k-points, smearing, setups/POTCARs, ...

FAIL_COLUMNS = ("material_id", "stage", "reason", "time")
