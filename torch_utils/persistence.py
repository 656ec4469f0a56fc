"""Recording the constructor arguments of network classes, so that snapshots can store
"class name + init kwargs + tensors" and rebuild the module from our own code.

Unlike upstream's module of the same name, nothing here captures or executes source code.

    @persistence.persistent_class
    class MappingNetwork(torch.nn.Module):
        def __init__(self, z_dim, ...): ...

    net = MappingNetwork(z_dim=512, ...)
    net.init_kwargs        # EasyDict of the keyword arguments (positional ones are named too)
"""

from __future__ import annotations

import copy
import functools
import inspect

import dnnlib

_persistent_classes: set[type] = set()


def persistent_class(cls: type) -> type:
    """Class decorator: instances record `init_args` (always empty) and `init_kwargs`.

    Positional arguments are bound to their parameter names so that init_kwargs alone rebuilds the
    object: `type(obj)(**obj.init_kwargs)`.
    """
    if not isinstance(cls, type):
        raise TypeError('persistent_class: expected a class')
    orig_init = cls.__init__
    signature = inspect.signature(orig_init)

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        recorded = {}
        for name, value in list(bound.arguments.items())[1:]:
            kind = signature.parameters[name].kind
            if kind == inspect.Parameter.VAR_KEYWORD:
                recorded.update(value)
            elif kind == inspect.Parameter.VAR_POSITIONAL:
                if value:
                    raise TypeError(f'{cls.__name__}: persistent classes cannot take *args')
            else:
                recorded[name] = value
        # Only the outermost persistent __init__ records (subclasses call super().__init__).
        if not hasattr(self, '_init_kwargs') or type(self) is cls:
            self._init_kwargs = copy.deepcopy(recorded)
        orig_init(self, *args, **kwargs)

    cls.__init__ = __init__
    cls.init_args = property(lambda self: ())
    cls.init_kwargs = property(lambda self: dnnlib.EasyDict(copy.deepcopy(self._init_kwargs)))
    _persistent_classes.add(cls)
    return cls


def is_persistent(obj) -> bool:
    """True for instances (or classes) decorated with persistent_class."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(c in _persistent_classes for c in cls.__mro__)


def class_name(obj) -> str:
    """Dotted name that dnnlib.get_obj_by_name resolves back to the class."""
    cls = type(obj)
    return f'{cls.__module__}.{cls.__qualname__}'
