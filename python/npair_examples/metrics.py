"""Retrieval and clustering metrics of the N-pair paper's tables (NumPy + sklearn).

Recall@K: every sample of the evaluation set queries all the *other* samples
by cosine similarity of L2-normalised embeddings; it is a hit at K when a
sample of its own class is among its K nearest. Ties are broken against the
query (a sample of another class as similar as the best same-class one ranks
ahead of it), as the loss layer's in-batch R@K does, so collapsed embeddings
score low rather than perfect. Queries whose class has no other sample are
not counted.

NMI: k-means with k = the number of classes on the normalised embeddings,
then sklearn's normalized_mutual_info_score against the true labels.
"""

import numpy as np

RECALL_KS = (1, 2, 4, 8)


def l2_normalize(x, eps=1e-12):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.sqrt((x * x).sum(axis=1, keepdims=True) + eps)


def recall_at_k(embeddings, labels, ks=RECALL_KS, chunk=1024):
    """{k: recall} over the whole set (query vs. all other samples, cosine)."""
    x = l2_normalize(embeddings)
    labels = np.asarray(labels).reshape(-1)
    n = len(labels)
    if n != len(x):
        raise ValueError("%d embeddings but %d labels" % (len(x), n))
    # c[i]: samples of another class at least as similar as i's best same-class one
    c = np.empty(n, dtype=np.int64)
    eligible = np.zeros(n, dtype=bool)
    for start in range(0, n, chunk):
        rows = np.arange(start, min(n, start + chunk))
        s = x[rows] @ x.T
        same = labels[rows, None] == labels[None, :]
        same[np.arange(len(rows)), rows] = False          # a query is not its own match
        eligible[rows] = same.any(axis=1)
        best = np.where(same, s, -np.inf).max(axis=1)
        other = labels[rows, None] != labels[None, :]
        c[rows] = (other & (s >= best[:, None])).sum(axis=1)
    if not eligible.any():
        return {k: 0.0 for k in ks}
    return {k: float((c[eligible] < k).mean()) for k in ks}


def nmi(embeddings, labels, n_clusters=None, seed=0):
    """NMI of k-means clusters (k = number of classes) of the normalised embeddings."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score
    labels = np.asarray(labels).reshape(-1)
    k = n_clusters or len(np.unique(labels))
    pred = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(
        l2_normalize(embeddings))
    return float(normalized_mutual_info_score(labels, pred))


def retrieval_metrics(embeddings, labels, ks=RECALL_KS, seed=0):
    """The paper's row: {"recall@1": ..., ..., "nmi": ...}."""
    out = {"recall@%d" % k: v for k, v in recall_at_k(embeddings, labels, ks).items()}
    out["nmi"] = nmi(embeddings, labels, seed=seed)
    return out
