"""Shared fixtures for the N-pair tests.

- python/ on sys.path, and npair_loss.npair_loss_pb2 compiled from proto/ with protoc
  when the build's copy (build/python/npair_loss, on PYTHONPATH after
  `source build/env.sh`) is absent, so the fallback's math tests run without a build.
- `caffe`: pycaffe on CPU; `cpp_layer`: the same, with the C++ NPairMultiClassLoss;
  `caffe_tool`: the `caffe` command. Each skips, saying why, when it is missing, unless
  NPAIR_REQUIRE_PYCAFFE=1 (scripts/test.sh sets it): then a missing or broken pycaffe
  or `caffe` fails the whole run before any test starts, and never skips a test.
- The usage block, docs/usage_block.prototxt (the original definition's example,
  verbatim): `usage_block` (its text), `usage_params` (its npair_loss_param, parsed),
  `usage_param_str` (that block as a param_str for the fallback).
- `npair_cases`: random batches, with or without references, kept away from selection
  thresholds and Recall@K ties (where float and double may rightly disagree), checked
  against tests/npair_reference.
"""
import importlib
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import npair_reference as ref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.join(ROOT, 'python') not in sys.path:
    sys.path.append(os.path.join(ROOT, 'python'))

from npair_loss.params import npair_loss_param_text  # noqa: E402 (python/ on sys.path)

# docs/layer_contract.md §5, for float: loss and monitors relative, the gradient
# against its largest element.
RTOL = 1e-4
U32 = 2.0 ** -24            # float32's unit roundoff
GRAD_TOL = 1e-3
# Smallest distance from a selection threshold or a Recall@K tie, for a case to count as
# "away" from them, relative to the largest |S_ij|: float32's S is off by ~1e-7 of it.
GAP = 1e-3
SN_VALUES = (0.0, -0.0, 1.0, 2.5, 7.0, 1e30, -0.05, -0.3, -0.5, -1.0, -2.0, -1e30)
MARGINS = (0.0, 0.05, -0.05, 0.2, -0.3)


PYCAFFE_REQUIRED = os.environ.get('NPAIR_REQUIRE_PYCAFFE') == '1'
# What the tests need of the fork's pycaffe: the two C++ layers and the Python layer.
PYCAFFE_LAYERS = ('NPairMultiClassLoss', 'L2Normalize', 'Python')


def pycaffe_problem():
    """Why the fork's pycaffe and `caffe` cannot be used here, or None."""
    try:
        import caffe
        registered = set(caffe.layer_type_list())
    except Exception as e:  # noqa: BLE001 (a broken build raises anything at import)
        return f'pycaffe does not import ({type(e).__name__}: {e})'
    missing = [name for name in PYCAFFE_LAYERS if name not in registered]
    if missing:
        return f'the pycaffe at {caffe.__file__} has no {", ".join(missing)} layer (not the fork?)'
    if shutil.which('caffe') is None:
        return '`caffe` is not on PATH'
    return None


def pytest_sessionstart(session):
    """Under NPAIR_REQUIRE_PYCAFFE=1 a missing or broken pycaffe is an error of the run,
    found before any test could skip for want of it."""
    if PYCAFFE_REQUIRED:
        problem = pycaffe_problem()
        if problem is not None:
            raise pytest.UsageError(
                f'NPAIR_REQUIRE_PYCAFFE=1: {problem}. Build the fork (scripts/build.sh), then '
                '`source build/env.sh`.')


def _unavailable(reason):
    """Skip the test, or fail it when pycaffe is required."""
    if PYCAFFE_REQUIRED:
        pytest.fail(f'{reason} (NPAIR_REQUIRE_PYCAFFE=1)')
    pytest.skip(reason)


def _ensure_pb2(tmp_dir):
    import npair_loss
    try:
        importlib.import_module('npair_loss.npair_loss_pb2')
        return
    except ImportError:
        pass
    protoc = shutil.which('protoc')
    if protoc is None:
        return          # the tests that need it fail with params.py's own message
    out = tmp_dir / 'npair_loss'
    out.mkdir()
    subprocess.run([protoc, '-I', os.path.join(ROOT, 'proto'), f'--python_out={out}',
                    os.path.join(ROOT, 'proto', 'npair_loss.proto')], check=True)
    npair_loss.__path__.append(str(out))


@pytest.fixture(scope='session', autouse=True)
def npair_loss_pb2_importable(tmp_path_factory):
    _ensure_pb2(tmp_path_factory.mktemp('pb2'))


@pytest.fixture(scope='session')
def caffe():
    """pycaffe in CPU mode."""
    try:
        import caffe
    except ImportError as e:
        _unavailable(f'pycaffe not importable ({e}): build the fork, then `source build/env.sh`')
    caffe.set_mode_cpu()
    return caffe


