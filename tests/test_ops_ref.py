"""Reference ops against independent float64 computations (numpy / scipy.signal), plus gradient checks."""

import itertools
import math

import numpy as np
import pytest
import scipy.signal
import torch

from torch_utils.ops import bias_act, conv2d_resample, filtered_lrelu, fma, grid_sample_gradfix, upfirdn2d

rng = np.random.default_rng()


def randn(*shape):
    return rng.standard_normal(shape)


def t64(a, requires_grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=requires_grad)

# ----------------------------------------------------------------------------
# Independent numpy references.


def act_np(x, act, alpha):
    return {
        'linear': lambda: x,
        'relu': lambda: np.maximum(x, 0),
        'lrelu': lambda: np.where(x > 0, x, x * alpha),
        'tanh': lambda: np.tanh(x),
        'sigmoid': lambda: 1 / (1 + np.exp(-x)),
        'elu': lambda: np.where(x > 0, x, np.expm1(x)),
        'selu': lambda: 1.0507009873554805 * np.where(x > 0, x, 1.6732632423543772 * np.expm1(x)),
        'softplus': lambda: np.log1p(np.exp(x)),
        'swish': lambda: x / (1 + np.exp(-x)),
    }[act]()


# (default alpha, default gain), from the upstream table (eg3d-facts section 8).
ACT_DEFAULTS = {'linear': (0, 1), 'relu': (0, 2 ** 0.5), 'lrelu': (0.2, 2 ** 0.5), 'tanh': (0, 1),
                'sigmoid': (0, 1), 'elu': (0, 1), 'selu': (0, 1), 'softplus': (0, 1), 'swish': (0, 2 ** 0.5)}


def upfirdn_np(x, f, up=(1, 1), down=(1, 1), pad=(0, 0, 0, 0), flip=False, gain=1.0):
    """Zero insertion, padding/cropping, true 2-D convolution (scipy), decimation; x [N, C, H, W]."""
    upx, upy = up
    downx, downy = down
    x0, x1, y0, y1 = pad
    n, c, h, w = x.shape
    z = np.zeros([n, c, h * upy, w * upx])
    z[:, :, ::upy, ::upx] = x
    z = np.pad(z, [(0, 0), (0, 0), (max(y0, 0), max(y1, 0)), (max(x0, 0), max(x1, 0))])
    z = z[:, :, max(-y0, 0): z.shape[2] - max(-y1, 0), max(-x0, 0): z.shape[3] - max(-x1, 0)]
    f2 = np.outer(f, f) if f.ndim == 1 else f  # A 1-D filter is separable: same as its outer product.
    f2 = f2 * gain
    if flip:
        f2 = f2[::-1, ::-1]
    out = np.stack([np.stack([scipy.signal.convolve2d(z[i, j], f2, mode='valid') for j in range(c)])
                    for i in range(n)])
    return out[:, :, ::downy, ::downx]


def correlate_np(x, w, groups=1):
    """Grouped 2-D cross-correlation ('valid'), x [N, Cin, H, W], w [Cout, Cin/groups, kh, kw]."""
    n, cin = x.shape[:2]
    cout = w.shape[0]
    cin_g, cout_g = cin // groups, cout // groups
    out = None
    for i in range(n):
        rows = []
        for o in range(cout):
            g = o // cout_g
            acc = sum(scipy.signal.correlate2d(x[i, g * cin_g + k], w[o, k], mode='valid') for k in range(cin_g))
            rows.append(acc)
        rows = np.stack(rows)
        out = rows[None] if out is None else np.concatenate([out, rows[None]])
    return out

# ----------------------------------------------------------------------------
# bias_act


@pytest.mark.parametrize('act', list(ACT_DEFAULTS))
def test_bias_act_matches_numpy(act):
    x, b = randn(3, 5, 4, 7) * 2, randn(5)
    def_alpha, def_gain = ACT_DEFAULTS[act]
    for alpha, gain, clamp in [(None, None, None), (0.3, 0.7, 0.5), (None, 2.0, -1)]:
        y = bias_act.bias_act(t64(x), t64(b), act=act, alpha=alpha, gain=gain, clamp=clamp, impl='ref').numpy()
        a = def_alpha if alpha is None else alpha
        ref = act_np(x + b[None, :, None, None], act, a if act == 'lrelu' else 0) * (def_gain if gain is None else gain)
        if clamp is not None and clamp >= 0:
            ref = np.clip(ref, -clamp, clamp)
        np.testing.assert_allclose(y, ref, rtol=1e-12, atol=1e-12)


