"""Module and tensor helpers used across networks and training."""

from __future__ import annotations

import contextlib
import re
from typing import Sequence

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Cached constant tensors: filters and small constants reused on every forward.

_constant_cache: dict = {}


def constant(value, shape=None, dtype=None, device=None, memory_format=None) -> torch.Tensor:
    """A cached tensor holding `value`, keyed by value, shape, dtype, device and memory format."""
    value = np.asarray(value)
    if shape is not None:
        shape = tuple(shape)
    if dtype is None:
        dtype = torch.get_default_dtype()
    if device is None:
        device = torch.device('cpu')
    if memory_format is None:
        memory_format = torch.contiguous_format
    key = (value.shape, value.dtype, value.tobytes(), shape, dtype, device, memory_format)
    tensor = _constant_cache.get(key, None)
    if tensor is None:
        tensor = torch.as_tensor(value.copy(), dtype=dtype, device=device)
        if shape is not None:
            tensor, _ = torch.broadcast_tensors(tensor, torch.empty(shape))
        tensor = tensor.contiguous(memory_format=memory_format)
        _constant_cache[key] = tensor
    return tensor

# ----------------------------------------------------------------------------
# Shape checks at module boundaries.


def assert_shape(tensor: torch.Tensor, ref_shape: Sequence[int | None], name: str = 'tensor') -> None:
    """Raise a readable AssertionError unless `tensor.shape` matches `ref_shape` (None = any size)."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(f'{name}: expected {len(ref_shape)} dimensions {list(ref_shape)}, '
                             f'got {tensor.ndim}: {list(tensor.shape)}')
    for idx, (size, ref) in enumerate(zip(tensor.shape, ref_shape)):
        if ref is None:
            continue
        if isinstance(ref, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(torch.as_tensor(size), ref), f'{name}: wrong size for dimension {idx}')
        elif isinstance(size, torch.Tensor):
            with suppress_tracer_warnings():
                torch._assert(torch.equal(size, torch.as_tensor(ref)),
                              f'{name}: wrong size for dimension {idx}: expected {ref}')
        elif size != ref:
            raise AssertionError(f'{name}: wrong size for dimension {idx}: got {size}, expected {ref} '
                                 f'(shape {list(tensor.shape)}, expected {list(ref_shape)})')


@contextlib.contextmanager
def suppress_tracer_warnings():
    import warnings
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', category=torch.jit.TracerWarning)
        yield

# ----------------------------------------------------------------------------
# Profiler scopes: `with profiled('renderer'):` or `@profiled_function`.


def profiled(name: str):
    """A named torch.profiler scope; nearly free when no profiler is recording."""
    return torch.autograd.profiler.record_function(name)


def profiled_function(fn):
    """Decorator: run `fn` inside a profiler scope named after it."""
    import functools

    @functools.wraps(fn)
    def decorator(*args, **kwargs):
        with torch.autograd.profiler.record_function(fn.__name__):
            return fn(*args, **kwargs)
    return decorator

# ----------------------------------------------------------------------------
# Parameters and buffers by name.


def named_params_and_buffers(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    assert isinstance(module, torch.nn.Module)
    return list(module.named_parameters()) + list(module.named_buffers())


def params_and_buffers(module: torch.nn.Module) -> list[torch.Tensor]:
    return [t for _, t in named_params_and_buffers(module)]


@torch.no_grad()
def copy_params_and_buffers(src_module, dst_module: torch.nn.Module, require_all: bool = False) -> None:
    """Copy every parameter and buffer of `dst_module` from the same name in `src_module`.

    `src_module` may be a module or a {name: tensor} mapping. With require_all, a name missing from
    the source raises KeyError naming it; a shape mismatch always raises.
    """
    if isinstance(src_module, torch.nn.Module):
        src_tensors = dict(named_params_and_buffers(src_module))
    else:
        src_tensors = dict(src_module)
    missing = []
    for name, tensor in named_params_and_buffers(dst_module):
        if name not in src_tensors:
            missing.append(name)
            continue
        src = torch.as_tensor(src_tensors[name])
        if src.shape != tensor.shape:
            raise ValueError(f'copy_params_and_buffers: "{name}" has shape {list(src.shape)} in the source '
                             f'but {list(tensor.shape)} in the destination')
        tensor.copy_(src.detach()).requires_grad_(tensor.requires_grad)
    if require_all and missing:
        more = f' (and {len(missing) - 1} more: {", ".join(missing[1:6])}{"..." if len(missing) > 6 else ""})' \
            if len(missing) > 1 else ''
        raise KeyError(f'copy_params_and_buffers: the source has no "{missing[0]}"{more}')


@contextlib.contextmanager
def ddp_sync(module: torch.nn.Module, sync: bool):
    """Skip DDP gradient synchronisation when `sync` is False (gradient accumulation)."""
    if isinstance(module, torch.nn.parallel.DistributedDataParallel) and not sync:
        with module.no_sync():
            yield
    else:
        yield


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = r'.*\.[^.]+_(avg|ema)') -> None:
    """Assert that every parameter and buffer is identical on all ranks (NaNs compare equal)."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, tensor in named_params_and_buffers(module):
        fullname = type(module).__name__ + '.' + name
        if ignore_regex is not None and re.fullmatch(ignore_regex, fullname):
            continue
        tensor = tensor.detach()
        if tensor.is_floating_point():
            tensor = torch.nan_to_num(tensor)
        other = tensor.clone()
        torch.distributed.broadcast(tensor=other, src=0)
        if not (tensor == other).all():
            raise AssertionError(f'check_ddp_consistency: "{fullname}" differs between rank 0 and rank '
                                 f'{torch.distributed.get_rank()}')

