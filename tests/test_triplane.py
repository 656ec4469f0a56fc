"""TriPlaneGenerator and OSGDecoder against independent references, at tiny sizes."""

import math

import pytest
import torch
import torch.nn.functional as F

import dnnlib
import legacy
from camera_utils import FOV_to_intrinsics, LookAtPoseSampler
from training import options as training_options
from training.dual_discriminator import DualDiscriminator
from training.loss import StyleGAN2Loss
from training.presets import resolve_preset
from training.triplane import OSGDecoder, TriPlaneGenerator

RENDERING = dict(image_resolution=32, disparity_space_sampling=False, clamp_mode='softplus',
                 superresolution_module='training.superresolution.SuperresolutionGeneric',
                 c_gen_conditioning_zero=False, gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none',
                 density_reg=0.25, density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True,
                 depth_resolution=6, depth_resolution_importance=6, ray_start=2.25, ray_end=3.3, box_warp=1,
                 avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])


def _small_G(**rendering):
    """16 x 16 planes with 8 channels, neural rendering 16 -> 32 px images."""
    return TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=16, img_resolution=32, img_channels=3,
                             mapping_kwargs=dnnlib.EasyDict(num_layers=2), channel_base=256, channel_max=16,
                             fused_modconv_default='inference_only', num_fp16_res=0, conv_clamp=None,
                             rendering_kwargs=dnnlib.EasyDict(RENDERING, **rendering), sr_num_fp16_res=0,
                             sr_kwargs=dnnlib.EasyDict(input_resolution=16, block_channels=[16, 8], channel_base=256,
                                                       channel_max=16, fused_modconv_default='inference_only'),
                             triplane_resolution=16, triplane_channels=8, decoder_hidden_dim=16)


def _cameras(n):
    """n FFHQ-like cameras [n, 25] at different yaws."""
    poses = [LookAtPoseSampler.sample(math.pi / 2 + 0.25 * (i - n / 2), math.pi / 2 - 0.1, torch.tensor([0, 0, 0.2]),
                                      radius=2.7) for i in range(n)]
    intrinsics = FOV_to_intrinsics(18.837).reshape(1, 9)
    return torch.cat([torch.cat([p.reshape(1, 16), intrinsics], dim=1) for p in poses])


def _run(fn, seed=7):
    """fn() with the global generator seeded (the renderer's draws come from it, as upstream)."""
    torch.manual_seed(seed)
    return fn()

# ----------------------------------------------------------------------------


def test_osg_decoder_closed_form():
    torch.manual_seed(0)
    dec = OSGDecoder(5, {'decoder_lr_mul': 0.5, 'decoder_output_dim': 6}, hidden_dim=7).double()
    with torch.no_grad():
        for layer in (dec.net[0], dec.net[2]):
            layer.bias.copy_(torch.randn_like(layer.bias))
    feats = torch.randn(2, 3, 11, 5, dtype=torch.float64)
    out = dec(feats, torch.randn(2, 11, 3, dtype=torch.float64))
    # mean over planes -> FC (weight * lr / sqrt(in), bias * lr) -> softplus -> FC.
    x = feats.mean(dim=1)
    w0, b0 = dec.net[0].weight * 0.5 / math.sqrt(5), dec.net[0].bias * 0.5
    w1, b1 = dec.net[2].weight * 0.5 / math.sqrt(7), dec.net[2].bias * 0.5
    y = F.softplus(x @ w0.T + b0) @ w1.T + b1
    torch.testing.assert_close(out['sigma'], y[..., :1], rtol=0, atol=1e-12)
    torch.testing.assert_close(out['rgb'], torch.sigmoid(y[..., 1:]) * 1.002 - 0.001, rtol=0, atol=1e-12)
    assert out['rgb'].shape == (2, 11, 6) and out['rgb'].min() > -0.001 and out['rgb'].max() < 1.001


def test_sample_mixed_reads_upstream_plane_layout():
    # Backbone channels [kC, (k+1)C) are plane k; plane 0 is indexed by (x, y), plane 1 by (x, z), plane 2
    # by (z, x), each pair (width, height) after scaling by 2 / box_warp (eg3d-facts 5.2).
    torch.manual_seed(1)
    box_warp = 1.6
    G = _small_G(box_warp=box_warp)
    ws = torch.randn(2, G.num_ws, 16)
    points = (torch.rand(2, 50, 3) * 2 - 1) * 0.9
    out = G.sample_mixed(points, torch.randn(2, 50, 3), ws, noise_mode='const')

    raw = G.backbone.synthesis(ws, noise_mode='const')                       # [2, 24, 16, 16]
    q = points * 2 / box_warp
    x, y, z = q.unbind(-1)
    reads = []
    for k, (u, v) in enumerate([(x, y), (x, z), (z, x)]):
        grid = torch.stack([u, v], dim=-1).unsqueeze(1)                      # [2, 1, 50, 2]
        reads.append(F.grid_sample(raw[:, 8 * k:8 * (k + 1)], grid, mode='bilinear', padding_mode='zeros',
                                   align_corners=False)[:, :, 0].transpose(1, 2))
    expected = G.decoder(torch.stack(reads, dim=1), None)
    torch.testing.assert_close(out['sigma'], expected['sigma'], rtol=0, atol=1e-5)
    torch.testing.assert_close(out['rgb'], expected['rgb'], rtol=0, atol=1e-5)
    # sample() = mapping + sample_mixed.
    z_, c = torch.randn(2, 16), _cameras(2)
    ws = G.mapping(z_, c)
    torch.testing.assert_close(G.sample(points, points, z_, c, noise_mode='const')['sigma'],
                               G.sample_mixed(points, points, ws, noise_mode='const')['sigma'], rtol=0, atol=0)


