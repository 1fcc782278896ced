"""The glyphs example's nets: one trunk, one data source, one schedule, and a loss
per model, written as the prototxt files in models/glyphs/.

Every model trains the same trunk (3 conv layers, a 128-d fc, a 64-d embedding,
L2Normalize) on the same NPairImageData batches (64 characters x 2 images, a
fixed data seed) for the same iterations; only the loss on top differs:

  npair          NPairMultiClassLoss with the layer's usage-block mining
  npair_xbm      the same loss with a CrossBatchMemory of past training embeddings as
                 every query's further candidates (the loss's references)
  npair_rand     the same loss keeping every pair (RAND mining)
  npair_scaled   RAND, similarities scaled by 4 (a Power layer after L2Normalize)
  npair_python   the usage-block mining in the Python fallback layer
  softmax        a classifier over the training characters (SoftmaxWithLoss on
                 the embedding); the embedding, not the classifier, is evaluated
  contrastive    Caffe's ContrastiveLoss on pairs from the same batches: each
                 batch's K=2 images of a class as a similar pair, and each first
                 image with the next class's second image as a dissimilar one

Each train net's TEST phase reads the unseen characters in the same batch
shape, and every net carries the N-pair layer's monitor tops there (loss
weight 0 where the model trains another loss), so the in-batch R@1 on unseen
characters is comparable across models in `caffe train`'s log.

`python -m npair_examples.glyph_nets --out models/glyphs` rewrites the files;
`--check` says whether they are current (a test runs it).
"""

import argparse
import os
import sys

from npair_loss.cli import ArgumentParser, UsageError, run
from npair_loss.params import npair_loss_param_text, one_line_param_str

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
USAGE_BLOCK = os.path.join(ROOT, "docs", "usage_block.prototxt")
DATA = "runs/glyphs/data/"
CLASSES_PER_BATCH = 64
IMAGES_PER_CLASS = 2
EMBEDDING = 64
ITERATIONS = 2000
SNAPSHOT = 250
# The solvers' learning rates were chosen on a validation split of the training
# characters (never on the unseen ones): the best of 0.05, 0.1, 0.2 per loss; npair_xbm
# keeps npair's.
BASE_LR = {"npair": 0.2, "npair_xbm": 0.2, "npair_rand": 0.2, "npair_scaled": 0.2,
           "npair_python": 0.2, "softmax": 0.05, "contrastive": 0.2}
MODELS = tuple(BASE_LR)
SIMILARITY_SCALE = 4
MONITOR_TOPS = ("npair_loss", "retrieve_top1", "retrieve_top5", "retrieve_top10", "feature_asum")
# npair_xbm's CrossBatchMemory, chosen by python -m npair_examples.choose_memory on
# training characters held out of its trainings (never on the unseen ones).
MEMORY_SIZE = 16384
MEMORY_WARMUP = 250


def data_layers(data=DATA, classes_per_batch=CLASSES_PER_BATCH, lists=None):
    """The TRAIN and TEST NPairImageData layers reading `data` (the images' root folder):
    its train.txt and unseen.txt, or the (TRAIN, TEST) list paths `lists`."""
    train_list, test_list = lists or (data + "train.txt", data + "unseen.txt")

    def layer(phase, source):
        return """layer {
  name: "data" type: "NPairImageData" top: "data" top: "label"
  include { phase: %s }
  transform_param { scale: 0.00390625 }
  image_data_param { source: "%s" root_folder: "%s" is_color: false }
  npair_image_data_param { classes_per_batch: %d images_per_class: %d seed: 1 }
}""" % (phase, source, data, classes_per_batch, IMAGES_PER_CLASS)
    return ("# TRAIN: the training characters, %d x %d per batch, regrouped every epoch.\n"
            % (classes_per_batch, IMAGES_PER_CLASS) + layer("TRAIN", train_list) +
            "\n# TEST: the unseen characters in the same batch shape: the in-batch monitor\n"
            "# of classes never trained on.\n" + layer("TEST", test_list))


def _conv(name, bottom, n):
    return """layer {
  name: "%s" type: "Convolution" bottom: "%s" top: "%s"
  convolution_param {
    num_output: %d kernel_size: 3 pad: 1
    weight_filler { type: "msra" } bias_filler { type: "constant" value: 0 }
  }
}
layer { name: "relu_%s" type: "ReLU" bottom: "%s" top: "%s" }
layer {
  name: "pool_%s" type: "Pooling" bottom: "%s" top: "pool_%s"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 }
}""" % (name, bottom, name, n, name, name, name, name, name, name)


def _include(phase):
    return "\n  include { phase: %s }" % phase if phase else ""


def _fc(name, bottom, n, relu, filler='type: "msra"', phase=None):
    text = """layer {
  name: "%s" type: "InnerProduct" bottom: "%s" top: "%s"%s
  inner_product_param {
    num_output: %d
    weight_filler { %s } bias_filler { type: "constant" value: 0 }
  }
}""" % (name, bottom, name, _include(phase), n, filler)
    if relu:
        text += '\nlayer { name: "relu_%s" type: "ReLU" bottom: "%s" top: "%s" }' % (
            name, name, name)
    return text