@pytest.fixture(scope='session')
def cpp_layer(caffe):
    """pycaffe with the C++ NPairMultiClassLoss layer registered."""
    if 'NPairMultiClassLoss' not in list(caffe.layer_type_list()):
        _unavailable('this pycaffe has no NPairMultiClassLoss layer (not the fork?)')
    return caffe


@pytest.fixture(scope='session')
def caffe_tool():
    """The path of the `caffe` command."""
    path = shutil.which('caffe')
    if path is None:
        _unavailable('`caffe` is not on PATH (build the fork, then `source build/env.sh`)')
    return path


class Case:
    """A batch: float32 features X (N x D), float32 labels, ref.Params; and, if R is
    given, float32 references R (M x D, M >= 0) with their float32 labels."""

    def __init__(self, X, labels, params, R=None, ref_labels=None):
        self.X, self.labels, self.params = X, labels, params
        self.R, self.ref_labels = R, ref_labels
        self.N = len(X)

    def reference(self, g=1.0):
        return ref.evaluate(self.X, self.labels, self.params, g, self.R, self.ref_labels)

    def __repr__(self):
        refs = '' if self.R is None else (f'M={len(self.R)}, '
                                          f'ref_labels={self.ref_labels.tolist()}, ')
        return (f'Case(N={self.N}, D={self.X.shape[1]}, labels={self.labels.tolist()}, '
                f'{refs}{self.params})')


# How the references of Cases.with_references relate to the batch: none (M = 0); fewer
# or more of them than queries, of the batch's classes and others; every positive
# pair a reference (the batch's labels all distinct); no reference a positive (labels
# the batch lacks); a third of the references labelled NaN (every query's negative).
REFERENCE_LAYOUTS = ('M=0', 'M<N', 'M>N', 'only positives', 'only negatives', 'NaN labels')


