"""Winograd F(4x4, 3x3) convolution (torch_utils/ops/winograd.py and its host transforms in
winograd_kernels.cu) against independent references: torch's conv2d in float64 (plain and per sample),
the transforms' adjoint identities <T x, v> = <x, T^T v>, gradcheck / gradgradcheck in float64, and
the layers that use it (modulated_conv2d, conv2d_resample) with it on and off."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_resample, winograd
from training import networks_stylegan2


def _data(gen, n, c, h, w, o, dtype, per_sample=False, layout='nchw'):
    x = torch.randn(n, c, h, w, generator=gen, dtype=dtype)
    shape = [n, o, c, 3, 3] if per_sample else [o, c, 3, 3]
    wt = torch.randn(shape, generator=gen, dtype=dtype) / (9 * c) ** 0.5
    if layout == 'nhwc':
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == 'strided':  # A view with a row stride wider than the row, and a channel slice.
        x = torch.randn(n, c + 2, h, w + 3, generator=gen, dtype=dtype)[:, 1:c + 1, :, 2:w + 2]
    return x, wt


def _conv_ref(x, w):
    """float64 torch conv2d, one kernel per sample when w is 5-D."""
    x, w = x.double(), w.double()
    if w.ndim == 4:
        return F.conv2d(x, w, padding=1)
    return torch.cat([F.conv2d(x[i:i + 1], w[i], padding=1) for i in range(x.shape[0])])


# Channel counts around the vector width (8 floats / 4 doubles) and the 8-vector chunk; sizes not
# multiples of the 4-pixel tile, and smaller than one tile.
SHAPES = [(2, 5, 7, 9, 3), (1, 8, 12, 8, 16), (3, 13, 5, 6, 7), (2, 70, 9, 11, 66), (1, 4, 1, 2, 4), (1, 16, 4, 4, 9)]


@pytest.mark.parametrize('layout', ['nchw', 'nhwc', 'strided'])
@pytest.mark.parametrize('per_sample', [False, True])
@pytest.mark.parametrize('shape', SHAPES)
def test_conv3x3_float64_matches_conv2d(render_ops_host, shape, per_sample, layout):
    gen = torch.Generator().manual_seed(hash((shape, per_sample, layout)) % 2 ** 31)
    x, w = _data(gen, *shape, torch.float64, per_sample, layout)
    y = winograd.conv3x3(x, w)
    torch.testing.assert_close(y, _conv_ref(x, w), rtol=1e-10, atol=1e-11)
    # The result keeps the input's layout: channels-last in, channels-last out; otherwise contiguous.
    if layout == 'nhwc' and shape[1] > 1 and shape[4] > 1:
        assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    elif layout != 'nhwc':
        assert y.is_contiguous()


@pytest.mark.parametrize('per_sample', [False, True])
def test_conv3x3_float32_error_is_small(render_ops_host, per_sample):
    """float32 rounding: F(4x4, 3x3) amplifies it a few times over the direct convolution's, no more."""
    gen = torch.Generator().manual_seed(3)
    x, w = _data(gen, 2, 96, 34, 30, 64, torch.float32, per_sample, 'nhwc')
    ref = _conv_ref(x, w)
    err = (winograd.conv3x3(x, w).double() - ref).abs().max().item()
    direct = F.conv2d(x, w, padding=1) if not per_sample else \
        torch.cat([F.conv2d(x[i:i + 1], w[i], padding=1) for i in range(2)])
    direct = (direct.double() - ref).abs().max().item()
    scale = ref.abs().max().item()
    assert err < 2e-5 * scale, (err, scale)
    assert err < 20 * max(direct, 1e-7 * scale), (err, direct)


def test_reference_transforms_match_conv2d():
    """winograd.reference (the transforms as torch einsums, float64): the transform matrices themselves."""
    gen = torch.Generator().manual_seed(4)
    for per_sample in (False, True):
        x, w = _data(gen, 2, 6, 11, 9, 5, torch.float64, per_sample)
        torch.testing.assert_close(winograd.reference(x, w), _conv_ref(x, w), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize('c', [3, 8, 70])
def test_transform_adjoints(render_ops_host, c):
    """<input(x), v> = <x, input_adjoint(v)> and <output(m), g> = <m, output_adjoint(g)>, float64, for
    contiguous and channels-last images."""
    gen = torch.Generator().manual_seed(c)
    n, h, w = 2, 10, 7
    tiles = n * ((h + 3) // 4) * ((w + 3) // 4)
    for cl in (False, True):
        x = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        g = torch.randn(n, c, h, w, generator=gen, dtype=torch.float64)
        if cl:
            x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
        v = torch.randn(36, tiles, c, generator=gen, dtype=torch.float64)
        lhs = (render_ops_host.winograd_input(x) * v).sum()
        rhs = (x * render_ops_host.winograd_input_adjoint(v, n, h, w, channels_last=cl)).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-9)
        lhs = (render_ops_host.winograd_output(v, n, h, w, channels_last=cl) * g).sum()
        rhs = (v * render_ops_host.winograd_output_adjoint(g)).sum()
        torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-9)


