"""CrossBatchMemory: the Python-layer twin (npair_loss.CrossBatchMemoryLayer) against the
C++ layer through pycaffe, step by step (warm-up, filling, wrap-around, a batch larger
than the memory, a batch of other sizes, TEST), the two memories feeding the N-pair loss,
the twin's blobs under a solver (with and without the param specs it needs) and through
a snapshot, and its errors.

Empty tops are compared by shape, and their data read only when they hold rows."""
import numpy as np
import pytest

import npair_reference as ref

caffe = pytest.importorskip('caffe', reason='pycaffe not importable: source build/env.sh')

from npair_loss.memory_layer import PARAM_SPECS  # noqa: E402

LAYER = 'CrossBatchMemory (Python)'


def memory_layer(name, layer_type, size, warmup, bottoms=('feat', 'label'),
                 tops=None, params=PARAM_SPECS, param_str=None):
    """One memory layer, C++ or the twin, with tops <name>_ref and <name>_ref_label."""
    tops = (f'{name}_ref', f'{name}_ref_label') if tops is None else tops
    head = (f'layer {{ name: "{name}" {" ".join(f"bottom: {b!r}" for b in bottoms)} '
            f'{" ".join(f"top: {t!r}" for t in tops)}').replace("'", '"')
    param_str = f'size: {size} warmup: {warmup}' if param_str is None else param_str
    if layer_type == 'CrossBatchMemory':
        return (f'{head} type: "CrossBatchMemory"\n'
                f'  cross_batch_memory_param {{ size: {size} warmup: {warmup} }} }}\n')
    return (f'{head} type: "Python" {params}\n'
            f'  python_param {{ module: "npair_loss" layer: "CrossBatchMemoryLayer"\n'
            f'                 param_str: "{param_str}" }} }}\n')


def input_layer(N, row_shape):
    dims = ' '.join(f'dim: {d}' for d in (N, *row_shape))
    return (f'layer {{ name: "data" type: "Input" top: "feat" top: "label"\n'
            f'  input_param {{ shape {{ {dims} }} shape {{ dim: {N} }} }} }}\n')


@pytest.fixture
def write(tmp_path):
    def write_text(text, name='net.prototxt'):
        path = tmp_path / name
        path.write_text(text)
        return str(path)
    return write_text


def tops_of(net, name):
    """(rows, labels) that a memory's tops hold, as arrays; never the data of an empty
    blob."""
    rows, labels = net.blobs[f'{name}_ref'], net.blobs[f'{name}_ref_label']
    assert rows.shape[0] == labels.shape[0] == labels.count
    if labels.count == 0:
        return np.zeros((0, *tuple(rows.shape)[1:]), np.float32), np.zeros(0, np.float32)
    return rows.data.copy(), labels.data.copy()


def memory_blobs(net, name):
    return [b.data.copy() for b in net.params[name]]


def forward(net, X, labels):
    """One forward pass of the net on a batch of any size."""
    net.blobs['feat'].reshape(*X.shape)
    net.blobs['label'].reshape(len(labels))
    net.reshape()
    net.blobs['feat'].data[...] = X
    net.blobs['label'].data[...] = labels
    net._forward(0, len(net.layers) - 1)
    return net.blobs['feat'].data.copy(), net.blobs['label'].data.copy()


def feed(net, rng, N, row_shape, tag):
    """A batch of N rows of that shape (values that say which step and row they are)."""
    return forward(net, tag + rng.normal(size=(N, *row_shape)), tag * 100 + np.arange(N))


