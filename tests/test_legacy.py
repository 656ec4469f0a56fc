"""Upstream EG3D pickles: the restricted unpickler, record flattening, the rebuild hook, the converter.

The official fixture (../shared/fixtures/official-small-s1.pkl) has upstream's structure, with each
persistence record's module source replaced by a line that raises if executed.
"""

import importlib.util
import io
import json
import os
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import dnnlib
import legacy
from torch_utils import persistence, snapshot
from torch_utils.safe_pickle import UnsafePickleError
from torch_utils.snapshot import SnapshotError

# ----------------------------------------------------------------------------
# Proof that nothing runs: a process-wide audit hook (installed once; inert unless recording)
# sees every exec/compile/import/os.system/subprocess the interpreter performs.

_FORBIDDEN_EVENTS = ('exec', 'compile', 'import', 'marshal.loads', 'os.system', 'subprocess.Popen', 'os.exec',
                     'os.posix_spawn', 'os.spawn', 'os.fork', 'ctypes.dlopen', 'builtins.input')
_audit = {'on': False, 'events': []}


def _audit_hook(event, args):
    if _audit['on'] and event.startswith(_FORBIDDEN_EVENTS):
        _audit['events'].append((event, repr(args)[:120]))


sys.addaudithook(_audit_hook)


def _audited(fn, *args, **kwargs):
    """Run fn, returning (result or exception, forbidden audit events seen meanwhile)."""
    legacy.read_upstream_pickle(io.BytesIO(_snapshot_dict(_tensor())))  # Warm torch's lazy imports first.
    _audit['events'].clear()
    _audit['on'] = True
    try:
        result = fn(*args, **kwargs)
    except Exception as err:
        result = err
    finally:
        _audit['on'] = False
    return result, list(_audit['events'])

# ----------------------------------------------------------------------------
# Hand-made pickles: GLOBAL opcodes naming anything, around pickled plain data.


def _glob(module, name):
    return b'c' + f'{module}\n{name}\n'.encode()


def _data(obj):
    return pickle.dumps(obj, protocol=3)[2:-1]  # Without PROTO and STOP: pushes obj.


def _call(module, name, *args):
    return _glob(module, name) + _data(tuple(args)) + b'R'


def _snapshot_dict(g_value: bytes) -> bytes:
    """A pickle of {'training_set_kwargs': None, 'G': <g_value>} as upstream's files start."""
    return b'\x80\x03}' + _data('training_set_kwargs') + b'N' + b's' + _data('G') + g_value + b's.'

# ----------------------------------------------------------------------------


@pytest.fixture(scope='module')
def official(fixtures_dir):
    with np.load(fixtures_dir / 'official-small-s1.npz') as f:
        npz = {k: f[k] for k in f.files if k.split('/')[0] in ('G', 'D', 'meta_json')}  # Decompress once.
    config = json.loads((fixtures_dir / 'official-small-config.json').read_text())
    meta = json.loads(str(npz['meta_json']))
    path = fixtures_dir / 'official-small-s1.pkl'
    records, events = _audited(legacy.read_network_records, str(path))
    return dict(npz=npz, config=config, meta=meta, path=path, records=records, events=events)


def test_official_pickle_loads_without_running_code(official):
    records = official['records']
    assert not isinstance(records, Exception), records
    assert official['events'] == []  # No exec, compile, import, system or subprocess while loading.
    assert sorted(records) == ['D', 'G', 'G_ema', 'augment_pipe', 'training_set_kwargs']
    assert records['augment_pipe'] is None
    ts = dict(official['meta']['training_options']['training_set_kwargs'], path='<scratch>')
    assert records['training_set_kwargs'] == ts
    # The fixture's module source raises if executed; loading it would have failed.
    raw = official['path'].read_bytes()
    assert b"raise RuntimeError('persistence module_src executed" in raw


