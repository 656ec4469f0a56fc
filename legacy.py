"""Loading network snapshots, ours and upstream EG3D's, without executing code from the file.

Two formats share upstream's file names (network-snapshot-{kimg:06d}.pkl) and are told apart by
content:
- ours: a zip written by torch.save holding tensors and plain data (torch_utils/snapshot.py),
  read with torch.load(weights_only=True);
- upstream's: a pickle of torch_utils.persistence (version 6) objects whose embedded module
  source would normally be exec'd. Here it is read with a restricted unpickler
  (torch_utils/safe_pickle.py): persistence records become data, the non-persistent classes become
  inert stand-ins, and tensor storages load with weights_only=True. The module source is ignored.

Either way, each network is rebuilt from OUR classes (allow-listed by name) with the stored init
kwargs, and its parameters and buffers are copied by name with require_all.

    with dnnlib.util.open_url('ffhq512-128.pkl') as f:
        G = legacy.load_network_pkl(f)['G_ema']

Converter: python legacy.py --source=ffhq512-128.pkl --dest=ffhq512-128-ours.pkl
"""

from __future__ import annotations

import copy
import io
import os
import pickle
import struct
import sys
from typing import Any, BinaryIO, Iterable, Mapping

import click
import torch

import dnnlib
from torch_utils import safe_pickle, snapshot
from torch_utils.safe_pickle import StandIn, UnsafePickleError
from torch_utils.snapshot import SnapshotError

NETWORK_KEYS = ('G', 'D', 'G_ema', 'augment_pipe')

# Our network classes a snapshot may name: anything defined under these packages, plus the
# caller's `allow` list. Resolution also requires a @persistent_class nn.Module defined there.
ALLOWED_CLASS_PREFIXES = ('training.',)

# Upstream's persistent classes (torch_utils.persistence records name the bare class): these may
# appear anywhere in an upstream pickle. Any other record name is refused.
UPSTREAM_PERSISTENT_CLASSES = frozenset([
    # networks_stylegan2.py
    'FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
    'SynthesisNetwork', 'Generator', 'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
    'Discriminator',
    # triplane.py, superresolution.py, dual_discriminator.py, augment.py
    'TriPlaneGenerator', 'SuperresolutionHybrid8X', 'SuperresolutionHybrid8XDC', 'SuperresolutionHybrid4X',
    'SuperresolutionHybrid2X', 'SuperresolutionHybridDeepfp32', 'SynthesisBlockNoUp', 'SingleDiscriminator',
    'DualDiscriminator', 'DummyDualDiscriminator', 'AugmentPipe',
])

# Non-persistent classes upstream pickles by import path (eg3d-facts 9): inert stand-ins here.
UPSTREAM_STAND_INS = frozenset([
    'training.triplane.OSGDecoder',
    'training.volumetric_rendering.renderer.ImportanceRenderer',
    'training.volumetric_rendering.ray_sampler.RaySampler',
    'training.volumetric_rendering.ray_marcher.MipRayMarcher2',
    'torch.nn.modules.container.Sequential',
    'torch.nn.modules.activation.Softplus',
])

# Upstream top-level network class -> our class that rebuilds it.
UPSTREAM_CLASS_MAP = {
    'TriPlaneGenerator':      'training.triplane.TriPlaneGenerator',
    'DualDiscriminator':      'training.dual_discriminator.DualDiscriminator',
    'SingleDiscriminator':    'training.dual_discriminator.SingleDiscriminator',
    'DummyDualDiscriminator': 'training.dual_discriminator.DummyDualDiscriminator',
    'AugmentPipe':            'training.augment.AugmentPipe',
    'Generator':              'training.networks_stylegan2.Generator',
    'Discriminator':          'training.networks_stylegan2.Discriminator',
}


def snapshot_file_name(kimg: int) -> str:
    """Upstream's snapshot file name, kept for both formats."""
    return f'network-snapshot-{int(kimg):06d}.pkl'