def test_twin_follows_the_cpp_layer_step_by_step(cpp_layer, write):
    """size 7, warm-up 2, batches of 3 then one of 10 and of 2: the same tops at every
    step, the memory's blobs equal, and a FIFO model of what they must hold."""
    size, warmup, row_shape = 7, 2, (2, 3)
    text = (input_layer(3, row_shape) + memory_layer('cpp', 'CrossBatchMemory', size, warmup)
            + memory_layer('py', 'Python', size, warmup))
    net = cpp_layer.Net(write(text), cpp_layer.TRAIN)
    assert [tuple(b.shape) for b in net.params['py']] == [(7, 2, 3), (7,), (3,)]
    rng = np.random.default_rng(0)
    stored_rows, stored_labels, next_row, passes = np.zeros((7, 2, 3)), np.zeros(7), 0, 0
    held = 0
    for step, N in enumerate([3, 3, 3, 3, 3, 3, 10, 2, 3, 3]):
        X, y = feed(net, rng, N, row_shape, step)
        # The model: the tops hold what was stored before this pass, after the warm-up.
        expected = held if passes >= warmup else 0
        for name in ('cpp', 'py'):
            rows, labels = tops_of(net, name)
            assert rows.shape == (expected, 2, 3), (step, name)
            np.testing.assert_array_equal(rows, stored_rows[:expected].astype(np.float32))
            np.testing.assert_array_equal(labels, stored_labels[:expected].astype(np.float32))
        cpp, py = memory_blobs(net, 'cpp'), memory_blobs(net, 'py')
        for a, b in zip(cpp, py):
            assert a.tobytes() == b.tobytes(), step
        if passes < warmup:
            passes += 1
        else:
            for i in range(max(0, N - size), N):
                stored_rows[next_row], stored_labels[next_row] = X[i], y[i]
                next_row = (next_row + 1) % size
            held = min(size, held + N)
        assert py[2].tolist() == [passes, next_row, held], step
    assert held == size and next_row != 0               # it wrapped, mid-memory

    # TEST: the tops are empty and the memory stays as it is (a TEST net shares it).
    test_net = cpp_layer.Net(write(text, 'test.prototxt'), cpp_layer.TEST)
    test_net.share_with(net)
    before = memory_blobs(net, 'cpp') + memory_blobs(net, 'py')
    for step in range(3):
        feed(test_net, rng, 4, row_shape, 50 + step)
        for name in ('cpp', 'py'):
            assert tops_of(test_net, name)[0].shape == (0, 2, 3)
    after = memory_blobs(net, 'cpp') + memory_blobs(net, 'py')
    assert all(a.tobytes() == b.tobytes() for a, b in zip(before, after))


def test_snapshots_of_the_two_layers_are_interchangeable(cpp_layer, write, tmp_path):
    """The C++ layer's blobs saved after it has wrapped, loaded into a fresh twin (and the
    other way round): both go on with the same tops."""
    rng = np.random.default_rng(4)
    text = {kind: input_layer(3, (2,)) + memory_layer('memory', kind, 5, 1)
            for kind in ('CrossBatchMemory', 'Python')}
    for first, second in (('CrossBatchMemory', 'Python'), ('Python', 'CrossBatchMemory')):
        net = cpp_layer.Net(write(text[first], 'first.prototxt'), cpp_layer.TRAIN)
        for step in range(4):
            feed(net, rng, 3, (2,), step)
        net.save(str(tmp_path / 'memory.caffemodel'))
        other = cpp_layer.Net(write(text[second], 'second.prototxt'),
                              str(tmp_path / 'memory.caffemodel'), cpp_layer.TRAIN)
        assert memory_blobs(other, 'memory')[2].tolist() == [1, 4, 5]
        for step in range(4, 8):
            forward(other, *feed(net, rng, 3, (2,), step))
            for a, b in zip(tops_of(net, 'memory'), tops_of(other, 'memory')):
                assert a.tobytes() == b.tobytes(), (first, step)


