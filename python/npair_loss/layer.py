"""NPairMultiClassLossLayer: the N-pair loss as a Caffe Python layer (docs/layer_contract.md §7).

Bottoms: features (N x ...), labels (N values). Tops, all scalars, 1 to 5 of them:
loss | loss, feature_asum | loss, R@1, feature_asum | loss, R@1, R@5, feature_asum |
loss, R@1, R@5, R@10, feature_asum. Only the loss has a gradient, and only to the
features. Caffe gives a Python layer no default loss_weight: write `loss_weight: 1`
for the loss (and 0 for each monitor) in the layer.

The math runs in CuPy when Caffe runs on the GPU (caffe.get_mode(), which this fork's
pycaffe has) and CuPy imports, in NumPy otherwise.
"""
import functools

import caffe
import numpy

from . import npair_math
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
        if len(bottom) != 2:
            raise ValueError(f'{LAYER}: takes 2 bottoms (features, labels), got {len(bottom)}')
        if not 1 <= len(top) <= MAX_TOPS:
            raise ValueError(f'{LAYER}: takes 1 to {MAX_TOPS} tops, got {len(top)}')
        self.params = parse_param_str(self.param_str)
        self.recall_ks = npair_math.RECALL_KS[:max(len(top) - 2, 0)]
        self.workspace = npair_math.Workspace()      # N x N work arrays, W among them

    def reshape(self, bottom, top):
        features, labels = bottom[0], bottom[1]
        if len(features.shape) == 0 or features.count == 0:
            raise ValueError(f'{LAYER}: features must hold N >= 1 samples of at least one '
                             f'value each, got shape {tuple(features.shape)}')
        n = features.shape[0]
        if len(labels.shape) == 0 or labels.shape[0] != n or labels.count != n:
            raise ValueError(f'{LAYER}: needs one label per sample: {n} samples, '
                             f'labels of shape {tuple(labels.shape)}')
        for i in range(len(top)):          # indexing: stock pycaffe cannot iterate top
            top[i].reshape()

    def forward(self, bottom, top):
        xp = array_module()
        n = bottom[0].shape[0]
        X = xp.asarray(bottom[0].data.reshape(n, -1))
        labels = xp.asarray(bottom[1].data.reshape(n))
        out = npair_math.forward(X, labels, self.params, self.recall_ks, self.workspace)
        values = [out.loss] if len(top) == 1 else [out.loss, *out.recall, out.asum]
        for i, value in enumerate(values):
            top[i].data[...] = value
        self.weights = out.weights

    def backward(self, top, propagate_down, bottom):
        # Labels get no gradient: bottom[1].diff is never written.
        if not propagate_down[0]:
            return
        W = self.weights
        xp = npair_math.array_module(W)
        n = bottom[0].shape[0]
        X = xp.asarray(bottom[0].data.reshape(n, -1))
        grad = npair_math.gradient(X, W, float(top[0].diff), self.workspace)
        bottom[0].diff[...] = npair_math.to_host(grad).reshape(bottom[0].diff.shape)
