"""Numerical gradient check of a pycaffe Net with respect to one of its blobs.

    python -m npair_loss.gradcheck net.prototxt --blob feat [--objective loss]

For each element of the blob, central differences of an objective (the loss-weighted sum
of some of the net's blobs) are compared with the diff that net.backward() leaves in the
blob, by the rule of Caffe's GradientChecker (test_gradient_check_util.hpp):
|analytic - numeric| <= threshold * max(|analytic|, |numeric|, 1).

A mined loss is only piecewise smooth: where a step of +-h changes which pairs are
selected, the difference quotient measures a jump, not a derivative. check_gradient takes
`selection`, a function of the net returning its discrete state (a list of arrays); an
element whose step changes it is reported as skipped, never counted as passed.
npair_selection builds that function for the net's N-pair layers (C++ and Python).

The check perturbs the blob in place and runs the net from the first layer that reads it,
so data layers before it do not draw new data; the blob's values at the call are the
point checked.

A mistake in the command (a missing or malformed file, no such blob, --inputs that do
not fit the net) is one line `python -m npair_loss.gradcheck: error: ...`, exit 2.
"""
import sys
from typing import NamedTuple

import numpy

from . import npair_math
from .cli import ArgumentParser, UsageError, read_npz, run
from .params import from_message

PROG = 'python -m npair_loss.gradcheck'


class Report(NamedTuple):
    blob: str
    checked: int
    failures: list      # (index, analytic, numeric)
    skipped: list       # indices whose +-step changed the selection

    @property
    def ok(self):
        return not self.failures and self.checked > 0

    def __str__(self):
        lines = [f'{self.blob}: {self.checked} checked, {len(self.failures)} failed, '
                 f'{len(self.skipped)} skipped (the step changed the selection)']
        lines += [f'  FAIL {index}: analytic {a:.6g}, numeric {n:.6g}'
                  for index, a, n in self.failures]
        lines += [f'  skipped {index}' for index in self.skipped]
        return '\n'.join(lines)


def loss_blobs(net):
    """{blob name: loss weight} for the blobs with a nonzero loss weight."""
    return {name: w for name, w in net.blob_loss_weights.items() if w != 0}


def check_gradient(net, blob, objective=None, step=1e-2, threshold=1e-2, selection=None,
                   seed=1701):
    """Report on d(objective)/d(net.blobs[blob]) at the blob's current values.

    objective: {blob name: weight}, default loss_blobs(net). The analytic side is what
    net.backward() computes, which follows the loss weights Caffe set at init, so the
    objective should hold exactly the blobs whose gradient the net propagates.
    UsageError when the net cannot be checked that way (no objective, no layer reading
    the blob, a backward that does not reach it).
    """
    import caffe

    objective = loss_blobs(net) if objective is None else objective
    if not objective:
        raise UsageError('no objective: the net has no loss-weighted blob')
    readers = [name for name, bottoms in net.bottom_names.items() if blob in bottoms]
    if not readers:
        raise UsageError(f'no layer reads blob {blob!r}')
    start = readers[0]
    shape = net.blobs[blob].data.shape

    # Always through net.blobs[blob].data, never a kept view: the access is what tells
    # Caffe that the CPU copy changed (it matters when the net runs on the GPU).
    def put(index, x):
        net.blobs[blob].data[index] = x
        return float(net.blobs[blob].data[index])

    def value():
        caffe.set_random_seed(seed)
        net.forward(start=start)
        return sum(w * float(numpy.sum(net.blobs[name].data, dtype=numpy.float64))
                   for name, w in objective.items())

    def state():
        return [] if selection is None else [numpy.array(a) for a in selection(net)]

    value()
    base = state()
    net.blobs[blob].diff[...] = numpy.nan
    net.backward()
    analytic = numpy.array(net.blobs[blob].diff, dtype=numpy.float64)
    if numpy.isnan(analytic).any():
        raise UsageError(f'backward did not reach blob {blob!r} '
                         '(set force_backward: true in the net?)')
    failures, skipped, checked = [], [], 0
    for index in numpy.ndindex(shape):
        x = float(net.blobs[blob].data[index])
        step_up = put(index, x + step) - x
        up, plus = value(), state()
        step_down = x - put(index, x - step)
        down, minus = value(), state()
        put(index, x)
        if not (_same(plus, base) and _same(minus, base)):
            skipped.append(index)
            continue
        numeric = (up - down) / (step_up + step_down)
        a = analytic[index]
        checked += 1
        if abs(a - numeric) > threshold * max(abs(a), abs(numeric), 1.0):
            failures.append((index, a, numeric))
    value()
    return Report(blob, checked, failures, skipped)


def _same(state, base):
    return all(numpy.array_equal(a, b) for a, b in zip(state, base))


class NPairLayer(NamedTuple):
    name: str
    params: object          # npair_loss.params.NPairParams
    bottoms: list
    tops: list


