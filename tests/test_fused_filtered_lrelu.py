"""The fused filtered_lrelu (the host build of its kernel) against the reference path.

At the geometries StyleGAN3's layers use (filtered_lrelu's input is the 3x3 convolution's output, the
padding centres the output grid on the input grid, up/down 2 with 12-tap filters or up 4 with 24 taps,
radial 2-D down filters, critically sampled layers, the ToRGB layer without filters), at small odd sizes:
forward values and derivatives (first order, and second order through the incoming gradient), float32 within
1e-5 * max|ref| + 1e-6, float16 inputs against the float32 reference within 2e-3 * max|ref|. Each comparison
asserts that the fused path ran. The mask the backward keeps is checked bit by bit against the reference's
upsampled intermediate, and its size against the budget (input + bias + 1 bit per upsampled sample).
"""

import math
import os
import shutil
import subprocess

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

from torch_utils.ops import _impl, filtered_lrelu, filtered_lrelu_fused, upfirdn2d

OPS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'torch_utils', 'ops')


@pytest.fixture(autouse=True)
def fused_enabled(fused_ops, monkeypatch):
    monkeypatch.setenv(_impl.ENV, '1')
    _impl.reset()
    yield
    _impl.reset()


def lowpass(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor:
    """A Kaiser-windowed low-pass (sinc, or jinc when radial: 2-D), designed independently of our networks."""
    if not radial:
        return torch.tensor(scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    w = np.kaiser(numtaps, beta)
    f = f * np.outer(w, w)
    return torch.tensor(f / f.sum(), dtype=torch.float32)


def layer(in_size, out_size, up, down, radial=False, critical=False, in_rate=16):
    """(filtered_lrelu input size, fu, fd, padding) of a StyleGAN3 layer mapping in_size to out_size
    (after its 3x3 convolution: in + 2), with 6 taps per phase as StyleGAN3's filter_size=6."""
    tmp_rate = in_rate * up
    cutoff = in_rate / 2 if critical else in_rate / 2 - 1
    fu = lowpass(6 * up, in_rate / 2 - 1, 2, tmp_rate) if up > 1 else None
    fd = lowpass(6 * down, cutoff, 2, tmp_rate, radial) if down > 1 else None
    ut, dt = (6 * up if up > 1 else 1), (6 * down if down > 1 else 1)
    (h, w), (oh, ow) = in_size, out_size
    pad = []
    for n, o in ((w, ow), (h, oh)):
        total = (o - 1) * down + 1 - (n + 2) * up + ut + dt - 2
        lo = (total + up) // 2
        pad += [lo, total - lo]
    return (h + 2, w + 2), fu, fd, pad


# name: (layer geometry, batch and channels). Sizes odd and non-square where StyleGAN3 allows.
LAYERS = {
    'up2': (layer((9, 11), (9, 11), 2, 2), (2, 3)),                         # Same rate: up 2, down 2, 12 taps.
    'up4': (layer((9, 7), (13, 11), 4, 2), (1, 3)),                         # Rate doubles: 24-tap up.
    'radial': (layer((9, 9), (9, 9), 2, 2, radial=True), (2, 2)),           # StyleGAN3-R: 12x12 radial down.
    'critical': (layer((12, 13), (10, 11), 2, 2, critical=True), (1, 3)),   # Cutoff at Nyquist; crops.
    'torgb': (((10, 9), None, None, 0), (2, 3)),                            # No filters, linear, clamp.
}


def layer_kwargs(name, clamp):
    (size, fu, fd, pad), (n, c) = LAYERS[name]
    kw = dict(fu=fu, fd=fd, padding=pad, up=1, down=1, clamp=clamp)
    if name == 'torgb':
        kw.update(gain=1, slope=1, clamp=clamp)
    else:
        kw.update(up=fu.shape[0] // 6, down=fd.shape[0] // 6)
    return (n, c) + size, kw


def assert_close(fused, ref, rel=1e-5, abs_=1e-6, what=''):
    fused, ref = fused.double(), ref.double()
    assert fused.shape == ref.shape, f'{what}: shape {list(fused.shape)} != {list(ref.shape)}'
    err, tol = (fused - ref).abs().max().item(), rel * ref.abs().max().item() + abs_
    assert err <= tol, f'{what}: max|fused - ref| = {err:.3g} > {tol:.3g}'


def derivatives(fn, inputs, gen, values_dtype):
    """fn(*inputs); its first derivatives for a random output gradient g; the derivatives of
    <first derivatives, u> with respect to g (the second order the op has: it is piecewise linear)."""
    def rand(like):
        return torch.randn(like.shape, generator=gen).to(values_dtype).to(like.dtype)
    inputs = [t.detach().requires_grad_() for t in inputs]
    y = fn(*inputs)
    g = rand(y).requires_grad_()
    firsts = torch.autograd.grad(y, inputs, g, create_graph=True)
    s = sum((d * rand(d)).sum() for d in firsts)
    (second,) = torch.autograd.grad(s, [g])
    return [y, *firsts, second]


def compare(kw, x, b, rel=1e-5, abs_=1e-6, seed=0):
    """The fused path (impl='auto', asserted to have run) against the reference in float32 (float64 for
    float64 inputs), with the same random gradients."""
    dtype = x.dtype
    fused = derivatives(lambda x, b: filtered_lrelu.filtered_lrelu(x, b=b, **kw), [x, b],
                        torch.Generator().manual_seed(seed), dtype)
    assert filtered_lrelu.last_impl == 'fused'
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    ref = derivatives(lambda x, b: filtered_lrelu.filtered_lrelu(x, b=b, impl='ref', **kw),
                      [x.to(ref_dtype), b.to(ref_dtype)], torch.Generator().manual_seed(seed), dtype)
    assert filtered_lrelu.last_impl == 'ref'
    for f, r, name in zip(fused, ref, ['y', 'dx', 'db', 'd2/dg']):
        assert_close(f, r, rel, abs_, name)


def inputs(shape, gen, dtype=torch.float32):
    return torch.randn(shape, generator=gen).to(dtype), torch.randn(shape[1], generator=gen).to(dtype)


@pytest.mark.parametrize('clamp', [None, 1.0])
@pytest.mark.parametrize('flip', [False, True])
@pytest.mark.parametrize('name', list(LAYERS))
def test_matches_reference(name, flip, clamp):
    shape, kw = layer_kwargs(name, clamp)
    x, b = inputs(shape, torch.Generator().manual_seed(1))
    compare(dict(kw, flip_filter=flip), x, b)


@pytest.mark.parametrize('name, clamp', [('up2', 1.0), ('up4', None), ('radial', 0.8), ('torgb', 0.5)])
def test_cuda_block_shape(name, clamp):
    # CUDA tiles are 16x16 outputs: these outputs span several tiles in both directions, with partial tiles.
    _, kw = layer_kwargs(name, clamp)
    if name == 'torgb':
        shape = (1, 2, 37, 45)
    else:
        up, down = kw['up'], kw['down']
        (size, fu, fd, pad), _ = layer((33, 41), (33 * up // down, 41 * up // down), up, down,
                                       radial=name == 'radial'), None
        shape, kw = (1, 2) + size, dict(kw, fu=fu, fd=fd, padding=pad)
    x, b = inputs(shape, torch.Generator().manual_seed(2))
    with _impl.emulating_cuda_blocks():
        compare(kw, x, b)


@pytest.mark.parametrize('clamp', [None, 1.0])
def test_several_host_tiles(clamp):
    # The host's tiles are 64x32 outputs: 3 x 3 tiles, partial ones at the edges; each tile writes its own
    # bytes of the mask (1 or 2 bits per sample).
    (size, fu, fd, pad), _ = layer((77, 141), (77, 141), 2, 2), None
    x, b = inputs((1, 2) + size, torch.Generator().manual_seed(3))
    compare(dict(fu=fu, fd=fd, up=2, down=2, padding=pad, clamp=clamp), x, b)


@pytest.mark.parametrize('clamp', [None, 1.0])
@pytest.mark.parametrize('name', ['up2', 'up4', 'radial', 'torgb'])
def test_float16(name, clamp):
    shape, kw = layer_kwargs(name, clamp)
    x, b = inputs(shape, torch.Generator().manual_seed(4), torch.float16)
    compare(kw, x, b, rel=2e-3, abs_=0)


def test_bfloat16():
    shape, kw = layer_kwargs('up2', 1.0)
    x, b = inputs(shape, torch.Generator().manual_seed(5), torch.bfloat16)
    compare(kw, x, b, rel=1e-2, abs_=0)


@pytest.mark.parametrize('name', ['up4', 'radial'])
def test_float64_gradcheck(name):
    shape, kw = layer_kwargs(name, 1.0)
    kw = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    gen = torch.Generator().manual_seed(6)
    x = torch.randn((1, 2) + shape[2:], generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, generator=gen, dtype=torch.float64, requires_grad=True)
    fn = lambda x, b: filtered_lrelu.filtered_lrelu(x, b=b, impl='fused', **kw)  # noqa: E731
    # Piecewise linear: finite differences are exact unless a step crosses a kink (upsampled samples within
    # eps of 0 or of the clamp): the check would then fail, which these inputs avoid.
    assert torch.autograd.gradcheck(fn, (x, b), eps=1e-7)
    assert torch.autograd.gradgradcheck(fn, (x, b), eps=1e-7)
    assert filtered_lrelu.last_impl == 'fused'


def unpack_mask(mask: torch.Tensor, mid_x: int, bits: int) -> torch.Tensor:
    """[N, C, mid_y, bytes] uint8 -> [N, C, mid_y, mid_x] codes (least significant bits first)."""
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8)
    codes = (mask[..., None] >> shifts) & ((1 << bits) - 1)
    return codes.flatten(-2)[..., :mid_x]


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('clamp', [None, 1.0])
@pytest.mark.parametrize('name', ['up2', 'up4', 'radial', 'critical'])
def test_backward_keeps_only_the_mask(name, clamp, dtype):
    shape, kw = layer_kwargs(name, clamp)
    x, b = inputs(shape, torch.Generator().manual_seed(7), dtype)
    saved = {}
    for impl in ('fused', 'ref'):
        packed = []
        xg, bg = (x, b) if impl == 'fused' else (x.float(), b.float())
        xg, bg = xg.clone().requires_grad_(), bg.clone().requires_grad_()
        with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
            y = filtered_lrelu.filtered_lrelu(xg, b=bg, impl=impl, **kw)
        assert filtered_lrelu.last_impl == impl
        saved[impl] = packed
        if impl == 'fused':  # The backward works from what was kept.
            dx, db = torch.autograd.grad(y, [xg, bg], torch.ones_like(y))
            assert torch.isfinite(dx).all() and torch.isfinite(db).all()

    # The upsampled intermediate, from the reference ops: u = upfirdn2d(x + b, fu, up, padding, gain up^2).
    up = kw['up']
    u = upfirdn2d.upfirdn2d_ref(x.double() + b.double()[:, None, None], kw['fu'].double(), up=up,
                                padding=kw['padding'], gain=up * up)
    upsampled = u.numel()
    budget = x.numel() * x.element_size() + b.numel() * b.element_size() + math.ceil(upsampled / 8)
    nbytes = [t.numel() * t.element_size() for t in saved['fused']]
    assert sum(nbytes) <= budget, (nbytes, budget)
    (mask,) = saved['fused']
    bits = 1 if clamp is None else 2
    assert mask.dtype == torch.uint8 and list(mask.shape) == list(u.shape[:3]) + [math.ceil(u.shape[3] * bits / 8)]
    assert sum(t.numel() * t.element_size() for t in saved['ref']) > 4 * upsampled  # What the hooks see there.

    # Bit by bit: 0 where u > 0, 1 where u <= 0, 2 where the clamp saturated; undecidable samples left out.
    v = torch.where(u > 0, u, u * 0.2) * math.sqrt(2)
    expected = torch.where(u > 0, 0, 1)
    near = u.abs() < 1e-4
    if clamp is not None:
        expected = torch.where(v.abs() > clamp, 2, expected)
        near |= (v.abs() - clamp).abs() < 1e-4
    codes = unpack_mask(mask, u.shape[3], bits).long()
    assert (codes[~near] == expected[~near]).all()
    assert near.float().mean() < 0.01 and (expected == 1).any() and (expected == 0).any()
    if clamp is not None:
        assert (expected == 2).any()


def test_no_grad_forward_keeps_nothing(monkeypatch):
    shape, kw = layer_kwargs('up2', 1.0)
    x, b = inputs(shape, torch.Generator().manual_seed(8))
    modes = []
    launch = filtered_lrelu_fused._Config.launch
    monkeypatch.setattr(filtered_lrelu_fused._Config, 'launch',
                        lambda self, x, b, mode, mask=None: modes.append(mode) or launch(self, x, b, mode, mask))
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y0 = filtered_lrelu.filtered_lrelu(x, b=b, **kw)  # No input requires grad.
        with torch.no_grad():
            y1 = filtered_lrelu.filtered_lrelu(x.clone().requires_grad_(), b=b, **kw)
    assert filtered_lrelu.last_impl == 'fused' and not packed
    assert modes == [filtered_lrelu_fused.FORWARD] * 2
    y2 = filtered_lrelu.filtered_lrelu(x.clone().requires_grad_(), b=b, **kw)
    assert modes[-1] == filtered_lrelu_fused.FORWARD_MASK  # The same values, with the mask.
    assert torch.equal(y0, y1) and torch.equal(y0, y2.detach())


def test_gradient_with_respect_to_the_bias_only():
    shape, kw = layer_kwargs('up4', None)
    x, b = inputs(shape, torch.Generator().manual_seed(9))
    bf, br = b.clone().requires_grad_(), b.clone().requires_grad_()
    (db,) = torch.autograd.grad(filtered_lrelu.filtered_lrelu(x, b=bf, **kw).square().sum(), bf)
    (db_ref,) = torch.autograd.grad(filtered_lrelu.filtered_lrelu(x, b=br, impl='ref', **kw).square().sum(), br)
    assert_close(db, db_ref)


def test_filter_gradients_warn_once_and_use_reference():
    shape, kw = layer_kwargs('up2', None)
    x, b = inputs(shape, torch.Generator().manual_seed(10))
    kw['fd'] = kw['fd'].clone().requires_grad_()
    with pytest.warns(_impl.FusedOpsWarning, match='filtered_lrelu: .*filters.*reference path') as record:
        y1 = filtered_lrelu.filtered_lrelu(x, b=b, **kw)
        y2 = filtered_lrelu.filtered_lrelu(x, b=b, **kw)
    assert len(record) == 1 and filtered_lrelu.last_impl == 'ref'
    assert torch.equal(y1, y2) and y1.requires_grad
    with pytest.raises(ValueError, match="impl='fused'"):
        filtered_lrelu.filtered_lrelu(x, b=b, impl='fused', **kw)


def test_input_smaller_than_filter_is_the_reference_error():
    f = upfirdn2d.setup_filter(torch.ones(12), separable=True)
    for impl in ('fused', 'ref'):
        with pytest.raises(ValueError, match=r'padded input \(11x11\) is smaller than the filter \(12x12\)'):
            filtered_lrelu.filtered_lrelu(torch.randn(1, 2, 4, 4), f, f, up=2, padding=[2, 1, 2, 1], impl=impl)
        with pytest.raises(ValueError, match=r'padded input \(1x1\) is smaller than the filter \(12x12\)'):
            filtered_lrelu.filtered_lrelu(torch.randn(1, 2, 6, 6), f, f, up=2, padding=0, impl=impl)


def test_disabled_by_environment(monkeypatch, recwarn):
    monkeypatch.setenv(_impl.ENV, '0')
    shape, kw = layer_kwargs('up2', None)
    x, b = inputs(shape, torch.Generator().manual_seed(11))
    filtered_lrelu.filtered_lrelu(x, b=b, **kw)
    assert filtered_lrelu.last_impl == 'ref'
    assert not [w for w in recwarn if issubclass(w.category, _impl.FusedOpsWarning)]
    with pytest.raises(RuntimeError, match='EG3D_FUSED_OPS'):
        filtered_lrelu.filtered_lrelu(x, b=b, impl='fused', **kw)


def test_nvcc_compiles_the_kernel(tmp_path):
    nvcc = shutil.which('nvcc') or ('/usr/local/cuda/bin/nvcc' if os.path.exists('/usr/local/cuda/bin/nvcc') else None)
    if nvcc is None:
        pytest.skip('nvcc not found')
    obj = tmp_path / 'filtered_lrelu_kernels.o'
    src = os.path.join(OPS, 'filtered_lrelu_kernels.cu')
    out = subprocess.run([nvcc, '-std=c++17', '-O3', '-arch=sm_80', '-c', src, '-o', str(obj)], capture_output=True,
                         text=True, timeout=600)
    output = out.stdout + out.stderr
    assert out.returncode == 0, output
    assert 'warning' not in output.lower(), output
    assert obj.stat().st_size > 0
