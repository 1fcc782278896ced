"""Every command-line tool of the repository answers a missing file and a malformed
input with one line `prog: error: ...` on standard error and exit status 2
(npair_loss.cli), never a traceback. Each runs as a user runs it, in a folder of its own.
A tool that reads no file of the user's is given a folder it cannot write instead,
or, when it takes no path at all, only a malformed option."""
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

NET = 'layer { name: "data" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n'
FILES = {  # what a case may name, written into its folder first
    'net.prototxt': NET,
    'bad.prototxt': 'layer { name: "data"\n',
    'bad.txt': 'a.jpg 1\nb.jpg\n',
    'bad.npz': 'not an archive\n',
    'bad.tsv': 'only\tthree\tcolumns\n',
    'bad.log': 'I0101 solver.cpp:1] nothing that caffe train prints per iteration\n',
    'a_file': '',
}

# (tool, how it runs, arguments, what its one line must hold)
MODULE, SCRIPT = 'python -m', 'python3'
CASES = [
    ('npair_loss.convert', MODULE, ['missing.prototxt', 'out.prototxt'],
     'missing.prototxt: No such file or directory'),
    ('npair_loss.convert', MODULE, ['bad.prototxt', 'out.prototxt'],
     "bad.prototxt:1:7: the { of 'layer' is never closed"),
    ('npair_loss.gradcheck', MODULE, ['missing.prototxt', '--blob', 'x'],
     'missing.prototxt: No such file or directory'),
    ('npair_loss.gradcheck', MODULE, ['bad.prototxt', '--blob', 'x'], 'bad.prototxt:'),
    ('npair_examples.batches', MODULE, ['missing.txt', '--out', 'o.txt', '-N', '2'],
     'missing.txt: No such file or directory'),
    ('npair_examples.batches', MODULE, ['bad.txt', '--out', 'o.txt', '-N', '2'],
     "bad.txt:2: expected 'path label' with an integer label, got 'b.jpg'"),
    ('npair_examples.convergence', MODULE,
     ['--deploy', 'net.prototxt', '--list', 'missing.txt', '--model', 'a=a'],
     'missing.txt: No such file or directory'),
    ('npair_examples.convergence', MODULE,
     ['--deploy', 'net.prototxt', '--list', 'bad.txt', '--model', 'a=a'], 'bad.txt:2: '),
    ('npair_examples.digits', MODULE, ['--out', 'a_file/data'],
     'a_file/data: Not a directory'),
    ('npair_examples.digits', MODULE, ['--train-classes', '0-x'],
     "--train-classes wants digits and ranges such as 0-2,7, got '0-x'"),
    ('npair_examples.evaluate', MODULE,
     ['--deploy', 'missing.prototxt', '--model', 'a=', '--list', 'u=bad.txt'],
     'missing.prototxt: no such deploy net'),
    ('npair_examples.evaluate', MODULE,
     ['--deploy', 'net.prototxt', '--model', 'a=', '--list', 'u=bad.txt'], 'bad.txt:2: '),
    ('npair_examples.evaluate', MODULE,
     ['--deploy', 'net.prototxt', '--model', 'a=', '--data', 'bad.npz'],
     'bad.npz: not an .npz file of arrays'),
    ('npair_examples.glyph_nets', MODULE, ['--out', 'a_file/models'],
     'a_file/models: Not a directory'),
    ('npair_examples.glyph_nets', MODULE, ['--train-classes', 'many'],
     "argument --train-classes: invalid int value: 'many'"),
    ('npair_examples.glyphs', MODULE, ['--faces', 'missing.tsv', '--out', 'data'],
     'missing.tsv: cannot read the faces table (No such file or directory)'),
    ('npair_examples.glyphs', MODULE, ['--faces', 'bad.tsv', '--out', 'data'],
     'bad.tsv:1: expected `file<TAB>face<TAB>name<TAB>package`'),
    ('npair_examples.plot_embedding', MODULE, ['missing.npz'],
     'missing.npz: No such file or directory'),
    ('npair_examples.plot_embedding', MODULE, ['bad.npz'], 'bad.npz: not an .npz file'),
    ('npair_examples.plot_log', MODULE, ['missing.log'],
     'missing.log: No such file or directory'),
    ('npair_examples.plot_log', MODULE, ['bad.log'],
     "bad.log: no 'Train net output' lines: not a `caffe train` log"),
    ('npair_examples.plot_retrieval', MODULE, ['missing.npz', '--list', 'bad.txt'],
     'missing.npz: No such file or directory'),
    ('npair_examples.plot_retrieval', MODULE, ['bad.npz', '--list', 'bad.txt'],
     'bad.npz: not an .npz file'),
    ('benchmarks/data/bench_image_data.py', SCRIPT, ['--classes', '0'],
     '--classes must be at least 1'),
    ('benchmarks/cpu/bench_npair.py', SCRIPT, ['--per-class', '0'],
     '--per-class must be at least 1, got 0'),
    ('benchmarks/cpu/bench_blas.py', SCRIPT, ['--mkl', 'missing.so'],
     '--mkl missing.so: no such file'),
    ('benchmarks/cpu/bench_blas.py', SCRIPT, ['--threads', '0'],
     '--threads must be at least 1, got 0'),
    ('benchmarks/cpu/bench_memory_step.py', SCRIPT, ['--data', 'missing'],
     'missing: no train.txt; render the data first'),
    ('benchmarks/cpu/bench_memory_step.py', SCRIPT, ['--size', '0'],
     '--size, --rounds and --timed must be at least 1'),
    ('npair_examples.choose_memory', MODULE, ['--data', 'missing'],
     'missing/train.txt: No such file or directory'),
    ('npair_examples.choose_memory', MODULE, ['--jobs', '0'],
     '--jobs and --sizes must be at least 1, --warmups at least 0'),
    ('benchmarks/gpu/make_prototxts.py', SCRIPT, ['--out', 'missing/dir'],
     'No such file or directory'),
    ('benchmarks/gpu/make_prototxts.py', SCRIPT, ['--classes', '3', '--out', '.'],
     'N = 1024 is not a multiple of --classes 3'),
    ('benchmarks/gpu/cupy_fallback_bench.py', SCRIPT, ['--sizes', '1000'],
     'N = 1000 is not a multiple of --classes 16'),
]
MAIN = re.compile(r"""^if __name__ == ['"]__main__['"]:""", re.MULTILINE)


