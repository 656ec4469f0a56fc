"""Super-resolution modules: sizes, antialiasing against closed forms, the w they use, gradients."""

import math

import pytest
import torch

from torch_utils import misc
from torch_utils.ops import upfirdn2d
from training import superresolution as sr
from training.presets import resolve_preset


def _tiny_sr(antialias=True, **overrides):
    """A generic SR at the former tiny preset's geometry (32 -> 64 px, 16 feature channels, widths [64, 32],
    w_dim 128), which the filter tests below are written for; the preset itself is now 16 -> 32 px."""
    kwargs = dict(channel_base=2048, channel_max=64, fused_modconv_default='inference_only', input_resolution=32,
                  block_channels=[64, 32])
    kwargs.update(overrides)
    return sr.SuperresolutionGeneric(channels=16, img_resolution=64, sr_num_fp16_res=0, sr_antialias=antialias,
                                     w_dim=128, **kwargs)


def _preset_tiny_sr():
    """The tiny preset's SR module, built as TriPlaneGenerator builds it."""
    opts = resolve_preset('tiny')
    kwargs = dict(channel_base=opts['cbase'], channel_max=opts['cmax'], fused_modconv_default='inference_only',
                  **opts['sr_kwargs'])
    return sr.SuperresolutionGeneric(channels=opts['triplane_channels'], img_resolution=32, sr_num_fp16_res=0,
                                     sr_antialias=True, w_dim=opts['w_dim'], **kwargs)


def _small_sr():
    """A smaller generic SR for gradient tests: 16 -> 32 px, 8 feature channels, w_dim 16."""
    return sr.SuperresolutionGeneric(channels=8, img_resolution=32, sr_num_fp16_res=0, sr_antialias=True,
                                     input_resolution=16, block_channels=[16, 8], w_dim=16,
                                     fused_modconv_default='inference_only')


def _skip_only(net):
    """Zero every ToRGB, so that the output is the raw image carried along the skip path."""
    with torch.no_grad():
        for idx in range(net.num_blocks):
            getattr(net, f'block{idx}').torgb.weight.zero_()
            getattr(net, f'block{idx}').torgb.bias.zero_()
    return net


def _checkerboard(n, size):
    i = torch.arange(size)
    return ((-1.0) ** (i[:, None] + i[None, :])).expand(n, 1, size, size)


def _shapes(module):
    return {name: list(t.shape) for name, t in misc.named_params_and_buffers(module)}


