"""NumPy or CuPy: which module an array belongs to, and its values on the host.

The fallback's math is array-generic: every function takes arrays of one module and
computes in that module (`xp`), so the same code runs on the CPU and on the GPU.
"""
import contextlib
import sys

import numpy


def array_module(a):
    """cupy for a CuPy array, numpy otherwise."""
    cupy = sys.modules.get('cupy')
    return cupy if cupy is not None and isinstance(a, cupy.ndarray) else numpy


def blas_products(xp):
    """The context BLAS products run in. OpenBLAS's vector kernels can leave the
    floating-point 'invalid' flag raised on finite input (lanes past a row's end), and
    NumPy reports a flag a product leaves as a RuntimeWarning: on NumPy that flag is
    ignored for products. A NaN a product computes stays in its result, where the
    finiteness of S's rows is checked. CuPy reports no flags."""
    return numpy.errstate(invalid='ignore') if xp is numpy else contextlib.nullcontext()


def to_host(a):
    """A NumPy array with a's values."""
    return a if array_module(a) is numpy else a.get()
