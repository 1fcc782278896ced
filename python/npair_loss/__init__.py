"""NPairMultiClassLoss and CrossBatchMemory as Caffe Python layers: the fallback for a
pycaffe without the C++ layers (docs/layer_contract.md §7).

    layer { type: "Python" bottom: "feat" bottom: "label" top: "loss" ...
            python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer"
                           param_str: "an_mining_method: HARD margin_diff: -0.05" } }
    layer { type: "Python" bottom: "feat" bottom: "label" top: "ref_feat" top: "ref_label"
            param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
            param { lr_mult: 0 decay_mult: 0 }
            python_param { module: "npair_loss" layer: "CrossBatchMemoryLayer"
                           param_str: "size: 4096 warmup: 250" } }

npair_loss.npair_math is the loss's math alone and npair_loss.mining its mining (NumPy or
CuPy, no Caffe); npair_loss.params parses param_str; the layer classes need pycaffe and
are loaded on first use.
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
    if name == 'CrossBatchMemoryLayer':
        from .memory_layer import CrossBatchMemoryLayer
        return CrossBatchMemoryLayer
    raise AttributeError(f"module 'npair_loss' has no attribute {name!r}")