def pipeline(layer_type, size, warmup):
    """Input -> InnerProduct -> L2Normalize -> memory -> N-pair loss with references, both
    of one kind (C++ or Python)."""
    if layer_type == 'CrossBatchMemory':
        loss = ('type: "NPairMultiClassLoss" npair_loss_param { an_mining_method: HARD '
                'margin_diff: -0.05 }')
    else:
        loss = ('type: "Python" loss_weight: 1 loss_weight: 0 python_param { module: '
                '"npair_loss" layer: "NPairMultiClassLossLayer" '
                'param_str: "an_mining_method: HARD margin_diff: -0.05" }')
    return (input_layer(8, (5,)) + '''
layer { name: "embed" type: "InnerProduct" bottom: "feat" top: "embed"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
layer { name: "norm" type: "L2Normalize" bottom: "embed" top: "norm" }
''' + memory_layer('memory', layer_type, size, warmup, bottoms=('norm', 'label'))
            + f'''layer {{ name: "loss" bottom: "norm" bottom: "label" bottom: "memory_ref"
  bottom: "memory_ref_label" top: "loss" top: "asum" {loss} }}
''')


def test_the_two_memories_feed_the_loss_alike(cpp_layer, write):
    """C++ memory into the C++ loss, the twin into the fallback: the same losses and
    gradients at every step through warm-up, filling and wrap-around; nothing flows back
    through either memory (the features' diff is the loss's own gradient, though the
    loss sends the references theirs)."""
    nets = [cpp_layer.Net(write(pipeline(layer_type, 12, 1), f'{layer_type}.prototxt'),
                          cpp_layer.TRAIN) for layer_type in ('CrossBatchMemory', 'Python')]
    for a, b in zip(nets[0].params['embed'], nets[1].params['embed']):
        b.data[...] = a.data                         # the same weights
    rng = np.random.default_rng(3)
    for step in range(6):
        X = rng.normal(size=(8, 5)).astype(np.float32)
        labels = np.repeat(rng.choice(20, 4, replace=False), 2).astype(np.float32)
        results = []
        for net in nets:
            net.blobs['feat'].data[...] = X
            net.blobs['label'].data[...] = labels
            net._forward(0, len(net.layers) - 1)
            net._backward(len(net.layers) - 1, 0)
            M = net.blobs['memory_ref_label'].count
            results.append((M, float(net.blobs['loss'].data), net.blobs['embed'].diff.copy(),
                            net.blobs['norm'].data.copy()))
        (m0, loss0, grad0, norm0), (m1, loss1, grad1, norm1) = results
        assert m0 == m1 == min(12, 8 * max(0, step - 1)), step
        assert loss1 == pytest.approx(loss0, rel=1e-5, abs=1e-7), step
        assert np.abs(grad1 - grad0).max() <= 1e-4 * max(np.abs(grad0).max(), 1e-12), step
        # The features' gradient is the loss's alone: the memory sends back nothing.
        M = m1
        refs = nets[1].blobs['memory_ref']
        R = refs.data.copy() if M else None
        z = nets[1].blobs['memory_ref_label'].data.copy() if M else None
        result = ref.evaluate(norm1, labels, ref.Params(an_mining_method='HARD',
                                                          margin_diff=-0.05),
                              R=R, ref_labels=z)
        np.testing.assert_allclose(nets[1].blobs['norm'].diff, result.grad,
                                   atol=1e-4 * max(np.abs(result.grad).max(), 1e-12))


SOLVER = '''net: "{net}"
base_lr: 0.1
momentum: 0.9
weight_decay: 0.0005
lr_policy: "fixed"
max_iter: 100
display: 0
snapshot_after_train: false
random_seed: 1
snapshot_prefix: "{prefix}"
'''


def solver_net(params):
    return (input_layer(8, (5,)) + '''
layer { name: "embed" type: "InnerProduct" bottom: "feat" top: "embed"
  inner_product_param { num_output: 4 weight_filler { type: "gaussian" std: 0.5 } } }
''' + memory_layer('memory', 'Python', 20, 1, bottoms=('embed', 'label'), params=params) + '''
layer { name: "loss" type: "Python" bottom: "embed" bottom: "label" bottom: "memory_ref"
  bottom: "memory_ref_label" top: "loss" loss_weight: 1
  python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer" } }
''')


