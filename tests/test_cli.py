"""User errors on npair_loss's command lines: npair_loss.cli itself, and
npair_loss.convert and npair_loss.gradcheck, each answering a missing file, a malformed
or unknown-field prototxt, no such blob or bad --inputs with one line
`prog: error: ...` on standard error and exit status 2, never a traceback."""
import os
import subprocess
import sys

import numpy as np
import pytest

from npair_loss import convert, gradcheck
from npair_loss.cli import UsageError, run

NET = '''force_backward: true
layer { name: "data" type: "Input" top: "feat" top: "label"
  input_param { shape { dim: 6 dim: 2 } shape { dim: 6 } } }
layer { name: "npair" type: "NPairMultiClassLoss" bottom: "feat" bottom: "label"
  top: "loss"
  npair_loss_param {
    an_mining_method: HARD
  }
}
'''


def error_line(capsys, status, prog):
    """The one line a tool wrote for its error (and its status was 2)."""
    err = capsys.readouterr().err
    assert status == 2, err
    assert err.endswith('\n') and err.count('\n') == 1, err
    assert err.startswith(f'{prog}: error: '), err
    return err[len(f'{prog}: error: '):-1]


# --- npair_loss.cli ---

def test_usage_error_is_one_line_and_status_2(capsys):
    def main(argv):
        raise UsageError('list.txt:3: expected "path label", got \'x\'')
    status = run(main, 'python -m tool', [])
    assert error_line(capsys, status, 'python -m tool') == \
        'list.txt:3: expected "path label", got \'x\''


def test_os_error_names_the_file(capsys, tmp_path):
    def main(argv):
        open(tmp_path / 'missing.txt', encoding='utf-8')
    status = run(main, 'prog', [])
    assert error_line(capsys, status, 'prog') == \
        f'{tmp_path / "missing.txt"}: No such file or directory'


def test_os_error_without_a_file_is_its_message(capsys):
    def main(argv):
        raise OSError('the disk is full')
    assert error_line(capsys, run(main, 'prog', []), 'prog') == 'the disk is full'


def test_main_gets_argv_and_its_status_passes_through(capsys):
    seen = []

    def main(argv):
        seen.append(argv)
        return len(argv)
    assert run(main, 'prog', ['a']) == 1 and run(main, 'prog', []) == 0
    assert seen == [['a'], []] and capsys.readouterr().err == ''


def test_a_bug_is_not_turned_into_a_usage_error():
    def main(argv):
        raise KeyError('a bug')
    with pytest.raises(KeyError):
        run(main, 'prog', [])


# --- npair_loss.convert ---

def convert_error(capsys, tmp_path, text, *options, name='net.prototxt'):
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding='utf-8')
    out = tmp_path / 'out.prototxt'
    status = run(convert.main, convert.PROG, [str(path), str(out), *options])
    message = error_line(capsys, status, convert.PROG)
    assert not out.exists()
    return message


@pytest.mark.parametrize('text, where, message', [
    (NET.replace('an_mining_method: HARD', 'an_mining_metod: HARD'), '7:5',
     'no field named "an_mining_metod"'),
    (NET.replace('an_mining_method: HARD', 'an_mining_method: HARDEST'), '7:23',
     'has no value named HARDEST'),
    (NET.replace('an_mining_method: HARD', 'margin_diff: "x"'), '7:18', "Couldn't parse float"),
    (NET[:-2], '4:7', "the { of 'layer' is never closed"),
    (NET + '}\n', '10:1', "unmatched '}'"),
    (NET.replace('top: "loss"', 'top: "loss'), '5:8', 'cannot read \'"loss\\n'),
    (NET.replace('top: "loss"', 'top: }'), '5:8', "expected a value, got '}'"),
    (NET.replace('type: "NPairMultiClassLoss"', 'type: NPairMultiClassLoss'), '4:23',
     'type must be a quoted string'),
], ids=['unknown field', 'unknown enum value', 'bad float', 'unclosed', 'unmatched',
        'unterminated string', 'missing value', 'unquoted string'])
def test_convert_malformed_or_unknown_field(capsys, tmp_path, text, where, message):
    line = convert_error(capsys, tmp_path, text)
    assert line.startswith(f'{tmp_path / "net.prototxt"}:{where}: '), line
    assert message in line


def test_convert_param_str_with_an_unknown_field(capsys, tmp_path):
    text = ('layer { name: "l" type: "Python" bottom: "f" bottom: "y" top: "loss"\n'
            '  python_param { module: "npair_loss" layer: "NPairMultiClassLossLayer"\n'
            '                 param_str: "an_mining_method: HARDEST" } }\n')
    line = convert_error(capsys, tmp_path, text, '--to', 'cpp')
    assert line.startswith(f'{tmp_path / "net.prototxt"}:3:18: param_str: '), line
    assert 'HARDEST' in line


def test_convert_missing_file(capsys, tmp_path):
    status = run(convert.main, convert.PROG, [str(tmp_path / 'missing.prototxt'), 'out'])
    assert error_line(capsys, status, convert.PROG) == \
        f'{tmp_path / "missing.prototxt"}: No such file or directory'


def test_convert_not_text(capsys, tmp_path):
    line = convert_error(capsys, tmp_path, b'layer { name: "\xff" }')
    assert line == f'{tmp_path / "net.prototxt"}: not UTF-8 text (invalid start byte at byte 15)'


