"""The channels-last 4-tap FIR (torch_utils/ops/fir_kernels.cu, render_ops.fir4_nhwc) against upfirdn2d's
reference path in float64, and conv2d_resample's upsampling path that uses it (a transposed convolution
with a channels-last weight, no gradients) against the definition: zero-insert and filter, then conv2d."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import conv2d_resample, upfirdn2d


@pytest.mark.parametrize('taps,flip', [([1, 3, 3, 1], False), ([1, 2, 3, 4], False), ([1, 2, 3, 4], True)])
@pytest.mark.parametrize('shape,padding', [((2, 5, 9, 11), (1, 2, 1, 0)), ((1, 70, 8, 7), (3, -2, 0, 3)),
                                           ((3, 64, 6, 5), (0, 0, 2, -1)), ((1, 1, 4, 4), (2, 2, 2, 2))])
def test_fir4_matches_upfirdn2d_ref(render_ops_host, shape, padding, taps, flip):
    gen = torch.Generator().manual_seed(sum(shape) + sum(padding) + sum(taps))
    x = torch.randn(shape, generator=gen, dtype=torch.float64).contiguous(memory_format=torch.channels_last)
    a = torch.tensor(taps, dtype=torch.float64)
    f = torch.outer(a, a) / a.sum() ** 2  # Rank one in float64 (setup_filter's float32 taps are so only to 1e-8).
    fx, fy = conv2d_resample._fir4_taps(f, flip, 4.0)
    y = render_ops_host.fir4_nhwc(x, fx, fy, padding)
    ref = upfirdn2d.upfirdn2d_ref(x, f, padding=list(padding), flip_filter=flip, gain=4)
    assert y.is_contiguous() and y.shape == ref.shape
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)


def test_fir4_reads_any_pixel_strides(render_ops_host):
    """A grouped transposed convolution's channels-last output is [1, G * C, H, W] with G * C channels per
    pixel; a view of every other column has a doubled pixel stride."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 12, 10, 20, generator=gen).contiguous(memory_format=torch.channels_last)[:, :, :, ::2]
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    fx, fy = conv2d_resample._fir4_taps(f, False, 1.0)
    ref = upfirdn2d.upfirdn2d_ref(x.double(), f.double(), padding=[1, 1, 1, 1]).float()
    torch.testing.assert_close(render_ops_host.fir4_nhwc(x, fx, fy, (1, 1, 1, 1)), ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match='padding'):
        render_ops_host.fir4_nhwc(x, fx, fy, (4, 0, 0, 0))
    with pytest.raises(ValueError, match='unit channel stride'):
        render_ops_host.fir4_nhwc(x.contiguous(), fx, fy, (1, 1, 1, 1))
    assert conv2d_resample._fir4_taps(torch.rand(4, 4, dtype=torch.float64) + 0.1, False, 1.0) is None  # Rank > 1.
    assert conv2d_resample._fir4_taps(upfirdn2d.setup_filter([1, 2, 1]), False, 1.0) is None  # 3 taps.


@pytest.mark.parametrize('groups', [1, 2])
def test_conv2d_resample_upsampling_channels_last(render_ops_host, monkeypatch, groups):
    """up=2 without gradients, where the transposed convolution returns channels-last and the FIR takes
    fir4_nhwc: against upsampling by the definition (zero insertion, filter, gain 4), then conv2d, float64."""
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_GROUPED', True)
    monkeypatch.setattr(conv2d_resample, 'CHANNELS_LAST_TRANSPOSE_MIN_WIDENING', 1)  # Every layer.
    gen = torch.Generator().manual_seed(4 + groups)
    x = torch.randn(2, 4 * groups, 9, 7, generator=gen, dtype=torch.float64)
    w = torch.randn(6 * groups, 4, 3, 3, generator=gen, dtype=torch.float64)
    f = upfirdn2d.setup_filter([1, 3, 3, 1]).double()
    calls = []
    real = render_ops_host.fir4_nhwc
    monkeypatch.setattr(type(render_ops_host), 'fir4_nhwc', lambda self, *a: calls.append(1) or real(*a))
    with torch.no_grad():
        y = conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, groups=groups, flip_weight=False)
    assert calls, 'the channels-last FIR did not serve'
    calls.clear()  # With gradients enabled (even with nothing requiring them): upfirdn2d, whatever is frozen.
    torch.testing.assert_close(conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1, groups=groups,
                                                               flip_weight=False), y, rtol=1e-10, atol=1e-10)
    assert not calls
    # The definition: upfirdn2d with the widened padding (conv2d_resample's for up 2, 4 taps, padding 1).
    up = upfirdn2d.upfirdn2d_ref(x, f, up=2, padding=[3, 2, 3, 2], gain=4)
    ref = F.conv2d(up, w.flip([2, 3]), groups=groups)
    torch.testing.assert_close(y, ref, rtol=1e-10, atol=1e-10)


def test_fir4_taps_follow_the_filter():
    """The taps are remembered per filter tensor, and recomputed after an in-place change or for a new one."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    def outer(taps):
        fx, fy = taps
        return torch.outer(torch.tensor(fy, dtype=torch.float64), torch.tensor(fx, dtype=torch.float64))

    torch.testing.assert_close(outer(conv2d_resample._fir4_taps(f, False, 4.0)), f.double() * 4, rtol=1e-12, atol=0)
    with torch.no_grad():
        f.copy_(upfirdn2d.setup_filter([1, 2, 3, 4]))
    torch.testing.assert_close(outer(conv2d_resample._fir4_taps(f, False, 1.0)), f.double().flip([0, 1]),
                               rtol=1e-6, atol=1e-9)                     # Convolution: flipped taps.
    assert conv2d_resample._fir4_taps(upfirdn2d.setup_filter([1, 3, 3, 1]), True, 2.0)[1] == [0.25, 0.75, 0.75, 0.25]
