"""Our network snapshot format: tensors plus plain data, written atomically, read with weights_only.

The networks are stand-ins defined here (the real ones rebuild the same way through the same hook).
"""

import io
import os
import pathlib

import numpy as np
import pytest
import torch

import dnnlib
import legacy
from torch_utils import persistence, snapshot
from torch_utils.safe_pickle import UnsafePickleError
from torch_utils.snapshot import SnapshotError


@persistence.persistent_class
class TinyNet(torch.nn.Module):
    """A stand-in network: parameters, persistent and non-persistent buffers, a submodule, plain attributes."""

    def __init__(self,
        in_features:    int,                # Input width.
        out_features:   int,                # Output width.
        block_kwargs:   dict = {},          # Passed to nothing; checks nested kwargs survive.
        num_fp16_res:   int = 0,            # Recorded only (force_fp16 rewrites it).
        conv_clamp:     float | None = None,  # Recorded only.
    ):
        super().__init__()
        self.fc = torch.nn.Linear(in_features, out_features)
        self.head = torch.nn.Sequential(torch.nn.Linear(out_features, 2), torch.nn.Softplus())
        self.register_buffer('w_avg', torch.zeros([out_features]))
        self.register_buffer('scratch', torch.zeros([3]), persistent=False)
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = {'ray_start': 2.25, 'depth_resolution': 48}
        self.plane_axes = torch.eye(3)      # A plain tensor attribute: not part of the record.


def _tiny(seed: int, **kwargs) -> TinyNet:
    torch.manual_seed(seed)
    net = TinyNet(in_features=5, out_features=4, block_kwargs=dnnlib.EasyDict(freeze_layers=np.int64(2)), **kwargs)
    with torch.no_grad():
        for tensor in list(net.parameters()) + list(net.buffers()):
            tensor.copy_(torch.randn_like(tensor))
    return net


ALLOW = [persistence.class_name(_tiny(0))]


@pytest.fixture
def nets():
    G, D, G_ema = _tiny(1), _tiny(2), _tiny(3)
    G_ema.neural_rendering_resolution = 128
    G_ema.rendering_kwargs = {'ray_start': 2.0, 'depth_resolution': 12, 'avg_camera_pivot': [0, 0, 0.2]}
    return G, D, G_ema


def _save(tmp_path: pathlib.Path, nets, kimg: int = 4) -> pathlib.Path:
    G, D, G_ema = nets
    path = tmp_path / legacy.snapshot_file_name(kimg)
    legacy.save_network_pkl(str(path), G=G, D=D, G_ema=G_ema, augment_pipe=None,
                            training_set_kwargs={'class_name': 'training.dataset.ImageFolderDataset', 'resolution': 64})
    return path


def test_round_trip(tmp_path, nets):
    path = _save(tmp_path, nets, kimg=12)
    assert path.name == 'network-snapshot-000012.pkl'
    with open(path, 'rb') as f:  # File objects (as from open_url) and paths both work.
        data = legacy.load_network_pkl(f, allow=ALLOW)
    assert sorted(data) == ['D', 'G', 'G_ema', 'augment_pipe', 'training_set_kwargs']
    assert data['augment_pipe'] is None
    assert data['training_set_kwargs'] == {'class_name': 'training.dataset.ImageFolderDataset', 'resolution': 64}
    for key, src in zip(['G', 'D', 'G_ema'], nets):
        dst = data[key]
        assert type(dst) is TinyNet and not dst.training
        assert all(not p.requires_grad for p in dst.parameters())
        src_t, dst_t = dict(src.named_parameters()) | dict(src.named_buffers()), \
            dict(dst.named_parameters()) | dict(dst.named_buffers())
        assert list(src_t) == list(dst_t) and 'scratch' in dst_t  # Non-persistent buffers included.
        for name in src_t:
            assert torch.equal(src_t[name], dst_t[name]), name
        assert dst.init_kwargs == {'in_features': 5, 'out_features': 4, 'block_kwargs': {'freeze_layers': 2}}
        assert type(dst.init_kwargs.block_kwargs['freeze_layers']) is int  # numpy scalar saved as plain int.
        assert dst.neural_rendering_resolution == src.neural_rendering_resolution
        assert dst.rendering_kwargs == src.rendering_kwargs
    assert data['G_ema'].neural_rendering_resolution == 128  # Not the constructor's 64.


def test_file_is_plain_data_loaded_with_weights_only(tmp_path, nets, monkeypatch):
    path = _save(tmp_path, nets)
    assert path.read_bytes()[:4] == b'PK\x03\x04'
    umask = os.umask(0o022)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # Not the temporary file's 0600.
    raw = torch.load(path, weights_only=True)  # Loads with no allow-listed globals at all.
    assert raw['format'] == snapshot.FORMAT and raw['version'] == 1
    assert raw['G']['class_name'] == ALLOW[0] and set(raw['G']['state']) >= {'fc.weight', 'w_avg', 'scratch'}
    assert 'plane_axes' not in raw['G']['attrs'] and 'training' not in raw['G']['attrs']

    calls = []
    real_load = torch.load
    monkeypatch.setattr(torch, 'load', lambda *a, **k: calls.append(k) or real_load(*a, **k))
    legacy.load_network_pkl(str(path), allow=ALLOW)
    assert calls and all(k.get('weights_only') is True for k in calls)


