"""OpenBLAS runs the kernels named for the CPU's flags, unless the environment names
some (patches/22-openblas-coretype-from-cpu-flags.patch, build/env.sh): in pycaffe, in
the caffe tool and in build/env.sh; and the choice never names a core whose
instructions the CPU lacks, and names none for a CPU without AVX2 (OpenBLAS's own
detection then stays).

The expectations are written here from OpenBLAS's kernels, not read from the module.
"""
import itertools
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The instructions each core's kernels execute.
NEEDS = {
    'SkylakeX': {'avx512f', 'avx512cd', 'avx512bw', 'avx512dq', 'avx512vl', 'avx2', 'fma'},
    'Haswell': {'avx2', 'fma'},
}
RELEVANT = sorted(set.union(*NEEDS.values()) | {'avx', 'avx512er', 'avx512_bf16'})
USER_CORE = 'Prescott'  # runs on every x86-64, and is not what the flags give here
OPENBLAS_CORENAME = '''
import ctypes
lib = ctypes.CDLL('libopenblas.so.0')  # by soname: the one Caffe loaded
lib.openblas_get_corename.restype = ctypes.c_char_p
CORE = lib.openblas_get_corename().decode()
'''
PROBE_LAYER = OPENBLAS_CORENAME + '''
import caffe


class Probe(caffe.Layer):
    """Writes the OpenBLAS core of the process it runs in to the file param_str names."""

    def setup(self, bottom, top):
        with open(self.param_str, 'w') as f:
            f.write(CORE)

    def reshape(self, bottom, top):
        top[0].reshape(1)

    def forward(self, bottom, top):
        pass

    def backward(self, top, propagate_down, bottom):
        pass
'''


@pytest.fixture(scope='module')
def coretype(caffe):
    return caffe.openblas_coretype


def this_cpu_flags():
    with open('/proc/cpuinfo') as f:
        for line in f:
            if line.startswith('flags'):
                return set(line.split(':', 1)[1].split())
    return set()


def environment(core):
    """This process's environment with OPENBLAS_CORETYPE = core, or without it."""
    env = {k: v for k, v in os.environ.items() if k != 'OPENBLAS_CORETYPE'}
    if core is not None:
        env['OPENBLAS_CORETYPE'] = core
    return env


def openblas_own_core():
    """The core OpenBLAS detects by itself, in a process that loads nothing else."""
    out = subprocess.run([sys.executable, '-c', OPENBLAS_CORENAME + 'print(CORE)'],
                         env=environment(None), capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture(scope='module')
def expected_core():
    """SkylakeX with AVX-512, Haswell with AVX2, else OpenBLAS's own choice."""
    flags = this_cpu_flags()
    for core in ('SkylakeX', 'Haswell'):
        if NEEDS[core] <= flags:
            return core
    return openblas_own_core()


@pytest.mark.parametrize('flags, core', [
    ('fpu sse2 avx avx2 fma avx512f avx512cd avx512bw avx512dq avx512vl avx512_bf16',
     'SkylakeX'),
    ('sse2 avx avx2 fma avx512f avx512cd avx512er avx512pf', 'Haswell'),  # Knights Landing
    ('sse2 avx avx2 fma', 'Haswell'),
    ('sse2 avx avx2', None),           # AVX2 without FMA
    ('sse2 sse4_2 avx', None),         # Sandy Bridge: OpenBLAS knows it
    ('', None),
])
def test_core_for_flags(coretype, flags, core):
    assert coretype.core_for_flags(flags.split()) == core


def test_a_core_is_named_only_when_the_cpu_has_every_instruction_it_runs(coretype):
    for n in range(len(RELEVANT) + 1):
        for flags in itertools.combinations(RELEVANT, n):
            core = coretype.core_for_flags(flags)
            if core is None:
                assert not NEEDS['Haswell'] <= set(flags), flags
            else:
                assert NEEDS[core] <= set(flags), (flags, core)
            assert (core == 'SkylakeX') == (NEEDS['SkylakeX'] <= set(flags)), flags


def test_cpu_flags_reads_the_x86_flags_line(coretype, tmp_path):
    x86 = tmp_path / 'x86'
    x86.write_text('processor\t: 0\nmodel name\t: X\nflags\t\t: fpu avx2 fma\n\n'
                   'processor\t: 1\nflags\t\t: fpu\n')
    arm = tmp_path / 'arm'
    arm.write_text('processor\t: 0\nFeatures\t: fp asimd\n')
    assert coretype.cpu_flags(str(x86)) == ['fpu', 'avx2', 'fma']
    assert coretype.cpu_flags(str(arm)) == []
    assert coretype.cpu_flags(str(tmp_path / 'missing')) == []


@pytest.mark.parametrize('value', ['Haswell', ''])
def test_set_default_keeps_a_value_the_environment_has(coretype, value):
    environ = {'OPENBLAS_CORETYPE': value}
    coretype.set_default(environ)
    assert environ == {'OPENBLAS_CORETYPE': value}


def test_set_default_names_this_cpus_core(coretype, expected_core):
    environ = {}
    coretype.set_default(environ)
    assert environ.get('OPENBLAS_CORETYPE', openblas_own_core()) == expected_core


def pycaffe_core(core):
    out = subprocess.run([sys.executable, '-c', 'import caffe\n' + OPENBLAS_CORENAME
                          + 'print(CORE)'], env=environment(core), capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_import_caffe_runs_this_cpus_core(expected_core):
    assert pycaffe_core(None) == expected_core


def test_import_caffe_keeps_the_users_core():
    assert pycaffe_core(USER_CORE) == USER_CORE


def caffe_tool_core(caffe_tool, tmp_path, core):
    (tmp_path / 'openblas_probe.py').write_text(PROBE_LAYER)
    out_file = tmp_path / 'core.txt'
    net = tmp_path / 'probe.prototxt'
    net.write_text('layer { name: "probe" type: "Python" top: "p" python_param { '
                   f'module: "openblas_probe" layer: "Probe" param_str: "{out_file}" }} }}\n')
    env = environment(core)
    env['PYTHONPATH'] = os.pathsep.join([str(tmp_path)] + [p for p in [env.get('PYTHONPATH')] if p])
    subprocess.run([caffe_tool, 'time', '-model', str(net), '-iterations', '1'], env=env,
                   capture_output=True, check=True, timeout=120)
    return out_file.read_text()


def test_caffe_tool_runs_this_cpus_core(caffe_tool, tmp_path, expected_core):
    assert caffe_tool_core(caffe_tool, tmp_path, None) == expected_core


def test_caffe_tool_keeps_the_users_core(caffe_tool, tmp_path):
    assert caffe_tool_core(caffe_tool, tmp_path, USER_CORE) == USER_CORE


@pytest.mark.parametrize('core', [None, USER_CORE, ''])
def test_env_sh_exports_this_cpus_core_or_keeps_the_users(core, expected_core):
    env_sh = os.path.join(ROOT, 'build', 'env.sh')
    assert os.path.exists(env_sh), 'build/env.sh is missing: build the fork first'
    out = subprocess.run(['bash', '-c', f'source "{env_sh}" && '
                          'printf "%s" "${OPENBLAS_CORETYPE-unset}"'],
                         env=environment(core), capture_output=True, text=True, check=True)
    if core is not None:
        assert out.stdout == core
    elif expected_core in NEEDS:
        assert out.stdout == expected_core
    else:
        assert out.stdout == 'unset'
