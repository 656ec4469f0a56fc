"""The fused bias_act and upfirdn2d (the host build of their kernels) against the reference path.

Forward values and derivatives to second order, on random inputs of odd sizes: float32 within
1e-5 * max|ref| + 1e-6, float16 inputs against the float32 reference within 2e-3 * max|ref|. Float64
gradcheck/gradgradcheck give an independent check. Each comparison asserts that the fused path ran.
The CUDA-shaped runs execute the kernels with the GPU's tiling, block shape and barriers (threads
looped on the host), which checks the device algorithm without a GPU.
"""

import math

import pytest
import torch

from torch_utils.ops import _impl, bias_act, conv2d_resample, upfirdn2d


@pytest.fixture(autouse=True)
def fused_enabled(fused_ops, monkeypatch):
    monkeypatch.setenv(_impl.ENV, '1')
    _impl.reset()
    yield
    _impl.reset()


def assert_close(fused, ref, rel=1e-5, abs_=1e-6, what=''):
    fused, ref = fused.double(), ref.double()
    assert fused.shape == ref.shape, f'{what}: shape {list(fused.shape)} != {list(ref.shape)}'
    err, tol = (fused - ref).abs().max().item(), rel * ref.abs().max().item() + abs_
    assert err <= tol, f'{what}: max|fused - ref| = {err:.3g} > {tol:.3g}'


def derivatives(fn, inputs, gen, values_dtype):
    """fn(*inputs), its first derivatives for a random output gradient g, and the second derivatives
    of <first derivatives, u> with respect to the inputs and g (zeros where they do not depend).
    The random g and u take values representable in `values_dtype`."""
    def rand(like):
        return torch.randn(like.shape, generator=gen).to(values_dtype).to(like.dtype)
    inputs = [t.detach().requires_grad_() for t in inputs]
    y = fn(*inputs)
    g = rand(y).requires_grad_()
    firsts = torch.autograd.grad(y, inputs, g, create_graph=True)
    us = [rand(d) for d in firsts]
    s = sum((d * u).sum() for d, u in zip(firsts, us))
    seconds = torch.autograd.grad(s, inputs + [g], allow_unused=True) if s.requires_grad else [None] * (len(inputs) + 1)
    seconds = [torch.zeros_like(t) if d is None else d for d, t in zip(seconds, inputs + [g])]
    return [y, *firsts, *seconds]


def compare(fn_fused, fn_ref, inputs, module, rel=1e-5, abs_=1e-6, seed=0):
    """Runs both through derivatives() with the same random gradients and compares every tensor."""
    dtype = inputs[0].dtype
    fused = derivatives(fn_fused, inputs, torch.Generator().manual_seed(seed), dtype)
    assert module.last_impl == 'fused'
    half = dtype in (torch.float16, torch.bfloat16)
    ref = derivatives(fn_ref, [t.float() if half else t for t in inputs], torch.Generator().manual_seed(seed), dtype)
    assert module.last_impl == 'ref'
    names = ['y'] + [f'd/d{i}' for i in range(len(inputs))] + [f'd2/d{i}' for i in range(len(inputs) + 1)]
    for f, r, name in zip(fused, ref, names):
        assert_close(f, r, rel, abs_, name)

# ----------------------------------------------------------------------------------------------------
# bias_act


@pytest.mark.parametrize('clamp', [None, 0.7])
@pytest.mark.parametrize('act', list(bias_act.activation_funcs))
def test_bias_act_matches_reference(act, clamp):
    gen = torch.Generator().manual_seed(1)
    x, b = torch.randn(3, 5, 7, 9, generator=gen), torch.randn(5, generator=gen)
    kw = dict(act=act, clamp=clamp, alpha=0.3 if act == 'lrelu' else None)
    compare(lambda x, b: bias_act.bias_act(x, b, impl='auto', **kw),
            lambda x, b: bias_act.bias_act(x, b, impl='ref', **kw), [x, b], bias_act)


@pytest.mark.parametrize('shape, dim', [([6, 11], 1), ([4, 3, 5], 0), ([2, 3, 5, 4], 2), ([3, 7, 4, 4], 1),
                                        ([2, 5, 3, 9], 3), ([1, 4, 130, 129], 1)])