def npair_layers(net, net_param=None):
    """The net's N-pair layers: Python layers of class NPairMultiClassLossLayer, and
    C++ NPairMultiClassLoss layers, whose parameters come from net_param (the
    NetParameter the net was made from; pycaffe does not give them back)."""
    from .layer import NPairMultiClassLossLayer

    specs = {layer.name: layer for layer in net_param.layer} if net_param is not None else {}
    found = []
    for name, layer in zip(net._layer_names, net.layers):
        if layer.type == 'Python' and isinstance(layer, NPairMultiClassLossLayer):
            params = layer.params
        elif layer.type == 'NPairMultiClassLoss':
            if name not in specs:
                raise ValueError(f'gradcheck: layer {name!r} is a C++ NPairMultiClassLoss: '
                                 'pass the NetParameter to read its npair_loss_param')
            params = from_message(specs[name].npair_loss_param)
        else:
            continue
        found.append(NPairLayer(name, params, list(net.bottom_names[name]),
                                list(net.top_names[name])))
    return found


def npair_selection(layers):
    """selection for check_gradient: the kept pairs of each N-pair layer, recomputed
    from its bottoms (its references among them) with npair_math (the C++ layer's own
    selection is not visible)."""
    def selection(net):
        kept = []
        for layer in layers:
            X = net.blobs[layer.bottoms[0]].data
            labels = net.blobs[layer.bottoms[1]].data.reshape(len(X))
            R = ref_labels = None
            # Never the data of an empty blob: pycaffe aborts on it.
            if len(layer.bottoms) == 4 and net.blobs[layer.bottoms[2]].count > 0:
                R = net.blobs[layer.bottoms[2]].data
                R = R.reshape(len(R), -1)
                ref_labels = net.blobs[layer.bottoms[3]].data.reshape(len(R))
            kept.append(npair_math.selected_pairs(X.reshape(len(X), -1), labels, layer.params,
                                                  R, ref_labels))
        return kept
    return selection


def _read_net_param(path):
    """The NetParameter in the prototxt at path, read before Caffe sees the file (Caffe
    aborts the process on a file it cannot parse)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        return text_format.Parse(text, caffe_pb2.NetParameter())
    except text_format.ParseError as e:
        where = f'{e.GetLine()}:{e.GetColumn()}:' if e.GetLine() is not None else ''
        raise UsageError(f'{path}:{where} {str(e).split(" : ", 1)[-1]}') from None


def _copy_inputs(net, arrays, path):
    for name, array in arrays.items():
        if name not in net.blobs:
            raise UsageError(f'{path}: array {name!r} names no blob of the net '
                             f'(blobs: {", ".join(net.blobs)})')
        blob = net.blobs[name].data
        if array.size != blob.size:
            raise UsageError(f'{path}: array {name!r} has shape {array.shape}, its blob '
                             f'{blob.shape}')
        blob[...] = array.reshape(blob.shape)


def _check_blob_names(net, names, what):
    for name in names:
        if name not in net.blobs:
            raise UsageError(f'{what} {name!r}: no such blob in the net '
                             f'(blobs: {", ".join(net.blobs)})')


def main(argv=None):
    parser = ArgumentParser(
        prog=PROG, description=__doc__.split('\n\n')[0],
        epilog='Exit status: 0 when every checked element passes (and some were checked), '
               '1 otherwise, 2 for a mistake in the command or its files. Data layers are '
               'run once first; --inputs fills blobs after that.')
    parser.add_argument('net', help='net prototxt')
    parser.add_argument('--blob', action='append', required=True,
                        help='blob to check the gradient of (repeatable)')
    parser.add_argument('--objective', action='append',
                        help='blob in the objective, with its loss weight (repeatable); default: '
                             'every loss-weighted blob except N-pair monitor tops')
    parser.add_argument('--inputs', help='.npz of arrays to copy into blobs by name')
    parser.add_argument('--weights', help='.caffemodel to load')
    parser.add_argument('--phase', choices=('TRAIN', 'TEST'), default='TRAIN')
    parser.add_argument('--step', type=float, default=1e-2)
    parser.add_argument('--threshold', type=float, default=1e-2)
    parser.add_argument('--gpu', type=int, metavar='ID', help='run on this GPU')
    args = parser.parse_args(argv)

    import caffe

    net_param = _read_net_param(args.net)
    inputs = read_npz(args.inputs) if args.inputs else {}
    if args.weights:
        open(args.weights, 'rb').close()        # a missing file: one line, not Caffe's abort
    if args.gpu is not None:
        caffe.set_mode_gpu()
        caffe.set_device(args.gpu)
    phase = getattr(caffe, args.phase)
    net = (caffe.Net(args.net, args.weights, phase) if args.weights
           else caffe.Net(args.net, phase))
    _check_blob_names(net, args.blob, '--blob')
    _check_blob_names(net, args.objective or [], '--objective')
    net.forward()
    _copy_inputs(net, inputs, args.inputs)
    layers = npair_layers(net, net_param)
    weights = net.blob_loss_weights
    if args.objective:
        objective = {name: weights[name] for name in args.objective}
    else:
        monitors = {top for layer in layers for top in layer.tops[1:]}
        objective = {name: w for name, w in loss_blobs(net).items() if name not in monitors}
    ok = True
    for blob in args.blob:
        report = check_gradient(net, blob, objective, args.step, args.threshold,
                                npair_selection(layers) if layers else None)
        print(report)
        ok = ok and report.ok
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(run(main, PROG))