@pytest.mark.parametrize('key, prefix', [('G', 'G'), ('G_ema', 'G'), ('D', 'D')])
def test_official_tensors_and_kwargs(official, key, prefix):
    record, npz, config = official['records'][key], official['npz'], official['config']
    expected = {k[len(prefix) + 1:]: k for k in npz if k.startswith(prefix + '/')}
    assert sorted(record['state']) == sorted(config[prefix]) == sorted(expected)
    for name, tensor in record['state'].items():
        assert list(tensor.shape) == config[prefix][name], name
        assert np.array_equal(tensor.numpy(), npz[expected[name]]), name
    assert sum(t.numel() for t in record['state'].values()) == config[f'{prefix}_params']  # Parameters + buffers.
    assert record['init_kwargs'] == official['meta'][f'{prefix}_init_kwargs']
    expected_class = {'G': 'training.triplane.TriPlaneGenerator', 'D': 'training.dual_discriminator.DualDiscriminator'}
    assert record['class_name'] == expected_class[prefix]
    if prefix == 'G':
        assert record['attrs']['neural_rendering_resolution'] == 64
        assert record['attrs']['rendering_kwargs'] == official['meta']['G_init_kwargs']['rendering_kwargs']
        assert '_last_planes' not in record['attrs'] and '_init_kwargs' not in record['attrs']


def test_flattened_names_follow_named_parameters():
    """The flattening of stand-in module states gives named_parameters() + named_buffers() names."""
    torch.manual_seed(0)
    net = torch.nn.Module()
    net.backbone = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    net.decoder = torch.nn.Linear(4, 2)
    net.alias = net.decoder  # Shared submodule: listed once, as named_parameters() does.
    net.register_buffer('label_std', torch.randn(5))
    net.backbone[1].register_buffer('tmp', torch.randn(2), persistent=False)

    def as_record(module):  # The module as upstream's pickle stores it: a __dict__ with nested dicts.
        state = dict(vars(module))
        state['_modules'] = {k: memo.setdefault(id(m), as_record(m)) if m is not None else None
                             for k, m in module._modules.items()}
        return legacy.PersistentRecord('Generator', state)
    memo = {}
    flat = legacy.flatten_module_state(as_record(net))
    reference = dict(net.named_parameters()) | dict(net.named_buffers())
    assert list(flat) == list(reference)
    assert all(flat[k] is reference[k] or torch.equal(flat[k], reference[k]) for k in reference)


# Stand-ins for our networks (which are being written): they accept upstream's kwargs and create
# tensors named as the official config lists, so the rebuild hook can be exercised end to end.
_SHAPES = {}


def _make_tensors(module, shapes):
    for name, shape in shapes.items():
        *path, leaf = name.split('.')
        owner = module
        for part in path:
            if not hasattr(owner, part):
                owner.add_module(part, torch.nn.Module())
            owner = getattr(owner, part)
        owner.register_buffer(leaf, torch.empty(shape))


@persistence.persistent_class
class StandInTriPlane(torch.nn.Module):
    def __init__(self, rendering_kwargs, **kwargs):
        super().__init__()
        _make_tensors(self, _SHAPES['G'])
        self.rendering_kwargs = {}
        self.neural_rendering_resolution = 1


@persistence.persistent_class
class StandInDual(torch.nn.Module):
    def __init__(self, **kwargs):
        super().__init__()
        _make_tensors(self, _SHAPES['D'])


def test_rebuild_hook(official):
    _SHAPES.update(G=official['config']['G'], D=official['config']['D'])
    class_map = {'TriPlaneGenerator': persistence.class_name(StandInTriPlane(rendering_kwargs={})),
                 'DualDiscriminator': persistence.class_name(StandInDual())}
    for force_fp16 in [False, True]:
        data, events = _audited(legacy.load_network_pkl, str(official['path']), force_fp16=force_fp16,
                                class_map=class_map)
        assert events == [] and not isinstance(data, Exception), data
        for key, prefix in [('G', 'G'), ('G_ema', 'G'), ('D', 'D')]:
            net = data[key]
            tensors = dict(net.named_buffers())
            assert sorted(tensors) == sorted(official['config'][prefix])
            for name, tensor in tensors.items():
                assert force_fp16 or np.array_equal(tensor.numpy(), official['npz'][f'{prefix}/{name}']), name
            kwargs = dict(official['meta'][f'{prefix}_init_kwargs'])
            if force_fp16:
                kwargs.update(num_fp16_res=4, conv_clamp=256)
            assert net.init_kwargs == kwargs
        assert data['G'].neural_rendering_resolution == 64  # Restored from the pickle, not the constructor's 1.
        assert data['G'].rendering_kwargs == official['meta']['G_init_kwargs']['rendering_kwargs']
    # Without the class map, our networks are needed: a clear error when they are not available here.
    if importlib.util.find_spec('training.triplane') is None:
        with pytest.raises(SnapshotError, match=r'official-small-s1\.pkl: G: class "training\.triplane\.TriPlaneGenerator" '
                           r'is not available in this checkout'):
            legacy.load_network_pkl(str(official['path']))