@pytest.mark.parametrize('act', ['lrelu', 'swish'])
def test_bias_act_shapes_and_dims(shape, dim, act):
    # Rows of one element (fully connected), short rows, long rows split between blocks, last dim.
    gen = torch.Generator().manual_seed(2)
    x, b = torch.randn(shape, generator=gen), torch.randn(shape[dim], generator=gen)
    compare(lambda x, b: bias_act.bias_act(x, b, dim=dim, act=act, clamp=1.5, gain=0.9),
            lambda x, b: bias_act.bias_act(x, b, dim=dim, act=act, clamp=1.5, gain=0.9, impl='ref'), [x, b], bias_act)


def test_bias_act_without_bias_and_channels_last():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 5, 7, generator=gen)
    compare(lambda x: bias_act.bias_act(x, act='tanh', gain=2.0),
            lambda x: bias_act.bias_act(x, act='tanh', gain=2.0, impl='ref'), [x], bias_act)
    xl, b = x.to(memory_format=torch.channels_last), torch.randn(6, generator=gen)
    y = bias_act.bias_act(xl, b, act='lrelu', clamp=0.5)
    assert bias_act.last_impl == 'fused' and y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, bias_act.bias_act(x, b, act='lrelu', clamp=0.5, impl='ref'))


@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'swish'])
def test_bias_act_cuda_block_shape(act):
    # Short rows take the per-element schedule on CUDA; long rows the row walk.
    gen = torch.Generator().manual_seed(4)
    for shape in ([3, 5, 4, 3], [2, 3, 40, 33], [9, 300]):
        x, b = torch.randn(shape, generator=gen), torch.randn(shape[1], generator=gen)
        with _impl.emulating_cuda_blocks():
            compare(lambda x, b: bias_act.bias_act(x, b, act=act, clamp=0.8),
                    lambda x, b: bias_act.bias_act(x, b, act=act, clamp=0.8, impl='ref'), [x, b], bias_act)


@pytest.mark.parametrize('clamp', [None, 0.75])
@pytest.mark.parametrize('act', list(bias_act.activation_funcs))
def test_bias_act_float16(act, clamp):
    gen = torch.Generator().manual_seed(5)
    x, b = torch.randn(2, 6, 5, 7, generator=gen), torch.randn(6, generator=gen)
    if clamp is not None:  # Keep pre-clamp values off the clamp by more than float16 rounding.
        spec, alpha, gain, _ = bias_act.resolve_args(act, None, None, None)
        v = spec.func(x.double() + b.double()[:, None, None], alpha).abs() * gain
        x = torch.where((v - clamp).abs() < 5e-3, x + 0.05, x)
    x16, b16 = x.half(), b.half()
    compare(lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp),
            lambda x, b: bias_act.bias_act(x, b, act=act, clamp=clamp, impl='ref'), [x16, b16], bias_act,
            rel=2e-3, abs_=0)


@pytest.mark.parametrize('act', ['lrelu', 'tanh', 'swish'])
def test_bias_act_bfloat16(act):
    gen = torch.Generator().manual_seed(12)
    x, b = torch.randn(2, 6, 5, 7, generator=gen).bfloat16(), torch.randn(6, generator=gen).bfloat16()
    compare(lambda x, b: bias_act.bias_act(x, b, act=act), lambda x, b: bias_act.bias_act(x, b, act=act, impl='ref'),
            [x, b], bias_act, rel=1e-2, abs_=0)


@pytest.mark.parametrize('act, clamp', [('lrelu', 1.0), ('tanh', None), ('swish', 0.6), ('softplus', None)])
def test_bias_act_float64_gradcheck(act, clamp):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    x = x + 0.1 * x.sign()  # Away from the kinks at 0 ...
    if clamp is not None:   # ... and from the clamp.
        x = torch.where(((x.abs() * math.sqrt(2)) - clamp).abs() < 0.1, x * 0.5, x)
    x.requires_grad_()
    fn = lambda x: bias_act.bias_act(x, None, act=act, clamp=clamp, impl='fused')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))
    b = torch.randn(3, generator=gen, dtype=torch.float64, requires_grad=True)
    fn_b = lambda b: bias_act.bias_act(x.detach(), b, act=act, impl='fused')  # noqa: E731
    assert torch.autograd.gradcheck(fn_b, (b,)) and torch.autograd.gradgradcheck(fn_b, (b,))


