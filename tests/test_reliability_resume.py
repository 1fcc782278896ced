"""Snapshot and resume on CPU: training that is interrupted at a snapshot and resumed from
its .solverstate reproduces the uninterrupted run bit for bit.

A small self-contained setup, written into a tmp dir: HDF5 data in N-pair batches (TRAIN
batch 10, TEST batch 6, each test reading the whole test file), InnerProduct -> ReLU ->
InnerProduct -> L2Normalize -> NPairMultiClassLoss with the usage block's mining, SGD
with momentum, weight decay and a step learning rate that changes after the snapshot.

  - `caffe train`, 18 iterations, snapshots every 6; then `caffe train --snapshot=
    ..._iter_6.solverstate` in another directory: every loss, R@K and test output that
    both runs log from iteration 6 on is the same text, and the final weights and momentum
    history are the same bits (BINARYPROTO and HDF5 snapshots); the same with a
    CrossBatchMemory of 23 rows (warm-up 1) feeding the loss's references, which has
    wrapped around twice when the snapshot is taken: its rows, labels and counters end
    the same bits too;
  - pycaffe: Solver.restore() then step(): every iteration's loss is the same float32.

What makes it exact, and what would not be:
  - the solverstate holds the iteration, the weights (its .caffemodel), the momentum
    history and so the learning-rate schedule; the layers are deterministic on CPU;
  - Caffe's HDF5Data layer does not save its read position: a resumed run starts reading
    its files from the beginning. Here the snapshot iteration (6) is a whole number of
    passes over the training file (60 samples, batch 10), so both runs read the same
    batches; resuming at iteration 4 would train on other batches than the uninterrupted
    run did (the digits example's 3550 batches: resume at a multiple of 3550 to replay);
  - the solverstate holds no random-number state: a net with Dropout, or shuffle: true in
    HDF5Data, would draw differently after a resume (this net draws nothing after set-up);
  - Caffe's "Iteration N, loss = " line is a running average that a resumed run
    restarts, so it can differ by float rounding (5.96e-08 against 0 was seen);
  - feature_asum, a monitor, is a BLAS sasum whose order of summation depends on the
    alignment of the features in memory, so it is compared to float32 rounding, not bits.
"""
import math
import os
import re
import shutil
import subprocess

import numpy as np
import pytest

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')
h5py = pytest.importorskip('h5py')

from caffe.proto import caffe_pb2  # noqa: E402
from conftest import USAGE_PARAM_STR  # noqa: E402

CAFFE = shutil.which('caffe')
needs_caffe_tool = pytest.mark.skipif(
    CAFFE is None, reason='`caffe` is not on PATH (build the fork, then source build/env.sh)')

NET = '''name: "ResumeNPair"
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TRAIN }
  hdf5_data_param { source: "train.txt" batch_size: 10 shuffle: false } }
layer { name: "data" type: "HDF5Data" top: "data" top: "label" include { phase: TEST }
  hdf5_data_param { source: "test.txt" batch_size: 6 shuffle: false } }
layer { name: "fc1" type: "InnerProduct" bottom: "data" top: "fc1"
  inner_product_param { num_output: 16 weight_filler { type: "xavier" }
                        bias_filler { type: "constant" value: 0.1 } } }
layer { name: "relu1" type: "ReLU" bottom: "fc1" top: "fc1" }
layer { name: "embed" type: "InnerProduct" bottom: "fc1" top: "embed"
  inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
layer { name: "norm" type: "L2Normalize" bottom: "embed" top: "embed_norm" }
layer { name: "loss" type: "NPairMultiClassLoss" bottom: "embed_norm" bottom: "label"{refs}
  top: "npair_loss" top: "retrieve_top1" top: "retrieve_top5" top: "retrieve_top10"
  top: "feature_asum"
  loss_weight: 1 loss_weight: 0 loss_weight: 0 loss_weight: 0 loss_weight: 0
  npair_loss_param {''' + USAGE_PARAM_STR + '''} }
'''
# The memory: 23 rows, filled from iteration 1, 10 rows an iteration: at the snapshot
# (iteration 6, after 5 stores) it has wrapped twice and its next row is 50 mod 23 = 4.
MEMORY = '''layer { name: "memory" type: "CrossBatchMemory" bottom: "embed_norm" bottom: "label"
  top: "memory" top: "memory_label" propagate_down: false propagate_down: false
  cross_batch_memory_param { size: 23 warmup: 1 } }
'''
MEMORY_AT_SNAPSHOT = [1, 4, 23]             # warm-up passes, next row, rows stored