class _Payload:
    """Pickles as a call of `func(*args)`; weights_only loading must refuse it."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func', [os.system, eval])
def test_zip_with_code_is_refused(tmp_path, func):
    canary = tmp_path / 'canary'
    code = f'touch {canary}' if func is os.system else f'__import__("pathlib").Path({str(canary)!r}).touch()'
    path = tmp_path / 'evil.pkl'
    torch.save({'format': snapshot.FORMAT, 'version': 1, 'G': _Payload(func, code)}, path)
    with pytest.raises(UnsafePickleError, match=rf'evil\.pkl.*{func.__name__}'):
        legacy.load_network_pkl(str(path), allow=ALLOW)
    assert not canary.exists()


def test_class_allow_list(tmp_path, nets):
    G, D, G_ema = nets
    for name in ['torch.nn.Linear', 'os.system', 'builtins.eval', ALLOW[0]]:
        record = snapshot.module_record(G)
        record['class_name'] = name
        path = tmp_path / 'net.pkl'
        snapshot.save(str(path), {'G': record, 'D': D, 'G_ema': G_ema})
        with pytest.raises(UnsafePickleError, match=rf'net\.pkl: G: refused class "{name}"'):
            legacy.load_network_pkl(str(path))  # Without allow=..., not even the test class is allowed.
    # Allowed by prefix but absent from this checkout (or not a persistent module class).
    for name, error in [('training.no_such_module.Net', SnapshotError), ('training.__name__', UnsafePickleError)]:
        record = snapshot.module_record(G)
        record['class_name'] = name
        snapshot.save(str(path), {'G': record, 'D': D, 'G_ema': G_ema})
        with pytest.raises(error, match=rf'net\.pkl: G: .*{name}'):
            legacy.load_network_pkl(str(path), allow=ALLOW)


def test_atomic_write(tmp_path, nets, monkeypatch):
    path = _save(tmp_path, nets)
    before = path.read_bytes()

    def failing_save(obj, f, *args, **kwargs):
        with open(f, 'wb') as out:
            out.write(b'PK\x03\x04 partial')
        raise OSError('disk full')

    monkeypatch.setattr(torch, 'save', failing_save)
    with pytest.raises(OSError, match='disk full'):
        _save(tmp_path, nets)                 # Over an existing snapshot: it is left untouched.
    with pytest.raises(OSError, match='disk full'):
        _save(tmp_path, nets, kimg=8)         # A new name: nothing appears.
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_unreadable_files_get_clear_errors(tmp_path, nets):
    good = _save(tmp_path, nets).read_bytes()
    rng = np.random.default_rng(7)
    cases = {
        'empty.pkl':     (b'', 'empty file'),
        'truncated.pkl': (good[:len(good) // 2], 'truncated or corrupt'),
        'random.pkl':    (rng.integers(1, 256, 4096, dtype=np.uint8).tobytes(), 'not a network snapshot'),
        'text.pkl':      (b'hello, world\n', 'not a network snapshot'),
    }
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(SnapshotError, match=rf'{name}: {message}'):
            legacy.load_network_pkl(str(tmp_path / name), allow=ALLOW)
    state_dict = tmp_path / 'state_dict.pkl'
    torch.save(nets[0].state_dict(), state_dict)
    with pytest.raises(SnapshotError, match=r'state_dict\.pkl: a torch\.save file, but not a network snapshot'):
        legacy.load_network_pkl(str(state_dict))
    with pytest.raises(FileNotFoundError, match='missing.pkl'):
        legacy.load_network_pkl(str(tmp_path / 'missing.pkl'))


def test_rebuild_requires_matching_names(nets):
    G = nets[0]
    record = snapshot.module_record(G)
    missing = dict(record, state={k: v for k, v in record['state'].items() if k != 'fc.bias'})
    with pytest.raises(SnapshotError, match='fc.bias'):
        snapshot.build_module(missing, TinyNet)
    extra = dict(record, state={**record['state'], 'extra.weight': torch.randn(2)})
    with pytest.raises(SnapshotError, match='extra.weight'):
        snapshot.build_module(extra, TinyNet)
    wrong = dict(record, state={**record['state'], 'fc.weight': torch.randn(3, 3)})
    with pytest.raises(SnapshotError, match='fc.weight'):
        snapshot.build_module(wrong, TinyNet)
    with pytest.raises(SnapshotError, match='cannot construct'):
        snapshot.build_module(dict(record, init_kwargs={'no_such_kwarg': 1}), TinyNet)


def test_force_fp16(tmp_path, nets):
    path = _save(tmp_path, nets)
    data = legacy.load_network_pkl(str(path), force_fp16=True, allow=ALLOW)
    for key in ['G', 'D', 'G_ema']:
        assert data[key].init_kwargs['num_fp16_res'] == 4 and data[key].init_kwargs['conv_clamp'] == 256
        assert torch.equal(data[key].fc.weight, dict(zip(['G', 'D', 'G_ema'], nets))[key].fc.weight)
    assert legacy._fp16_kwargs({'synthesis_kwargs': {'a': 1}, 'conv_clamp': None}) == \
        {'synthesis_kwargs': {'a': 1, 'num_fp16_res': 4, 'conv_clamp': 256}, 'conv_clamp': None}


def test_to_plain():
    value = dnnlib.EasyDict(a=np.float64(0.25), b=(np.int32(3), [True, None, 'x']), c={'d': np.bool_(True)})
    plain = snapshot.to_plain(value)
    assert plain == {'a': 0.25, 'b': (3, [True, None, 'x']), 'c': {'d': True}}
    assert type(plain) is dict and type(plain['a']) is float and type(plain['c']['d']) is bool
    with pytest.raises(TypeError, match=r'kw\.x\.y: Tensor is not plain data'):
        snapshot.to_plain({'x': {'y': torch.ones(1)}}, 'kw')
    with pytest.raises(TypeError, match='not decorated'):
        snapshot.module_record(torch.nn.Linear(2, 2))
    buf = io.BytesIO()
    torch.save(snapshot.to_plain(value), buf)
    buf.seek(0)
    assert torch.load(buf, weights_only=True) == plain
