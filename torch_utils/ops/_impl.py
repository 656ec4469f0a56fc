"""Choosing between an op's reference path and its fused kernel.

impl='ref' always takes the reference path. impl='auto' (and upstream's 'cuda', an alias) takes the
fused kernel when the plugin for the tensor's device is built, or can be built now, and loads; when it
cannot, the op warns once, in one line naming the cause, and the reference path serves. impl='fused'
insists: it raises instead of falling back.

EG3D_FUSED_OPS=0 turns the fused path off (no builds, no warnings: 'auto' is 'ref'); 1 (the default)
builds at first use into the cache of torch_utils.custom_ops, once per machine.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import threading
import warnings

import torch

from .. import custom_ops

_VALID = ('auto', 'ref', 'fused', 'cuda')
ENV = 'EG3D_FUSED_OPS'

_SRC = os.path.dirname(os.path.abspath(__file__))
_COMMON = ('portable.h', 'plugin_module.h')

# The plugins: sources in this directory, and the module with the Python side (class Plugin).
PLUGINS: dict[str, custom_ops.PluginSpec] = {
    'bias_act': custom_ops.PluginSpec('bias_act', ('bias_act_plugin.cpp', 'bias_act_kernels.cu'),
                                      _COMMON + ('bias_act.h',), _SRC),
    'upfirdn2d': custom_ops.PluginSpec('upfirdn2d', ('upfirdn2d_plugin.cpp', 'upfirdn2d_kernels.cu'),
                                       _COMMON + ('upfirdn2d.h',), _SRC),
    'filtered_lrelu': custom_ops.PluginSpec('filtered_lrelu',
                                            ('filtered_lrelu_plugin.cpp', 'filtered_lrelu_kernels.cu'),
                                            _COMMON + ('filtered_lrelu.h',), _SRC),
    'render_ops': custom_ops.PluginSpec('render_ops', ('render_ops_plugin.cpp', 'render_ops_kernels.cu',
                                                         'winograd_kernels.cu', 'fir_kernels.cu'),
                                        _COMMON + ('render_ops.h', 'host_simd.h'), _SRC),
}
_WRAPPERS = {'bias_act': 'torch_utils.ops.bias_act_fused', 'upfirdn2d': 'torch_utils.ops.upfirdn2d_fused',
             'filtered_lrelu': 'torch_utils.ops.filtered_lrelu_fused', 'render_ops': 'torch_utils.ops.render_ops_fused'}


class FusedOpsWarning(UserWarning):
    """An op fell back to its reference path (said once per op and cause)."""


class Unsupported(Exception):
    """The fused kernel cannot serve this particular call (the message says why)."""


_plugins: dict[tuple[str, str], object] = {}   # (op, device type) -> Plugin, or None after a failure.
_causes: dict[tuple[str, str], str] = {}
_warned: set[tuple[str, str]] = set()
_lock = threading.RLock()
_state = threading.local()
options = dict(cache_dir=None, lock_timeout=None)  # Passed to custom_ops.get_plugin (tests set them).


def enabled() -> bool:
    """Whether the fused path may be used at all (EG3D_FUSED_OPS, default on)."""
    return os.environ.get(ENV, '1').strip().lower() not in ('0', 'off', 'false', 'no')


def warn_once(op_name: str, cause: str) -> None:
    """One warning line per op and cause: '<op>: <cause>; using the reference path'."""
    with _lock:
        if (op_name, cause) in _warned:
            return
        _warned.add((op_name, cause))
    warnings.warn(f'{op_name}: {cause}; using the reference path', FusedOpsWarning, stacklevel=4)


def _load(op_name: str, device_type: str):
    if op_name not in PLUGINS:
        raise custom_ops.BuildError('no fused kernel for this op yet')
    module = custom_ops.get_plugin(PLUGINS[op_name], device_type, options['cache_dir'], options['lock_timeout'])
    return importlib.import_module(_WRAPPERS[op_name]).Plugin(module)


def fused_plugin(op_name: str, device) -> object | None:
    """The loaded fused plugin for `op_name` on `device`, or None when none can serve (the cause is
    then warned once and available from unavailable_cause())."""
    if not enabled():
        return None
    key = (op_name, torch.device(device).type)
    plugin = _plugins.get(key, False)
    if plugin is not False:
        return plugin
    if key[1] == 'meta':  # Shapes only: nothing to run, nothing to say.
        return None
    with _lock:
        if key not in _plugins:
            try:
                _plugins[key] = _load(op_name, key[1])
            except custom_ops.BuildError as e:
                _plugins[key], _causes[key] = None, e.cause
            except Exception as e:  # noqa: BLE001 - whatever goes wrong, the reference path must serve.
                _plugins[key], _causes[key] = None, f'{type(e).__name__}: {e}'.splitlines()[0]
        plugin = _plugins[key]
    if plugin is None:
        warn_once(op_name, f'fused kernel unavailable on {key[1]} ({_causes[key]})')
    return plugin


def unavailable_cause(op_name: str, device) -> str | None:
    """Why fused_plugin() returned None, if it did."""
    if not enabled():
        return f'disabled by {ENV}={os.environ.get(ENV)}'
    return _causes.get((op_name, torch.device(device).type))


def resolve(op_name: str, impl: str, device) -> str:
    """'ref' or 'fused' for a call of `op_name` on `device`, given the requested `impl`."""
    if impl not in _VALID:
        raise ValueError(f'{op_name}: impl must be one of {", ".join(_VALID)}, got {impl!r}')
    if impl == 'ref':
        return 'ref'
    if fused_plugin(op_name, device) is not None:
        return 'fused'
    if impl == 'fused':
        raise RuntimeError(f"{op_name}: impl='fused' but the fused kernel is unavailable "
                           f'({unavailable_cause(op_name, device)})')
    return 'ref'


def reset() -> None:
    """Forgets loaded plugins, failure causes and warnings given (tests; a rebuilt plugin)."""
    with _lock:
        _plugins.clear()
        _causes.clear()
        _warned.clear()

# ----------------------------------------------------------------------------------------------------
# How the host runs kernels.


def host_exec() -> tuple[int, int]:
    """(threads for the host's block loop, whether to emulate CUDA's block shape)."""
    return torch.get_num_threads(), int(getattr(_state, 'emulate', False))


@contextlib.contextmanager
def emulating_cuda_blocks(enable: bool = True):
    """Within this context (this thread), host kernels run with CUDA's tiling and block shape, threads
    looped and barriers as phase boundaries: the device algorithm, checked on the CPU (float32)."""
    old = getattr(_state, 'emulate', False)
    _state.emulate = enable
    try:
        yield
    finally:
        _state.emulate = old


def stream_of(x: torch.Tensor) -> int:
    """The CUDA stream to launch on (an integer handle), or 0 on the host."""
    return torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0


def device_guard(x: torch.Tensor):
    """Makes x's GPU the current one for a launch (a no-op on the host)."""
    return torch.cuda.device_of(x) if x.is_cuda else contextlib.nullcontext()