SOLVER = '''net: "net.prototxt"
test_iter: 6
test_interval: 4
base_lr: 0.2
momentum: 0.9
weight_decay: 0.0005
lr_policy: "step"
gamma: 0.5
stepsize: 9
max_iter: 18
display: 1
snapshot: 6
snapshot_prefix: "snap"
snapshot_format: {format}
random_seed: 7
solver_mode: CPU
'''
SNAPSHOT_AT, MAX_ITER = 6, 18


def npair_batches(rng, n_batches, classes, per_batch, dim=12):
    """Features of class centres plus noise, in batches of per_batch classes x 2."""
    centres = rng.normal(size=(classes, dim))
    labels = np.concatenate([np.repeat(rng.choice(classes, per_batch, replace=False), 2)
                             for _ in range(n_batches)])
    data = centres[labels] + 1.5 * rng.normal(size=(len(labels), dim))
    return data.astype(np.float32), labels.astype(np.float32)


def write_setup(directory, snapshot_format='BINARYPROTO', memory=False):
    """net, solver and data in directory (paths in them relative to it); with memory, the
    loss takes its references from a CrossBatchMemory."""
    rng = np.random.default_rng(2024)
    for name, (data, labels) in (('train', npair_batches(rng, 6, 8, 5)),     # 60: 6 iters
                                 ('test', npair_batches(rng, 6, 8, 3))):     # 36 = 6 x 6
        with h5py.File(directory / f'{name}.h5', 'w') as f:
            f['data'], f['label'] = data, labels
        (directory / f'{name}.txt').write_text(f'{name}.h5\n')
    refs = '\n  bottom: "memory" bottom: "memory_label"' if memory else ''
    loss_at = NET.index('layer { name: "loss"')
    (directory / 'net.prototxt').write_text(
        NET[:loss_at] + (MEMORY if memory else '') + NET[loss_at:].replace('{refs}', refs))
    (directory / 'solver.prototxt').write_text(SOLVER.format(format=snapshot_format))


def caffe_train(directory, *args):
    env = dict(os.environ, GLOG_logtostderr='1', GLOG_minloglevel='0',
               OPENBLAS_NUM_THREADS='1')
    p = subprocess.run([CAFFE, 'train', '--solver=solver.prototxt', *args], cwd=directory,
                       env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=300)
    assert p.returncode == 0 and 'Optimization Done' in p.stdout, p.stdout[-3000:]
    return p.stdout


def logged_outputs(log):
    """{(iteration, 'train' | 'test', name): the value as logged}, and the loss line's."""
    out, iteration, phase = {}, None, None
    for line in log.splitlines():
        m = re.search(r'\] Iteration (\d+)(?:,| \().*?(?:loss = (\S+)|Testing net)', line)
        if m:
            iteration = int(m.group(1))
            phase = 'train' if m.group(2) is not None else 'test'
            if m.group(2) is not None:
                out[iteration, 'train', 'loss line'] = m.group(2)
            continue
        m = re.search(r'(Train|Test) net output #\d+: (\S+) = (\S+)', line)
        if m and iteration is not None:
            assert m.group(1).lower() == phase, line
            out[iteration, phase, m.group(2)] = m.group(3)
    return out


def weights(path):
    """{layer: [blob arrays]} of a .caffemodel or .caffemodel.h5."""
    if path.suffix == '.h5':
        with h5py.File(path, 'r') as f:
            return {name: [f['data'][name][k][()] for k in sorted(f['data'][name], key=int)]
                    for name in f['data'] if len(f['data'][name])}
    net = caffe_pb2.NetParameter()
    net.ParseFromString(path.read_bytes())
    return {layer.name: [np.array(b.data, np.float32) for b in layer.blobs]
            for layer in net.layer if layer.blobs}


def history(path):
    """The solver's momentum history of a .solverstate or .solverstate.h5."""
    if path.suffix == '.h5':
        with h5py.File(path, 'r') as f:
            return [f['history'][k][()] for k in sorted(f['history'], key=int)], \
                int(np.asarray(f['iter'][()]).reshape(-1)[0])
    state = caffe_pb2.SolverState()
    state.ParseFromString(path.read_bytes())
    return [np.array(b.data, np.float32) for b in state.history], state.iter


def assert_same_bits(a, b, what):
    assert len(a) == len(b), what
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes(), what


