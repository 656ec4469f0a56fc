"""Faster CPU paths of the StyleGAN2 layers against the reference computation, float64, values and gradients."""

import pytest
import torch

from torch_utils.ops import bias_act
from training.networks_stylegan2 import ToRGBLayer, modulated_conv2d


def _reference_torgb(layer: ToRGBLayer, x, w, add_to=None):
    """ToRGB as upstream defines it: modulated 1x1 convolution (no demodulation), bias, clamp, then + image."""
    styles = layer.affine(w) * layer.weight_gain
    y = modulated_conv2d(x=x, weight=layer.weight, styles=styles, demodulate=False, fused_modconv=False)
    y = bias_act.bias_act_ref(y, layer.bias, clamp=layer.conv_clamp)
    return y if add_to is None else add_to + y


def torgb_case(cin: int, cout: int, clamp, seed: int):
    """A float64 ToRGBLayer with a random bias, and random x [3, cin, 4, 6], w [3, 6], image [3, cout, 4, 6]
    (all requiring gradients)."""
    torch.manual_seed(seed)
    layer = ToRGBLayer(cin, cout, w_dim=6, conv_clamp=clamp).double()
    with torch.no_grad():
        layer.bias.copy_(torch.randn(cout))
    x = torch.randn(3, cin, 4, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)
    img = torch.randn(3, cout, 4, 6, dtype=torch.float64, requires_grad=True)
    return layer, x, w, img


@pytest.mark.parametrize('clamp', [None, 1e4, 0.5])  # none, provably inactive, active
@pytest.mark.parametrize('skip', [False, True])
@pytest.mark.parametrize('cin, cout', [(5, 7), (9, 3)])  # Image wider than x (bias column, bound) or not.
def test_torgb_bmm_matches_reference(clamp, skip, cin, cout):
    layer, x, w, img = torgb_case(cin, cout, clamp, seed=1)
    ref = _reference_torgb(layer, x, w, img if skip else None)
    if clamp == 0.5:
        assert (ref if not skip else ref - img).abs().max().item() == pytest.approx(0.5)  # The clamp acts.
    for fused in (True, False):
        out = layer(x, w, fused_modconv=fused, add_to=img.clone() if skip else None)
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g = torch.randn_like(ref)
        inputs = [x, w, img, layer.weight, layer.bias] if skip else [x, w, layer.weight, layer.bias]
        got = torch.autograd.grad(out, inputs, g)
        want = torch.autograd.grad(ref, inputs, g, retain_graph=True)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_torgb_bmm_no_grad_in_place():
    torch.manual_seed(2)
    layer = ToRGBLayer(4, 3, w_dim=5, conv_clamp=0.3)
    x, w, img = torch.randn(2, 4, 8, 8), torch.randn(2, 5), torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = _reference_torgb(layer, x, w, img)
        out = layer(x, w, add_to=img.clone())
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


def test_modulated_conv2d_1x1_bmm_matches_grouped_conv():
    torch.manual_seed(3)
    x = torch.randn(3, 5, 4, 6, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(7, 5, 1, 1, dtype=torch.float64, requires_grad=True)
    styles = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    noise = torch.randn(4, 6, dtype=torch.float64)
    fused = modulated_conv2d(x, weight, styles, noise=noise, fused_modconv=True)
    ref = modulated_conv2d(x, weight, styles, noise=noise, fused_modconv=False)
    torch.testing.assert_close(fused, ref, rtol=1e-12, atol=1e-12)
    torch.autograd.gradcheck(lambda a, b, c: modulated_conv2d(a, b, c, fused_modconv=True), (x, weight, styles))


def test_upfirdn2d_auto_takes_reference_for_1d_filters_on_the_host():
    from torch_utils.ops import upfirdn2d
    torch.manual_seed(4)
    x, f = torch.randn(2, 3, 20, 21), torch.rand(9) + 0.1
    y = upfirdn2d.filter2d(x, f)
    assert upfirdn2d.last_impl == 'ref'
    # Independent check: the separable filter is the 2-D outer-product filter.
    torch.testing.assert_close(y, upfirdn2d.filter2d(x, torch.outer(f, f), impl='ref'), rtol=1e-5, atol=1e-6)
