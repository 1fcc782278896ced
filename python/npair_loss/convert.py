"""Rewrite a net's NPairMultiClassLoss layers as the Python fallback, or back.

    python -m npair_loss.convert train_val.prototxt train_val_py.prototxt [--to python|cpp]

--to python (the default) turns each `type: "NPairMultiClassLoss"` layer into
`type: "Python"` with `python_param { module: "npair_loss" layer:
"NPairMultiClassLossLayer" param_str: "<its npair_loss_param>" }`, and, where the layer
gives no loss_weight, writes Caffe's implicit ones (1 on the loss, 0 on each monitor)
explicitly, since a Python layer gets no default. --to cpp does the reverse for Python
layers of that module and class (explicit loss weights stay: they mean the same there).

Only those layers change, and in them only the type and the parameter block; the rest
of the file is copied as it is, comments and layout included. Comments inside a
converted npair_loss_param block do not survive (param_str holds values only). Needs
no pycaffe: the parameters are checked with the project's own npair_loss_pb2.
"""
import argparse
import re
import sys
from typing import List, NamedTuple, Optional

from google.protobuf import text_encoding, text_format

from .params import message_class

CPP_TYPE = 'NPairMultiClassLoss'
MODULE, CLASS = 'npair_loss', 'NPairMultiClassLossLayer'

_TOKEN = re.compile(r'''
    (?P<space>\s+) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<punct>[{}<>:\[\],;])
  | (?P<word>[^\s{}<>:\[\],;"'\#]+)''', re.X)


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
            raise ValueError(f'convert: cannot read the prototxt at offset {pos}: '
                             f'{text[pos:pos + 30]!r}')
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
        i += 1
        if tokens[i].text == ':':
            i += 1
        if tokens[i].text in ('{', '<'):
            children, close = parse_fields(tokens, i + 1)
            fields.append(Field(name.text, name.start, tokens[close].end, [], children,
                                (tokens[i].end, tokens[close].start)))
            i = close + 1
        else:
            first = i
            if tokens[i].text == '[':                      # a list of scalars
                while tokens[i].text != ']':
                    i += 1
            i += 1
            while tokens[i - 1].kind == 'string' and i < len(tokens) and tokens[i].kind == 'string':
                i += 1                                     # "adjacent" "strings" concatenate
            fields.append(Field(name.text, name.start, tokens[i - 1].end, tokens[first:i], None))
        if i < len(tokens) and tokens[i].text in (',', ';'):
            i += 1
    return fields, i


def string_value(field):
    return ''.join(text_encoding.CUnescape(t.text[1:-1]).decode('utf-8') for t in field.values)


def quoted(s):
    return '"' + text_encoding.CEscape(s, as_utf8=True) + '"'


def _indent(text, offset):
    line_start = text.rfind('\n', 0, offset) + 1
    return re.match(r'[ \t]*', text[line_start:]).group()


def first(fields, name):
    return next((f for f in fields if f.name == name), None)


def _to_python(text, layer):
    """Edits (start, end, replacement) that turn a C++ layer into the fallback."""
    edits = [(first(layer.children, 'type').values[0].start,
              first(layer.children, 'type').end, '"Python"')]
    param = first(layer.children, 'npair_loss_param')
    msg = message_class()()
    if param is not None:
        text_format.Parse(text[param.inner[0]:param.inner[1]], msg)
    python_param = (f'python_param {{ module: "{MODULE}" layer: "{CLASS}" '
                    f'param_str: {quoted(text_format.MessageToString(msg, as_one_line=True))} }}')
    if param is not None:
        edits.append((param.start, param.end, python_param))
    else:
        last = layer.children[-1]
        edits.append((last.end, last.end, f'\n{_indent(text, last.start)}{python_param}'))
    tops = [f for f in layer.children if f.name == 'top']
    if tops and first(layer.children, 'loss_weight') is None:
        indent = _indent(text, tops[-1].start)
        weights = ''.join(f'\n{indent}loss_weight: {1 if k == 0 else 0}' for k in range(len(tops)))
        edits.append((tops[-1].end, tops[-1].end, weights))
    return edits


def _to_cpp(text, layer):
    """Edits that turn a fallback layer back into the C++ layer."""
    type_field = first(layer.children, 'type')
    param = first(layer.children, 'python_param')
    param_str = first(param.children, 'param_str')
    msg = message_class()()
    text_format.Parse(string_value(param_str) if param_str else '', msg)
    indent = _indent(text, param.start)
    step = indent[len(_indent(text, layer.start)):] or '  '
    body = ''.join(f'{indent}{step}{line}\n'
                   for line in text_format.MessageToString(msg).splitlines())
    block = f'npair_loss_param {{\n{body}{indent}}}' if body else 'npair_loss_param { }'
    return [(type_field.values[0].start, type_field.end, f'"{CPP_TYPE}"'),
            (param.start, param.end, block)]


def is_cpp_layer(layer):
    t = first(layer.children, 'type')
    return t is not None and string_value(t) == CPP_TYPE


def is_fallback_layer(layer):
    t = first(layer.children, 'type')
    p = first(layer.children, 'python_param')
    if t is None or string_value(t) != 'Python' or p is None:
        return False
    module, cls = first(p.children, 'module'), first(p.children, 'layer')
    return (module is not None and cls is not None
            and string_value(module) == MODULE and string_value(cls) == CLASS)


def convert(text, to='python'):
    """(converted text, names of the layers converted)."""
    fields, _ = parse_fields(tokenize(text))
    wanted, rewrite = (is_cpp_layer, _to_python) if to == 'python' else (is_fallback_layer, _to_cpp)
    edits, names = [], []
    for layer in fields:
        if layer.name == 'layer' and layer.children is not None and wanted(layer):
            name = first(layer.children, 'name')
            names.append(string_value(name) if name else '')
            edits += rewrite(text, layer)
    for start, end, replacement in sorted(edits, reverse=True):
        text = text[:start] + replacement + text[end:]
    return text, names


def main(argv=None):
    parser = argparse.ArgumentParser(prog='python -m npair_loss.convert',
                                     description=__doc__.split('\n\n')[0])
    parser.add_argument('input', help="net prototxt ('-': standard input)")
    parser.add_argument('output', help="where to write the result ('-': standard output)")
    parser.add_argument('--to', choices=('python', 'cpp'), default='python',
                        help='python: C++ layers -> fallback (default); cpp: the reverse')
    args = parser.parse_args(argv)
    with (sys.stdin if args.input == '-' else open(args.input, encoding='utf-8')) as f:
        text, names = convert(f.read(), args.to)
    if args.output == '-':
        sys.stdout.write(text)
    else:
        with open(args.output, 'w', encoding='utf-8') as f:
            f.write(text)
    print(f'convert: {len(names)} layer(s) to {args.to}: {", ".join(names)}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
