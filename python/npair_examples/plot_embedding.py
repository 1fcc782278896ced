"""2-D map of held-out embeddings, one panel per model, coloured by class.

Reads the .npz that `evaluate --embeddings` writes (keys "<split>__<model>"
and "<split>__labels") and projects each model's L2-normalised embeddings to
2-D with t-SNE (default; a few seconds per panel) or PCA (instant, linear).
"""

import argparse
import sys

import numpy as np

from npair_examples.metrics import l2_normalize
from npair_loss.cli import ArgumentParser, UsageError, read_json, read_npz, run


def project(x, method="tsne", seed=0):
    x = l2_normalize(x)
    if method == "pca":
        from sklearn.decomposition import PCA
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    from sklearn.manifold import TSNE
    return TSNE(n_components=2, init="pca", perplexity=30, random_state=seed).fit_transform(x)


def plot(emb, split, out, method="tsne", models=None, seed=0, scores=None, n_classes=0):
    """One panel per model; with n_classes, only that many classes (a seeded choice,
    the same in every panel)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = emb[split + "__labels"]
    chosen = np.ones(len(labels), dtype=bool)
    if n_classes and n_classes < len(np.unique(labels)):
        pick = np.random.default_rng(seed).choice(np.unique(labels), n_classes, replace=False)
        chosen = np.isin(labels, pick)
    labels = labels[chosen]
    names = models or [k.split("__", 1)[1] for k in emb
                       if k.startswith(split + "__") and not k.endswith("__labels")]
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4.4), squeeze=False)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for ax, name in zip(axes[0], names):
        print("plot_embedding: %s %s (%s)" % (split, name, method), flush=True)
        xy = project(emb["%s__%s" % (split, name)][chosen], method, seed)
        for i, c in enumerate(classes):
            sel = labels == c
            ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(i % cmap.N), label=str(c))
        title = name
        if scores and name in scores:
            title += "\nR@1 %.3f  MAP@R %.3f" % (scores[name]["recall@1"],
                                                scores[name].get("map@r", float("nan")))
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(classes) <= 20:
        axes[0][-1].legend(title="class", fontsize=8, markerscale=2.5, loc="center left",
                           bbox_to_anchor=(1.0, 0.5))
    fig.suptitle("%s split, %d classes: %s of L2-normalised embeddings (scores: all classes)"
                 % (split, len(classes), method.upper() if method == "pca" else "t-SNE"))
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _parser():
    p = ArgumentParser(
        prog="python -m npair_examples.plot_embedding",
        formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__,
        epilog="example:\n  python -m npair_examples.plot_embedding runs/digits/embeddings.npz "
               "--split unseen --metrics runs/digits/metrics.json "
               "--out runs/digits/embedding_unseen.png")
    p.add_argument("embeddings", help=".npz written by evaluate --embeddings")
    p.add_argument("--split", default="unseen", help="split to draw (default: unseen)")
    p.add_argument("--models", help="comma-separated models, in order (default: all)")
    p.add_argument("--method", choices=("tsne", "pca"), default="tsne",
                   help="projection (default: tsne)")
    p.add_argument("--metrics", help="metrics.json, to print R@1 and NMI in the titles")
    p.add_argument("--out", default="embedding.png", help="PNG to write")
    p.add_argument("--classes", type=int, default=0,
                   help="draw only this many classes, a seeded choice (default: all)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None):
    args = _parser().parse_args(argv)
    emb = read_npz(args.embeddings)
    if args.split + "__labels" not in emb:
        raise UsageError("no split %r in %s" % (args.split, args.embeddings))
    scores = None
    if args.metrics:
        scores = read_json(args.metrics).get(args.split)
    models = args.models.split(",") if args.models else None
    for name in models or []:
        if "%s__%s" % (args.split, name) not in emb:
            raise UsageError("%s: no model %r in split %r" % (args.embeddings, name, args.split))
    plot(emb, args.split, args.out, args.method, models, args.seed, scores, args.classes)
    print("plot_embedding: wrote %s" % args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run(main, "python -m npair_examples.plot_embedding"))
