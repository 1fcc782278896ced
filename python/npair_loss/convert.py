"""Rewrite a net's NPairMultiClassLoss and CrossBatchMemory layers as the Python
fallback's layers, or back.

    python -m npair_loss.convert train_val.prototxt train_val_py.prototxt [--to python|cpp]

--to python (the default) turns each `type: "NPairMultiClassLoss"` layer into
`type: "Python"` with `python_param { module: "npair_loss" layer:
"NPairMultiClassLossLayer" param_str: "<its npair_loss_param>" }`, and, where the layer
gives no loss_weight, writes Caffe's implicit ones (1 on the loss, 0 on each monitor)
explicitly, since a Python layer gets no default. Each `type: "CrossBatchMemory"`
layer becomes the Python layer "CrossBatchMemoryLayer" with its
cross_batch_memory_param as param_str, and gets the `param { lr_mult: 0 decay_mult: 0 }`
its three blobs need and the C++ layer supplies by itself (up to three in all). --to cpp
does the reverse for Python layers of that module and those classes (explicit loss
weights and param specs stay: they mean the same there).

Only those layers change, and in them only the type, the parameter block and what a
Python layer must be given; the rest of the file is copied as it is, comments and
layout included. Comments inside a converted parameter block do not survive (param_str
holds values only). Needs no pycaffe: the parameters are checked with the package's own
npair_loss_pb2.

Text that is not protobuf text format, or a converted layer's parameters with an
unknown field or value, is an error (PrototxtError) that says where: on the command
line, one line `python -m npair_loss.convert: error: FILE:LINE:COLUMN: ...`, exit 2.
"""
import re
import sys
from typing import List, NamedTuple, Optional

from google.protobuf import text_encoding, text_format

from .cli import ArgumentParser, UsageError, run
from .params import MEMORY_PARAM_SPEC, memory_message_class, message_class

PROG = 'python -m npair_loss.convert'
MODULE = 'npair_loss'


class LayerKind(NamedTuple):
    """A C++ layer and its Python twin."""
    cpp_type: str
    python_class: str
    param_field: str            # the C++ layer's parameter block
    message: object             # () -> its message class
    loss_weights: bool          # write Caffe's implicit loss weights for the Python layer
    param_specs: int            # blobs whose param specs the Python layer must be given


NPAIR = LayerKind('NPairMultiClassLoss', 'NPairMultiClassLossLayer', 'npair_loss_param',
                  message_class, True, 0)
MEMORY = LayerKind('CrossBatchMemory', 'CrossBatchMemoryLayer', 'cross_batch_memory_param',
                   memory_message_class, False, 3)
KINDS = (NPAIR, MEMORY)

_TOKEN = re.compile(r'''
    (?P<space>\s+) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:\[\],;])
  | (?P<word>[^\s{}<>:\[\],;"'\#]+)''', re.X)


class PrototxtError(ValueError):
    """Text that convert cannot read or rewrite; `offset` is where, in the text."""

    def __init__(self, message, offset):
        super().__init__(message)
        self.offset = offset


def line_and_column(text, offset):
    """1-based (line, column) of an offset into text."""
    line_start = text.rfind('\n', 0, offset) + 1
    return text.count('\n', 0, offset) + 1, offset - line_start + 1


class Token(NamedTuple):
    kind: str
    text: str
    start: int
    end: int


class Field(NamedTuple):
    """One field of a text-format message: a scalar (`values`: its tokens) or a
    message (`children`: its fields; `inner`: the text span between its braces)."""
    name: str
    start: int
    end: int
    values: List[Token]
    children: Optional[list]
    inner: tuple = (0, 0)


def tokenize(text):
    tokens, pos = [], 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise PrototxtError(f'cannot read {text[pos:pos + 30]!r}', pos)
        if m.lastgroup not in ('space', 'comment'):
            tokens.append(Token(m.lastgroup, m.group(), m.start(), m.end()))
        pos = m.end()
    return tokens


