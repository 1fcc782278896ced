"""A retrieval sheet: unseen queries and their nearest neighbours, per model.

Each row is a query image (grey frame) and its --k nearest other images by cosine
similarity of the model's embedding, nearest first: a green frame where the
neighbour shows the query's class, red where it does not. One block per model,
side by side, the same queries (a seeded choice) in each. The embeddings come
from evaluate's .npz ("<split>__<model>", rows in the order of the split's image
list), the images from that list.
"""

import argparse
import sys

import numpy as np

from npair_examples.image_list import load_images
from npair_examples.metrics import l2_normalize
from npair_loss.cli import ArgumentParser, UsageError, read_npz, run


def neighbours(emb, queries, k):
    x = l2_normalize(emb)
    s = x[queries] @ x.T
    s[np.arange(len(queries)), queries] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def plot(images, labels, embeddings, queries, k, out, title=None):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    names = list(embeddings)
    cols = k + 1
    fig, axes = plt.subplots(len(queries), len(names) * (cols + 1) - 1,
                             figsize=(0.62 * (len(names) * (cols + 1) - 1),
                                      0.66 * len(queries) + 0.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for b, name in enumerate(names):
        near = neighbours(embeddings[name], queries, k)
        hits = labels[near] == labels[queries][:, None]
        left = b * (cols + 1)
        axes[0][left + cols // 2].set_title(
            "%s: %d of %d neighbours hit" % (name, hits.sum(), hits.size), fontsize=10, pad=14)
        for r, q in enumerate(queries):
            for c, idx in enumerate([q] + list(near[r])):
                ax = axes[r][left + c]
                ax.imshow(images[idx, 0], cmap="gray", vmin=0, vmax=1)
                colour = "0.6" if c == 0 else ("#1a9e3a" if hits[r, c - 1] else "#d62728")
                h, w = images.shape[2:]
                ax.add_patch(Rectangle((-0.5, -0.5), w, h, fill=False, lw=3, edgecolor=colour))
                ax.axis("on")
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
    fig.suptitle(title or "Unseen characters: query (grey) and its %d nearest "
                 "(green: same character, red: another)" % k, fontsize=11)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 0.9 / fig.get_figheight(),
                        wspace=0.08, hspace=0.08)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.plot_retrieval",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example (what scripts/run_example.sh runs):\n"
               "  python -m npair_examples.plot_retrieval runs/glyphs/embeddings.npz "
               "--list runs/glyphs/data/unseen.txt \\\n      --root-folder runs/glyphs/data/ "
               "--models npair,softmax --out runs/glyphs/retrieval.png")
    p.add_argument("embeddings", help=".npz written by evaluate --embeddings")
    p.add_argument("--list", required=True, help="the split's image list")
    p.add_argument("--root-folder", default="",
                   help="prefix of the list's paths, joined to them as Caffe's root_folder "
                        "is (as a string: end a folder with /)")
    p.add_argument("--split", default="unseen", help="split (default: unseen)")
    p.add_argument("--models", default="npair,softmax", help="models, in order "
                   "(default: npair,softmax)")
    p.add_argument("--queries", type=int, default=10, help="queries (default: 10)")
    p.add_argument("-k", type=int, default=8, help="neighbours per query (default: 8)")
    p.add_argument("--seed", type=int, default=0, help="query choice (default: 0)")
    p.add_argument("--out", default="retrieval.png", help="PNG to write")
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    emb = read_npz(args.embeddings)
    images, labels = load_images(args.list, args.root_folder)
    stored = emb.get(args.split + "__labels")
    if stored is None or not np.array_equal(stored, labels):
        raise UsageError("%s: split %r is not the list %s, row for row"
                         % (args.embeddings, args.split, args.list))
    embeddings = {}
    for name in args.models.split(","):
        key = "%s__%s" % (args.split, name)
        if key not in emb:
            raise UsageError("%s: no model %r (has %s)" % (args.embeddings, name, ", ".join(
                k.split("__", 1)[1] for k in emb if not k.endswith("__labels"))))
        embeddings[name] = emb[key]
    queries = np.random.default_rng(args.seed).choice(len(labels), args.queries, replace=False)
    plot(images, labels, embeddings, queries, args.k, args.out)
    print("plot_retrieval: wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.plot_retrieval"))
