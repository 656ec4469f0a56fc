"""Network snapshots as tensors plus plain data: written with torch.save, read with weights_only=True.

A snapshot is a dict {'format': FORMAT, 'version': VERSION, ...} whose values are plain data
(None, bool, int, float, str, and lists, tuples and str-keyed dicts of them) or module records:

    {'type': 'module',
     'class_name':  'training.triplane.TriPlaneGenerator',   # Dotted name of the class to rebuild.
     'init_kwargs': {...},                                    # Plain constructor kwargs (persistence).
     'state':       {name: tensor},                           # named_parameters() + named_buffers().
     'attrs':       {name: plain value}}                      # Public plain instance attributes.

Nothing in the file names code: loading rebuilds a module only from a class the caller resolves
(an allow-list lives with the caller, legacy.py), constructs it with the stored kwargs from our own
code, and copies the tensors by name. This module knows no model.
"""

from __future__ import annotations

import copy
import os
import pickle
from typing import Any, BinaryIO, Callable, Mapping

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence
from torch_utils.safe_pickle import UnsafePickleError, describe_weights_only_error

FORMAT = 'eg3d-next/network-snapshot'
VERSION = 1

# ----------------------------------------------------------------------------


class SnapshotError(ValueError):
    """A snapshot file is unreadable, malformed or does not fit the module it is loaded into."""


def source_name(f: Any) -> str:
    """A file's name for error messages: a path, a file object's .name, or '<stream>'."""
    if isinstance(f, (str, os.PathLike)):
        return os.fspath(f)
    name = getattr(f, 'name', None)
    return name if isinstance(name, str) else '<stream>'


def is_plain(value: Any) -> bool:
    """True for data that torch.load(weights_only=True) reads back as it was (no tensors here)."""
    if value is None or type(value) in (bool, int, float, str):
        return True
    if type(value) in (list, tuple):
        return all(is_plain(v) for v in value)
    if type(value) is dict:
        return all(type(k) in (str, int) and is_plain(v) for k, v in value.items())
    return False


def to_plain(value: Any, where: str = 'value', tensors: bool = False) -> Any:
    """Copy of `value` as plain data: EasyDict/OrderedDict -> dict, numpy scalars -> Python numbers.
    With tensors=True, tensors are kept (as CPU copies): torch.load(weights_only=True) reads them too.

    Raises TypeError naming `where` (a dotted path) for anything else, e.g. a module.
    """
    if value is None or type(value) in (bool, int, float, str):
        return value
    if tensors and isinstance(value, torch.Tensor):
        return value.detach().to('cpu', copy=True)
    if isinstance(value, np.generic) and value.dtype.kind in 'biuf':
        return value.item()
    if isinstance(value, (list, tuple)):
        items = [to_plain(v, f'{where}[{i}]', tensors) for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if type(k) not in (str, int):
                raise TypeError(f'{where}: dict key {k!r} is not a str or int')
            out[k] = to_plain(v, f'{where}.{k}', tensors)
        return out
    raise TypeError(f'{where}: {type(value).__name__} is not plain data (None, bool, int, float, str, list, '
                    f'tuple, dict)')

# ----------------------------------------------------------------------------
# Modules <-> records.


def module_record(module: torch.nn.Module, where: str = 'module') -> dict:
    """The record of a persistent module: class name, init kwargs, tensors and plain attributes."""
    if not persistence.is_persistent(module):
        raise TypeError(f'{where}: {type(module).__name__} is not decorated with @persistence.persistent_class, '
                        f'so a snapshot could not rebuild it')
    state = {name: t.detach().to('cpu', copy=True) for name, t in misc.named_params_and_buffers(module)}
    attrs = {name: to_plain(value, f'{where}.{name}') for name, value in vars(module).items()
             if not name.startswith('_') and name != 'training' and _is_plain_attr(value)}
    return {'type': 'module', 'class_name': persistence.class_name(module),
            'init_kwargs': to_plain(dict(module.init_kwargs), f'{where}.init_kwargs'), 'state': state, 'attrs': attrs}


def _is_plain_attr(value: Any) -> bool:
    """True if to_plain accepts `value` (EasyDicts and numpy scalars included)."""
    try:
        to_plain(value)
        return True
    except TypeError:
        return False


def is_module_record(value: Any) -> bool:
    """True for a dict marked as a module record (its fields are checked by check_record)."""
    return isinstance(value, dict) and value.get('type') == 'module'


def check_record(record: Any, where: str) -> None:
    """Raise SnapshotError unless `record` has the fields and types of a module record."""
    problem = None
    if not is_module_record(record):
        problem = 'not a module record'
    elif not isinstance(record.get('class_name'), str):
        problem = 'class_name is not a string'
    elif not isinstance(record.get('init_kwargs'), dict) or not is_plain(record['init_kwargs']):
        problem = 'init_kwargs is not a dict of plain data'
    elif not isinstance(record.get('state'), dict) or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in record['state'].items()):
        problem = 'state is not a {name: tensor} dict'
    elif not isinstance(record.get('attrs', {}), dict) or not is_plain(record.get('attrs', {})):
        problem = 'attrs is not a dict of plain data'
    if problem is not None:
        raise SnapshotError(f'{where}: {problem}')


