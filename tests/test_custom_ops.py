"""The plugin build machinery (torch_utils.custom_ops) and the fallback of the ops when a build fails.

A tiny plugin (a few lines of C++, about a second to build) exercises rebuilds and locks; the real
plugins exercise the cache, the failure paths (a compiler that fails, an injected #error) and nvcc.
"""

import dataclasses
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from torch_utils import custom_ops
from torch_utils.ops import _impl, bias_act, upfirdn2d

ROOT = pathlib.Path(__file__).resolve().parents[1]
OPS = ROOT / 'torch_utils' / 'ops'

TINY_SOURCE = textwrap.dedent('''
    #define PY_SSIZE_T_CLEAN
    #include <Python.h>
    #include "tiny.h"
    static PyObject* value(PyObject*, PyObject*) { return PyLong_FromLong(TINY_VALUE); }
    static PyMethodDef methods[] = {{"value", value, METH_NOARGS, ""}, {nullptr, nullptr, 0, nullptr}};
    #define CAT2(a, b) a##b
    #define CAT(a, b) CAT2(a, b)
    #define STR2(x) #x
    #define STR(x) STR2(x)
    static PyModuleDef def = {PyModuleDef_HEAD_INIT, STR(TORCH_EXTENSION_NAME), nullptr, -1, methods};
    PyMODINIT_FUNC CAT(PyInit_, TORCH_EXTENSION_NAME)(void) { return PyModule_Create(&def); }
''')


def tiny_spec(directory: pathlib.Path, value: int) -> custom_ops.PluginSpec:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / 'tiny.cpp').write_text(TINY_SOURCE)
    (directory / 'tiny.h').write_text(f'#define TINY_VALUE {value}\n')
    return custom_ops.PluginSpec('tiny', ('tiny.cpp',), ('tiny.h',), str(directory))


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, 'PYTHONPATH': str(ROOT), **env}, timeout=300)