def test_tile_rows_and_bands(render_ops_host, monkeypatch):
    """Tile-row ranges give the rows of the whole transform; the no-autograd path in one-row bands
    equals the whole."""
    gen = torch.Generator().manual_seed(5)
    x, w = _data(gen, 2, 9, 17, 6, 12, torch.float64)
    v = render_ops_host.winograd_input(x)
    part = render_ops_host.winograd_input(x, rows=(2, 2))
    torch.testing.assert_close(part.view(36, 2, 2, 2, 9), v.view(36, 2, 5, 2, 9)[:, :, 2:4], rtol=0, atol=0)
    whole = winograd.conv3x3(x, w)                       # Grad mode on: the autograd path, in one piece.
    monkeypatch.setattr(winograd, 'BAND_BYTES', 1)
    with torch.no_grad():                                  # Without: bands of one tile row.
        torch.testing.assert_close(winograd.conv3x3(x, w), whole, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(winograd.conv3x3(x, w.expand(2, *w.shape)), whole, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match='tile rows'):
        render_ops_host.winograd_input(x, rows=(4, 2))
    with pytest.raises(ValueError, match='do not fit'):
        render_ops_host.winograd_output(v[:, :-1].contiguous(), 2, 17, 6)


@pytest.mark.parametrize('layout', ['nchw', 'nhwc'])
def test_gradcheck(render_ops_host, layout):
    gen = torch.Generator().manual_seed(6)
    x, w = _data(gen, 2, 5, 6, 7, 3, torch.float64, layout=layout)
    _, ws = _data(gen, 2, 5, 6, 7, 3, torch.float64, per_sample=True)
    x, w, ws = (t.requires_grad_(True) for t in (x, w, ws))
    assert torch.autograd.gradcheck(winograd.conv3x3, (x, w))
    assert torch.autograd.gradcheck(winograd.conv3x3, (x, ws))
    assert torch.autograd.gradgradcheck(winograd.conv3x3, (x, w))


def test_gradients_match_conv2d_float32(render_ops_host):
    gen = torch.Generator().manual_seed(7)
    x, w = _data(gen, 2, 64, 33, 36, 64, torch.float32)
    g = torch.randn(2, 64, 33, 36, generator=gen)
    grads = []
    for fn in (winograd.conv3x3, lambda a, b: F.conv2d(a, b, padding=1)):
        xa, wa = x.clone().requires_grad_(True), w.clone().requires_grad_(True)
        fn(xa, wa).backward(g)
        grads.append((xa.grad, wa.grad))
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=2e-4 * ref.abs().max().item())


def test_applicable(render_ops_host, monkeypatch):
    x = torch.randn(1, 64, 32, 32)
    w = torch.randn(64, 64, 3, 3)
    assert winograd.applicable(x, w) and winograd.applicable(x.requires_grad_(True), w)
    assert not winograd.applicable(x.double(), w.double())                       # float32 only.
    assert not winograd.applicable(torch.randn(1, 32, 32, 32), torch.randn(32, 32, 3, 3))  # Too few channels.
    assert not winograd.applicable(torch.randn(1, 64, 16, 64), w)               # Too small.
    assert not winograd.applicable(x, torch.randn(64, 64, 1, 1))
    monkeypatch.setattr(winograd, 'ENABLED', False)
    assert not winograd.applicable(x, w)
    monkeypatch.setattr(winograd, 'ENABLED', True)
    monkeypatch.setenv('EG3D_FUSED_OPS', '0')
    assert not winograd.applicable(x, w)                                         # No host kernels: torch's conv.


@pytest.mark.parametrize('fused', [True, False])
def test_layers_with_and_without_winograd(render_ops_host, monkeypatch, fused):
    """modulated_conv2d (fused: the modulation applied to the transformed kernel, conv3x3_modulated;
    non-fused: conv2d_resample) and conv2d_resample's flipped kernel, Winograd on against off: outputs and
    gradients."""
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(3, 64, 32, 40, generator=gen)
    weight = torch.randn(64, 64, 3, 3, generator=gen)
    styles = torch.randn(3, 64, generator=gen)
    noise = torch.randn(3, 1, 32, 40, generator=gen)
    calls = []
    real = winograd.conv3x3_transformed
    monkeypatch.setattr(winograd, 'conv3x3_transformed', lambda *a: calls.append(1) or real(*a))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(winograd, 'ENABLED', enabled)
        xa, wa = x.clone().requires_grad_(True), weight.clone().requires_grad_(True)
        y = networks_stylegan2.modulated_conv2d(xa, wa, styles, noise=noise, padding=1, fused_modconv=fused)
        y2 = conv2d_resample.conv2d_resample(xa, wa, padding=1, flip_weight=False)
        (y.square().mean() + y2.square().mean()).backward()
        results.append((y, y2, xa.grad, wa.grad))
    assert len(calls) == 2
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


@pytest.mark.parametrize('demodulate', [True, False])
def test_conv3x3_modulated_matches_per_sample_kernels(render_ops_host, demodulate):
    """The modulation applied to the transformed kernel against the per-sample kernels formed first,
    float64, with gradients (of x, the weight and the styles)."""
    gen = torch.Generator().manual_seed(9)
    x, w = _data(gen, 3, 6, 9, 10, 5, torch.float64)
    styles = torch.randn(3, 6, generator=gen, dtype=torch.float64)
    dcoefs = torch.rand(3, 5, generator=gen, dtype=torch.float64) + 0.5 if demodulate else None
    ws = w.unsqueeze(0) * styles[:, None, :, None, None]
    if dcoefs is not None:
        ws = ws * dcoefs[:, :, None, None, None]
    torch.testing.assert_close(winograd.conv3x3_modulated(x, w, styles, dcoefs), _conv_ref(x, ws),
                               rtol=1e-10, atol=1e-11)
    args = (x.requires_grad_(True), w.requires_grad_(True), styles.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda a, b, s: winograd.conv3x3_modulated(a, b, s, dcoefs), args)


def test_empty_batch(render_ops_host):
    w = torch.randn(64, 64, 3, 3)
    for grad in (False, True):
        x = torch.randn(0, 64, 32, 32).requires_grad_(grad)
        with torch.set_grad_enabled(grad):
            y = winograd.conv3x3(x, w)
        assert y.shape == (0, 64, 32, 32)