# ----------------------------------------------------------------------------
# Upstream pickles -> records.


class PersistentRecord:
    """An upstream torch_utils.persistence object (version 6) as data; its module source is dropped."""

    def __init__(self, class_name: str, state: dict):
        self.class_name = class_name
        self.state = state

    def __repr__(self) -> str:
        return f'PersistentRecord({self.class_name})'


def _reconstruct_persistent_obj(meta: Any) -> PersistentRecord:
    """Stands in for upstream's torch_utils.persistence._reconstruct_persistent_obj: never execs."""
    if not isinstance(meta, dict) or meta.get('type') != 'class':
        raise UnsafePickleError('persistence record: expected a dict with type "class"')
    if meta.get('version') != 6:
        raise UnsafePickleError(f'persistence record: version {meta.get("version")!r} is not supported (expected 6)')
    name = meta.get('class_name')
    if name not in UPSTREAM_PERSISTENT_CLASSES:
        raise UnsafePickleError(f'refused persistent class "{name}": not on the allow-list of upstream classes')
    if not isinstance(meta.get('state'), dict):
        raise UnsafePickleError(f'persistence record "{name}": state is not a dict')
    return PersistentRecord(name, meta['state'])


def read_upstream_pickle(f: BinaryIO, source: str = '<stream>') -> dict:
    """Unpickle an upstream snapshot with the restricted unpickler; networks stay PersistentRecords."""
    try:
        data = safe_pickle.restricted_load(
            f, extra_globals={'torch_utils.persistence._reconstruct_persistent_obj': _reconstruct_persistent_obj},
            stand_ins=UPSTREAM_STAND_INS)
    except UnsafePickleError as err:
        raise UnsafePickleError(f'{source}: {err}') from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError,
            RuntimeError, RecursionError, MemoryError, OverflowError, struct.error) as err:
        raise SnapshotError(f'{source}: truncated or corrupt pickle ({type(err).__name__}: {err})') from None
    if not isinstance(data, dict):
        raise SnapshotError(f'{source}: not a network snapshot (the pickle holds a {type(data).__name__}, '
                            f'expected a dict with G, D, G_ema)')
    return data


def flatten_module_state(obj: Any, where: str = 'module') -> dict:
    """{name: tensor} with the names module.named_parameters() and named_buffers() would give."""
    params, buffers, seen_tensors, seen_modules = {}, {}, set(), set()

    def visit(node, prefix):
        if id(node) in seen_modules:
            return  # As named_modules(): a shared submodule is listed once.
        seen_modules.add(id(node))
        state = node.state if isinstance(node, (PersistentRecord, StandIn)) else None
        if not isinstance(state, dict) or not isinstance(state.get('_modules', {}), dict):
            raise SnapshotError(f'{where}: {prefix or "top level"} is not a module record')
        for key, out in (('_parameters', params), ('_buffers', buffers)):
            for name, tensor in (state.get(key) or {}).items():
                if tensor is None:
                    continue
                if not isinstance(tensor, torch.Tensor):
                    raise SnapshotError(f'{where}: {prefix + name} is a {type(tensor).__name__}, not a tensor')
                if id(tensor) not in seen_tensors:
                    seen_tensors.add(id(tensor))
                    out[prefix + name] = tensor.detach()
        for name, child in state.get('_modules', {}).items():
            if child is not None:
                visit(child, f'{prefix}{name}.')

    visit(obj, '')
    return {**params, **buffers}