@pytest.mark.parametrize('which', ['32to64', 'preset'])
def test_tiny_sr_structure_and_output_size(which):
    # '32to64': 16 feature channels, widths [64, 32], w_dim 128; 'preset' (the tiny preset, 32x32 images):
    # 16 -> 32 px, 8 feature channels, widths [32, 32], w_dim 64.
    torch.manual_seed(0)
    net = _tiny_sr() if which == '32to64' else _preset_tiny_sr()
    res, feat, (wide, narrow), w_dim = (32, 16, (64, 32), 128) if which == '32to64' else (16, 8, (32, 32), 64)
    assert net.input_resolution == res and net.num_blocks == 2
    assert isinstance(net.block0, sr.SynthesisBlockNoUp) and net.block0.resolution == res
    assert isinstance(net.block1, sr.SynthesisBlock) and net.block1.resolution == 2 * res
    shapes = _shapes(net)
    assert shapes['block0.conv0.weight'] == [wide, feat, 3, 3] and shapes['block1.conv0.weight'] == [narrow, wide, 3, 3]
    assert shapes['block1.torgb.weight'] == [3, narrow, 1, 1] and shapes['block0.conv0.affine.weight'] == [feat, w_dim]
    ws = torch.randn(2, 9, w_dim)
    for raw_res in (res, res * 3 // 2, res * 5 // 8):  # The neural rendering resolution may differ from the input's.
        out = net(torch.randn(2, 3, raw_res, raw_res), torch.randn(2, feat, raw_res, raw_res), ws, noise_mode='none')
        assert out.shape == (2, 3, 2 * res, 2 * res) and torch.isfinite(out).all()


def test_generic_reproduces_hybrid2x_structure():
    # input 64, widths [128, 64], image 128: upstream's Hybrid2X blocks (which add a top-level filter buffer).
    generic = sr.SuperresolutionGeneric(32, 128, sr_num_fp16_res=4, sr_antialias=True, input_resolution=64,
                                        block_channels=[128, 64])
    hybrid = sr.SuperresolutionHybrid2X(32, 128, sr_num_fp16_res=4, sr_antialias=True, channel_base=4096,
                                        channel_max=64, fused_modconv_default='inference_only')
    expected = _shapes(hybrid)
    assert expected.pop('resample_filter') == [4, 4]
    assert _shapes(generic) == expected
    # sr_num_fp16_res > 0: fp16 blocks (CUDA only) with conv_clamp 256; 0: float32, no clamp.
    assert hybrid.block0.use_fp16 and hybrid.block1.conv1.conv_clamp == 256
    tiny = _tiny_sr()
    assert not tiny.block0.use_fp16 and tiny.block1.conv1.conv_clamp is None


@pytest.mark.parametrize('cls, res', [(sr.SuperresolutionHybrid8XDC, 512), (sr.SuperresolutionHybrid8X, 512),
                                      (sr.SuperresolutionHybrid4X, 256), (sr.SuperresolutionHybrid2X, 128)])
def test_upstream_classes_table(cls, res):
    # eg3d-facts 5.4's table: (block, kind, in -> out channels, resolution).
    table = {
        sr.SuperresolutionHybrid8XDC: [(sr.SynthesisBlock, 32, 256, 256), (sr.SynthesisBlock, 256, 128, 512)],
        sr.SuperresolutionHybrid8X:   [(sr.SynthesisBlock, 32, 128, 256), (sr.SynthesisBlock, 128, 64, 512)],
        sr.SuperresolutionHybrid4X:   [(sr.SynthesisBlockNoUp, 32, 128, 128), (sr.SynthesisBlock, 128, 64, 256)],
        sr.SuperresolutionHybrid2X:   [(sr.SynthesisBlockNoUp, 32, 128, 64), (sr.SynthesisBlock, 128, 64, 128)],
    }
    with torch.no_grad():
        net = cls(32, res, sr_num_fp16_res=4, sr_antialias=True)
    for idx, (kind, c_in, c_out, block_res) in enumerate(table[cls]):
        block = getattr(net, f'block{idx}')
        assert type(block) is kind and block.resolution == block_res
        assert list(block.conv0.weight.shape) == [c_out, c_in, 3, 3]
        assert list(block.conv0.noise_const.shape) == [block_res, block_res]
    assert hasattr(net, 'resample_filter') == (cls is not sr.SuperresolutionHybrid8XDC)
    with pytest.raises(ValueError, match=f'{cls.__name__}: makes {res}x{res} images, but img_resolution is 64'):
        cls(32, 64, sr_num_fp16_res=0, sr_antialias=True)


def test_generic_rejects_bad_sizes():
    with pytest.raises(ValueError, match='power of two'):
        sr.SuperresolutionGeneric(16, 96, sr_num_fp16_res=0, sr_antialias=True, input_resolution=32)
    with pytest.raises(ValueError, match='needs at least 2 positive entries'):
        sr.SuperresolutionGeneric(16, 128, sr_num_fp16_res=0, sr_antialias=True, input_resolution=32,
                                  block_channels=[64])


@pytest.mark.parametrize('antialias, amplitude', [(False, 1.0), (True, 1 / 81)])
def test_checkerboard_above_nyquist(antialias, amplitude):
    # A +-1 checkerboard rendered at 96 px, resized to the 32-px SR input. Output pixel i samples input
    # position 3i + 1. Plain bilinear hits pixel centres, so the checkerboard survives at full amplitude
    # as a 32-px checkerboard (pure aliasing). The antialiased triangle filter of half-width 3 has taps
    # 1/3, 2/3, 1, 2/3, 1/3 (sum 3) at offsets -2..2: its alternating sum is 1/3, i.e. 1/9 per axis and
    # 1/81 in 2-D; at the border rows (one tap cut off) the alternating sum is exactly 0.
    # With every ToRGB zeroed, the SR output is upsample2d(resized raw image) (the skip image path).
    torch.manual_seed(1)
    net = _skip_only(_tiny_sr(antialias=antialias))
    rgb = _checkerboard(2, 96).expand(2, 3, 96, 96).contiguous()
    out = net(rgb, torch.randn(2, 16, 96, 96), torch.randn(2, 9, 128), noise_mode='none')

    resized = _checkerboard(2, 32).expand(2, 3, 32, 32) * amplitude
    if antialias:
        resized = resized.clone()
        resized[:, :, [0, -1], :] = 0
        resized[:, :, :, [0, -1]] = 0
    expected = upfirdn2d.upsample2d(resized, upfirdn2d.setup_filter([1, 3, 3, 1]))
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5 * amplitude)
    assert out.shape == (2, 3, 64, 64)


def test_low_frequencies_pass_the_antialiasing():
    # A slow cosine along x (period 48 px at 96 px, far below the 32-px Nyquist limit). Plain bilinear
    # samples it exactly at pixel 3i + 1; the antialiased filter scales it by its 1-D gain at that
    # frequency, (1 + 2 (2/3) cos(w) + 2 (1/3) cos(2w)) / 3 (symmetric taps), away from the border columns.
    torch.manual_seed(2)
    x = torch.arange(96) + 0.5
    rgb = torch.cos(2 * math.pi * x / 48).expand(1, 3, 96, 96).contiguous()
    ws = torch.randn(1, 9, 128)
    net = _skip_only(_tiny_sr(antialias=True))
    out = net(rgb, torch.randn(1, 16, 96, 96), ws, noise_mode='none')
    w = 2 * math.pi / 48  # Radians per input pixel.
    gain = (1 + 4 / 3 * math.cos(w) + 2 / 3 * math.cos(2 * w)) / 3
    assert 0.95 < gain < 1
    samples = torch.cos(2 * math.pi * (3 * torch.arange(32) + 1.5) / 48).expand(1, 3, 32, 32)
    expected = upfirdn2d.upsample2d(gain * samples, upfirdn2d.setup_filter([1, 3, 3, 1]))
    torch.testing.assert_close(out[..., 4:-4], expected[..., 4:-4], rtol=0, atol=1e-5)