def build_module(record: dict, cls: type, init_kwargs: Mapping | None = None, where: str = 'module') -> torch.nn.Module:
    """Construct `cls(**init_kwargs)` from our code, copy the tensors by name, restore the attributes.

    Names must match both ways: a tensor the module lacks, or one the record lacks, is an error
    (weights are never silently dropped or left at their initial values). The module is returned
    in eval mode with requires_grad off, as upstream's snapshots are.
    """
    check_record(record, where)
    kwargs = copy.deepcopy(dict(record['init_kwargs'] if init_kwargs is None else init_kwargs))
    try:
        module = cls(**kwargs)
    except Exception as err:
        raise SnapshotError(f'{where}: cannot construct {record["class_name"]} from the stored init kwargs: '
                            f'{type(err).__name__}: {err}') from err
    names = {name for name, _ in misc.named_params_and_buffers(module)}
    unexpected = sorted(set(record['state']) - names)
    if unexpected:
        raise SnapshotError(f'{where}: {len(unexpected)} stored tensors have no counterpart in '
                            f'{record["class_name"]}: {", ".join(unexpected[:6])}{"..." if len(unexpected) > 6 else ""}')
    try:
        misc.copy_params_and_buffers(record['state'], module, require_all=True)
    except (KeyError, ValueError) as err:
        raise SnapshotError(f'{where}: {err.args[0] if err.args else err}') from None
    for name, value in record.get('attrs', {}).items():
        # Only instance attributes our constructor created; never shadow a method or property.
        if not name.startswith('_') and name in vars(module) and _is_plain_attr(vars(module)[name]):
            setattr(module, name, copy.deepcopy(value))
    return module.eval().requires_grad_(False)

# ----------------------------------------------------------------------------
# Files.


def save(path: str, snapshot: Mapping[str, Any], tensor_keys: tuple[str, ...] = ()) -> None:
    """Write `snapshot` ({key: module, module record or plain data}) to `path`, atomically.

    Modules become records; 'format' and 'version' are added. Written to a temporary name in the
    same directory, then renamed, so a failed save never leaves a partial file at `path`. The values
    of `tensor_keys` may also hold tensors (a training state's optimiser and RNG states).
    """
    data = {'format': FORMAT, 'version': VERSION}
    for key, value in snapshot.items():
        if key in data:
            raise ValueError(f'snapshot key "{key}" is reserved')
        if isinstance(value, torch.nn.Module):
            value = module_record(value, where=key)
        elif is_module_record(value):
            check_record(value, key)
        else:
            value = to_plain(value, key, tensors=key in tensor_keys)
        data[key] = value
    with dnnlib.util.atomic_write_path(path) as tmp:
        torch.save(data, tmp)


def is_zip(head: bytes) -> bool:
    """True if a file's first bytes are a zip local-file header, as torch.save writes."""
    return head[:4] == b'PK\x03\x04'


def load(f: str | os.PathLike | BinaryIO, source: str | None = None) -> dict:
    """Read a snapshot written by `save` with torch.load(weights_only=True); modules stay records."""
    source = source or source_name(f)
    try:
        data = torch.load(f, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refused a global: the file tries to run code, or is not ours.
        raise UnsafePickleError(f'{source}: {describe_weights_only_error(err)}') from None
    except Exception as err:  # torch.load reports damaged archives with many exception types.
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise SnapshotError(f'{source}: truncated or corrupt snapshot (cannot be read as a torch.save zip: '
                            f'{detail})') from None
    if not isinstance(data, dict) or data.get('format') != FORMAT:
        raise SnapshotError(f'{source}: a torch.save file, but not a network snapshot (no "format": "{FORMAT}")')
    if data.get('version') != VERSION:
        raise SnapshotError(f'{source}: snapshot format version {data.get("version")!r} is not supported '
                            f'(this code reads version {VERSION})')
    for key, value in data.items():
        if is_module_record(value):
            check_record(value, f'{source}: {key}')
    return data


def find_class_checked(name: str, allowed: Callable[[str], bool], source: str = '') -> type:
    """Resolve a dotted class name that `allowed` accepts to a persistent torch.nn.Module class."""
    prefix = f'{source}: ' if source else ''
    if not isinstance(name, str) or not all(part.isidentifier() for part in name.split('.')) or not allowed(name):
        raise UnsafePickleError(f'{prefix}refused class "{name}": not on the allow-list of network classes')
    try:
        cls = dnnlib.util.get_obj_by_name(name)
    except ImportError as err:
        raise SnapshotError(f'{prefix}class "{name}" is not available in this checkout ({err})') from None
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and persistence.is_persistent(cls)
            and f'{cls.__module__}.{cls.__qualname__}' == name):
        raise UnsafePickleError(f'{prefix}refused class "{name}": not a persistent network class defined under '
                                f'that name')
    return cls
