"""CrossBatchMemoryLayer: the C++ CrossBatchMemory layer as a Caffe Python layer, for a
pycaffe without it (include/caffe/layers/cross_batch_memory_layer.hpp says what it does).

    layer { name: "memory" type: "Python" bottom: "feat" bottom: "label"
            top: "ref_feat" top: "ref_label"
            param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }
            param { lr_mult: 0 decay_mult: 0 }
            python_param { module: "npair_loss" layer: "CrossBatchMemoryLayer"
                           param_str: "size: 4096 warmup: 250" } }

A first-in-first-out memory of the features and labels of the last `size` training
samples, handed out as references to the N-pair loss (its bottoms 2 and 3). Each TRAIN
forward pass, once `warmup` passes have gone by, first copies the rows the memory holds
to the tops, then stores the batch in place of the oldest rows (wrapping around the
end; of a batch larger than the memory, its last `size` rows): a batch is never its own
reference. During the warm-up and in TEST the tops are empty. Nothing flows back: a
bottom's diff, when asked for, is 0.

The memory and its counters are the layer's three blobs (the rows, their labels, and
the warm-up passes counted, the next row to write and the rows stored), laid out as the
C++ layer's, so a snapshot carries them and a net converted between the two layers
keeps them. The solver must leave them alone, and a Python layer cannot say so itself:
give the layer three `param { lr_mult: 0 decay_mult: 0 }`. A solver that changes them
(what weight decay does to blobs without those) is an error at the next forward pass.
"""
import caffe
import numpy

from .params import MEMORY_LAYER, MEMORY_PARAM_SPEC, parse_memory_param_str

ROWS, LABELS, COUNTERS = 0, 1, 2                    # the blobs
PARAM_SPECS = ' '.join([MEMORY_PARAM_SPEC] * 3)


def _values(row_shape):
    """How many values a row of that shape holds."""
    return int(numpy.prod(row_shape, dtype=numpy.int64))


class CrossBatchMemoryLayer(caffe.Layer):
    """The last `size` training samples, first in first out, as references."""

    def setup(self, bottom, top):
        if len(bottom) != 2:
            raise ValueError(f'{MEMORY_LAYER}: takes 2 bottoms (features, labels), '
                             f'got {len(bottom)}')
        if len(top) != 2:
            raise ValueError(f'{MEMORY_LAYER}: takes 2 tops (the stored features, their '
                             f'labels), got {len(top)}')
        self.size, self.warmup = parse_memory_param_str(self.param_str)
        shape = tuple(bottom[0].shape)
        if len(shape) == 0 or _values(shape[1:]) == 0:
            raise ValueError(f'{MEMORY_LAYER}: bottom[0] (the features) must hold rows of '
                             f'at least one value; got shape {shape}')
        self.row_shape, self.row_values = shape[1:], _values(shape[1:])
        shapes = [(self.size, *self.row_shape), (self.size,), (3,)]
        if len(self.blobs) == 0:
            for s in shapes:
                self.blobs.add_blob(*s)
                self.blobs[len(self.blobs) - 1].data[...] = 0
        elif [tuple(b.shape) for b in self.blobs] != shapes:
            raise ValueError(f'{MEMORY_LAYER}: its blobs have shapes '
                             f'{[tuple(b.shape) for b in self.blobs]}, not those of a memory '
                             f'of {self.size} rows of shape {self.row_shape}: {shapes}')
        self.counters = self.blobs[COUNTERS].data.copy()
        # Tops sized for a full memory once, so that they have memory even while they
        # hold no row: reading an empty blob that never held one aborts the process.
        top[0].reshape(*shapes[0])
        top[1].reshape(*shapes[1])

    def _read_counters(self):
        """The counters blob, as ints. Between two passes only a restored snapshot may
        change it (into another state a memory of this size can be in); anything else
        is a solver updating the memory as if it were weights."""
        values = self.blobs[COUNTERS].data.copy()
        if not numpy.array_equal(values, self.counters):
            passes, next_row, stored = values
            restored = (bool((values == numpy.round(values)).all()) and passes >= 0
                        and 0 <= next_row < self.size and 0 <= stored <= self.size
                        and (stored == self.size or next_row == stored))
            if not restored:
                raise ValueError(
                    f'{MEMORY_LAYER}: the solver changed the memory (its counters '
                    f'{self.counters.tolist()} became {values.tolist()}): its blobs are '
                    f'the memory, not weights; give the layer {PARAM_SPECS}')
            self.counters = values
        return [int(v) for v in values]

    def _rows_handed_out(self):
        """How many rows the tops hold this pass: what is stored, once the warm-up is
        over and in TRAIN; else none."""
        if self.phase != caffe.TRAIN:
            return 0
        passes, _, stored = self._read_counters()
        return stored if passes >= self.warmup else 0

    def reshape(self, bottom, top):
        shape = tuple(bottom[0].shape)
        if len(shape) != len(self.row_shape) + 1 or _values(shape[1:]) != self.row_values:
            raise ValueError(f'{MEMORY_LAYER}: bottom[0] must hold rows of the shape the '
                             f'memory was made for ({self.row_shape} holds '
                             f'{self.row_values} values a row); got shape {shape}')
        n = shape[0]
        labels = bottom[1]
        if len(labels.shape) == 0 or labels.shape[0] != n or labels.count != n:
            raise ValueError(f'{MEMORY_LAYER}: bottom[1] must hold exactly one label per '
                             f'sample, N = {n}; got shape {tuple(labels.shape)}')
        handed = self._rows_handed_out()
        top[0].reshape(handed, *self.row_shape)
        top[1].reshape(handed)

    def forward(self, bottom, top):
        handed = top[1].shape[0]
        if handed:
            top[0].data[...] = self.blobs[ROWS].data[:handed]
            top[1].data[...] = self.blobs[LABELS].data[:handed]
        if self.phase != caffe.TRAIN:
            return
        passes, next_row, stored = self._read_counters()
        if passes < self.warmup:
            self._write_counters(passes + 1, next_row, stored)
            return
        # The batch's rows in place of the oldest, wrapping around the end; of a batch
        # larger than the memory, only its last `size` rows stay.
        n = bottom[0].shape[0]
        if n:
            rows, labels = self.blobs[ROWS].data, self.blobs[LABELS].data
            batch_rows = bottom[0].data.reshape(n, *self.row_shape)
            batch_labels = bottom[1].data.reshape(n)
            i = max(0, n - self.size)
            while i < n:
                run = min(n - i, self.size - next_row)
                rows[next_row:next_row + run] = batch_rows[i:i + run]
                labels[next_row:next_row + run] = batch_labels[i:i + run]
                i += run
                next_row = (next_row + run) % self.size
        self._write_counters(passes, next_row, min(self.size, stored + n))

    def _write_counters(self, *values):
        self.blobs[COUNTERS].data[...] = values
        self.counters = self.blobs[COUNTERS].data.copy()

    def backward(self, top, propagate_down, bottom):
        for b in range(2):
            if propagate_down[b] and bottom[b].count > 0:
                bottom[b].diff[...] = 0
