"""NPairMultiClassLoss as a Caffe Python layer: the fallback for a pycaffe without the
C++ layer (docs/layer_contract.md §7).

    layer { type: "Python" bottom: "feat" bottom: "label" top: "loss" ...
            python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer"
                           param_str: "an_mining_method: HARD margin_diff: -0.05" } }

npair_loss.npair_math is the math alone (NumPy or CuPy, no Caffe); npair_loss.params
parses param_str; the layer class needs pycaffe and is loaded on first use.
"""
import pkgutil

# npair_loss_pb2, generated from proto/npair_loss.proto, lies beside these files in an
# installed package (pip install ./python) but in build/python/npair_loss in the fork's
# build tree: any npair_loss folder on sys.path is part of this package.
__path__ = pkgutil.extend_path(__path__, __name__)


def __getattr__(name):
    if name == 'NPairMultiClassLossLayer':
        from .layer import NPairMultiClassLossLayer
        return NPairMultiClassLossLayer
    raise AttributeError(f"module 'npair_loss' has no attribute {name!r}")