def tools():
    """Every tool with a main: the packages' modules as `python -m` names, the
    benchmarks' scripts by path; so that a new one cannot be left out of CASES."""
    found = set()
    for folder in ('python', 'benchmarks'):
        for parent, _, names in os.walk(os.path.join(ROOT, folder)):
            for name in names:
                path = os.path.join(parent, name)
                if name.endswith('.py') and MAIN.search(open(path, encoding='utf-8').read()):
                    if folder == 'python':
                        module = os.path.relpath(path, os.path.join(ROOT, folder))[:-3]
                        found.add(module.replace(os.sep, '.'))
                    else:
                        found.add(os.path.relpath(path, ROOT))
    return found


def test_every_tool_has_its_cases():
    assert {tool for tool, *_ in CASES} == tools()


@pytest.mark.parametrize('tool, how, args, message', CASES,
                         ids=[f'{c[0]} {" ".join(c[2][:2])}' for c in CASES])
def test_user_error_is_one_line_and_status_2(request, tmp_path, tool, how, args, message):
    if tool == 'npair_loss.gradcheck':
        request.getfixturevalue('caffe')  # it reads the net with pycaffe's caffe_pb2
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    command = [sys.executable, '-m', tool] if how == MODULE else \
        [sys.executable, os.path.join(ROOT, tool)]
    env = dict(os.environ, GLOG_minloglevel='2')
    env['PYTHONPATH'] = os.pathsep.join(
        [os.path.join(ROOT, 'python')] + [p for p in [env.get('PYTHONPATH')] if p])
    p = subprocess.run(command + args, cwd=tmp_path, capture_output=True, text=True,
                       env=env, timeout=120)
    prog = f'{how} {tool}'
    assert p.returncode == 2, p.stderr
    assert p.stderr.count('\n') == 1 and p.stderr.startswith(f'{prog}: error: '), p.stderr
    assert message in p.stderr, p.stderr
