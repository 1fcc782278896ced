"""The Python layers' parameters: param_str in protobuf text format, an
NPairLossParameter for the loss and a CrossBatchMemoryParameter for the memory.

The messages come from npair_loss.npair_loss_pb2, generated from the repository's
proto/npair_loss.proto (by `pip install ./python`, or by the fork's build into
build/python/npair_loss), not from pycaffe's caffe_pb2: the fallback runs in a pycaffe
that has never heard of them. Values are validated as the C++ layers do, and floats
are kept as the float32 values the message holds.
"""
import importlib
import math
import re
from typing import NamedTuple

import numpy
from google.protobuf import text_format

LAYER = 'NPairMultiClassLoss (Python)'
EXAMPLE = 'margin_diff: -0.05 an_mining_region: LOCAL an_mining_method: HARD'
MEMORY_LAYER = 'CrossBatchMemory (Python)'
MEMORY_EXAMPLE = 'size: 4096 warmup: 250'
# What the memory's Python layer must be given for each of its three blobs: they are
# the memory, which the solver must leave as it is.
MEMORY_PARAM_SPEC = 'param { lr_mult: 0 decay_mult: 0 }'
# The largest size and warm-up: the memory keeps its counters as float32, exact for
# every integer up to it (the C++ layer's bound too).
LARGEST_COUNT = 1 << 24


class NPairParams(NamedTuple):
    """NPairLossParameter's values: floats as float32 values, enums by name."""
    margin_ident: float
    margin_diff: float
    identsn: float
    diffsn: float
    ap_mining_region: str
    ap_mining_method: str
    an_mining_region: str
    an_mining_method: str


class MemoryParams(NamedTuple):
    """CrossBatchMemoryParameter's values."""
    size: int
    warmup: int


def message_class(name='NPairLossParameter', layer=LAYER):
    """A message class of npair_loss_pb2, with a way out when the module is missing."""
    try:
        npair_loss_pb2 = importlib.import_module(f'{__package__}.npair_loss_pb2')
    except ImportError as e:
        raise ImportError(
            f'{layer}: cannot import npair_loss.npair_loss_pb2 ({e}), the message module '
            'generated from proto/npair_loss.proto: install the package with '
            '`pip install ./python` (which generates it), or build the fork '
            '(scripts/build.sh) and `source build/env.sh`.') from e
    return getattr(npair_loss_pb2, name)


def memory_message_class():
    """npair_loss_pb2.CrossBatchMemoryParameter, as message_class gives it."""
    return message_class('CrossBatchMemoryParameter', MEMORY_LAYER)


def _parse(param_str, msg, layer, example):
    """text_format.Parse(param_str, msg); a ValueError naming layer and field if not."""
    try:
        text_format.Parse(param_str, msg)
    except text_format.ParseError as e:
        field = _field_before(param_str, e.GetLine(), e.GetColumn())
        where = f' (field {field})' if field else ''
        raise ValueError(f'{layer}: bad param_str{where}: {e} (param_str holds '
                         f'{msg.DESCRIPTOR.name} fields in protobuf text format, not JSON '
                         f'or a Python dict, e.g. "{example}")') from None
    return msg


def parse_param_str(param_str):
    """NPairParams from a param_str such as 'margin_diff: -0.05 an_mining_method: HARD'."""
    return from_message(_parse(param_str, message_class()(), LAYER, EXAMPLE))


def parse_memory_param_str(param_str):
    """MemoryParams from a param_str such as 'size: 4096 warmup: 250'."""
    msg = _parse(param_str, memory_message_class()(), MEMORY_LAYER, MEMORY_EXAMPLE)
    if not msg.HasField('size') or msg.size < 1:
        raise ValueError(f'{MEMORY_LAYER}: size, how many samples the memory holds, must '
                         f'be given and at least 1; got {msg.size} (param_str, e.g. '
                         f'"{MEMORY_EXAMPLE}")')
    for name in ('size', 'warmup'):
        if getattr(msg, name) > LARGEST_COUNT:
            raise ValueError(f'{MEMORY_LAYER}: {name} must be at most {LARGEST_COUNT}; '
                             f'got {getattr(msg, name)}')
    return MemoryParams(size=msg.size, warmup=msg.warmup)


def npair_loss_param_text(prototxt):
    """The body of the first `npair_loss_param { ... }` block of a net's text, comments
    included: the param_str that gives the fallback the same configuration."""
    match = re.search(r'\bnpair_loss_param\s*\{([^}]*)\}', prototxt)
    if match is None:
        raise ValueError(f'{LAYER}: no npair_loss_param {{ ... }} block in the text')
    return match.group(1)


def one_line_param_str(param_str):
    """param_str as one line of text format without comments, the same values: what a
    `param_str: "..."` string of a prototxt can hold."""
    msg = message_class()()
    text_format.Parse(param_str, msg)
    return text_format.MessageToString(msg, as_one_line=True)


def _field_before(text, line, column):
    """The name of the last 'name:' before (line, column) of text, 1-based: the field
    whose value a text-format error points at (older protobufs do not name it)."""
    if line is None or column is None:
        return None
    lines = text.split('\n')[:line]
    lines[-1] = lines[-1][:column - 1]
    names = re.findall(r'([A-Za-z_]\w*)\s*:', '\n'.join(lines))
    return names[-1] if names else None


def from_message(msg):
    """NPairParams from any message with NPairLossParameter's fields (npair_loss_pb2's,
    or the fork's caffe_pb2's). A non-finite float is an error, used or not."""
    values = {}
    for name in NPairParams._fields:
        field = msg.DESCRIPTOR.fields_by_name[name]
        value = getattr(msg, name)
        if field.enum_type is not None:
            values[name] = field.enum_type.values_by_number[value].name
            continue
        value = float(numpy.float32(value))
        if not math.isfinite(value):
            raise ValueError(f'{LAYER}: {name} must be finite, got {value}')
        values[name] = value
    return NPairParams(**values)