def test_bias_act_third_order_raises():
    x = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    y = bias_act.bias_act(x, act='tanh', impl='fused')
    (dx,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (ddx,) = torch.autograd.grad(dx.sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match='second order'):
        torch.autograd.grad(ddx.sum(), x)

# ----------------------------------------------------------------------------------------------------
# upfirdn2d


def make_filter(kind: str, gen) -> torch.Tensor:
    if kind == '4tap':  # StyleGAN2's, 2-D.
        return upfirdn2d.setup_filter([1, 3, 3, 1])
    if kind == '4tap-sep':
        return upfirdn2d.setup_filter([1, 3, 3, 1], separable=True)
    taps, dims = int(kind.split('-')[0][:-3]), kind.split('-')[1]
    if dims == '2d':
        return upfirdn2d.setup_filter(torch.rand(taps, generator=gen) + 0.1, separable=False)
    if dims == 'rect':  # A non-square 2-D filter.
        return torch.rand(taps - 2, taps, generator=gen) / taps
    return upfirdn2d.setup_filter(torch.rand(taps, generator=gen) + 0.1, separable=True)


UPFIRDN_CASES = [  # up, down, filter, padding, flip, gain
    (1, 1, '4tap', [1, 2, 2, 1], False, 1.0),
    (2, 1, '4tap', [2, 1, 2, 1], False, 4.0),
    (1, 2, '4tap', [1, 1, 1, 1], True, 1.0),
    (4, 1, '4tap', [3, 2, 1, 3], False, 16.0),
    (1, 4, '4tap', [0, 3, 2, 1], False, 1.0),
    (2, 2, '4tap', [1, 2, 2, 1], True, 2.0),
    (4, 2, '4tap', [2, 3, 3, 2], False, 1.0),
    (2, 1, '4tap-sep', [2, 1, -1, 2], False, 4.0),
    (1, 2, '4tap-sep', [1, -2, 1, 1], True, 1.0),
    (1, 1, '6tap-2d', [2, 3, 3, 2], False, 1.5),
    (2, 1, '6tap-2d', [3, 2, 2, 3], True, 1.0),
    (1, 2, '7tap-2d', [3, 3, -1, 3], False, 1.0),
    (4, 4, '6tap-2d', [1, 2, 3, 4], False, 1.0),
    (2, 4, '9tap-rect', [2, 3, 4, 1], True, 1.0),
    (1, 1, '8tap-sep', [4, 3, 3, 4], False, 1.0),
    (2, 1, '10tap-sep', [5, 4, 5, 4], True, 4.0),
    (1, 2, '12tap-sep', [5, 5, 6, 4], False, 1.0),
    (4, 1, '12tap-sep', [6, 5, 5, 6], False, 1.0),
    (1, 4, '12tap-sep', [6, 6, 5, 5], True, 1.0),
    (1, 1, '61tap-sep', [30, 30, 30, 30], False, 1.0),  # The loss's blur at sigma 10.
    (2, 2, '40tap-2d', [20, 19, 20, 19], False, 1.0),
    ([2, 1], [1, 2], '6tap-2d', [2, 3, 1, 2], False, 1.0),
    ([1, 4], [2, 1], '8tap-sep', [3, 4, 4, 3], False, 1.0),
]


@pytest.mark.parametrize('up, down, kind, padding, flip, gain', UPFIRDN_CASES)
def test_upfirdn2d_matches_reference(up, down, kind, padding, flip, gain):
    gen = torch.Generator().manual_seed(7)
    f = make_filter(kind, gen)
    x = torch.randn(2, 3, 11, 13, generator=gen)
    kw = dict(up=up, down=down, padding=padding, flip_filter=flip, gain=gain)
    compare(lambda x: upfirdn2d.upfirdn2d(x, f, impl='fused', **kw),  # 'auto' takes ref for 1-D filters on the host.
            lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kw),
            [x], upfirdn2d)