@needs_caffe_tool
@pytest.mark.parametrize('memory', [False, True], ids=['batch', 'memory'])
@pytest.mark.parametrize('snapshot_format', ['BINARYPROTO', 'HDF5'])
def test_caffe_train_resumed_from_a_snapshot(snapshot_format, memory, tmp_path):
    whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'
    for directory in (whole, resumed):
        directory.mkdir()
        write_setup(directory, snapshot_format, memory)
    ext = '.h5' if snapshot_format == 'HDF5' else ''
    log_whole = caffe_train(whole)
    for suffix in ('caffemodel', 'solverstate'):
        name = f'snap_iter_{SNAPSHOT_AT}.{suffix}{ext}'
        shutil.copy(whole / name, resumed / name)
    log_resumed = caffe_train(resumed, f'--snapshot=snap_iter_{SNAPSHOT_AT}.solverstate{ext}')
    assert f'Resuming from snap_iter_{SNAPSHOT_AT}.solverstate' in log_resumed

    a, b = logged_outputs(log_whole), logged_outputs(log_resumed)
    shared = sorted(key for key in a if key[0] >= SNAPSHOT_AT)
    assert sorted(b) == shared, 'the resumed run logs other iterations or outputs'
    assert {key[1] for key in shared} == {'train', 'test'}
    for key in shared:
        if key[2] == 'loss line':
            # Caffe's smoothed loss: the uninterrupted run updates a running value
            # (s += loss - previous), the resumed one starts it afresh (s = loss). The
            # float rounding of those updates may move the value across a rounding
            # boundary of the 6 significant digits Caffe prints: one printed unit apart.
            unit = 10.0 ** (math.floor(math.log10(abs(float(a[key])) or 1.0)) - 5)
            assert abs(float(b[key]) - float(a[key])) <= unit * (1 + 1e-9), key
        elif key[2] == 'feature_asum':
            assert float(b[key]) == pytest.approx(float(a[key]), rel=2e-5), key
        else:
            assert b[key] == a[key], f'{key}: {b[key]} resumed, {a[key]} uninterrupted'
    assert all(float(a[i, 'train', 'npair_loss']) > 0               # something to learn
               for i in range(SNAPSHOT_AT, MAX_ITER))

    final = f'snap_iter_{MAX_ITER}'
    w_whole = weights(whole / f'{final}.caffemodel{ext}')
    w_resumed = weights(resumed / f'{final}.caffemodel{ext}')
    assert sorted(w_whole) == sorted(w_resumed) == ['embed', 'fc1'] + ['memory'] * memory
    if memory:
        at_snapshot = weights(whole / f'snap_iter_{SNAPSHOT_AT}.caffemodel{ext}')['memory']
        assert at_snapshot[2].tolist() == MEMORY_AT_SNAPSHOT
        assert w_whole['memory'][2].tolist() == [1, (MAX_ITER - 1) * 10 % 23, 23]
    for layer in w_whole:
        assert_same_bits(w_whole[layer], w_resumed[layer], f'final weights of {layer} differ')
    for directory in (whole, resumed):
        assert history(directory / f'{final}.solverstate{ext}')[1] == MAX_ITER
    assert_same_bits(history(whole / f'{final}.solverstate{ext}')[0],
                     history(resumed / f'{final}.solverstate{ext}')[0],
                     'final momentum history differs')
    # The run did train: the weights moved from the snapshot's.
    start = weights(whole / f'snap_iter_{SNAPSHOT_AT}.caffemodel{ext}')
    assert any(x.tobytes() != y.tobytes() for layer in start
               for x, y in zip(start[layer], w_whole[layer]))


def test_pycaffe_restore_then_step(cpp_layer, tmp_path, monkeypatch):
    """The same through pycaffe, compared as float32 bits at every iteration."""
    write_setup(tmp_path)
    monkeypatch.chdir(tmp_path)

    def losses(solver, iterations):
        out = []
        for _ in range(iterations):
            solver.step(1)
            out.append((solver.net.blobs['npair_loss'].data.copy(),
                        solver.net.blobs['retrieve_top1'].data.copy(),
                        float(solver.net.blobs['feature_asum'].data)))
        return out

    whole = cpp_layer.get_solver('solver.prototxt')
    before = losses(whole, SNAPSHOT_AT)
    after = losses(whole, MAX_ITER - SNAPSHOT_AT)
    assert (tmp_path / f'snap_iter_{SNAPSHOT_AT}.solverstate').exists()
    resumed = cpp_layer.get_solver('solver.prototxt')
    resumed.restore(f'snap_iter_{SNAPSHOT_AT}.solverstate')
    assert resumed.iter == SNAPSHOT_AT
    again = losses(resumed, MAX_ITER - SNAPSHOT_AT)
    for k, ((loss, r1, asum), (loss2, r1_2, asum2)) in enumerate(zip(after, again)):
        assert loss.tobytes() == loss2.tobytes() and r1.tobytes() == r1_2.tobytes(), \
            f'iteration {SNAPSHOT_AT + k}: {loss2} resumed, {loss} uninterrupted'
        assert asum2 == pytest.approx(asum, rel=1e-6)
    # And it learned: the mean loss over the third pass through the training batches is
    # below the first pass's.
    assert np.mean([float(x[0]) for x in after[-SNAPSHOT_AT:]]) < \
        np.mean([float(x[0]) for x in before])
