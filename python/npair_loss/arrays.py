"""NumPy or CuPy: which module an array belongs to, and its values on the host.

The fallback's math is array-generic: every function takes arrays of one module and
computes in that module (`xp`), so the same code runs on the CPU and on the GPU.
"""
import sys

import numpy


def array_module(a):
    """cupy for a CuPy array, numpy otherwise."""
    cupy = sys.modules.get('cupy')
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else numpy


def to_host(a):
    """A NumPy array with a's values."""
    return a if array_module(a) is numpy else a.get()