def upstream_record(obj: Any, class_map: Mapping[str, str], where: str = 'module') -> dict:
    """An upstream network (PersistentRecord) as our module record: class mapped, tensors by name."""
    if not isinstance(obj, PersistentRecord):
        raise SnapshotError(f'{where}: expected a persistent network, got {type(obj).__name__}')
    if obj.class_name not in class_map:
        raise SnapshotError(f'{where}: no class of ours rebuilds upstream\'s {obj.class_name}')
    state = obj.state
    if state.get('_init_args'):
        raise SnapshotError(f'{where}: positional constructor arguments are not supported')
    try:
        init_kwargs = snapshot.to_plain(dict(state.get('_init_kwargs') or {}), f'{where}.init_kwargs')
    except TypeError as err:
        raise SnapshotError(str(err)) from None
    attrs = {}
    for name, value in state.items():
        if name.startswith('_') or name == 'training':
            continue
        try:
            attrs[name] = snapshot.to_plain(value, name)
        except TypeError:
            pass  # Tensors and objects are not plain attributes.
    return {'type': 'module', 'class_name': class_map[obj.class_name], 'init_kwargs': init_kwargs,
            'state': flatten_module_state(obj, where), 'attrs': attrs}


def _upstream_value(value: Any, class_map: Mapping[str, str], where: str) -> Any:
    """A top-level value of an upstream pickle: a network becomes a record, anything else plain data."""
    if isinstance(value, PersistentRecord):
        return upstream_record(value, class_map, where)
    try:
        return snapshot.to_plain(value, where)
    except TypeError as err:
        raise SnapshotError(f'{err}; expected a network or plain data') from None

# ----------------------------------------------------------------------------
# Both formats -> records -> modules.


def _open(f: str | os.PathLike | BinaryIO):
    """Open a path for reading (the caller closes it); None when `f` is already a stream."""
    if isinstance(f, (str, os.PathLike)):
        if not os.path.isfile(f):
            raise FileNotFoundError(f'{os.fspath(f)}: no such file')
        return open(f, 'rb')
    return None


def read_network_records(f: str | os.PathLike | BinaryIO, class_map: Mapping[str, str] | None = None) -> dict:
    """Read either format into {'G', 'D', 'G_ema', 'augment_pipe': record or None,
    'training_set_kwargs', ...}, without constructing any module."""
    source = snapshot.source_name(f)
    class_map = {**UPSTREAM_CLASS_MAP, **(class_map or {})}
    opened = _open(f)
    stream = opened or f
    try:
        if not (hasattr(stream, 'seekable') and stream.seekable()):
            stream = io.BytesIO(stream.read())
        start = stream.tell()
        head = stream.read(4)
        stream.seek(start)
        if len(head) == 0:
            raise SnapshotError(f'{source}: empty file, not a network snapshot')
        if snapshot.is_zip(head):
            data = snapshot.load(stream, source)
        elif head[0] == 0x80:  # Pickle protocol >= 2: upstream's format.
            raw = read_upstream_pickle(stream, source)
            data = {key: _upstream_value(value, class_map, f'{source}: {key}') for key, value in raw.items()}
        else:
            raise SnapshotError(f'{source}: not a network snapshot: neither a zip (this project\'s format) '
                                f'nor a pickle stream (upstream EG3D); the file starts with {head!r}')
    finally:
        if opened is not None:
            opened.close()
    data.setdefault('training_set_kwargs', None)
    data.setdefault('augment_pipe', None)
    for key in NETWORK_KEYS:
        value = data.get(key)
        if key in ('G', 'D', 'G_ema') and value is None:
            raise SnapshotError(f'{source}: no {key} network in the snapshot')
        if value is not None and not snapshot.is_module_record(value):
            raise SnapshotError(f'{source}: {key} is not a network (got {type(value).__name__})')
    return data


def _fp16_kwargs(init_kwargs: dict) -> dict:
    """Upstream's force_fp16: num_fp16_res 4 and conv_clamp 256 (in synthesis_kwargs if present)."""
    kwargs = copy.deepcopy(init_kwargs)
    target = kwargs['synthesis_kwargs'] if isinstance(kwargs.get('synthesis_kwargs'), dict) else kwargs
    target['num_fp16_res'] = 4
    target['conv_clamp'] = 256
    return kwargs


