"""NPairMultiClassLossLayer: the N-pair loss as a Caffe Python layer (docs/layer_contract.md §7).

Bottoms: features (N x ...), labels (N values), and optionally references (M x ..., the
features' D values a row, M >= 0) with their labels (M values): query i's candidates are
the other batch samples and every reference. Tops, all scalars, 1 to 5 of them:
loss | loss, feature_asum | loss, R@1, feature_asum | loss, R@1, R@5, feature_asum |
loss, R@1, R@5, R@10, feature_asum. Only the loss has a gradient, to the features and
the references; never to labels. Caffe gives a Python layer no default loss_weight:
write `loss_weight: 1` for the loss (and 0 for each monitor) in the layer.

The math runs in CuPy when Caffe runs on the GPU (caffe.get_mode(), which this fork's
pycaffe has) and CuPy imports, in NumPy otherwise. A blob with no rows (M = 0) is never
read: pycaffe aborts the process on the data of a blob that holds nothing.
"""
import functools

import caffe
import numpy

from . import arrays, npair_math
from .params import LAYER, parse_param_str

MAX_TOPS = 2 + len(npair_math.RECALL_KS)


@functools.lru_cache(maxsize=None)
def _cupy():
    try:
        import cupy
    except ImportError:
        return None
    return cupy


def array_module():
    """cupy when Caffe runs on the GPU and CuPy imports; numpy otherwise."""
    get_mode = getattr(caffe, 'get_mode', None)
    if get_mode is not None and get_mode() == 'GPU' and _cupy() is not None:
        return _cupy()
    return numpy


class NPairMultiClassLossLayer(caffe.Layer):
    """Multi-class N-pair loss with hard/easy/relative mining, as the C++ layer
    NPairMultiClassLoss; configured by param_str (NPairLossParameter, text format)."""

    def setup(self, bottom, top):
        if len(bottom) == 3:
            raise ValueError(f'{LAYER}: references come as two bottoms, bottom[2] the '
                             'features and bottom[3] the labels; got only bottom[2]')
        if len(bottom) not in (2, 4):
            raise ValueError(f'{LAYER}: takes 2 bottoms (features, labels), or 4 with '
                             f'references (their features, their labels); got {len(bottom)}')
        if not 1 <= len(top) <= MAX_TOPS:
            raise ValueError(f'{LAYER}: takes 1 to {MAX_TOPS} tops, got {len(top)}')
        self.params = parse_param_str(self.param_str)
        self.recall_ks = npair_math.RECALL_KS[:max(len(top) - 2, 0)]
        self.workspace = npair_math.Workspace()      # N x C work arrays, W among them

    def reshape(self, bottom, top):
        features, labels = bottom[0], bottom[1]
        if len(features.shape) == 0 or features.count == 0:
            raise ValueError(f'{LAYER}: features must hold N >= 1 samples of at least one '
                             f'value each, got shape {tuple(features.shape)}')
        n = features.shape[0]
        if len(labels.shape) == 0 or labels.shape[0] != n or labels.count != n:
            raise ValueError(f'{LAYER}: needs one label per sample: {n} samples, '
                             f'labels of shape {tuple(labels.shape)}')
        if len(bottom) == 4:
            self._check_references(bottom[2], bottom[3], features.count // n)
        for i in range(len(top)):          # indexing: stock pycaffe cannot iterate top
            top[i].reshape()

    @staticmethod
    def _check_references(refs, ref_labels, dim):
        """A ValueError unless bottoms 2 and 3 hold M >= 0 rows of D values and M labels."""
        shape = tuple(refs.shape)
        # From the shape: the count of an empty blob says nothing of its rows' width.
        if len(shape) == 0 or int(numpy.prod(shape[1:], dtype=numpy.int64)) != dim:
            raise ValueError(f'{LAYER}: bottom[2] (the references) must hold M >= 0 rows '
                             f"of the features' D = {dim} values; got shape {shape}")
        m = shape[0]
        if len(ref_labels.shape) == 0 or ref_labels.shape[0] != m or ref_labels.count != m:
            raise ValueError(f'{LAYER}: bottom[3] must hold exactly one label per '
                             f'reference, M = {m}; got shape {tuple(ref_labels.shape)}')

    @staticmethod
    def _references(bottom, xp, with_labels=True):
        """The references (and their labels) as arrays of xp; None for each when there
        are none (two bottoms, or M = 0)."""
        if len(bottom) < 4 or bottom[2].shape[0] == 0:
            return None, None
        m = bottom[2].shape[0]
        R = xp.asarray(bottom[2].data.reshape(m, -1))
        return R, xp.asarray(bottom[3].data.reshape(m)) if with_labels else None

    def forward(self, bottom, top):
        xp = array_module()
        n = bottom[0].shape[0]
        X = xp.asarray(bottom[0].data.reshape(n, -1))
        labels = xp.asarray(bottom[1].data.reshape(n))
        R, ref_labels = self._references(bottom, xp)
        out = npair_math.forward(X, labels, self.params, self.recall_ks, self.workspace,
                                 R, ref_labels)
        values = [out.loss] if len(top) == 1 else [out.loss, *out.recall, out.asum]
        for i, value in enumerate(values):
            top[i].data[...] = value
        self.weights = out.weights

    def backward(self, top, propagate_down, bottom):
        # Labels get no gradient: bottom[1].diff and bottom[3].diff are never written.
        to_references = len(bottom) == 4 and propagate_down[2] and bottom[2].shape[0] > 0
        if not (propagate_down[0] or to_references):
            return
        W = self.weights
        xp = arrays.array_module(W)
        R, _ = self._references(bottom, xp, with_labels=False)
        n = bottom[0].shape[0]
        X = xp.asarray(bottom[0].data.reshape(n, -1))
        g = float(top[0].diff)
        if propagate_down[0]:
            grad = npair_math.gradient(X, W, g, self.workspace, R)
            bottom[0].diff[...] = arrays.to_host(grad).reshape(bottom[0].diff.shape)
        if to_references:
            grad = npair_math.reference_gradient(X, W, g)
            bottom[2].diff[...] = arrays.to_host(grad).reshape(bottom[2].diff.shape)