def trunk():
    """data -> embed_norm (the same in every net, so one deploy net loads any weights)."""
    return "\n".join([
        "# The trunk: the same in every glyphs net and in deploy.prototxt.",
        _conv("conv1", "data", 32), _conv("conv2", "pool_conv1", 64),
        _conv("conv3", "pool_conv2", 32), _fc("fc4", "pool_conv3", 128, True),
        _fc("embed", "fc4", EMBEDDING, False),
        'layer { name: "embed_norm" type: "L2Normalize" bottom: "embed" top: "embed_norm" }'])


def usage_mining():
    """The usage block's npair_loss_param fields (docs/usage_block.prototxt), one line."""
    return one_line_param_str(npair_loss_param_text(open(USAGE_BLOCK, encoding="utf-8").read()))


RAND_MINING = "ap_mining_method: RAND an_mining_method: RAND"


def npair_loss(bottom, param, weight=1, python=False, references=False):
    """The N-pair layer on `bottom` with `param` (text-format fields); the first top (the
    loss) weighted `weight`, the monitors 0; with `references`, the memory's tops as
    bottoms 2 and 3, and propagate_down false for them: the memory passes nothing back,
    so the loss need not compute the references' gradient (Caffe asks for it, since
    the memory's blobs are parameters to the net)."""
    weights = " ".join("loss_weight: %d" % (weight if i == 0 else 0)
                       for i in range(len(MONITOR_TOPS)))
    tops = " ".join('top: "%s"' % t for t in MONITOR_TOPS)
    if references:
        tops = ('bottom: "memory" bottom: "memory_label"\n  propagate_down: true '
                'propagate_down: false propagate_down: false propagate_down: false\n  ' + tops)
    if python:
        body = ('python_param {\n    module: "npair_loss.layer" '
                'layer: "NPairMultiClassLossLayer"\n    param_str: "%s"\n  }' % param)
        kind = "Python"
    else:
        body = "npair_loss_param { %s }" % param
        kind = "NPairMultiClassLoss"
    return """layer {
  name: "npair" type: "%s" bottom: "%s" bottom: "label"
  %s
  %s
  %s
}""" % (kind, bottom, tops, weights, body)


def memory(size=MEMORY_SIZE, warmup=MEMORY_WARMUP):
    """The CrossBatchMemory of npair_xbm on the embedding. propagate_down false: nothing
    flows back through it into the embedding."""
    return """# The last %d training embeddings, stored after a warm-up of %d iterations, as
# further candidates of every query (empty in TEST).
layer {
  name: "memory" type: "CrossBatchMemory" bottom: "embed_norm" bottom: "label"
  top: "memory" top: "memory_label" propagate_down: false propagate_down: false
  cross_batch_memory_param { size: %d warmup: %d }
}
""" % (size, warmup, size, warmup)


def _loss_npair(model, memory_size, memory_warmup):
    if model == "npair_xbm":
        return memory(memory_size, memory_warmup) + npair_loss(
            "embed_norm", usage_mining(), references=True)
    if model == "npair_scaled":
        return ('layer { name: "scale" type: "Power" bottom: "embed_norm" top: "embed_scaled"\n'
                '        power_param { scale: %d } }\n' % SIMILARITY_SCALE +
                npair_loss("embed_scaled", RAND_MINING))
    param = RAND_MINING if model == "npair_rand" else usage_mining()
    return npair_loss("embed_norm", param, python=model == "npair_python")


def _monitor():
    return ("# The N-pair layer as a monitor only (loss weight 0): in-batch R@K, comparable\n"
            "# across models.\n" + npair_loss("embed_norm", RAND_MINING, weight=0))


def _loss_softmax(train_classes):
    # Caffe's classic classifier init: with msra's the 2,065 logits start large and
    # confidently wrong (loss 8.3, above chance's 7.6), and the first steps collapsed
    # the trunk at every base_lr tried; from small logits it trains.
    return (_fc("classifier", "embed", train_classes, False,
                'type: "gaussian" std: 0.01', phase="TRAIN") +
        '\nlayer { name: "softmax_loss" type: "SoftmaxWithLoss" bottom: "classifier"\n'
        '        bottom: "label" top: "softmax_loss" include { phase: TRAIN } }\n' + _monitor())