def build_network(record: dict, allow: Iterable[str] = (), init_kwargs: dict | None = None,
                  where: str = 'module') -> torch.nn.Module:
    """Rebuild one network record from our allow-listed class (see snapshot.build_module)."""
    allow = frozenset(allow)
    cls = snapshot.find_class_checked(record['class_name'], lambda name: name in allow or
                                      name.startswith(ALLOWED_CLASS_PREFIXES), source=where)
    return snapshot.build_module(record, cls, init_kwargs=init_kwargs, where=where)


def load_network_pkl(f: str | os.PathLike | BinaryIO, force_fp16: bool = False, *,
                     class_map: Mapping[str, str] | None = None, allow: Iterable[str] = ()) -> dict:
    """Load a network snapshot of either format: {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}.

    f:          path or binary file object (e.g. from dnnlib.util.open_url).
    force_fp16: rebuild G, D and G_ema with num_fp16_res=4 and conv_clamp=256, as upstream.
    class_map:  extra {upstream class name: our dotted class name} for upstream pickles.
    allow:      extra dotted class names that may be rebuilt (besides classes under training.).
    """
    source = snapshot.source_name(f)
    class_map = {**UPSTREAM_CLASS_MAP, **(class_map or {})}
    data = read_network_records(f, class_map)
    allow = set(allow) | set(class_map.values())
    out = dict(data)
    for key in NETWORK_KEYS:
        record = data.get(key)
        if record is None:
            continue
        kwargs = _fp16_kwargs(record['init_kwargs']) if force_fp16 and key in ('G', 'D', 'G_ema') else None
        out[key] = build_network(record, allow, init_kwargs=kwargs, where=f'{source}: {key}')
    out.pop('format', None)
    out.pop('version', None)
    return out


def save_network_pkl(path: str, G: torch.nn.Module, D: torch.nn.Module, G_ema: torch.nn.Module,
                     augment_pipe: torch.nn.Module | None = None, training_set_kwargs: dict | None = None,
                     **extra: Any) -> None:
    """Write our snapshot format to `path` (temporary name, then rename). `extra` must be plain data."""
    snapshot.save(path, dict(training_set_kwargs=training_set_kwargs, G=G, D=D, G_ema=G_ema,
                             augment_pipe=augment_pipe, **extra))

# ----------------------------------------------------------------------------


@click.command()
@click.option('--source', help='Input snapshot: upstream EG3D pickle or ours (path or URL)', required=True,
              metavar='PATH')
@click.option('--dest', help='Output snapshot in our format', required=True, metavar='PATH')
@click.option('--force-fp16', help='Rebuild with num_fp16_res=4, conv_clamp=256', type=bool, default=False,
              show_default=True, metavar='BOOL')
@click.option('--records-only', help='Convert without rebuilding the networks from our classes (no check '
              'that our code accepts the kwargs and tensor names)', is_flag=True)
def convert_network_pickle(source: str, dest: str, force_fp16: bool, records_only: bool) -> None:
    """Convert a network snapshot (e.g. an official EG3D pickle) to this project's safe format.

    \b
    python legacy.py --source=ffhq512-128.pkl --dest=ffhq512-128-ours.pkl
    """
    try:
        with dnnlib.util.open_url(source) as f:
            if records_only:
                if force_fp16:
                    raise click.UsageError('--force-fp16 needs the networks to be rebuilt (drop --records-only)')
                data = read_network_records(f)
                data.pop('format', None)
                data.pop('version', None)
            else:
                data = load_network_pkl(f, force_fp16=force_fp16)
        snapshot.save(dest, data)
    except (SnapshotError, UnsafePickleError, FileNotFoundError, dnnlib.OfflineError) as err:
        print(f'legacy.py: {err}', file=sys.stderr)
        if isinstance(err, SnapshotError) and 'not available in this checkout' in str(err):
            print('legacy.py: pass --records-only to convert without rebuilding the networks', file=sys.stderr)
        raise SystemExit(1)
    print(f'Wrote {dest}')


if __name__ == '__main__':
    convert_network_pickle()