# ----------------------------------------------------------------------------


def _payloads(canary):
    """{label: (pickle bytes, global the error must name)}; each would touch `canary` if run."""
    touch = f'__import__("pathlib").Path({str(canary)!r}).touch()'
    storage_bomb = b'\x80\x02' + _call('os', 'system', f'touch {canary}') + b'.'
    record = {'type': 'class', 'version': 6, 'module_src': touch, 'class_name': 'EvilNet', 'state': {}}
    return {
        'os.system':          (_snapshot_dict(_call('os', 'system', f'touch {canary}')), 'os.system'),
        'posix.system':       (pickle.dumps({'G': _Reduce(os.system, f'touch {canary}')}), 'posix.system'),
        'builtins.eval':      (_snapshot_dict(_call('builtins', 'eval', touch)), 'builtins.eval'),
        'builtins.exec':      (_snapshot_dict(_call('builtins', 'exec', touch)), 'builtins.exec'),
        'subprocess.Popen':   (_snapshot_dict(_call('subprocess', 'Popen', ['touch', str(canary)])), 'subprocess.Popen'),
        'subprocess.run':     (_snapshot_dict(_call('subprocess', 'run', ['touch', str(canary)])), 'subprocess.run'),
        'persistent class':   (_snapshot_dict(_call('torch_utils.persistence', '_reconstruct_persistent_obj', record)),
                               'EvilNet'),
        'storage bytes':      (_snapshot_dict(_call('torch.storage', '_load_from_bytes', storage_bomb)), 'os.system'),
        'stand-in by import': (_snapshot_dict(_call('training.triplane', 'TriPlaneGenerator')),
                               'training.triplane.TriPlaneGenerator'),
    }


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('label', list(_payloads('x')))
def test_malicious_pickles_are_refused(tmp_path, label):
    canary = tmp_path / 'canary'
    payload, named = _payloads(canary)[label]
    path = tmp_path / 'evil.pkl'
    path.write_bytes(payload)
    err, events = _audited(legacy.load_network_pkl, str(path))
    assert isinstance(err, UnsafePickleError), err
    assert 'evil.pkl' in str(err) and f'"{named}"' in str(err), str(err)
    assert events == [] and not canary.exists()


def test_allowed_persistent_class_never_runs_its_source(tmp_path):
    """A record of an allowed class whose module source would touch a canary: loads as data only."""
    canary = tmp_path / 'canary'
    touch = f'__import__("pathlib").Path({str(canary)!r}).touch()'
    state = {'training': False, '_parameters': {}, '_buffers': {}, '_modules': {}, '_init_args': (),
             '_init_kwargs': {'z_dim': 8}, 'z_dim': 8}
    record = {'type': 'class', 'version': 6, 'module_src': touch, 'class_name': 'TriPlaneGenerator', 'state': state}
    g = _call('torch_utils.persistence', '_reconstruct_persistent_obj', record)
    payload = b'\x80\x03}' + b''.join(_data(k) + g + b's' for k in ['G', 'D', 'G_ema']) + b'.'
    path = tmp_path / 'net.pkl'
    path.write_bytes(payload)
    records, events = _audited(legacy.read_network_records, str(path))
    assert events == [] and not canary.exists()
    assert records['G']['init_kwargs'] == {'z_dim': 8} and records['G']['attrs'] == {'z_dim': 8}
    assert records['G']['class_name'] == 'training.triplane.TriPlaneGenerator' and records['G']['state'] == {}


def _tensor(hooks: bytes = b'}') -> bytes:
    """Pickle opcodes for a 2-element float tensor, the way upstream's pickles hold one."""
    buf = io.BytesIO()
    with warnings.catch_warnings():  # TypedStorage is deprecated, but it is what upstream pickled.
        warnings.simplefilter('ignore')
        torch.save(torch.tensor([1.5, -2.0]).storage(), buf, _use_new_zipfile_serialization=False)
    storage = _call('torch.storage', '_load_from_bytes', buf.getvalue())
    return (_glob('torch._utils', '_rebuild_tensor_v2') + b'(' + storage + _data(0) + _data((2,)) + _data((1,))
            + _data(False) + hooks + b't' + b'R')