def make_solver(caffe_module, write, tmp_path, params):
    net = write(solver_net(params))
    solver = write(SOLVER.format(net=net, prefix=tmp_path / 'snap'), 'solver.prototxt')
    s = caffe_module.SGDSolver(solver)
    rng = np.random.default_rng(5)
    s.net.blobs['feat'].data[...] = rng.normal(size=(8, 5))
    s.net.blobs['label'].data[...] = np.repeat(np.arange(4), 2)
    return s


def test_a_solver_that_changes_the_memory_is_an_error(caffe, write, tmp_path):
    """Without the param specs the solver decays the twin's blobs as weights: the next
    forward pass says what to add."""
    solver = make_solver(caffe, write, tmp_path, params='')
    solver.step(1)                                   # the warm-up pass, counted
    with pytest.raises(ValueError) as e:
        solver.step(1)
    message = str(e.value)
    assert '\n' not in message and message.startswith(f'{LAYER}: the solver changed the memory')
    assert message.endswith(f'give the layer {PARAM_SPECS}')


def test_with_its_param_specs_the_solver_leaves_the_memory_alone(caffe, write, tmp_path):
    solver = make_solver(caffe, write, tmp_path, params=PARAM_SPECS)
    for _ in range(6):
        before = memory_blobs(solver.net, 'memory')
        solver.step(1)
        after = memory_blobs(solver.net, 'memory')
        passes, next_row, stored = before[2]
        if passes >= 1:                              # this step stored the batch's rows
            rows = [(int(next_row) + k) % 20 for k in range(8)]
            np.testing.assert_array_equal(after[0][rows], solver.net.blobs['embed'].data)
            keep = [r for r in range(20) if r not in rows]
            np.testing.assert_array_equal(after[0][keep], before[0][keep])
    assert memory_blobs(solver.net, 'memory')[2].tolist() == [1, 0, 20]


def test_twin_memory_survives_a_snapshot(caffe, write, tmp_path):
    """Solver.snapshot() then restore() in a fresh solver: the same memory, the same
    losses from there on, to the bit."""
    solver = make_solver(caffe, write, tmp_path, params=PARAM_SPECS)
    solver.step(4)
    solver.snapshot()
    losses = []
    for _ in range(4):
        solver.step(1)
        losses.append(solver.net.blobs['loss'].data.copy())
    final = memory_blobs(solver.net, 'memory')
    resumed = make_solver(caffe, write, tmp_path, params=PARAM_SPECS)
    resumed.restore(str(tmp_path / 'snap_iter_4.solverstate'))
    assert memory_blobs(resumed.net, 'memory')[2].tolist() == [1, 4, 20]
    for loss in losses:
        resumed.step(1)
        assert resumed.net.blobs['loss'].data.tobytes() == loss.tobytes()
    for a, b in zip(final, memory_blobs(resumed.net, 'memory')):
        assert a.tobytes() == b.tobytes()


BAD = {
    'size 0': (dict(param_str='size: 0'),
               'size, how many samples the memory holds, must be given and at least 1; '
               'got 0'),
    'no size': (dict(param_str='warmup: 3'),
                'size, how many samples the memory holds, must be given and at least 1; '
                'got 0'),
    'size too large': (dict(param_str='size: 16777217'), 'size must be at most 16777216'),
    'unknown field': (dict(param_str='sise: 4'), 'bad param_str: 1:1 : Message type '
                      '"caffe_npair.CrossBatchMemoryParameter" has no field named "sise"'),
    'negative size': (dict(param_str='size: -4'), 'bad param_str (field size)'),
    'not text format': (dict(param_str='{size: 4}'), 'bad param_str'),
    'one bottom': (dict(bottoms=('feat',)), 'takes 2 bottoms (features, labels), got 1'),
    'three tops': (dict(tops=('a', 'b', 'c')),
                   'takes 2 tops (the stored features, their labels), got 3'),
}