def test_convert_unwritable_output(capsys, tmp_path):
    (tmp_path / 'net.prototxt').write_text(NET, encoding='utf-8')
    out = tmp_path / 'no' / 'such' / 'dir.prototxt'
    status = run(convert.main, convert.PROG, [str(tmp_path / 'net.prototxt'), str(out)])
    assert error_line(capsys, status, convert.PROG) == f'{out}: No such file or directory'


def run_module(module, *args, cwd):
    p = subprocess.run([sys.executable, '-m', module, *args], cwd=cwd, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, GLOG_minloglevel='2'))
    assert 'Traceback' not in p.stderr, p.stderr
    return p


def test_convert_command_line_missing_file(tmp_path):
    p = run_module('npair_loss.convert', 'missing.prototxt', 'out', cwd=tmp_path)
    assert (p.returncode, p.stderr) == (
        2, 'python -m npair_loss.convert: error: missing.prototxt: No such file or directory\n')


# --- npair_loss.gradcheck (pycaffe) ---

@pytest.fixture
def net_files(tmp_path):
    (tmp_path / 'net.prototxt').write_text(NET, encoding='utf-8')
    rng = np.random.default_rng(0)
    np.savez(tmp_path / 'in.npz', feat=rng.normal(size=(6, 2)), label=np.repeat([0., 1, 2], 2))
    return tmp_path


def gradcheck_error(capsys, *argv):
    return error_line(capsys, run(gradcheck.main, gradcheck.PROG, list(argv)), gradcheck.PROG)


def test_gradcheck_runs_on_the_test_net(caffe, capsys, net_files):
    """The net the error cases below break is itself checkable."""
    status = gradcheck.main([str(net_files / 'net.prototxt'), '--blob', 'feat',
                             '--inputs', str(net_files / 'in.npz')])
    assert status == 0, capsys.readouterr().out


def test_gradcheck_missing_net(caffe, capsys, tmp_path):
    assert gradcheck_error(capsys, str(tmp_path / 'no.prototxt'), '--blob', 'feat') == \
        f'{tmp_path / "no.prototxt"}: No such file or directory'


def test_gradcheck_unknown_field(caffe, capsys, tmp_path):
    (tmp_path / 'net.prototxt').write_text(NET.replace('an_mining_method', 'an_mining_metod'))
    line = gradcheck_error(capsys, str(tmp_path / 'net.prototxt'), '--blob', 'feat')
    assert line.startswith(f'{tmp_path / "net.prototxt"}:7:5: ') and 'an_mining_metod' in line


def test_gradcheck_malformed_net(caffe, capsys, tmp_path):
    (tmp_path / 'net.prototxt').write_text(NET[:-2])
    line = gradcheck_error(capsys, str(tmp_path / 'net.prototxt'), '--blob', 'feat')
    assert line.startswith(f'{tmp_path / "net.prototxt"}:'), line


@pytest.mark.parametrize('option', ['--blob', '--objective'])
def test_gradcheck_no_such_blob(caffe, capsys, net_files, option):
    argv = [str(net_files / 'net.prototxt'), '--blob', 'feat', option, 'fet']
    assert gradcheck_error(capsys, *argv) == \
        f"{option} 'fet': no such blob in the net (blobs: feat, label, loss)"


def test_gradcheck_blob_without_a_gradient(caffe, capsys, net_files):
    line = gradcheck_error(capsys, str(net_files / 'net.prototxt'), '--blob', 'label')
    assert line.startswith("backward did not reach blob 'label'")


def test_gradcheck_missing_weights(caffe, capsys, net_files):
    line = gradcheck_error(capsys, str(net_files / 'net.prototxt'), '--blob', 'feat',
                           '--weights', str(net_files / 'no.caffemodel'))
    assert line == f'{net_files / "no.caffemodel"}: No such file or directory'


def bad_inputs(path):
    """(file written at path, what the error line must say) for each kind of bad input."""
    np.savez(path / 'names.npz', fet=np.zeros((6, 2)))
    np.savez(path / 'shape.npz', feat=np.zeros((3, 2)))
    np.save(path / 'one.npy', np.zeros((6, 2)))
    (path / 'text.npz').write_text('feat = 1, 2\n')
    return [('missing.npz', 'No such file or directory'),
            ('names.npz', "array 'fet' names no blob of the net (blobs: feat, label, loss)"),
            ('shape.npz', "array 'feat' has shape (3, 2), its blob (6, 2)"),
            ('one.npy', 'one array, not an .npz file of them'),
            ('text.npz', 'not an .npz file of arrays')]


def test_gradcheck_bad_inputs(caffe, capsys, net_files):
    for name, message in bad_inputs(net_files):
        line = gradcheck_error(capsys, str(net_files / 'net.prototxt'), '--blob', 'feat',
                               '--inputs', str(net_files / name))
        assert line.startswith(f'{net_files / name}: {message}'), line


def test_gradcheck_command_line_missing_file(caffe, tmp_path):
    p = run_module('npair_loss.gradcheck', 'missing.prototxt', '--blob', 'feat', cwd=tmp_path)
    assert (p.returncode, p.stderr) == (
        2, 'python -m npair_loss.gradcheck: error: missing.prototxt: No such file or directory\n')