def test_tensor_hooks_and_bad_versions_are_refused(tmp_path):
    hooks = b'}' + _data('h') + _data(1) + b's'
    ok = _snapshot_dict(_tensor())
    tensor_hooks = _snapshot_dict(_tensor(hooks))
    param_hooks = _snapshot_dict(_glob('torch._utils', '_rebuild_parameter') + b'(' + _tensor() + _data(True) + hooks
                                 + b't' + b'R')
    bad_version = _snapshot_dict(_call('torch_utils.persistence', '_reconstruct_persistent_obj',
                                       {'type': 'class', 'version': 5, 'class_name': 'Generator', 'state': {}}))
    path = tmp_path / 'bad.pkl'
    path.write_bytes(ok)
    with pytest.raises(SnapshotError, match=r'bad\.pkl: G: Tensor is not plain data'):
        legacy.read_network_records(str(path))  # The tensor itself loads; it just is not a network.
    assert torch.equal(legacy.read_upstream_pickle(io.BytesIO(ok))['G'], torch.tensor([1.5, -2.0]))
    # BUILD (set state) on an allowed class itself would patch it for the whole process.
    patch_class = _snapshot_dict(_glob('dnnlib.util', 'EasyDict') + _data((None, {'__getattr__': 1})) + b'b')
    record = {'type': 'class', 'version': 6, 'class_name': 'Generator', 'state': {}}
    patch_record = _snapshot_dict(_call('torch_utils.persistence', '_reconstruct_persistent_obj', record)
                                  + _data({'class_name': 'Evil'}) + b'b')
    for payload, message in [(tensor_hooks, 'backward hooks'), (param_hooks, 'backward hooks'),
                             (bad_version, 'version 5 is not supported'),
                             (patch_class, 'refused to set the state of a type'),
                             (patch_record, 'refused to set the state of a PersistentRecord')]:
        path.write_bytes(payload)
        with pytest.raises(UnsafePickleError, match=rf'bad\.pkl: .*{message}'):
            legacy.read_network_records(str(path))
    assert callable(dnnlib.EasyDict.__getattr__) and dnnlib.EasyDict(a=2).a == 2


def test_truncated_official_pickle(official, tmp_path):
    raw = official['path'].read_bytes()
    for size in [1, 100, len(raw) // 2, len(raw) - 1]:
        path = tmp_path / f'cut-{size}.pkl'
        path.write_bytes(raw[:size])
        with pytest.raises(SnapshotError, match=rf'cut-{size}\.pkl: truncated or corrupt'):
            legacy.read_network_records(str(path))

# ----------------------------------------------------------------------------


def test_converter_cli(official, tmp_path):
    dest = tmp_path / 'ours.pkl'
    result = CliRunner().invoke(legacy.convert_network_pickle,
                                [f'--source={official["path"]}', f'--dest={dest}', '--records-only'])
    assert result.exit_code == 0, result.output
    converted = torch.load(dest, weights_only=True)
    assert converted['format'] == snapshot.FORMAT
    for key in ['G', 'G_ema', 'D']:
        src, dst = official['records'][key], converted[key]
        assert dst['class_name'] == src['class_name'] and dst['init_kwargs'] == src['init_kwargs']
        assert dst['attrs'] == src['attrs'] and list(dst['state']) == list(src['state'])
        assert all(torch.equal(src['state'][k], dst['state'][k]) for k in src['state'])
    again = legacy.read_network_records(str(dest))  # Our format reads back through the same entry point.
    assert again['training_set_kwargs'] == official['records']['training_set_kwargs']
    if importlib.util.find_spec('training.triplane') is None:
        result = CliRunner().invoke(legacy.convert_network_pickle,
                                    [f'--source={official["path"]}', f'--dest={tmp_path / "full.pkl"}'])
        assert result.exit_code == 1 and 'not available in this checkout' in result.output
        assert '--records-only' in result.output and not (tmp_path / 'full.pkl').exists()