def test_synthesis_composes_renderer_and_superresolution():
    torch.manual_seed(2)
    G = _small_G().eval()
    ws, c = torch.randn(3, G.num_ws, 16), _cameras(3)
    res = 12
    out = _run(lambda: G.synthesis(ws, c, neural_rendering_resolution=res, noise_mode='const'))
    assert out['image'].shape == (3, 3, 32, 32) and out['image_raw'].shape == (3, 3, res, res)
    assert out['image_depth'].shape == (3, 1, res, res) and G.neural_rendering_resolution == res

    # The same steps by hand: rays (row-major pixels), planes, renderer, then [N, R*R, C] -> [N, C, R, R].
    def by_hand():
        origins, dirs = G.ray_sampler(c[:, :16].reshape(-1, 4, 4), c[:, 16:].reshape(-1, 3, 3), res)
        planes = G.backbone.synthesis(ws, noise_mode='const').reshape(3, 3, 8, 16, 16)
        return G.renderer(planes, G.decoder, origins, dirs, G.rendering_kwargs)
    feats, depth, _ = _run(by_hand)
    feature_image = feats.reshape(3, res, res, 8).permute(0, 3, 1, 2)
    torch.testing.assert_close(out['image_raw'], feature_image[:, :3], rtol=0, atol=0)
    torch.testing.assert_close(out['image_depth'], depth.reshape(3, 1, res, res), rtol=0, atol=0)
    # Depths lie within the sampled range (ray_start .. ray_end + one stratified step).
    assert out['image_depth'].min() >= 2.25 and out['image_depth'].max() <= 3.3 + 1.05 / 5
    # SR: fed the raw RGB and all feature channels, styled by ws; its noise mode comes from rendering_kwargs.
    image = G.superresolution(feature_image[:, :3], feature_image, ws, noise_mode='none')
    torch.testing.assert_close(out['image'], image, rtol=0, atol=1e-6)
    # Without a resolution argument the stored one is used.
    again = _run(lambda: G.synthesis(ws, c, noise_mode='const'))
    torch.testing.assert_close(again['image'], out['image'], rtol=0, atol=0)


def test_backbone_cache():
    torch.manual_seed(3)
    G = _small_G().eval()
    calls = []
    G.backbone.synthesis.register_forward_hook(lambda *args: calls.append(1))
    ws1, ws2, c = torch.randn(2, G.num_ws, 16), torch.randn(2, G.num_ws, 16), _cameras(2)
    first = _run(lambda: G.synthesis(ws1, c, 16, cache_backbone=True, noise_mode='const'))
    assert len(calls) == 1
    # A new camera (or ws) with use_cached_backbone: the cached planes render, the backbone is skipped.
    cached = _run(lambda: G.synthesis(ws2, c, 16, use_cached_backbone=True, noise_mode='const'))
    assert len(calls) == 1
    torch.testing.assert_close(cached['image_raw'], first['image_raw'], rtol=0, atol=0)
    fresh = _run(lambda: G.synthesis(ws2, c, 16, noise_mode='const'))
    assert len(calls) == 2 and (fresh['image_raw'] - first['image_raw']).abs().max() > 1e-4


def test_mapping_camera_conditioning():
    torch.manual_seed(4)
    G = _small_G(c_scale=2.0)
    z, c = torch.randn(3, 16), _cameras(3)
    torch.testing.assert_close(G.mapping(z, c), G.backbone.mapping(z, 2 * c), rtol=0, atol=0)
    G.rendering_kwargs['c_gen_conditioning_zero'] = True                 # No pose conditioning: zeros.
    torch.testing.assert_close(G.mapping(z, c), G.backbone.mapping(z, torch.zeros_like(c)), rtol=0, atol=0)
    G.rendering_kwargs['c_gen_conditioning_zero'] = False
    del G.rendering_kwargs['c_scale']                                    # Upstream: a missing c_scale is 0.
    torch.testing.assert_close(G.mapping(z, c), G.backbone.mapping(z, torch.zeros_like(c)), rtol=0, atol=0)
    # Truncation goes to the backbone mapping.
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0), G.backbone.mapping.w_avg.expand(3, G.num_ws, 16),
                               rtol=0, atol=0)