def hold_lock(lock_path: str, also_make: str = '') -> subprocess.Popen:
    """A process that takes the build lock (as a build does), optionally leaves a half-built directory,
    says 'locked' and waits to be killed."""
    code = f'''
        import os, time
        from torch_utils.custom_ops import BuildLock
        with BuildLock({lock_path!r}, timeout=30):
            if {also_make!r}:
                os.makedirs({also_make!r})
            print('locked', flush=True)
            time.sleep(120)
    '''
    proc = subprocess.Popen([sys.executable, '-c', textwrap.dedent(code)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert proc.stdout.readline().strip() == 'locked'
    return proc


@pytest.fixture
def isolated_ops(monkeypatch, tmp_path):
    """The ops with an empty build cache (builds start from scratch) and fused kernels enabled."""
    monkeypatch.setenv(_impl.ENV, '1')
    monkeypatch.setitem(_impl.options, 'cache_dir', str(tmp_path / 'cache'))
    _impl.reset()
    yield tmp_path / 'cache'
    _impl.reset()


def call_ops_and_compare():
    """Calls both ops three times with impl='auto'; each result must equal the reference path's."""
    gen = torch.Generator().manual_seed(0)
    x, b, f = torch.randn(2, 3, 6, 5, generator=gen), torch.randn(3, generator=gen), upfirdn2d.setup_filter([1, 3, 3, 1])
    for _ in range(3):
        assert torch.equal(bias_act.bias_act(x, b, act='lrelu', clamp=1.0), bias_act.bias_act(x, b, act='lrelu', clamp=1.0, impl='ref'))
        assert bias_act.last_impl == 'ref'
        assert torch.equal(upfirdn2d.upsample2d(x, f), upfirdn2d.upsample2d(x, f, impl='ref'))
        assert upfirdn2d.last_impl == 'ref'


def test_edited_source_rebuilds(tmp_path):
    cache = tmp_path / 'cache'
    spec = tiny_spec(tmp_path / 'src', 1)
    m1 = custom_ops.get_plugin(spec, 'cpu', str(cache))
    assert m1.value() == 1
    assert custom_ops.get_plugin(spec, 'cpu', str(cache)) is m1  # Unchanged: no rebuild.
    spec = tiny_spec(tmp_path / 'src', 2)  # An edited header changes the build too.
    m2 = custom_ops.get_plugin(spec, 'cpu', str(cache))
    assert m2.value() == 2 and m2 is not m1
    builds = [p for p in (cache / 'tiny').iterdir() if p.is_dir()]
    assert len(builds) == 2
    # A fresh process finds the edited build in the cache.
    out = run_python(f'''
        from torch_utils import custom_ops
        spec = custom_ops.PluginSpec('tiny', ('tiny.cpp',), ('tiny.h',), {str(tmp_path / 'src')!r})
        print(custom_ops.get_plugin(spec, 'cpu', {str(cache)!r}).value())
    ''')
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '2' and 'building' not in out.stderr


def test_same_plugin_in_two_caches(tmp_path):
    # torch names a module it builds a second time in one process differently (name_v1): still loads.
    spec = tiny_spec(tmp_path / 'src', 4)
    first = custom_ops.get_plugin(spec, 'cpu', str(tmp_path / 'cache1'))
    second = custom_ops.get_plugin(spec, 'cpu', str(tmp_path / 'cache2'))
    assert first.value() == second.value() == 4 and first is not second


def test_unwritable_cache_is_a_build_error(tmp_path):
    (tmp_path / 'cache').write_text('a file where the cache directory should be')
    with pytest.raises(custom_ops.BuildError, match='cannot build in'):
        custom_ops.get_plugin(tiny_spec(tmp_path / 'src', 5), 'cpu', str(tmp_path / 'cache'))


def test_cached_load_is_fast(fused_ops):
    out = run_python('''
        import sys, time
        import torch
        from torch_utils import custom_ops
        from torch_utils.ops import _impl
        t0 = time.perf_counter()
        for spec in _impl.PLUGINS.values():
            custom_ops.get_plugin(spec, 'cpu')
        print(time.perf_counter() - t0, 'torch.utils.cpp_extension' in sys.modules)
    ''')
    assert out.returncode == 0, out.stderr
    seconds, build_tools_imported = out.stdout.split()
    assert 'building' not in out.stderr
    assert build_tools_imported == 'False'  # Loaded without the build tools.
    assert float(seconds) < 2.0


def test_killed_build_leaves_no_stale_lock(tmp_path):
    cache = tmp_path / 'cache'
    spec = tiny_spec(tmp_path / 'src', 3)
    _, build_dir = custom_ops.plugin_location(spec, 'cpu', str(cache))
    half_built = build_dir + '.tmp-1-killed'
    holder = hold_lock(build_dir + '.lock', also_make=half_built)
    os.kill(holder.pid, signal.SIGKILL)  # The build dies holding the lock, its directory half made.
    holder.wait()
    assert os.path.isdir(half_built) and os.path.isfile(build_dir + '.lock')
    t0 = time.perf_counter()
    with custom_ops.BuildLock(build_dir + '.lock', timeout=5):
        assert time.perf_counter() - t0 < 1.0  # Released by the kernel with its holder.
    assert custom_ops.get_plugin(spec, 'cpu', str(cache), lock_timeout=5).value() == 3
    assert not os.path.exists(half_built)


def test_held_lock_times_out_naming_the_lock_file(isolated_ops, monkeypatch):
    monkeypatch.setitem(_impl.options, 'lock_timeout', 5)
    _, build_dir = custom_ops.plugin_location(_impl.PLUGINS['bias_act'], 'cpu', str(isolated_ops))
    holder = hold_lock(build_dir + '.lock')
    try:
        x = torch.randn(2, 3, 4, 4)
        t0 = time.perf_counter()
        with pytest.warns(_impl.FusedOpsWarning) as record:
            y = bias_act.bias_act(x, act='lrelu')
        elapsed = time.perf_counter() - t0
    finally:
        holder.kill()
        holder.wait()
    assert 5 <= elapsed < 8
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and build_dir + '.lock' in messages[0] and 'timed out' in messages[0]
    assert bias_act.last_impl == 'ref' and torch.equal(y, bias_act.bias_act(x, act='lrelu', impl='ref'))


def test_failing_compiler_warns_once_per_op(isolated_ops, monkeypatch):
    monkeypatch.setenv('CXX', 'false')
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        call_ops_and_compare()
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2, messages  # Nothing else leaks from the build tools either.
    assert messages[0].startswith('bias_act: ') and messages[1].startswith('upfirdn2d: ')
    assert all("compiler 'false' failed" in m and m.endswith('using the reference path') and '\n' not in m
               for m in messages)


def test_injected_error_warns_once_per_op(isolated_ops, monkeypatch, tmp_path):
    src = tmp_path / 'src'
    shutil.copytree(OPS, src, ignore=shutil.ignore_patterns('*.py', '__pycache__'))
    for name in ('bias_act_kernels.cu', 'upfirdn2d_kernels.cu'):
        (src / name).write_text('#error injected by the test\n' + (src / name).read_text())
    for name, spec in _impl.PLUGINS.items():
        monkeypatch.setitem(_impl.PLUGINS, name, dataclasses.replace(spec, source_dir=str(src)))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter('always')
        call_ops_and_compare()
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2, messages
    assert messages[0].startswith('bias_act: ') and messages[1].startswith('upfirdn2d: ')
    for m, op in zip(messages, ('bias_act', 'upfirdn2d')):  # The compiler's line, naming the edited file.
        assert f'{src / op}_kernels.cu:1:2: error: #error injected by the test' in m, m
    with pytest.raises(RuntimeError, match='injected by the test'):
        bias_act.bias_act(torch.zeros(2), impl='fused')


def test_build_all_command(fused_ops, tmp_path, capsys):
    out = subprocess.run([sys.executable, '-m', 'torch_utils.custom_ops', '--build-all', '--device', 'cpu'],
                         cwd=ROOT, capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(ROOT)})
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [line.split() for line in out.stdout.splitlines()[1:]]
    assert sorted(line[0] for line in lines) == sorted(_impl.PLUGINS) and all(line[2] == 'ok' for line in lines)
    if torch.version.cuda is None:  # Asking for CUDA with a CPU build of torch: a clear failure.
        assert custom_ops.main(['--build-all', '--device', 'cuda', '--cache-dir', str(tmp_path)]) == 1
        assert 'FAILED  torch is a CPU build (no CUDA)' in capsys.readouterr().out


def test_nvcc_compiles_the_kernels(tmp_path):
    nvcc = shutil.which('nvcc') or ('/usr/local/cuda/bin/nvcc' if os.path.exists('/usr/local/cuda/bin/nvcc') else None)
    if nvcc is None:
        pytest.skip('nvcc not found')
    jobs = {name: subprocess.Popen([nvcc, '-std=c++17', '-O3', '-arch=sm_80', '-c', str(OPS / name), '-o',
                                    str(tmp_path / (name + '.o'))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
            for name in ('bias_act_kernels.cu', 'upfirdn2d_kernels.cu', 'render_ops_kernels.cu',
                         'winograd_kernels.cu', 'fir_kernels.cu')}
    for name, job in jobs.items():
        output = job.communicate(timeout=600)[0]
        assert job.returncode == 0, output
        assert 'warning' not in output.lower(), output
        assert (tmp_path / (name + '.o')).stat().st_size > 0