def test_bias_act_dim_and_errors():
    x, b = randn(2, 3, 6), randn(6)
    y = bias_act.bias_act(t64(x), t64(b), dim=2, act='relu', impl='ref').numpy()
    np.testing.assert_allclose(y, np.maximum(x + b, 0) * 2 ** 0.5, rtol=1e-12)
    with pytest.raises(ValueError, match='does not match'):
        bias_act.bias_act(t64(x), t64(b), dim=1)
    with pytest.raises(ValueError, match='unknown activation'):
        bias_act.bias_act(t64(x), act='gelu')


@pytest.mark.parametrize('act', list(ACT_DEFAULTS))
def test_bias_act_gradcheck(act):
    # Keep inputs away from kinks (relu/lrelu at 0) and from the clamp edge, where derivatives jump.
    x = randn(2, 3, 4)
    x = np.where(np.abs(x) < 0.05, x + 0.2, x)
    x, b = t64(x, True), t64(randn(3) * 0.01, True)
    fn = lambda x, b: bias_act.bias_act(x, b, act=act, clamp=1e3, impl='ref')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, b))
    assert torch.autograd.gradgradcheck(fn, (x, b))

# ----------------------------------------------------------------------------
# upfirdn2d

FILTERS = {
    '4tap': np.array([1, 3, 3, 1], float),
    '5tap-asym': np.array([1, 2, 5, 2, 1.5]),
    '2d-3x4': None,  # Random 2-D filter, drawn in the test.
    '12tap-separable': None,
}


@pytest.mark.parametrize('up,down', [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4), (2, 2), ((2, 1), (1, 2))])
@pytest.mark.parametrize('fname', list(FILTERS))
def test_upfirdn2d_matches_scipy(up, down, fname):
    if fname == '2d-3x4':
        taps = randn(3, 4)
    elif fname == '12tap-separable':
        taps = randn(12)
    else:
        taps = FILTERS[fname]
    up2 = (up, up) if isinstance(up, int) else up
    down2 = (down, down) if isinstance(down, int) else down
    for pad, flip, gain in [((0, 0, 0, 0), False, 1.0), ((2, 1, 3, 0), True, 2.5), ((-1, 3, 1, -2), False, 0.5)]:
        x = randn(2, 3, 7, 9) if taps.shape[-1] < 8 else randn(1, 2, 13, 15)
        f = upfirdn2d.setup_filter(taps, normalize=False)
        assert f.dtype == torch.float32
        y = upfirdn2d.upfirdn2d(t64(x), f.double(), up=up, down=down, padding=list(pad), flip_filter=flip,
                                gain=gain, impl='ref').numpy()
        ref = upfirdn_np(x, f.double().numpy(), up2, down2, pad, flip, gain)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_setup_filter():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.dtype == torch.float32 and f.shape == (4, 4)
    np.testing.assert_allclose(f.numpy(), np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64, rtol=1e-7)
    long = upfirdn2d.setup_filter(np.arange(1, 9))  # >= 8 taps: kept separable.
    assert long.shape == (8,) and abs(long.sum().item() - 1) < 1e-6
    g = upfirdn2d.setup_filter([1, 2, 1], gain=4, flip_filter=True)
    np.testing.assert_allclose(g.sum().item(), 4, rtol=1e-6)


def _centroid(img):
    ys, xs = np.mgrid[:img.shape[0], :img.shape[1]]
    return (img * ys).sum() / img.sum(), (img * xs).sum() / img.sum()


@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 1], [1, 5, 10, 10, 5, 1]])
def test_resampling_alignment_closed_form(taps):
    """Pixel centres stay aligned (even-length symmetric filters): upsampling by 2 puts input pixel i
    (centre i + 0.5) at output coordinate 2(i + 0.5) - 0.5; downsampling a linear ramp r gives r at
    input coordinate 2j + 0.5 for output pixel j; filter2d keeps constants."""
    f = upfirdn2d.setup_filter(taps).double()
    img = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    img[0, 0, 6, 9] = 1
    up = upfirdn2d.upsample2d(img, f, impl='ref')[0, 0].numpy()
    assert up.shape == (32, 32)
    np.testing.assert_allclose(_centroid(up), (2 * 6.5 - 0.5, 2 * 9.5 - 0.5), atol=1e-9)
    np.testing.assert_allclose(up.sum(), 4, rtol=1e-9)  # gain up^2 keeps the mean brightness.

    a, b, c = rng.uniform(0.5, 2), rng.uniform(-2, -0.5), rng.standard_normal()
    yy, xx = np.mgrid[:24, :24].astype(float)
    ramp = t64(a * yy + b * xx + c)[None, None]
    down = upfirdn2d.downsample2d(ramp, f, impl='ref')[0, 0].numpy()
    assert down.shape == (12, 12)
    jy, jx = np.mgrid[:12, :12].astype(float)
    m = len(taps) // 2  # Border pixels see the zero padding.
    np.testing.assert_allclose(down[m:-m, m:-m], (a * (2 * jy + 0.5) + b * (2 * jx + 0.5) + c)[m:-m, m:-m],
                               rtol=1e-12, atol=1e-12)

    const = 1.7 + torch.zeros(1, 1, 12, 12, dtype=torch.float64)
    same = upfirdn2d.filter2d(const, f, impl='ref')[0, 0].numpy()
    assert same.shape == (12, 12)
    np.testing.assert_allclose(same[3:-3, 3:-3], 1.7, rtol=1e-12)
    np.testing.assert_allclose(upfirdn2d.upsample2d(const, f, impl='ref')[0, 0, 4:-4, 4:-4].numpy(), 1.7,
                               rtol=1e-12)


