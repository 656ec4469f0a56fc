"""A restricted unpickler: reads pickles of tensors and plain data without running code from them.

Python's pickle calls whatever global a file names (`os.system`, `builtins.exec`, ...). This
unpickler resolves a global only through an allow-list given by the caller, where each allowed
name maps to a harmless replacement: a safe tensor rebuilder, a storage loader that uses
torch.load(weights_only=True), numpy scalar readers, or an inert stand-in class that keeps the
pickled state as data. Anything else fails with UnsafePickleError naming the global.

torch_utils knows no model: which stand-ins and which persistent classes a file may contain is
decided by the caller (legacy.py for upstream EG3D pickles).
"""

from __future__ import annotations

import collections
import io
import pickle
import re
from typing import Any, BinaryIO, Iterable, Mapping

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle asked for something outside the allow-list; nothing it names was called."""


class StandIn:
    """An inert stand-in for an object pickled by import path: holds its constructor args and state.

    Pickle rebuilds such objects with `cls.__new__(cls, *args)` (or `cls(*args)`) and then
    `obj.__setstate__(state)`; here both merely record their arguments.
    """
    class_name = '?'  # Dotted name of the class this stands in for; set per subclass.

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj.args = args
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f'StandIn({self.class_name})'


_stand_in_classes: dict[str, type] = {}


def stand_in_class(class_name: str) -> type:
    """The StandIn subclass for `class_name` (one per name, so identity checks work)."""
    if class_name not in _stand_in_classes:
        short = class_name.rsplit('.', 1)[-1]
        _stand_in_classes[class_name] = type(short, (StandIn,), {'class_name': class_name})
    return _stand_in_classes[class_name]

# ----------------------------------------------------------------------------
# Safe replacements for the globals that tensor and numpy pickles name.


def _check_hooks(hooks: Any, what: str) -> None:
    if hooks is not None and (not isinstance(hooks, dict) or len(hooks) != 0):
        raise UnsafePickleError(f'{what}: refused a tensor with backward hooks (a pickle must not attach callables)')


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks, metadata=None):
    """torch._utils._rebuild_tensor_v2 after checking that every argument is plain data."""
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f'torch._utils._rebuild_tensor_v2: expected a storage, got {type(storage).__name__}')
    ints = [storage_offset, *size, *stride]
    if not all(type(v) is int for v in ints) or not isinstance(requires_grad, bool):
        raise UnsafePickleError('torch._utils._rebuild_tensor_v2: offset, size and stride must be integers')
    _check_hooks(backward_hooks, 'torch._utils._rebuild_tensor_v2')
    if metadata:
        raise UnsafePickleError('torch._utils._rebuild_tensor_v2: refused tensor metadata')
    return torch._utils._rebuild_tensor_v2(storage, storage_offset, tuple(size), tuple(stride), requires_grad,
                                           collections.OrderedDict())


def _rebuild_parameter(data, requires_grad, backward_hooks, state=None):
    """torch._utils._rebuild_parameter(_with_state): a Parameter around an already rebuilt tensor."""
    if not isinstance(data, torch.Tensor) or not isinstance(requires_grad, bool):
        raise UnsafePickleError('torch._utils._rebuild_parameter: expected a tensor and a bool')
    _check_hooks(backward_hooks, 'torch._utils._rebuild_parameter')
    if state:
        raise UnsafePickleError('torch._utils._rebuild_parameter_with_state: refused parameter attributes')
    return torch.nn.Parameter(data, requires_grad)


def describe_weights_only_error(err: Exception) -> str:
    """The global that torch.load(weights_only=True) refused, from its error message."""
    found = re.search(r'GLOBAL ([\w.]+)', str(err))
    if found:
        return f'refused global "{found.group(1)}" (torch.load with weights_only=True allows only tensors and plain data)'
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def load_storage_from_bytes(data: bytes):
    """Replacement for torch.storage._load_from_bytes, which calls torch.load with weights_only=False."""
    if not isinstance(data, (bytes, bytearray)):
        raise UnsafePickleError('torch.storage._load_from_bytes: expected bytes')
    try:
        storage = torch.load(io.BytesIO(data), weights_only=True, map_location='cpu')
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(f'torch.storage._load_from_bytes: refused the embedded tensor data: '
                                f'{describe_weights_only_error(err)}') from None
    except Exception as err:
        raise pickle.UnpicklingError(f'torch.storage._load_from_bytes: corrupt tensor data ({err})') from None
    if not isinstance(storage, (torch.TypedStorage, torch.UntypedStorage)):
        raise UnsafePickleError(f'torch.storage._load_from_bytes: expected a storage, got {type(storage).__name__}')
    return storage


class NumpyDType:
    """Stand-in for numpy.dtype(name, align, copy) + __setstate__: only plain numeric dtypes."""

    def __init__(self, name, align=False, copy=False):
        if not isinstance(name, str) or not re.fullmatch(r'[biufc]\d{1,2}|\?', name):
            raise UnsafePickleError(f'numpy.dtype: refused dtype {name!r} (only numeric dtypes)')
        self.dtype = np.dtype(name)

    def __setstate__(self, state) -> None:
        if isinstance(state, tuple) and len(state) > 1 and state[1] in ('<', '>'):
            self.dtype = self.dtype.newbyteorder(state[1])


def numpy_scalar(dtype, data=None):
    """Replacement for numpy's scalar reconstructor: a numeric scalar from its raw bytes."""
    if not isinstance(dtype, NumpyDType) or not isinstance(data, bytes) or len(data) != dtype.dtype.itemsize:
        raise UnsafePickleError('numpy scalar: expected a numeric dtype and its raw bytes')
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


