"""The channels-last skip image of the tri-plane backbone on the CPU: the NHWC 2x upsample against the
reference upfirdn2d (float64, values, gradients to second order), ToRGB accumulating into an NHWC image
against upstream's definition, and whole networks against the reference (contiguous) layout."""

import pytest
import torch

from torch_utils.ops import upfirdn2d
from torch_utils.ops.upfirdn2d_nhwc import is_nhwc, polyphase_weight, upsample2d_nhwc
from training import networks_stylegan2
from training.networks_stylegan2 import SynthesisNetwork

from test_perf_paths import _reference_torgb, torgb_case  # Upstream's ToRGB definition, float64.

CL = torch.channels_last


@pytest.mark.parametrize('taps', [[1, 3, 3, 1], [1, 5, 5, 1]])  # Bilinear path (t = 1/4) and lerp path (t = 1/6).
@pytest.mark.parametrize('shape', [(2, 5, 1, 1), (2, 3, 1, 4), (3, 7, 5, 6)])
def test_upsample2d_nhwc_matches_reference(taps, shape):
    torch.manual_seed(0)
    f = upfirdn2d.setup_filter(taps)
    t = polyphase_weight(f)
    assert t == pytest.approx(2 * taps[0] / sum(taps))
    x = torch.randn(shape, dtype=torch.float64)
    ref = upfirdn2d.upsample2d(x, f.double(), impl='ref')
    for layout in (CL, torch.contiguous_format):
        y = upsample2d_nhwc(x.contiguous(memory_format=layout), t)
        assert y.is_contiguous(memory_format=CL)
        tol = 1e-13 if taps == [1, 3, 3, 1] else 1e-7                    # 1/12 is rounded in the float32 filter.
        torch.testing.assert_close(y, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize('t', [0.25, 1 / 6])
def test_upsample2d_nhwc_gradients(t):
    torch.manual_seed(1)
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64).to(memory_format=CL).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: upsample2d_nhwc(v, t), (x,))
    assert torch.autograd.gradgradcheck(lambda v: upsample2d_nhwc(v, t), (x,))


def test_polyphase_weight_rejects_other_filters():
    assert polyphase_weight(upfirdn2d.setup_filter([1, 3, 3, 1], separable=True)) == pytest.approx(0.25)
    for f in ([1, 2, 3, 1], [1, 1], [1, 3, 3, 3, 1]):
        assert polyphase_weight(upfirdn2d.setup_filter(f)) is None
    assert polyphase_weight(torch.rand(4, 4) + 0.1) is None                    # Not separable.
    assert polyphase_weight(upfirdn2d.setup_filter([1, 3, 3, 1], gain=2)) is None  # Not normalised.


@pytest.mark.parametrize('clamp', [None, 1e4, 0.5])  # none, provably inactive, active
@pytest.mark.parametrize('cin, cout', [(5, 7), (9, 4)])
def test_torgb_accumulates_into_nhwc_image(clamp, cin, cout):
    layer, x, w, img = torgb_case(cin, cout, clamp, seed=2)
    ref = _reference_torgb(layer, x, w, img)
    if clamp == 0.5:
        assert (ref - img).abs().max().item() == pytest.approx(0.5)            # The clamp acts.
    out = layer(x, w, add_to=img.to(memory_format=CL))
    assert is_nhwc(out)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn(ref.shape, dtype=ref.dtype)
    inputs = [x, w, img, layer.weight, layer.bias]
    for a, b in zip(torch.autograd.grad(out, inputs, g), torch.autograd.grad(ref, inputs, g)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    with torch.no_grad():                                                      # In place, no graph.
        torch.testing.assert_close(layer(x, w, add_to=img.to(memory_format=CL)), ref, rtol=1e-12, atol=1e-12)


def _synthesis(img_channels, conv_clamp):
    torch.manual_seed(3)
    return SynthesisNetwork(w_dim=8, img_resolution=16, img_channels=img_channels, channel_base=128, channel_max=8,
                            num_fp16_res=0, conv_clamp=conv_clamp)


@pytest.mark.parametrize('conv_clamp', [None, 0.3])
def test_synthesis_skip_image_nhwc_matches_reference_layout(monkeypatch, conv_clamp):
    monkeypatch.setenv('EG3D_FUSED_OPS', '1')
    net = _synthesis(24, conv_clamp)
    ws = torch.randn(2, net.num_ws, 8, requires_grad=True)
    g = torch.randn(2, 24, 16, 16)

    def run(nhwc):
        monkeypatch.setattr(networks_stylegan2, 'SKIP_CHANNELS_LAST_MIN', 16 if nhwc else 10 ** 9)
        img = net(ws, noise_mode='const')
        grads = torch.autograd.grad(img, [ws, *net.parameters()], g)
        return img, grads

    ref, ref_grads = run(False)
    img, grads = run(True)
    assert ref.is_contiguous() and is_nhwc(img)
    torch.testing.assert_close(img, ref, rtol=1e-5, atol=1e-5)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item())


def test_synthesis_rgb_image_and_fused_ops_off_stay_contiguous(monkeypatch):
    ws = torch.randn(2, _synthesis(3, None).num_ws, 8)
    with torch.no_grad():
        assert _synthesis(3, None)(ws, noise_mode='const').is_contiguous()      # 3-channel images as before.
        monkeypatch.setenv('EG3D_FUSED_OPS', '0')
        assert _synthesis(24, None)(ws, noise_mode='const').is_contiguous()     # The reference layout.


def test_triplane_planes_reach_the_gather_without_a_copy(monkeypatch):
    monkeypatch.setenv('EG3D_FUSED_OPS', '1')
    from generators import tiny_G
    from training.volumetric_rendering import plane_gather
    G = tiny_G()
    z, c = torch.randn(2, G.z_dim), torch.randn(2, 25)
    with torch.no_grad():
        planes = G.planes(G.mapping(z, c), noise_mode='const')
    assert list(planes.shape) == [2, 3, 8, 16, 16]
    table, _ = plane_gather.feature_table(planes)
    assert table.data_ptr() == planes.data_ptr()                               # Read in place.
