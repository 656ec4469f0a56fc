"""Proof of compatibility with the official EG3D (issue 6 item 3, issue 5's fixture test, issue 12's first
test): networks built from the official kwargs have exactly the official names, shapes and counts, and
with the official weights, inputs and recorded renderer draws they reproduce the official outputs.

The reference numbers were produced by NVIDIA's unmodified code (../shared/fixtures/README.md).
"""

import json

import numpy as np
import pytest
import torch

import dnnlib
import legacy
from torch_utils import misc
from training.dual_discriminator import DualDiscriminator
from training.triplane import TriPlaneGenerator
from training.volumetric_rendering.renderer import RendererDraws, renderer_draws

ATOL = 1e-4


def _shapes(module):
    return {name: list(t.shape) for name, t in misc.named_params_and_buffers(module)}


def _count(module, buffers=False):
    tensors = misc.params_and_buffers(module) if buffers else list(module.parameters())
    return sum(t.numel() for t in tensors)


@pytest.fixture(scope='module')
def small(fixtures_dir):
    with np.load(fixtures_dir / 'official-small-s1.npz') as f:
        npz = {k: f[k] for k in f.files if k.split('/')[0] in ('G', 'D', 'in', 'out', 'out_train', 'rand', 'loss',
                                                               'meta_json')}
    meta = json.loads(str(npz['meta_json']))
    config = json.loads((fixtures_dir / 'official-small-config.json').read_text())
    return dict(npz=npz, meta=meta, config=config, dir=fixtures_dir)


def _tensor(small, key):
    return torch.from_numpy(small['npz'][key])


def _load_official(small, prefix, net):
    weights = {k[len(prefix) + 1:]: torch.from_numpy(v) for k, v in small['npz'].items() if k.startswith(prefix + '/')}
    misc.copy_params_and_buffers(weights, net, require_all=True)
    return net


@pytest.fixture(scope='module')
def small_nets(small):
    torch.manual_seed(0)
    G = _load_official(small, 'G', TriPlaneGenerator(**small['meta']['G_init_kwargs']))
    D = _load_official(small, 'D', DualDiscriminator(**small['meta']['D_init_kwargs']))
    return G.requires_grad_(False), D.requires_grad_(False)


def _check_outputs(small, G, D, mode, out_prefix):
    """ws, image, image_raw, image_depth and D logits against the official outputs, with the recorded draws."""
    npz = small['npz']
    G.train(mode == 'train')
    D.train(mode == 'train')
    z, c_cond, c_render = _tensor(small, 'in/z'), _tensor(small, 'in/c_cond'), _tensor(small, 'in/c_render')
    res = int(npz['in/neural_rendering_resolution'])
    with torch.no_grad():
        ws = G.mapping(z, c_cond)
        torch.testing.assert_close(ws, _tensor(small, 'out/ws'), rtol=0, atol=ATOL)
        with renderer_draws(replay=RendererDraws.from_arrays(npz, f'rand/fwd_{mode}/')) as draws:
            out = G.synthesis(ws, c_render, neural_rendering_resolution=res, noise_mode='const')
        assert all(not queue for queue in draws.replay.values())  # Every recorded draw was used, no more.
        assert G.neural_rendering_resolution == res
        for key in ('image', 'image_raw', 'image_depth'):
            expected = _tensor(small, f'{out_prefix}/{key}')
            assert out[key].shape == expected.shape, key
            torch.testing.assert_close(out[key], expected, rtol=0, atol=ATOL, msg=lambda m: f'{key}: {m}')
        if out_prefix == 'out':
            logits = D(out, c_render)
            torch.testing.assert_close(logits, _tensor(small, 'out/D_logits'), rtol=0, atol=ATOL)
    return out

# ----------------------------------------------------------------------------


def test_small_names_shapes_and_counts(small, small_nets):
    G, D = small_nets
    config = small['config']
    assert _shapes(G) == config['G'] and _shapes(D) == config['D']
    assert _count(G, buffers=True) == config['G_params'] and _count(D, buffers=True) == config['D_params']
    # Our classes sit at upstream's module paths, and the recorded kwargs are upstream's.
    opts = small['meta']['training_options']
    assert dnnlib.util.get_obj_by_name(opts['G_kwargs']['class_name']) is TriPlaneGenerator
    assert dnnlib.util.get_obj_by_name(opts['D_kwargs']['class_name']) is DualDiscriminator
    assert G.init_kwargs == small['meta']['G_init_kwargs'] and D.init_kwargs == small['meta']['D_init_kwargs']


@pytest.mark.parametrize('mode, out_prefix', [('eval', 'out'), ('train', 'out_train')])
def test_small_outputs_match_official(small, small_nets, mode, out_prefix):
    G, D = small_nets
    _check_outputs(small, G, D, mode, out_prefix)


def test_sample_mixed_matches_official_density(small, small_nets):
    # The density-regularisation call of the official loss step (Greg, train mode, noise const).
    G, _ = small_nets
    G.train()
    npz = small['npz']
    key = 'loss/Greg/G.sample_mixed.'
    with torch.no_grad():
        out = G.sample_mixed(_tensor(small, key + 'coordinates#0'), _tensor(small, key + 'directions#0'),
                             _tensor(small, key + 'ws#0'), update_emas=False, noise_mode='const')
    assert out['rgb'].shape == (4, npz[key + 'coordinates#0'].shape[1], 32)
    torch.testing.assert_close(out['sigma'], _tensor(small, key + 'sigma#0'), rtol=0, atol=ATOL)


def test_official_pickle_gives_official_images(small):
    # Issue 12's first test: the official network pickle, loaded without running its code.
    data = legacy.load_network_pkl(str(small['dir'] / 'official-small-s1.pkl'))
    G_ema, D = data['G_ema'], data['D']
    assert isinstance(G_ema, TriPlaneGenerator) and isinstance(D, DualDiscriminator)
    assert not G_ema.training and G_ema.rendering_kwargs == small['meta']['G_init_kwargs']['rendering_kwargs']
    _check_outputs(small, G_ema, D, 'eval', 'out')


def test_ffhq512_names_shapes_and_counts(fixtures_dir):
    config = json.loads((fixtures_dir / 'official-ffhq512-config.json').read_text())
    opts = config['meta']['training_options']
    common = dict(c_dim=25, img_resolution=512, img_channels=3)
    torch.manual_seed(0)
    with torch.no_grad():
        G = dnnlib.util.construct_class_by_name(**opts['G_kwargs'], **common)
        D = dnnlib.util.construct_class_by_name(**opts['D_kwargs'], **common)
    assert isinstance(G, TriPlaneGenerator) and isinstance(D, DualDiscriminator)
    assert _shapes(G) == config['G'] and _shapes(D) == config['D']
    assert _count(G) == 30_662_136 and _count(D) == 31_359_744  # eg3d-facts 5.6.
    assert _count(G, buffers=True) == config['G_params'] and _count(D, buffers=True) == config['D_params']
    # Per-part parameter counts (eg3d-facts 5.6).
    parts = {'backbone.synthesis': 28_207_533, 'backbone.mapping': 800_768, 'superresolution.block0': 943_909,
             'superresolution.block1': 705_669, 'decoder': 4_257}
    for prefix, expected in parts.items():
        assert sum(p.numel() for n, p in G.named_parameters() if n.startswith(prefix + '.')) == expected, prefix
    assert sum(p.numel() for n, p in D.named_parameters() if n.startswith('mapping.')) == 2_114_560
