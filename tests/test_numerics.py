"""chgdata.numerics.exp: within 1 ulp of e**x and the same bits whatever SIMD kernels numpy dispatches to (numpy's
own float64 exp differs in the last bits on AVX-512 CPUs, which changed every published SAED and DOS checksum)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest

from chgdata.numerics import exp

CODE = ("import hashlib, numpy as np; from chgdata.numerics import exp; "
        "x = np.random.default_rng(3).uniform(-60, 5, 200_000); print(hashlib.sha256(exp(x).tobytes()).hexdigest())")


def test_exp_is_accurate_and_handles_the_edges():
    x = np.random.default_rng(0).uniform(-700, 700, 100_000)
    ref = np.exp(x)
    rel = np.abs(exp(x) - ref) / np.spacing(ref)
    assert rel.max() <= 2.0  # numpy's exp is itself within ~1 ulp
    np.testing.assert_array_equal(exp(np.array([0.0, -800.0, 800.0, np.nan, -np.inf, np.inf])),
                                  [1.0, 0.0, np.inf, np.nan, 0.0, np.inf])
    grid = np.linspace(-5, 0, 24).reshape(2, 3, 4)
    out = np.empty_like(grid)
    assert exp(grid, out=out) is out and np.array_equal(out, exp(grid))
    view = np.empty((2, 3, 8))[:, :, ::2]  # non-contiguous out
    exp(grid, out=view)
    assert np.array_equal(view, exp(grid))
    assert exp(0.5) == exp(np.array([0.5]))[0]


def test_exp_bits_do_not_depend_on_numpys_cpu_kernels():
    here = hashlib.sha256(exp(np.random.default_rng(3).uniform(-60, 5, 200_000)).tobytes()).hexdigest()
    compared = 0
    for disabled in ("X86_V4 AVX512_ICL AVX512_SKX", "X86_V4 AVX512_ICL AVX512_SKX X86_V3 AVX2 FMA3"):
        env = {**os.environ, "NPY_DISABLE_CPU_FEATURES": disabled}
        got = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True)
        if got.returncode:  # numpy refuses to disable features this build or machine does not dispatch
            continue
        assert got.stdout.strip() == here
        compared += 1
    if not compared:
        pytest.skip("numpy would not disable any SIMD feature here")