def parse_fields(tokens, i=0):
    """The fields from tokens[i] to the closing brace of their message (or the end);
    returns them and the index of that brace."""
    fields = []
    while i < len(tokens) and tokens[i].text not in ('}', '>'):
        name = tokens[i]
        if name.kind != 'word':
            raise PrototxtError(f'expected a field name, got {name.text!r}', name.start)
        i += 1
        if i < len(tokens) and tokens[i].text == ':':
            i += 1
        if i == len(tokens):
            raise PrototxtError(f'field {name.text!r} has no value', name.end)
        if tokens[i].text in ('{', '<'):
            children, close = parse_fields(tokens, i + 1)
            if close == len(tokens):
                raise PrototxtError(f'the {{ of {name.text!r} is never closed', tokens[i].start)
            fields.append(Field(name.text, name.start, tokens[close].end, [], children,
                                (tokens[i].end, tokens[close].start)))
            i = close + 1
        else:
            first = i
            if tokens[i].text == '[':                      # a list of scalars
                while i < len(tokens) and tokens[i].text != ']':
                    i += 1
                if i == len(tokens):
                    raise PrototxtError(f'the [ of {name.text!r} is never closed',
                                        tokens[first].start)
            elif tokens[i].kind == 'punct':
                raise PrototxtError(f'field {name.text!r}: expected a value, got '
                                    f'{tokens[i].text!r}', tokens[i].start)
            i += 1
            while tokens[i - 1].kind == 'string' and i < len(tokens) and tokens[i].kind == 'string':
                i += 1                                     # "adjacent" "strings" concatenate
            fields.append(Field(name.text, name.start, tokens[i - 1].end, tokens[first:i], None))
        if i < len(tokens) and tokens[i].text in (',', ';'):
            i += 1
    return fields, i


def parse_message(text):
    """The top-level fields of a whole text-format message."""
    tokens = tokenize(text)
    fields, end = parse_fields(tokens)
    if end < len(tokens):
        raise PrototxtError(f'unmatched {tokens[end].text!r}', tokens[end].start)
    return fields


def string_value(field):
    if not field.values or any(t.kind != 'string' for t in field.values):
        raise PrototxtError(f'{field.name} must be a quoted string', field.start)
    return ''.join(text_encoding.CUnescape(t.text[1:-1]).decode('utf-8') for t in field.values)


def quoted(s):
    return '"' + text_encoding.CEscape(s, as_utf8=True) + '"'


def _indent(text, offset):
    line_start = text.rfind('\n', 0, offset) + 1
    return re.match(r'[ \t]*', text[line_start:]).group()


def first(fields, name):
    return next((f for f in fields if f.name == name), None)


def _to_python(text, layer, kind):
    """Edits (start, end, replacement) that turn a C++ layer into its Python twin."""
    edits = [(first(layer.children, 'type').values[0].start,
              first(layer.children, 'type').end, '"Python"')]
    param = first(layer.children, kind.param_field)
    msg = kind.message()()
    if param is not None:
        _parse_param(text[param.inner[0]:param.inner[1]], msg, param.inner[0])
    python_param = (f'python_param {{ module: "{MODULE}" layer: "{kind.python_class}" '
                    f'param_str: {quoted(text_format.MessageToString(msg, as_one_line=True))} }}')
    if param is not None:
        edits.append((param.start, param.end, python_param))
    else:
        last = layer.children[-1]
        edits.append((last.end, last.end, f'\n{_indent(text, last.start)}{python_param}'))
    tops = [f for f in layer.children if f.name == 'top']
    if kind.loss_weights and tops and first(layer.children, 'loss_weight') is None:
        indent = _indent(text, tops[-1].start)
        weights = ''.join(f'\n{indent}loss_weight: {1 if k == 0 else 0}' for k in range(len(tops)))
        edits.append((tops[-1].end, tops[-1].end, weights))
    specs = [f for f in layer.children if f.name == 'param']
    if kind.param_specs > len(specs):
        after = (specs or tops or [layer.children[0]])[-1]
        indent = _indent(text, after.start)
        edits.append((after.end, after.end, f'\n{indent}{MEMORY_PARAM_SPEC}'
                       * (kind.param_specs - len(specs))))
    return edits