# Globals that tensors, numpy scalars and plain containers need, each mapped to a safe replacement.
SAFE_GLOBALS: dict[str, Any] = {
    'collections.OrderedDict':                  collections.OrderedDict,
    'dnnlib.util.EasyDict':                     dnnlib.EasyDict,
    'torch._utils._rebuild_tensor_v2':          _rebuild_tensor_v2,
    'torch._utils._rebuild_parameter':          _rebuild_parameter,
    'torch._utils._rebuild_parameter_with_state': _rebuild_parameter,
    'torch.storage._load_from_bytes':           load_storage_from_bytes,
    'numpy.dtype':                              NumpyDType,
    'numpy.core.multiarray.scalar':             numpy_scalar,   # Written by NumPy 1.x.
    'numpy._core.multiarray.scalar':            numpy_scalar,   # Written by NumPy 2.x.
}

# ----------------------------------------------------------------------------


class RestrictedUnpickler(pickle._Unpickler):
    """An unpickler whose globals come only from `SAFE_GLOBALS`, `extra_globals` and `stand_ins`.

    Built on pickle's pure-Python unpickler so that the BUILD opcode (set an object's state) can be
    limited to stand-ins and numpy dtypes: otherwise a pickle could set attributes on an allowed
    class or function itself (e.g. replace a method of dnnlib.EasyDict for the whole process).
    """

    def __init__(self,
        file:           BinaryIO,                   # Binary stream positioned at the pickle.
        extra_globals:  Mapping[str, Any] = {},     # {dotted name: safe replacement}.
        stand_ins:      Iterable[str] = (),         # Dotted class names that become StandIn objects.
    ):
        super().__init__(file)
        self._globals = {**SAFE_GLOBALS, **extra_globals}
        self._stand_ins = frozenset(stand_ins)

    def find_class(self, module: str, name: str) -> Any:
        full = f'{module}.{name}'
        if full in self._globals:
            return self._globals[full]
        if full in self._stand_ins:
            return stand_in_class(full)
        raise UnsafePickleError(f'refused global "{full}": not on the allow-list of this loader')

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError('refused a persistent id: not used by the pickles this loader reads')

    def load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (StandIn, NumpyDType)):
            raise UnsafePickleError(f'refused to set the state of a {type(inst).__name__} '
                                    f'(only stand-ins and numpy dtypes take pickled state)')
        inst.__setstate__(state)

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def restricted_load(file: BinaryIO, extra_globals: Mapping[str, Any] = {}, stand_ins: Iterable[str] = ()) -> Any:
    """Unpickle `file` with RestrictedUnpickler."""
    return RestrictedUnpickler(file, extra_globals=extra_globals, stand_ins=stand_ins).load()
