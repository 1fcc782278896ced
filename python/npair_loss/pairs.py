"""The pairs of a batch (docs/layer_contract.md §3), array-generic (NumPy or CuPy).

Query i (one of the N batch samples) is paired with each of its candidates: the N batch
samples, then the M references, C = N + M columns in all, so every N x C array here has
the batch's square block first. Column i of row i is the query itself, never a pair.
Positive pairs are few (a class has a few samples in a batch, and a few more in a
memory), so they are listed by index rather than held as an N x C array; the miner and
the loss both read their values through that list.
"""
from typing import NamedTuple

from .arrays import array_module


def label_relation(labels, ref_labels=None, out=None):
    """same_ic = (y_i == label of candidate c), N x C: the batch's labels against its
    own and then the references' (none when ref_labels is None or empty). The diagonal
    is True except where y_i is NaN (a NaN label equals no label): a pass over
    negatives must leave c == i out itself, never read it off ~same."""
    xp = array_module(labels)
    candidates = labels
    if ref_labels is not None and len(ref_labels):
        candidates = xp.concatenate([labels, ref_labels])
    return xp.equal(labels[:, None], candidates[None, :], out=out)


class Positives(NamedTuple):
    """The positive pairs (i, c): c != i, candidate c has y_i, in row-major order."""
    at: object              # flat indices i * C + c, ascending
    row: object             # i of each
    slot: object            # its place among row i's positives
    count: object           # positives per row (N,)
    width: int              # the largest count


def positive_pairs(same):
    """Positives from the label relation `same` (label_relation's, N x C)."""
    xp = array_module(same)
    n, c = same.shape
    at = xp.flatnonzero(same)
    at = at[at % (c + 1) != 0]                      # (i, i): the query itself
    row = at // c
    count = xp.count_nonzero(same, axis=1) - xp.diagonal(same)
    start = xp.cumsum(count) - count
    slot = xp.arange(len(at)) - start[row]
    return Positives(at=at, row=row, slot=slot, count=count,
                     width=int(count.max()) if n else 0)


def by_row(values, pos, fill):
    """values, one per positive pair, as an N x max(width, 1) array: row i holds row i's
    values, then `fill`. Reducing it along its rows reduces over each row's positives."""
    xp = array_module(values)
    out = xp.full((len(pos.count), max(pos.width, 1)), fill, dtype=values.dtype)
    out[pos.row, pos.slot] = values
    return out