def _loss_contrastive(p):
    d = EMBEDDING
    return """# Pairs from the batch: rows 2j, 2j+1 are one character (similar); row 2j with
# row 2(j+1)+1 (mod P) are two characters (dissimilar).
layer { name: "pairs" type: "Reshape" bottom: "embed_norm" top: "pairs"
        reshape_param { shape { dim: %d dim: 2 dim: %d } } }
layer { name: "split_pairs" type: "Slice" bottom: "pairs" top: "first" top: "second"
        slice_param { axis: 1 } }
layer { name: "first_flat" type: "Flatten" bottom: "first" top: "first_flat" }
layer { name: "second_flat" type: "Flatten" bottom: "second" top: "second_flat" }
layer { name: "roll_cut" type: "Slice" bottom: "second_flat" top: "second_head"
        top: "second_tail" slice_param { axis: 0 slice_point: 1 } }
layer { name: "second_next" type: "Concat" bottom: "second_tail" bottom: "second_head"
        top: "second_next" concat_param { axis: 0 } }
layer { name: "left" type: "Concat" bottom: "first_flat" bottom: "first_flat" top: "left"
        concat_param { axis: 0 } }
layer { name: "right" type: "Concat" bottom: "second_flat" bottom: "second_next"
        top: "right" concat_param { axis: 0 } }
layer {
  name: "similar" type: "DummyData" top: "same" top: "different"
  dummy_data_param {
    data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 }
    shape { dim: %d dim: 1 } shape { dim: %d dim: 1 }
  }
}
layer { name: "similar_concat" type: "Concat" bottom: "same" bottom: "different"
        top: "similar" concat_param { axis: 0 } }
layer { name: "contrastive_loss" type: "ContrastiveLoss" bottom: "left" bottom: "right"
        bottom: "similar" top: "contrastive_loss" contrastive_loss_param { margin: 1 } }
""" % (p, d, p, p) + _monitor()


def train_net(model, train_classes, data=DATA, classes_per_batch=CLASSES_PER_BATCH,
              lists=None, memory_size=MEMORY_SIZE, memory_warmup=MEMORY_WARMUP):
    """The train_val text of `model`; `data` is the folder of the lists (and their
    root_folder), `classes_per_batch` the P of every batch; `lists` other (TRAIN, TEST)
    lists, `memory_*` npair_xbm's memory."""
    if model not in MODELS:
        raise UsageError("unknown model %r (one of %s)" % (model, ", ".join(MODELS)))
    if model == "softmax":
        loss = _loss_softmax(train_classes)
    elif model == "contrastive":
        loss = _loss_contrastive(classes_per_batch)
    else:
        loss = _loss_npair(model, memory_size, memory_warmup)
    return ('# The glyphs example, model "%s" (python -m npair_examples.glyph_nets --help).\n'
            'name: "glyphs_%s"\n' % (model, model) +
            data_layers(data, classes_per_batch, lists) +
            "\n" + trunk() + "\n" +
            loss.rstrip() + "\n")


def solver(model, out_dir, seed=1, name=None, snapshot_dir="runs/glyphs"):
    """The solver text; `name` (default: the model) names its snapshots in
    `snapshot_dir`."""
    return """# The glyphs example, model "%s": %d iterations of %d x %d, snapshots every %d.
# Run from the repository root.
net: "%s/%s.prototxt"
test_iter: 10
test_interval: %d
base_lr: %g
momentum: 0.9
weight_decay: 0.0005
lr_policy: "multistep"
gamma: 0.1
stepvalue: %d
max_iter: %d
display: 50
snapshot: %d
snapshot_prefix: "%s/%s"
random_seed: %d
solver_mode: CPU
""" % (model, ITERATIONS, CLASSES_PER_BATCH, IMAGES_PER_CLASS, SNAPSHOT, out_dir, model,
       SNAPSHOT, BASE_LR[model], ITERATIONS * 3 // 4, ITERATIONS, SNAPSHOT, snapshot_dir,
       name or model, seed)


def deploy():
    return ('# The glyphs trunk for extracting embeddings (blob embed_norm) with any model\'s\n'
            '# weights: python -m npair_examples.evaluate --deploy models/glyphs/deploy.prototxt\n'
            'name: "glyphs_deploy"\n'
            'layer { name: "data" type: "Input" top: "data"\n'
            '        input_param { shape { dim: 1 dim: 1 dim: 32 dim: 32 } } }\n' + trunk() + "\n")


def files(train_classes):
    """{file name: text} of every net, solver and the deploy net of models/glyphs/."""
    out = {"deploy.prototxt": deploy()}
    for model in MODELS:
        out[model + ".prototxt"] = train_net(model, train_classes)
        out[model + "_solver.prototxt"] = solver(model, "models/glyphs")
    return out


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.glyph_nets",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__)
    p.add_argument("--out", default="models/glyphs", help="folder (default: %(default)s)")
    p.add_argument("--train-classes", type=int, default=2065,
                   help="softmax classifier outputs: the training characters "
                        "(default: 2065, what npair_examples.glyphs keeps)")
    p.add_argument("--check", action="store_true",
                   help="write nothing; exit 1 if a file differs from what would be written")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    stale = []
    for name, text in files(args.train_classes).items():
        path = os.path.join(args.out, name)
        if args.check:
            if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
                stale.append(path)
            continue
        os.makedirs(args.out, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    if args.check:
        for path in stale:
            print("glyph_nets: %s is not what the generator writes" % path)
        return 1 if stale else 0
    print("glyph_nets: %d files in %s" % (len(files(args.train_classes)), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.glyph_nets"))