def test_forward_backward_reaches_every_parameter():
    torch.manual_seed(5)
    G = _small_G().train().requires_grad_(True)
    z, c = torch.randn(2, 16), _cameras(2)
    out = G(z, c, neural_rendering_resolution=16)       # Backbone noise 'random'; SR noise 'none'.
    loss = out['image'].square().mean() + out['image_raw'].mean() + out['image_depth'].mean()
    loss.backward()
    for name, p in G.named_parameters():
        if name.startswith('superresolution.') and name.endswith('noise_strength'):
            assert p.grad is None or p.grad.abs().max() == 0, name
        else:
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name
    assert list(G.dataset_label_std.shape) == [25] and 'dataset_label_std' in dict(G.named_buffers())


def test_profiler_scopes():
    G = _small_G().eval()
    with torch.no_grad(), torch.profiler.profile() as prof:
        G(torch.randn(1, 16), _cameras(1), neural_rendering_resolution=8)
    names = {event.name for event in prof.events()}
    assert {'mapping', 'backbone', 'renderer', 'superres'} <= names


def test_snapshot_round_trip(tmp_path):
    # Constructed with EasyDicts (as train.py does); the snapshot holds plain dicts, from which it rebuilds.
    torch.manual_seed(6)
    G = _small_G()
    D = DualDiscriminator(c_dim=25, img_resolution=32, img_channels=3, channel_base=256, channel_max=16,
                          epilogue_kwargs=dnnlib.EasyDict(mbstd_group_size=2))
    G.neural_rendering_resolution = 12
    with torch.no_grad():
        G.dataset_label_std.copy_(torch.rand(25))
    path = tmp_path / 'network-snapshot-000000.pkl'
    legacy.save_network_pkl(str(path), G=G, D=D, G_ema=G)
    data = legacy.load_network_pkl(str(path))
    G2 = data['G_ema']
    assert type(G2) is TriPlaneGenerator and type(G2.rendering_kwargs) is dict
    assert G2.neural_rendering_resolution == 12 and G2.rendering_kwargs == dict(G.rendering_kwargs)
    assert torch.equal(G2.dataset_label_std, G.dataset_label_std)
    z, c = torch.randn(2, 16), _cameras(2)
    G.eval()
    a = _run(lambda: G(z, c, noise_mode='const'))
    b = _run(lambda: G2(z, c, noise_mode='const'))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)


def test_bad_configuration_and_inputs():
    for name in ('os.system', 'training.superresolution.Missing', 'training.triplane.TriPlaneGenerator'):
        with pytest.raises((ValueError, ImportError, AttributeError), match='superresolution'):
            _small_G(superresolution_module=name)
    with pytest.raises(ValueError, match=r"rendering_kwargs lacks \['sr_antialias', 'box_warp'\]"):
        TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=16, img_resolution=32, img_channels=3,
                          rendering_kwargs={k: v for k, v in RENDERING.items() if k not in ('sr_antialias', 'box_warp')})
    G = _small_G()
    with pytest.raises(AssertionError, match='camera label c'):
        G.synthesis(torch.randn(2, G.num_ws, 16), torch.randn(2, 16))

# ----------------------------------------------------------------------------
# The tiny preset end to end: options -> networks -> the loss's four phases.


def test_tiny_preset_networks_and_loss_phases(monkeypatch):
    def fake_dataset(data, use_labels, xflip, mirror_labels, seed):
        return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                               max_size=4, xflip=False, resolution=32, random_seed=seed), 'fake'
    monkeypatch.setattr(training_options, 'dataset_kwargs', fake_dataset)
    opts, _ = training_options.build_training_options({**resolve_preset('tiny'), 'data': 'fake.zip'})
    common = dict(c_dim=25, img_resolution=32, img_channels=3)  # The tiny preset's images.
    torch.manual_seed(8)
    G = dnnlib.util.construct_class_by_name(**opts.G_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**opts.D_kwargs, **common).train().requires_grad_(False)
    assert G.triplane_resolution == 32 and G.superresolution.input_resolution == 16
    n = opts.batch_gpu
    c = _cameras(n)
    with torch.no_grad():
        out = G(torch.randn(n, G.z_dim), c, neural_rendering_resolution=16)
    assert out['image'].shape == (n, 3, 32, 32) and out['image_raw'].shape == (n, 3, 16, 16)

    loss = dnnlib.util.construct_class_by_name(device=torch.device('cpu'), G=G, D=D, **opts.loss_kwargs)
    real = torch.rand(n, 3, 32, 32) * 2 - 1
    for phase, net in [('Gmain', G), ('Greg', G), ('Dmain', D), ('Dreg', D)]:
        net.requires_grad_(True)
        net.zero_grad(set_to_none=True)
        loss.accumulate_gradients(phase, real, c, torch.randn(n, G.z_dim), c, gain=1, cur_nimg=0)
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), phase
        net.requires_grad_(False)
    assert isinstance(loss, StyleGAN2Loss)