# ----------------------------------------------------------------------------
# A table of submodules, their parameter counts and output shapes, for one forward call.


def print_module_summary(module: torch.nn.Module, inputs: Sequence, max_nesting: int = 3,
                         skip_redundant: bool = True) -> object:
    """Run `module(*inputs)` once with hooks and print each submodule's parameters, buffers and outputs."""
    assert isinstance(module, torch.nn.Module)
    assert not isinstance(module, torch.jit.ScriptModule)
    assert isinstance(inputs, (tuple, list))

    entries = []
    nesting = [0]

    def pre_hook(_mod, _inputs):
        nesting[0] += 1

    def post_hook(mod, _inputs, outputs):
        nesting[0] -= 1
        if nesting[0] <= max_nesting:
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else \
                list(outputs.values()) if isinstance(outputs, dict) else [outputs]
            outputs = [t for t in outputs if isinstance(t, torch.Tensor)]
            entries.append(dnnlib.EasyDict(mod=mod, outputs=outputs))

    hooks = [m.register_forward_pre_hook(pre_hook) for m in module.modules()]
    hooks += [m.register_forward_hook(post_hook) for m in module.modules()]
    try:
        outputs = module(*inputs)
    finally:
        for hook in hooks:
            hook.remove()

    # Each tensor is counted once, by the innermost module that owns it.
    tensors_seen = set()
    for e in entries:
        e.unique_params = [t for t in e.mod.parameters() if id(t) not in tensors_seen]
        e.unique_buffers = [t for t in e.mod.buffers() if id(t) not in tensors_seen]
        e.unique_outputs = [t for t in e.outputs if id(t) not in tensors_seen]
        tensors_seen |= {id(t) for t in e.unique_params + e.unique_buffers + e.unique_outputs}
    if skip_redundant:
        entries = [e for e in entries if len(e.unique_params) or len(e.unique_buffers) or len(e.unique_outputs)]

    rows = [[type(module).__name__, 'Parameters', 'Buffers', 'Output shape', 'Datatype'], ['---'] * 5]
    param_total = buffer_total = 0
    submodule_names = {mod: name for name, mod in module.named_modules()}
    for e in entries:
        name = '<top-level>' if e.mod is module else submodule_names[e.mod]
        param_size = sum(t.numel() for t in e.unique_params)
        buffer_size = sum(t.numel() for t in e.unique_buffers)
        output_shapes = [str(list(t.shape)) for t in e.outputs]
        output_dtypes = [str(t.dtype).split('.')[-1] for t in e.outputs]
        rows.append([name + (':0' if len(e.outputs) >= 2 else ''),
                     str(param_size) if param_size else '-', str(buffer_size) if buffer_size else '-',
                     (output_shapes + ['-'])[0], (output_dtypes + ['-'])[0]])
        for idx in range(1, len(e.outputs)):
            rows.append([name + f':{idx}', '-', '-', output_shapes[idx], output_dtypes[idx]])
        param_total += param_size
        buffer_total += buffer_size
    rows += [['---'] * 5, ['Total', str(param_total), str(buffer_total), '-', '-']]
    widths = [max(len(cell) for cell in column) for column in zip(*rows)]
    print()
    for row in rows:
        print('  '.join(cell + ' ' * (width - len(cell)) for cell, width in zip(row, widths)))
    print()
    return outputs