@pytest.mark.parametrize('name', BAD)
def test_bad_configuration_is_an_error_naming_the_layer(name, caffe, write):
    change, message = BAD[name]
    text = input_layer(4, (3,)) + memory_layer('memory', 'Python', 8, 0, **change)
    with pytest.raises(ValueError) as e:
        caffe.Net(write(text), caffe.TRAIN)
    assert '\n' not in str(e.value) and str(e.value).startswith(f'{LAYER}: {message}'), \
        str(e.value)


@pytest.mark.parametrize('feat_shape, label_shape, message', [
    ((4, 2), (4,), 'bottom[0] must hold rows of the shape the memory was made for ((3,) '
                   'holds 3 values a row); got shape (4, 2)'),
    ((4, 3, 1), (4,), 'bottom[0] must hold rows of the shape the memory was made for ((3,) '
                      'holds 3 values a row); got shape (4, 3, 1)'),
    ((5, 3), (4,), 'bottom[1] must hold exactly one label per sample, N = 5; got shape (4,)'),
], ids=['other D', 'other axes', 'label count'])
def test_batches_that_do_not_fit_are_an_error(feat_shape, label_shape, message, caffe, write):
    net = caffe.Net(write(input_layer(4, (3,)) + memory_layer('memory', 'Python', 8, 0)),
                    caffe.TRAIN)
    net.blobs['feat'].reshape(*feat_shape)
    net.blobs['label'].reshape(*label_shape)
    with pytest.raises(ValueError) as e:
        net.reshape()
    assert str(e.value) == f'{LAYER}: {message}'


def test_features_without_values_are_an_error(caffe, write):
    with pytest.raises(ValueError) as e:
        caffe.Net(write(input_layer(4, (0,)) + memory_layer('memory', 'Python', 8, 0)),
                  caffe.TRAIN)
    assert str(e.value) == (f'{LAYER}: bottom[0] (the features) must hold rows of at least '
                            'one value; got shape (4, 0)')


@pytest.mark.parametrize('as_in_the_example', [True, False], ids=['example', 'no-propagate-down'])
def test_the_example_loss_computes_no_gradient_for_the_memory(cpp_layer, write,
                                                              as_in_the_example):
    """The memory's blobs are parameters to the net, so Caffe asks the loss for the
    references' gradient unless the loss says propagate_down: false for them, as the
    example's net does (npair_examples.glyph_nets): then the memory's top keeps the
    zero diff it was made with; without it the loss fills that diff (the control)."""
    from npair_examples import glyph_nets
    loss = glyph_nets.npair_loss('embed_norm', 'an_mining_method: HARD', references=True)
    if not as_in_the_example:
        loss = loss.replace('propagate_down: true propagate_down: false '
                            'propagate_down: false propagate_down: false', '')
    # The features through a Bias (0): they need a gradient, as a trunk's do.
    net = cpp_layer.Net(write(
        input_layer(8, (4,))
        + 'layer { name: "trunk" type: "Bias" bottom: "feat" top: "embed_norm" }\n'
        + glyph_nets.memory(size=16, warmup=0) + loss), cpp_layer.TRAIN)
    rng = np.random.default_rng(5)
    for step in range(3):
        X = rng.normal(size=(8, 4))
        net.blobs['feat'].data[...] = X / np.linalg.norm(X, axis=1, keepdims=True)
        net.blobs['label'].data[...] = np.repeat(np.arange(4) + 4 * step, 2)
        net._forward(0, len(net.layers) - 1)
        net._backward(len(net.layers) - 1, 0)
    memory_diff = net.blobs['memory'].diff
    assert net.blobs['memory_label'].count == 16
    assert np.abs(net.blobs['embed_norm'].diff).max() > 0
    if as_in_the_example:
        assert not memory_diff.any()
    else:
        assert np.abs(memory_diff).max() > 0