def _parse_param(body, msg, start, quoted_in=None):
    """text_format.Parse(body, msg), where body is the file's text from offset start, or
    the value of the quoted string field `quoted_in` that starts there; an unknown field
    or value is a PrototxtError at its place in the file (or at that field)."""
    try:
        text_format.Parse(body, msg)
    except text_format.ParseError as e:
        message, offset = str(e).split(' : ', 1)[-1], start
        if e.GetLine() is not None:
            lines = body.split('\n')
            quoted_line = f"'{lines[e.GetLine() - 1]}': "   # the tokenizer quotes its line
            if message.startswith(quoted_line):
                message = message[len(quoted_line):]
            if quoted_in is None:
                offset += sum(len(line) + 1 for line in lines[:e.GetLine() - 1])
                offset += e.GetColumn() - 1
        prefix = '' if quoted_in is None else f'{quoted_in}: '
        raise PrototxtError(prefix + message, offset) from None


def _to_cpp(text, layer, kind):
    """Edits that turn a Python twin back into the C++ layer."""
    type_field = first(layer.children, 'type')
    param = first(layer.children, 'python_param')
    param_str = first(param.children, 'param_str')
    msg = kind.message()()
    if param_str is not None:
        _parse_param(string_value(param_str), msg, param_str.start, 'param_str')
    indent = _indent(text, param.start)
    step = indent[len(_indent(text, layer.start)):] or '  '
    body = ''.join(f'{indent}{step}{line}\n'
                   for line in text_format.MessageToString(msg).splitlines())
    block = (f'{kind.param_field} {{\n{body}{indent}}}' if body
             else f'{kind.param_field} {{ }}')
    return [(type_field.values[0].start, type_field.end, f'"{kind.cpp_type}"'),
            (param.start, param.end, block)]


def cpp_kind(layer):
    """The LayerKind of a C++ layer that has a Python twin, else None."""
    t = first(layer.children, 'type')
    return next((k for k in KINDS if t is not None and string_value(t) == k.cpp_type), None)


def fallback_kind(layer):
    """The LayerKind of a Python twin (module npair_loss, a twin's class), else None."""
    t = first(layer.children, 'type')
    p = first(layer.children, 'python_param')
    if t is None or string_value(t) != 'Python' or p is None:
        return None
    module, cls = first(p.children, 'module'), first(p.children, 'layer')
    if module is None or cls is None or string_value(module) != MODULE:
        return None
    return next((k for k in KINDS if string_value(cls) == k.python_class), None)


def convert(text, to='python'):
    """(converted text, names of the layers converted); PrototxtError for text it cannot
    read or layers whose parameters are wrong."""
    fields = parse_message(text)
    kind_of, rewrite = (cpp_kind, _to_python) if to == 'python' else (fallback_kind, _to_cpp)
    edits, names = [], []
    for layer in fields:
        kind = kind_of(layer) if layer.name == 'layer' and layer.children is not None else None
        if kind is not None:
            name = first(layer.children, 'name')
            names.append(string_value(name) if name else '')
            edits += rewrite(text, layer, kind)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, names


def main(argv=None):
    parser = ArgumentParser(prog=PROG, description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help="net prototxt ('-': standard input)")
    parser.add_argument('output', help="where to write the result ('-': standard output)")
    parser.add_argument('--to', choices=('python', 'cpp'), default='python',
                        help='python: C++ layers -> fallback (default); cpp: the reverse')
    args = parser.parse_args(argv)
    source = '<stdin>' if args.input == '-' else args.input
    try:
        with (sys.stdin if args.input == '-' else open(args.input, encoding='utf-8')) as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise UsageError(f'{source}: not UTF-8 text ({e.reason} at byte {e.start})') from None
    try:
        converted, names = convert(text, args.to)
    except PrototxtError as e:
        line, column = line_and_column(text, e.offset)
        raise UsageError(f'{source}:{line}:{column}: {e}') from None
    if args.output == '-':
        sys.stdout.write(converted)
    else:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(converted)
    print(f'convert: {len(names)} layer(s) to {args.to}: {", ".join(names)}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(run(main, PROG))
