"""Plot the loss and in-batch Recall@1 against iteration from a `caffe train` log.

Reads the "Train net output #k: <top> = v" lines (and "Test net output" ones,
when the solver has a test net) with npair_examples.caffe_log and draws two
panels: the loss top, and the R@1 top. By default the loss is the first
output whose name is not a monitor's (R@K, feature_asum, accuracy) and R@1 the
first output whose name contains "top1" (the usage block's naming,
"..._retrieve_top1").

The "loss = " of caffe's Iteration lines is not used: with the usage block's
loss_weight 1 on all five tops it is their sum (loss + R@1 + R@5 + R@10 +
feature_asum), not the loss.
"""

import argparse
import sys

from npair_examples.caffe_log import find_series, parse_log
from npair_loss.cli import ArgumentParser, UsageError, run

PROG = "python -m npair_examples.plot_log"


def plot(parsed, out, loss="loss", recall="top1", title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = [(axes[0], loss, "loss"), (axes[1], recall, "in-batch Recall@1")]
    drawn = 0
    for ax, wanted, label in panels:
        for key, style, what in (("train", "-", "train batches"),
                                 ("test", "o-", "held-out (unseen-class) batches")):
            name = find_series(parsed, key, wanted)
            if not name:
                continue
            it, v = zip(*parsed[key][name])
            ax.plot(it, v, style, ms=3, lw=1.2, label="%s (%s)" % (what, name))
            drawn += 1
        ax.set_xlabel("iteration")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    axes[1].set_ylim(-0.02, 1.02)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return drawn


def _parser():
    p = ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example:\n  python -m npair_examples.plot_log runs/digits/npair_train.log "
               "--out runs/digits/training.png")
    p.add_argument("log", help="caffe train log (stderr of `caffe train`)")
    p.add_argument("--out", default="training.png", help="PNG to write")
    p.add_argument("--loss", default="loss",
                   help="loss output: '#index' (caffe's numbering), (part of) its name, "
                        "or 'loss': the first output that is not a monitor (default)")
    p.add_argument("--recall", default="top1",
                   help="R@1 output: '#index' or (part of) its name (default: top1)")
    p.add_argument("--title", help="figure title")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    parsed = parse_log(args.log)
    if not parsed["train"]:
        raise UsageError("%s: no 'Train net output' lines: not a `caffe train` log"
                         % args.log)
    n = plot(parsed, args.out, args.loss, args.recall, args.title)
    last = {k: v[-1] for k, v in parsed["train"].items()}
    print("plot_log: %d train outputs over %d displays (last: %s); %d curves -> %s" % (
        len(parsed["train"]), len(next(iter(parsed["train"].values()))),
        ", ".join("%s = %.4g @%d" % (k, v[1], v[0]) for k, v in last.items()), n, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(run(main, PROG))
