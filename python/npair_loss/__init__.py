"""NPairMultiClassLoss as a Caffe Python layer: the fallback for a pycaffe without the
C++ layer (spec section 7).

    layer { type: "Python" bottom: "feat" bottom: "label" top: "loss" ...
            python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer"
                           param_str: "an_mining_method: HARD margin_diff: -0.05" } }

npair_loss.npair_math is the math alone (NumPy or CuPy, no Caffe); npair_loss.params
parses param_str; the layer class needs pycaffe and is loaded on first use.
"""


def __getattr__(name):
    if name == 'NPairMultiClassLossLayer':
        from .layer import NPairMultiClassLossLayer
        return NPairMultiClassLossLayer
    raise AttributeError(f"module 'npair_loss' has no attribute {name!r}")