@pytest.mark.parametrize('up, down, kind, padding', [
    (2, 1, '4tap', [2, 1, 2, 1]), (1, 2, '4tap', [1, 1, 1, 1]), (1, 1, '4tap', [2, 1, 2, 1]),
    (4, 2, '7tap-2d', [3, 3, 2, 4]), (2, 1, '12tap-sep', [6, 5, 6, 5]), (1, 1, None, [1, -2, 0, 3]),
    (1, 1, '61tap-sep', [30, 30, 30, 30]), (1, 2, '40tap-2d', [20, 20, 19, 19])])
def test_upfirdn2d_cuda_block_shape(up, down, kind, padding):
    # Outputs larger than a CUDA tile (64 x 32) in both directions, with partial tiles at the edges.
    gen = torch.Generator().manual_seed(8)
    f = make_filter(kind, gen) if kind else None
    x = torch.randn(1, 2, 37, 45, generator=gen)
    kw = dict(up=up, down=down, padding=padding)
    with _impl.emulating_cuda_blocks():
        compare(lambda x: upfirdn2d.upfirdn2d(x, f, impl='fused', **kw),  # 'auto' takes ref for 1-D filters on the host.
                lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kw),
                [x], upfirdn2d)


@pytest.mark.parametrize('up, down, kind', [(2, 1, '4tap'), (1, 2, '4tap'), (1, 1, '4tap'), (2, 2, '8tap-sep'),
                                            (1, 4, '6tap-2d')])
def test_upfirdn2d_float16(up, down, kind):
    gen = torch.Generator().manual_seed(9)
    f = make_filter(kind, gen)
    x = torch.randn(2, 3, 9, 10, generator=gen).half()
    kw = dict(up=up, down=down, padding=[2, 1, 1, 2], gain=up * up)
    compare(lambda x: upfirdn2d.upfirdn2d(x, f, impl='fused', **kw),  # 'auto' takes ref for 1-D filters on the host.
            lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kw),
            [x], upfirdn2d, rel=2e-3, abs_=0)


@pytest.mark.parametrize('up, down, kind', [(2, 1, '4tap'), (1, 2, '4tap'), (2, 1, '8tap-sep')])
def test_upfirdn2d_bfloat16(up, down, kind):
    gen = torch.Generator().manual_seed(13)
    f = make_filter(kind, gen)
    x = torch.randn(2, 3, 9, 10, generator=gen).bfloat16()
    kw = dict(up=up, down=down, padding=[2, 1, 1, 2], gain=up * up)
    compare(lambda x: upfirdn2d.upfirdn2d(x, f, impl='fused', **kw),  # 'auto' takes ref for 1-D filters on the host.
            lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kw),
            [x], upfirdn2d, rel=1e-2, abs_=0)


@pytest.mark.parametrize('up, down, kind', [(2, 1, '4tap'), (1, 2, '4tap-sep'), (3, 2, '6tap-2d')])
def test_upfirdn2d_float64_gradcheck_any_order(up, down, kind):
    f = make_filter(kind, torch.Generator().manual_seed(10)).double()
    x = torch.randn(1, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    fn = lambda x: upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=[2, 1, 0, 3], impl='fused')  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,)) and torch.autograd.gradgradcheck(fn, (x,))
    # Third order: the backward of the backward's backward is again the op (here: its adjoint).
    y = fn(x)
    g = torch.randn_like(y, requires_grad=True)
    (dx,) = torch.autograd.grad(y, x, g, create_graph=True)
    u = torch.randn_like(dx, requires_grad=True)
    (dg,) = torch.autograd.grad(dx, g, u, create_graph=True)
    (du,) = torch.autograd.grad(dg, u, torch.ones_like(dg))
    ref = torch.autograd.grad(upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=[2, 1, 0, 3], impl='ref'), x,
                              torch.ones_like(y))[0]
    assert_close(du, ref, what='third order')