class Cases:
    """Random Case and Params generators (a numpy Generator in, reproducible)."""

    @staticmethod
    def params(rng, **fixed):
        values = dict(
            margin_ident=float(rng.choice(MARGINS)), margin_diff=float(rng.choice(MARGINS)),
            identsn=float(rng.choice(SN_VALUES)), diffsn=float(rng.choice(SN_VALUES)),
            ap_mining_region=str(rng.choice(ref.REGIONS)),
            ap_mining_method=str(rng.choice(ref.METHODS)),
            an_mining_region=str(rng.choice(ref.REGIONS)),
            an_mining_method=str(rng.choice(ref.METHODS)))
        values.update(fixed)
        return ref.Params(**values)

    @staticmethod
    def of(X, labels, params, R=None, ref_labels=None):
        """A Case of given arrays (kept away from the thresholds by the caller)."""
        if R is not None:
            R = np.asarray(R, np.float32).reshape(len(ref_labels), np.shape(X)[1])
            ref_labels = np.asarray(ref_labels, np.float32)
        return Case(np.asarray(X, np.float32), np.asarray(labels, np.float32), params,
                    R, ref_labels)

    @staticmethod
    def with_references(rng, params, layout, D=None, tries=200):
        """A batch and references (REFERENCE_LAYOUTS) whose selection and Recall@K are
        at least GAP (relative) from a threshold or a tie; unit rows."""
        for _ in range(tries):
            d = int(rng.integers(1, 6)) if D is None else D
            if layout == 'M>N':
                n = int(rng.integers(2, 8))
                m = int(rng.integers(n + 1, 2 * n + 5))
            else:
                n = int(rng.integers(3, 11))
                m = 0 if layout == 'M=0' else int(rng.integers(1, n))
            if layout == 'only positives':
                labels = rng.permutation(n)
                ref_labels = rng.choice(labels, m)
            else:
                k = int(rng.integers(2, max(2, n // 2) + 1))
                labels = rng.integers(0, k, size=n)
                low = k if layout == 'only negatives' else 0
                ref_labels = rng.integers(low, k + 3, size=m).astype(np.float64)
                if layout == 'NaN labels':
                    ref_labels[rng.random(m) < 1 / 3] = np.nan
                    ref_labels[0] = np.nan
            X, R = rng.normal(size=(n, d)), rng.normal(size=(m, d))
            X /= np.linalg.norm(X, axis=1, keepdims=True)
            R /= np.linalg.norm(R, axis=1, keepdims=True)
            case = Cases.of(X, labels, params, R, ref_labels)
            if (ref.boundary_gap(case.X, case.labels, params, R=case.R,
                                 ref_labels=case.ref_labels) >= GAP
                    and ref.recall_gap(case.X, case.labels, R=case.R,
                                       ref_labels=case.ref_labels) >= GAP):
                return case
        raise AssertionError(f'no batch away from the thresholds in {tries} tries: '
                             f'{layout}, {params}')

    @staticmethod
    def case(rng, params, N=None, D=None, classes=None, scale=1.0, normalize=True, tries=200):
        """A batch whose selection and Recall@K are at least GAP (relative) from a
        threshold or a tie; N, D and the number of classes random unless given."""
        for _ in range(tries):
            n = int(rng.integers(2, 13)) if N is None else N
            d = int(rng.integers(1, 6)) if D is None else D
            k = int(rng.integers(1, max(2, n // 2) + 1)) if classes is None else classes
            X = rng.normal(size=(n, d))
            if normalize:
                X /= np.linalg.norm(X, axis=1, keepdims=True)
            X = (scale * X).astype(np.float32)
            labels = rng.integers(0, k, size=n).astype(np.float32)
            size = max(1.0, float(np.max(np.abs(X.astype(np.float64) @ X.T.astype(np.float64)))))
            if (ref.boundary_gap(X, labels, params) >= GAP * size
                    and ref.recall_gap(X, labels) >= GAP * size):
                return Case(X, labels, params)
        raise AssertionError(f'no batch away from the thresholds in {tries} tries: {params}')


@pytest.fixture(scope='session')
def npair_cases():
    return Cases()


def s_error_bound(X, R=None):
    """delta of docs/layer_contract.md §5: a bound on |S_ic - x_i.(candidate c)| for
    float32's S computed in any order (gamma_D times the largest squared row norm of the
    features and references, plus the rounding of symmetrising S)."""
    D = X.shape[1]
    rows = np.asarray(X, np.float64) if R is None or not len(R) else np.concatenate(
        [np.asarray(X, np.float64), np.asarray(R, np.float64)])
    norm2 = float((rows ** 2).sum(axis=1).max())
    return (D * U32 / (1 - D * U32) + 2 * U32) * norm2


def _close(value, expected, rtol, floor=0.0):
    return abs(value - expected) <= max(rtol * abs(expected), floor) or value == expected


@pytest.fixture(scope='session')
def assert_matches_reference():
    """assert_matches_reference(case, tops, grad=None, g=1.0, rtol=RTOL, grad_tol=GRAD_TOL,
    ref_grad=None): the values of the layer's tops (loss, R@K..., asum, as many as it
    has) and, if given, d(g * loss)/dX and d(g * loss)/dR against the reference, within
    docs/layer_contract.md §5's float tolerances (the loss's with its absolute floor;
    the gradients' relative to the largest element of both)."""
    def check(case, tops, grad=None, g=1.0, rtol=RTOL, grad_tol=GRAD_TOL, ref_grad=None):
        result = case.reference(g)
        expected = ref.top_values(result, len(tops))
        floors = {'loss': 2 * s_error_bound(case.X, case.R)}     # a loss near 0: §5's floor
        for name, (value, want) in zip(_top_names(len(tops)), zip(tops, expected)):
            assert math.isfinite(value), f'{name} = {value} for {case}'
            assert _close(float(value), want, rtol, floors.get(name, 0.0)), \
                f'{name}: {value} != {want} for {case}'
        scale = max(np.max(np.abs(result.grad), initial=0.0),
                    np.max(np.abs(result.ref_grad), initial=0.0))
        for name, got, want in (('gradient', grad, result.grad),
                                ('references\' gradient', ref_grad, result.ref_grad)):
            if got is None:
                continue
            got = np.asarray(got, dtype=np.float64).reshape(want.shape)
            assert np.isfinite(got).all(), case
            err = np.max(np.abs(got - want), initial=0.0)
            assert err <= grad_tol * scale or err <= 1e-12, \
                f'{name} off by {err} (largest {scale}) for {case}'
    return check


def _top_names(ntop):
    if ntop == 1:
        return ['loss']
    return ['loss'] + [f'R@{K}' for K in ref.RECALL_KS[:ntop - 2]] + ['feature_asum']


# The usage block of the layer's original definition, verbatim (comments included): the
# one copy that tests and docs read.
USAGE_BLOCK_FILE = os.path.join(ROOT, 'docs', 'usage_block.prototxt')
with open(USAGE_BLOCK_FILE, encoding='utf-8') as _f:
    USAGE_BLOCK = _f.read()

# The usage block's npair_loss_param body, comments included: a param_str for the fallback.
USAGE_PARAM_STR = npair_loss_param_text(USAGE_BLOCK)


@pytest.fixture(scope='session')
def usage_block():
    """The usage block, as written (L2Normalize and NPairMultiClassLoss layers)."""
    return USAGE_BLOCK


@pytest.fixture(scope='session')
def usage_param_str():
    """The usage block's npair_loss_param as a param_str for the fallback."""
    return USAGE_PARAM_STR


@pytest.fixture(scope='session')
def usage_params():
    """The usage block's npair_loss_param as ref.Params, floats as the float32 values that
    the proto holds."""
    from google.protobuf import text_format
    from npair_loss.params import message_class

    return ref.params_from_message(text_format.Parse(USAGE_PARAM_STR, message_class()()))
