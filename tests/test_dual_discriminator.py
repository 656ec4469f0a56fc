"""Dual and single discriminators, and filtered_resizing, against independent compositions."""

import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from torch_utils.ops import upfirdn2d
from training.dual_discriminator import DualDiscriminator, SingleDiscriminator, filtered_resizing
from training.networks_stylegan2 import Discriminator

KW = dict(c_dim=25, img_resolution=16, channel_base=128, channel_max=16, num_fp16_res=2, conv_clamp=256,
          block_kwargs=dict(freeze_layers=0), mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=2))


def _images(n=4, res=16, raw=8):
    return {'image': torch.randn(n, 3, res, res), 'image_raw': torch.randn(n, 3, raw, raw)}


def _plain_twin(D, img_channels):
    """A StyleGAN2 Discriminator with D's weights, for the reference composition."""
    kwargs = {k: v for k, v in KW.items()}
    ref = Discriminator(img_channels=img_channels, **kwargs)
    misc.copy_params_and_buffers(D, ref, require_all=True)
    return ref


def test_dual_is_discriminator_on_image_and_upsampled_raw():
    torch.manual_seed(0)
    D = DualDiscriminator(img_channels=3, **KW)
    assert D.img_channels == 6 and list(D.b16.fromrgb.weight.shape) == [8, 6, 1, 1]
    assert list(D.resample_filter.shape) == [4, 4]
    ref = _plain_twin(D, 6)
    img, c = _images(), torch.randn(4, 25)
    # Channels 0-2: the image; 3-5: image_raw, bilinearly upsampled with antialiasing (align_corners False).
    raw_up = F.interpolate(img['image_raw'], size=(16, 16), mode='bilinear', align_corners=False, antialias=True)
    expected = ref(torch.cat([img['image'], raw_up], dim=1), c)
    logits = D(img, c)
    assert logits.shape == (4, 1)
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-6)
    # Swapping the two halves changes the result: the channel order matters.
    assert (ref(torch.cat([raw_up, img['image']], dim=1), c) - expected).abs().max() > 1e-4
    # A raw image already at full size passes unchanged.
    same = {'image': img['image'], 'image_raw': raw_up}
    torch.testing.assert_close(D(same, c), expected, rtol=0, atol=1e-5)


def test_disc_c_noise_formula_and_caller_label_untouched():
    torch.manual_seed(1)
    k = 0.5
    D = DualDiscriminator(img_channels=3, disc_c_noise=k, **KW)
    D0 = DualDiscriminator(img_channels=3, disc_c_noise=0, **KW)
    misc.copy_params_and_buffers(D, D0, require_all=True)
    img, c = _images(), torch.randn(4, 25) * torch.linspace(0.1, 2, 25)
    c_before = c.clone()

    torch.manual_seed(123)
    logits = D(img, c)
    torch.testing.assert_close(c, c_before, rtol=0, atol=0)  # Upstream modified the caller's c in place.
    torch.manual_seed(123)
    noisy = c + torch.randn(4, 25) * c.std(dim=0) * k     # The same draw: N(0, 1) per entry, times the batch std.
    torch.testing.assert_close(logits, D0(img, noisy), rtol=0, atol=1e-6)
    assert (logits - D0(img, c)).abs().max() > 1e-5
    # Without noise nothing is drawn from the global generator.
    state = torch.get_rng_state()
    D0(img, c)
    assert torch.equal(state, torch.get_rng_state())


def test_forward_backward_and_r1_inputs():
    torch.manual_seed(2)
    D = DualDiscriminator(img_channels=3, **KW).train().requires_grad_(True)
    img = {k: v.requires_grad_(True) for k, v in _images().items()}
    logits = D(img, torch.randn(4, 25))
    grads = torch.autograd.grad(logits.sum(), [img['image'], img['image_raw']], create_graph=True)
    assert all(torch.isfinite(g).all() and g.abs().max() > 0 for g in grads)
    r1 = sum(g.square().sum() for g in grads)
    (logits.mean() + r1).backward()
    for name, p in D.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().max() > 0, name


def test_single_discriminator_sees_the_image_only():
    torch.manual_seed(3)
    D = SingleDiscriminator(img_channels=3, sr_upsample_factor=2, **KW)
    ref = _plain_twin(D, 3)
    img, c = _images(), torch.randn(4, 25)
    expected = ref(img['image'], c)
    torch.testing.assert_close(D(img, c), expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(D({'image': img['image']}, c), expected, rtol=0, atol=1e-6)


def test_bad_input_and_rebuild():
    D = DualDiscriminator(img_channels=3, **KW)
    with pytest.raises(TypeError, match=r"DualDiscriminator: expects a dict with \['image', 'image_raw'\]"):
        D(torch.randn(4, 6, 16, 16), torch.randn(4, 25))
    with pytest.raises(TypeError, match="with \\['image'\\]"):
        D({'image': torch.randn(4, 3, 16, 16)}, torch.randn(4, 25))
    # Persistent: the recorded kwargs rebuild the same structure (plain dicts are enough).
    kwargs = dict(D.init_kwargs)
    assert kwargs['img_channels'] == 3 and 'class_name' not in kwargs
    rebuilt = DualDiscriminator(**{k: dict(v) if isinstance(v, dict) else v for k, v in kwargs.items()})
    assert [(n, t.shape) for n, t in misc.named_params_and_buffers(rebuilt)] == \
        [(n, t.shape) for n, t in misc.named_params_and_buffers(D)]

# ----------------------------------------------------------------------------
# filtered_resizing (shared with the loss).


def test_filtered_resizing_modes():
    torch.manual_seed(4)
    x = torch.randn(2, 3, 12, 12)
    plain = F.interpolate(x, size=(20, 20), mode='bilinear', align_corners=False)
    smooth = F.interpolate(x, size=(20, 20), mode='bilinear', align_corners=False, antialias=True)
    torch.testing.assert_close(filtered_resizing(x, 20), smooth, rtol=0, atol=0)
    torch.testing.assert_close(filtered_resizing(x, 20, filter_mode='none'), plain, rtol=0, atol=0)
    torch.testing.assert_close(filtered_resizing(x, 20, filter_mode=0.25), 0.75 * plain + 0.25 * smooth,
                               rtol=0, atol=1e-6)
    # Downsampling by 3 with antialiasing: a triangle of half-width 3 around input pixel 3i + 1, i.e. the
    # separable taps [1, 2, 3, 2, 1] / 9 at offsets -2..2 (interior outputs, where no tap is cut off).
    down = filtered_resizing(x, 4)
    taps = torch.tensor([1., 2., 3., 2., 1.]) / 9
    ref = F.conv2d(x.reshape(6, 1, 12, 12)[..., 2:11, 2:11], torch.outer(taps, taps)[None, None], stride=3)
    torch.testing.assert_close(down[..., 1:3, 1:3], ref.reshape(2, 3, 2, 2), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match='filter_mode'):
        filtered_resizing(x, 20, filter_mode='bogus')
    with pytest.raises(ValueError, match='needs a resample filter'):
        filtered_resizing(x, 20, filter_mode='classic')


def test_filtered_resizing_classic_keeps_constants():
    # FIR up, bilinear, FIR down: each stage preserves a constant image (unit-DC filters) away from borders.
    x = torch.full((1, 2, 8, 8), 0.7)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    y = filtered_resizing(x, 12, f=f, filter_mode='classic')
    assert y.shape == (1, 2, 12, 12)
    torch.testing.assert_close(y[..., 3:-3, 3:-3], torch.full((1, 2, 6, 6), 0.7), rtol=0, atol=1e-6)