@pytest.mark.parametrize('layout', ['channels_last', 'transposed', 'cropped'])
@pytest.mark.parametrize('up, down, kind', [(1, 1, '4tap'), (2, 1, '4tap'), (1, 2, '8tap-sep'), (2, 4, '6tap-2d')])
def test_upfirdn2d_reads_strided_input_in_place(layout, up, down, kind):
    # The kernel reads any strides (a transposed convolution's channels-last output without a copy),
    # on both the host's tiles and the emulated CUDA blocks; the values are the reference's.
    gen = torch.Generator().manual_seed(14)
    f = make_filter(kind, gen)
    base = torch.randn(2, 5, 41, 39, generator=gen)
    x = {'channels_last': base.contiguous(memory_format=torch.channels_last),
         'transposed': base.transpose(2, 3),
         'cropped': base[:, 1:4, 2:37, 3:]}[layout]
    assert not x.is_contiguous()
    kw = dict(up=up, down=down, padding=[2, 1, 1, 2], gain=up * up)
    for emulate in (False, True):
        with _impl.emulating_cuda_blocks(emulate):
            compare(lambda x: upfirdn2d.upfirdn2d(x, f, impl='fused', **kw),
                    lambda x: upfirdn2d.upfirdn2d(x, f, impl='ref', **kw),
                    [x], upfirdn2d)


def test_conv2d_resample_channels_last_transpose_matches_float64(monkeypatch):
    # The channels-last transposed convolution (forced on at any size; taken without gradients only)
    # against the contiguous one in float64 through the reference op path.
    gen = torch.Generator().manual_seed(15)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x, w = torch.randn(2, 4, 10, 9, generator=gen), torch.randn(6, 4, 3, 3, generator=gen)
    # Default thresholds: a small image takes it only when the layer widens the channels 4x or more.
    with torch.no_grad():
        assert conv2d_resample._channels_last_transpose(x, torch.randn(4, 16, 3, 3), 1)
        assert not conv2d_resample._channels_last_transpose(x, torch.randn(4, 15, 3, 3), 1)
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_MIN_PIXELS', 1)
    assert not conv2d_resample._channels_last_transpose(x, w.requires_grad_(), 1)
    w = w.detach()
    assert conv2d_resample._channels_last_transpose(x, w, 1) and conv2d_resample._channels_last_transpose(x, w, 2)
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_GROUPED', False)
    assert not conv2d_resample._channels_last_transpose(x, w, 2)
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_GROUPED', True)
    # The channels-last output is filtered by render_ops.fir4_nhwc (its own tests: test_fir_nhwc.py).
    plugin = _impl.fused_plugin('render_ops', 'cpu')
    calls = []
    real = plugin.fir4_nhwc
    monkeypatch.setattr(type(plugin), 'fir4_nhwc', lambda self, *a: calls.append(1) or real(*a))
    with torch.no_grad():
        fast = conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False)
        # Grouped (the fused modulated convolution of a batch): 2 groups of 2 -> 3 channels.
        fast_grouped = conv2d_resample.conv2d_resample(x, w[:, :2], f, up=2, padding=1, groups=2, flip_weight=False)
    assert len(calls) == 2 and fast.is_contiguous() and fast_grouped.is_contiguous()
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_MIN_PIXELS', 0)
    monkeypatch.setenv(_impl.ENV, '0')
    ref = conv2d_resample.conv2d_resample(x.double(), w.double(), f.double(), up=2, padding=1, flip_weight=False)
    assert upfirdn2d.last_impl == 'ref'
    assert_close(fast, ref)
    ref_grouped = torch.cat([conv2d_resample.conv2d_resample(x[:, 2 * g:2 * g + 2].double(), w[3 * g:3 * g + 3, :2].double(),
                                                             f.double(), up=2, padding=1, flip_weight=False)
                             for g in range(2)], dim=1)
    assert_close(fast_grouped, ref_grouped)