def test_upfirdn2d_errors():
    with pytest.raises(ValueError, match='4-D'):
        upfirdn2d.upfirdn2d(torch.randn(3, 4), None)
    with pytest.raises(ValueError, match='padding'):
        upfirdn2d.upfirdn2d(torch.randn(1, 1, 4, 4), None, padding=[1, 2, 3])
    with pytest.raises(ValueError, match='smaller than the filter'):
        upfirdn2d.upfirdn2d(torch.randn(1, 1, 4, 4), upfirdn2d.setup_filter([1] * 9), impl='ref')


@pytest.mark.parametrize('up,down,f', [(1, 1, [1, 3, 3, 1]), (2, 1, [1, 3, 3, 1]), (1, 2, [1, 2, 1]),
                                       (2, 2, list(range(1, 9)))])
def test_upfirdn2d_gradients(up, down, f):
    x = t64(randn(1, 2, 5, 6), True)
    f = upfirdn2d.setup_filter(f).double()
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=[1, 2, 0, 1], gain=1.5, impl='ref')  # noqa
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))

# ----------------------------------------------------------------------------
# conv2d_resample


def conv2d_resample_np(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The definition: FIR upsampling (gain up^2) with centring padding, correlation, FIR downsampling."""
    fw = fh = f.shape[-1]
    px0, px1, py0, py1 = padding
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    if up > 1:
        x = upfirdn_np(x, f, (up, up), (1, 1), (px0, px1, py0, py1), flip_filter, up * up)
    else:
        x = upfirdn_np(x, np.ones([1, 1]), (1, 1), (1, 1), (px0, px1, py0, py1))
    x = correlate_np(x, w if flip_weight else w[:, :, ::-1, ::-1], groups)
    if down > 1:
        x = upfirdn_np(x, f, (1, 1), (down, down), (0, 0, 0, 0), flip_filter)
    return x


CONV_CASES = list(itertools.product([1, 3], [(1, 1), (2, 1), (1, 2), (4, 1), (1, 4)], [1, 2],
                                    [(1, 1, 1, 1), (2, 0, -1, 1)]))


@pytest.mark.parametrize('k,updown,groups,padding', CONV_CASES)
def test_conv2d_resample_matches_numpy(k, updown, groups, padding):
    up, down = updown
    taps = np.array([1, 3, 3, 1], float)
    f = upfirdn2d.setup_filter(taps).double()
    x, w = randn(1, 4, 5, 7) if down < 4 else randn(1, 4, 10, 11), randn(6, 4 // groups, k, k)
    for flip_weight, flip_filter in [(True, False), (False, True)]:
        y = conv2d_resample.conv2d_resample(t64(x), t64(w), f, up=up, down=down, padding=list(padding),
                                            groups=groups, flip_weight=flip_weight, flip_filter=flip_filter).numpy()
        ref = conv2d_resample_np(x, w, f.numpy(), up, down, padding, groups, flip_weight, flip_filter)
        assert y.shape == ref.shape
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('k,up,down', [(3, 2, 1), (3, 1, 2), (1, 1, 2), (3, 1, 1)])
def test_conv2d_resample_gradients(k, up, down):
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    x, w = t64(randn(1, 2, 5, 5), True), t64(randn(3, 2, k, k), True)
    fn = lambda x, w: conv2d_resample.conv2d_resample(x, w, f, up=up, down=down, padding=k // 2,  # noqa: E731
                                                      flip_weight=(up == 1))
    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))

# ----------------------------------------------------------------------------
# filtered_lrelu, fma, grid_sample


@pytest.mark.parametrize('up,down,padding,clamp', [(1, 1, 5, None), (2, 2, [3, 2, 4, 1], 0.8), (4, 2, 5, None),
                                                   (2, 1, [1, 0, 2, 3], 0.5), (1, 4, 2, None)])
def test_filtered_lrelu_matches_numpy(up, down, padding, clamp):
    x, b = randn(2, 3, 9, 8), randn(3)
    fu, fd = randn(6), np.hanning(8)[1:-1] + 0.1 * randn(6)
    gain, slope = 1.3, 0.25
    pad = (padding,) * 4 if isinstance(padding, int) else tuple(padding)
    for flip in (False, True):
        y = filtered_lrelu.filtered_lrelu(t64(x), t64(fu), t64(fd), t64(b), up=up, down=down, padding=padding,
                                          gain=gain, slope=slope, clamp=clamp, flip_filter=flip, impl='ref').numpy()
        z = upfirdn_np(x + b[None, :, None, None], fu, (up, up), (1, 1), pad, flip, up * up)
        z = np.where(z > 0, z, z * slope) * gain
        if clamp is not None:
            z = np.clip(z, -clamp, clamp)
        ref = upfirdn_np(z, fd, (1, 1), (down, down), (0, 0, 0, 0), flip)
        assert y.shape == ref.shape == (2, 3) + filtered_lrelu.output_size((9, 8), t64(fu), t64(fd), up, down, padding)
        np.testing.assert_allclose(y, ref, rtol=1e-10, atol=1e-10)


def test_filtered_lrelu_gradcheck():
    x, b = t64(randn(1, 2, 6, 5), True), t64(randn(2), True)
    fu, fd = t64(randn(4)), t64(randn(4))
    fn = lambda x, b: filtered_lrelu.filtered_lrelu(x, fu, fd, b, up=2, down=2, padding=2, clamp=50, impl='ref')  # noqa
    assert torch.autograd.gradcheck(fn, (x, b))


def test_fma_broadcast_and_gradcheck():
    a, b, c = randn(3, 1, 4), randn(1, 5, 1), randn(3, 5, 4)
    np.testing.assert_allclose(fma.fma(t64(a), t64(b), t64(c)).numpy(), a * b + c, rtol=1e-12, atol=1e-15)
    args = (t64(a, True), t64(b, True), t64(c, True))
    assert torch.autograd.gradcheck(fma.fma, args)


def test_grid_sample_gradgradcheck():
    x = t64(randn(1, 2, 5, 6), True)
    grid = t64(rng.uniform(-0.9, 0.9, size=(1, 3, 4, 2)), True)
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid))

# ----------------------------------------------------------------------------
# What R1 needs: the second derivative through a StyleGAN2-like block, against finite differences.


def test_second_order_through_stylegan2_block():
    """R1 differentiates ||d D / d image||^2 once more, with respect to the weights and the latent. Take
    that second-order gradient through modulated convolution (demodulation makes it non-linear in the
    style), bias_act lrelu and upsample2d, and compare it with central finite differences in float64."""
    g = torch.Generator().manual_seed(int(rng.integers(1 << 30)))
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    affine = torch.randn(3, 6, generator=g, dtype=torch.float64) / 6 ** 0.5
    bias = torch.randn(4, generator=g, dtype=torch.float64)
    image = torch.randn(1, 3, 5, 5, generator=g, dtype=torch.float64)
    probe = torch.nn.functional.interpolate(torch.randn(1, 4, 5, 5, generator=g, dtype=torch.float64),
                                            scale_factor=2)

    def block(x, w, latent):
        style = latent @ affine.T + 1                                             # [1, 3]
        ww = w[None] * style[:, None, :, None, None]                              # Modulate.
        ww = ww * (ww.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()   # Demodulate.
        y = conv2d_resample.conv2d_resample(x, ww[0], f, padding=1)
        y = bias_act.bias_act(y, bias, act='lrelu', impl='ref')
        return upfirdn2d.upsample2d(y, f, impl='ref')

    def penalty(w, latent):  # ||d/dimage sum(block * probe)||^2, the R1 form.
        x = image.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad((block(x, w, latent) * probe).sum(), x, create_graph=True)
        return grad.square().sum()

    w0 = torch.randn(4, 3, 3, 3, generator=g, dtype=torch.float64)
    latent0 = torch.randn(1, 6, generator=g, dtype=torch.float64)
    w, latent = w0.clone().requires_grad_(True), latent0.clone().requires_grad_(True)
    analytic = torch.autograd.grad(penalty(w, latent), [w, latent])

    eps = 1e-6
    for which, (base, grad) in enumerate(zip([w0, latent0], analytic)):
        numeric = torch.zeros_like(base).flatten()
        for idx in range(base.numel()):
            d = torch.zeros(base.numel(), dtype=torch.float64)
            d[idx] = eps
            d = d.reshape(base.shape)
            args_p = [w0 + d, latent0] if which == 0 else [w0, latent0 + d]
            args_m = [w0 - d, latent0] if which == 0 else [w0, latent0 - d]
            numeric[idx] = (penalty(*args_p).detach() - penalty(*args_m).detach()) / (2 * eps)
        assert grad.abs().max() > 1e-3
        np.testing.assert_allclose(grad.flatten().numpy(), numeric.numpy(), rtol=1e-5, atol=1e-7)
