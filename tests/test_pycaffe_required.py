"""scripts/test.sh runs pytest with NPAIR_REQUIRE_PYCAFFE=1: then a pycaffe that is
missing, broken, or not the fork's, or a missing `caffe` command, fails the whole run
before any test starts, where it would otherwise skip every test that needs it."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT

FAKE_PYCAFFES = {
    'missing': None,
    'broken': "raise ImportError('libcaffe.so.1.0.0: cannot open shared object file')\n",
    'stock': "def layer_type_list():\n    return ['InnerProduct', 'Python']\n",
}
PROBLEMS = {
    'missing': ': pycaffe does not import (ModuleNotFoundError',
    'broken': ': pycaffe does not import (ImportError: libcaffe.so.1.0.0',
    'stock': 'has no NPairMultiClassLoss, L2Normalize layer',
}


def run_pytest(env, *args):
    return subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider',
                           *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.parametrize('kind', list(FAKE_PYCAFFES))
def test_a_run_without_the_forks_pycaffe_fails(tmp_path, kind):
    source = FAKE_PYCAFFES[kind]
    if source is not None:
        (tmp_path / 'caffe').mkdir()
        (tmp_path / 'caffe' / '__init__.py').write_text(source)
    env = dict(os.environ, NPAIR_REQUIRE_PYCAFFE='1',
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.path.join(ROOT, 'python')]))
    p = run_pytest(env, 'tests/test_convert.py')
    assert p.returncode != 0, p.stdout
    assert 'ERROR: NPAIR_REQUIRE_PYCAFFE=1: ' in p.stderr and PROBLEMS[kind] in p.stderr, \
        p.stderr
    assert ' passed' not in p.stdout and ' skipped' not in p.stdout


def test_a_run_without_the_caffe_command_fails(caffe):
    env = dict(os.environ, NPAIR_REQUIRE_PYCAFFE='1', PATH='/usr/bin:/bin')
    p = run_pytest(env, 'tests/test_convert.py')
    assert p.returncode != 0, p.stdout
    assert 'NPAIR_REQUIRE_PYCAFFE=1: `caffe` is not on PATH' in p.stderr, p.stderr


def test_without_the_requirement_those_tests_skip(tmp_path):
    """What a developer's run without a build does (and test.sh never does)."""
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, 'python'))
    env.pop('NPAIR_REQUIRE_PYCAFFE', None)
    p = run_pytest(env, 'tests/test_convert.py', '-rs')
    assert p.returncode == 0, p.stdout + p.stderr
    assert 'skipped' in p.stdout and 'pycaffe not importable' in p.stdout