def test_resampling_helpers_and_conv2d_resample_take_the_fused_path(monkeypatch):
    gen = torch.Generator().manual_seed(11)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    x, w = torch.randn(2, 4, 9, 9, generator=gen), torch.randn(5, 4, 3, 3, generator=gen)
    runs = [lambda: upfirdn2d.upsample2d(x, f), lambda: upfirdn2d.downsample2d(x, f),
            lambda: upfirdn2d.filter2d(x, f, padding=1),
            lambda: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, flip_weight=False),
            lambda: conv2d_resample.conv2d_resample(x, w, f, down=2, padding=1)]
    fused = []
    for run in runs:
        fused.append(run())
        assert upfirdn2d.last_impl == 'fused'
    monkeypatch.setenv(_impl.ENV, '0')
    for run, y in zip(runs, fused):
        assert_close(y, run())
        assert upfirdn2d.last_impl == 'ref'


def test_upfirdn2d_input_smaller_than_filter_is_an_error():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    for impl in ('fused', 'ref'):
        with pytest.raises(ValueError, match=r'padded input \(3x5\) is smaller than the filter \(4x4\)'):
            upfirdn2d.upfirdn2d(torch.randn(1, 2, 3, 4), f, padding=[1, 0, -1, 1], impl=impl)


def test_unsupported_call_warns_once_and_uses_reference():
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).requires_grad_()
    x = torch.randn(1, 2, 5, 5)
    with pytest.warns(_impl.FusedOpsWarning, match='upfirdn2d: .*filter.*reference path') as record:
        y1 = upfirdn2d.upfirdn2d(x, f, up=2, padding=2)
        y2 = upfirdn2d.upfirdn2d(x, f, up=2, padding=2)
    assert len(record) == 1 and upfirdn2d.last_impl == 'ref'
    assert torch.equal(y1, y2) and y1.requires_grad
    with pytest.raises(ValueError, match="impl='fused'"):
        upfirdn2d.upfirdn2d(x, f, up=2, impl='fused')


def test_disabled_by_environment(monkeypatch, recwarn):
    monkeypatch.setenv(_impl.ENV, '0')
    x = torch.randn(2, 3, 4, 4)
    bias_act.bias_act(x, act='lrelu')
    upfirdn2d.upfirdn2d(x, None)
    assert bias_act.last_impl == 'ref' and upfirdn2d.last_impl == 'ref'
    assert not [w for w in recwarn if issubclass(w.category, _impl.FusedOpsWarning)]
    with pytest.raises(RuntimeError, match='EG3D_FUSED_OPS'):
        bias_act.bias_act(x, impl='fused')


@pytest.mark.parametrize('act', ['relu', 'lrelu'])
@pytest.mark.parametrize('gain', [1.7, -0.6])
def test_bias_act_relu_lrelu_special_values_and_negative_gain(act, gain):
    # The host kernels compute these without branches (lrelu as max + alpha min, the gradient as a
    # vectorised select): NaN stays NaN, -0 and infinities as torch, a negative gain flips the select.
    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 40, 41, generator=gen)
    x[0, 0, 0, :6] = torch.tensor([float('nan'), -0.0, 0.0, float('inf'), -float('inf'), 1e-30])
    b = torch.randn(3, generator=gen)
    b[0] = 0
    kw = dict(act=act, gain=gain, clamp=2.5, alpha=0.3 if act == 'lrelu' else None)
    y = bias_act.bias_act(x, b, impl='auto', **kw)
    assert bias_act.last_impl == 'fused'
    ref = bias_act.bias_act(x, b, impl='ref', **kw)
    torch.testing.assert_close(y, ref, equal_nan=True, rtol=1e-6, atol=1e-7)
    assert torch.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 3].abs() == 2.5
    xr = x[:, :, 1:].clone().requires_grad_(True)  # Finite inputs for the gradient.
    dy = torch.randn(xr.shape, generator=gen)
    got, = torch.autograd.grad(bias_act.bias_act(xr, b, impl='auto', **kw), xr, dy)
    want, = torch.autograd.grad(bias_act.bias_act(xr, b, impl='ref', **kw), xr, dy)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert (got != 0).float().mean() > 0.3  # Not trivially zero: most samples below the clamp.