def test_only_the_last_w_is_used():
    torch.manual_seed(3)
    net = _small_sr()
    rgb, feats = torch.randn(2, 3, 16, 16), torch.randn(2, 8, 16, 16)
    ws = torch.randn(2, 9, 16)
    ref = net(rgb, feats, ws, noise_mode='none')
    other = ws.clone()
    other[:, :-1] = torch.randn(2, 8, 16)
    torch.testing.assert_close(net(rgb, feats, other, noise_mode='none'), ref, rtol=0, atol=0)
    other[:, -1] += 1
    assert (net(rgb, feats, other, noise_mode='none') - ref).abs().max() > 1e-3


def test_forward_backward_and_inputs_untouched():
    torch.manual_seed(4)
    net = _small_sr().train()
    rgb = torch.randn(2, 3, 16, 16, requires_grad=True)
    feats = torch.randn(2, 8, 16, 16, requires_grad=True)
    ws = torch.randn(2, 9, 16, requires_grad=True)
    rgb_before = rgb.detach().clone()
    for noise_mode in ('const', 'none'):
        net.zero_grad(set_to_none=True)
        out = net(rgb, feats, ws, noise_mode=noise_mode)
        out.square().mean().backward()
        for name, p in net.named_parameters():
            if noise_mode == 'none' and name.endswith('noise_strength'):
                assert p.grad is None or p.grad.abs().max() == 0, name
            else:
                assert p.grad is not None and torch.isfinite(p.grad).all(), name
                if not name.endswith('noise_strength'):  # Strengths start at 0, but const noise still gives grads.
                    assert p.grad.abs().max() > 0, name
    assert all(t.grad is not None and t.grad.abs().max() > 0 for t in (rgb, feats, ws))
    torch.testing.assert_close(rgb.detach(), rgb_before, rtol=0, atol=0)  # The no-up block adds out of place.
    # Training mode (non-fused modulated conv) and inference mode (fused) agree.
    with torch.no_grad():
        train_out = net(rgb, feats, ws, noise_mode='none')
        net.eval()
        torch.testing.assert_close(net(rgb, feats, ws, noise_mode='none'), train_out, rtol=0, atol=1e-5)


def test_no_up_block_closed_form():
    # SynthesisBlockNoUp: x -> conv1(conv0(x)) at the same resolution; img -> img + torgb(x).
    torch.manual_seed(5)
    block = sr.SynthesisBlockNoUp(4, 6, w_dim=8, resolution=8, img_channels=3, is_last=False, conv_clamp=None)
    x, img, ws = torch.randn(2, 4, 8, 8), torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8)
    y, out_img = block(x, img, ws, noise_mode='none')
    h = block.conv1(block.conv0(x, ws[:, 0], noise_mode='none'), ws[:, 1], noise_mode='none')
    torch.testing.assert_close(y, h, rtol=0, atol=1e-6)
    torch.testing.assert_close(out_img, img + block.torgb(h, ws[:, 2]), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='in_channels > 0'):
        sr.SynthesisBlockNoUp(0, 6, w_dim=8, resolution=8, img_channels=3, is_last=False)


@pytest.mark.parametrize('antialias', [True, False])
def test_rgb_view_of_features_resized_once(antialias):
    # The generator passes rgb = x[:, :3]; the module then resizes x once and takes its first three
    # channels. Reference: the same rgb as a separate tensor, resized on its own.
    torch.manual_seed(3)
    module = sr.SuperresolutionGeneric(channels=8, img_resolution=32, sr_num_fp16_res=0, sr_antialias=antialias,
                                       input_resolution=16, block_channels=[16, 8], w_dim=16,
                                       fused_modconv_default='inference_only')
    ws = torch.randn(2, 4, 16)
    for size in (8, 24):                                   # Upsampled and downsampled to 16.
        x = torch.randn(2, 8, size, size, dtype=torch.float64).float()
        x1 = x.clone().requires_grad_(True)
        x2 = x.clone().requires_grad_(True)
        out_view = module(x1[:, :3], x1, ws, noise_mode='const')
        out_copy = module(x2[:, :3].clone(), x2, ws, noise_mode='const')
        assert out_view.abs().max() > 0.1
        torch.testing.assert_close(out_view, out_copy, atol=1e-6, rtol=1e-6)
        grad = torch.randn_like(out_view)
        g1, = torch.autograd.grad(out_view, x1, grad)
        g2, = torch.autograd.grad(out_copy, x2, grad)
        torch.testing.assert_close(g1, g2, atol=1e-6, rtol=1e-6)
