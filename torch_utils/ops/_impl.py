"""Choosing between an op's reference path and its fused kernel."""

from __future__ import annotations

_VALID = ('auto', 'ref', 'fused', 'cuda')


def fused_plugin(op_name: str, device) -> object | None:
    """The loaded fused plugin for `op_name` on `device`, or None when none can serve (the
    fused-kernels work fills this in; until then every call takes the reference path)."""
    return None


def resolve(op_name: str, impl: str, device) -> str:
    """'ref' or 'fused' for a call of `op_name` on `device`, given the requested `impl`."""
    if impl not in _VALID:
        raise ValueError(f'{op_name}: impl must be one of {", ".join(_VALID)}, got {impl!r}')
    if impl == 'ref':
        return 'ref'
    return 'fused' if fused_plugin(op_name, device) is not None else 'ref'
