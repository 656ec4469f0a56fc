"""StyleGAN3's alias-free synthesis network: filter design against scipy, the layers against float64
references, equivariance to translation and mirroring, and the tri-plane generator with a StyleGAN3
backbone training on the CPU."""

import math

import numpy as np
import pytest
import scipy.signal
import scipy.special
import torch

import dnnlib
import legacy
from tests.conftest import FAST_OVERRIDES
from tests.test_triplane import _cameras
from training import options as training_options
from training.dual_discriminator import DualDiscriminator
from training.networks_stylegan3 import (Generator, SynthesisInput, SynthesisLayer, SynthesisNetwork,
                                         kaiser_attenuation, modulated_conv2d)
from training.presets import resolve_preset

# Kaiser's attenuation formula is empirical. Over every filter of networks from 16 to 512 px (12 and 24
# taps) the realised stopband attenuation lands within 3.2 dB of it, once the gain of the normalisation
# to unit DC is counted (it amplifies the stopband of filters whose transition band reaches below 0 Hz).
KAISER_FORMULA_SLACK_DB = 3.5


def _filters(net: SynthesisNetwork):
    """(layer, kind, taps, cutoff, half_width) for every designed filter of a network."""
    for name in net.layer_names:
        layer = getattr(net, name)
        for kind, taps, cutoff, half_width in (('up', layer.up_filter, layer.in_cutoff, layer.in_half_width),
                                               ('down', layer.down_filter, layer.out_cutoff, layer.out_half_width)):
            if taps is not None:
                yield layer, kind, taps.double().numpy(), cutoff, half_width


def _geometry(img_resolution, **kwargs):
    """A synthesis network with 1-4 channels: its filters are those of any width."""
    return SynthesisNetwork(w_dim=4, img_resolution=img_resolution, img_channels=1, channel_base=16,
                            channel_max=4, num_fp16_res=0, **kwargs)


def _psnr(a, b):
    """10 log10(range^2 / MSE), with the range (max - min) of the reference b."""
    return 10 * math.log10((b.max() - b.min()).item() ** 2 / (a - b).square().mean().item())

# ----------------------------------------------------------------------------
# Filters (StyleGAN3 App. F).


@pytest.mark.parametrize('img_resolution,num_layers', [(16, 4), (64, 14), (256, 14)])
def test_separable_filters_frequency_response(img_resolution, num_layers):
    net = _geometry(img_resolution, num_layers=num_layers)
    classes = set()
    for layer, kind, h, fc, hw in _filters(net):
        fs = layer.tmp_sampling_rate
        where = f'{img_resolution}px {layer.extra_repr()} {kind}'
        assert h.ndim == 1, where
        # The design is scipy's Kaiser-window method with the same taps, cutoff and transition width.
        np.testing.assert_allclose(h, scipy.signal.firwin(len(h), fc, width=2 * hw, fs=fs), rtol=0, atol=1e-7)

        # Designed stopband attenuation: Kaiser's formula, relative to the unnormalised design's DC gain.
        dc_gain = scipy.signal.firwin(len(h), fc, width=2 * hw, fs=fs, scale=False).sum()
        spec_db = kaiser_attenuation(len(h), 2 * hw, fs) + 20 * math.log10(dc_gain)
        stopband = np.linspace(fc + hw, fs / 2, 2000)
        _, response = scipy.signal.freqz(h, worN=stopband, fs=fs)
        assert np.abs(response).max() <= 10 ** (-(spec_db - KAISER_FORMULA_SLACK_DB) / 20), where

        _, at_cutoff = scipy.signal.freqz(h, worN=[fc], fs=fs)
        at_cutoff = abs(at_cutoff[0])
        if fc >= hw:
            # A passband exists: -6 dB at the cutoff, to within the design ripple where that exceeds 0.02
            # (the critically sampled layers' filters reach only ~26 dB, a 0.05 ripple, with 12 taps).
            ripple = 10 ** (-kaiser_attenuation(len(h), 2 * hw, fs) / 20)
            assert abs(at_cutoff - 0.5) <= max(0.02, ripple), (where, at_cutoff)
            classes.add('passband' if ripple <= 0.02 else 'low-attenuation')
        else:
            # The transition band reaches below 0 Hz (early layers): no passband, and the nominal
            # cutoff lies inside the transition, above -6 dB.
            assert 0.5 < at_cutoff < 1, (where, at_cutoff)
            classes.add('no-passband')
    expected = {'passband', 'low-attenuation', 'no-passband'} if img_resolution > 16 else {'low-attenuation',
                                                                                          'no-passband'}
    assert classes >= expected


def test_radial_filters():
    net = _geometry(64, num_layers=14, use_radial_filters=True)
    radial = 0
    for layer, kind, h, fc, hw in _filters(net):
        where = f'{layer.extra_repr()} {kind}'
        if kind == 'up' or layer.is_critically_sampled:
            assert h.ndim == 1, where          # Up filters and the critically sampled layers stay separable.
            continue
        radial += 1
        n, fs = h.shape[0], layer.tmp_sampling_rate
        # Taps: the jinc (the disk's impulse response) times a radial Kaiser window, float64 reference.
        t = np.arange(n) - (n - 1) / 2
        r = np.hypot(t[:, None], t[None, :])
        f = fc / fs
        jinc = np.where(r > 0, f * scipy.special.j1(2 * np.pi * f * r) / np.where(r > 0, r, 1), np.pi * f * f)
        beta = scipy.signal.kaiser_beta(kaiser_attenuation(n, 2 * hw, fs))
        window = np.i0(beta * np.sqrt(np.clip(1 - (2 * r / n) ** 2, 0, 1))) / np.i0(beta) * (r <= n / 2)
        reference = jinc * window
        np.testing.assert_allclose(h, reference / reference.sum(), rtol=0, atol=1e-7, err_msg=where)

        # 2-D response on a fine grid over [-fs/2, fs/2)^2.
        grid = 512
        response = np.abs(np.fft.fft2(h, [grid, grid]))
        freqs = np.fft.fftfreq(grid) * fs
        radius = np.hypot(freqs[:, None], freqs[None, :])
        spec_db = kaiser_attenuation(n, 2 * hw, fs) + 20 * math.log10(reference.sum())
        assert response[radius >= fc + hw].max() <= 10 ** (-(spec_db - KAISER_FORMULA_SLACK_DB) / 20), where
        # Isotropic: at the cutoff radius the response is the same in every direction (to 0.02).
        angles = np.linspace(0, np.pi / 2, 13)
        at_cutoff = [abs(np.sum(h * np.exp(-2j * np.pi * f * (np.cos(a) * t[None, :] + np.sin(a) * t[:, None]))))
                     for a in angles]
        assert max(at_cutoff) - min(at_cutoff) < 0.02, (where, at_cutoff)
    assert radial >= 10

# ----------------------------------------------------------------------------
# Layers against float64 references.


def test_modulated_conv2d_reference():
    torch.manual_seed(0)
    x, w, s = torch.randn(3, 5, 7, 6, dtype=torch.float64), torch.randn(4, 5, 3, 3, dtype=torch.float64), \
        torch.randn(3, 5, dtype=torch.float64)
    gain = torch.tensor(0.7, dtype=torch.float64)
    for demodulate in (True, False):
        out = modulated_conv2d(x.float(), w.float(), s.float(), demodulate=demodulate, padding=2, input_gain=gain)
        for i in range(3):
            wi = w * s[i].reshape(1, 5, 1, 1)
            if demodulate:
                wi = wi / wi.square().sum(dim=[1, 2, 3], keepdim=True).sqrt()
            ref = torch.nn.functional.conv2d(x[i:i + 1] * gain, wi, padding=2)
            torch.testing.assert_close(out[i:i + 1].double(), ref, rtol=1e-5, atol=1e-5)


def test_synthesis_input_closed_form():
    torch.manual_seed(1)
    layer = SynthesisInput(w_dim=6, channels=5, size=[9, 7], sampling_rate=8, bandwidth=2)
    assert (layer.freqs.norm(dim=1) <= 2).all()
    with torch.no_grad():
        layer.affine.weight.copy_(torch.randn(4, 6))
        layer.transform.copy_(torch.tensor([[1, 0, 0.3], [0, 1, -0.1], [0, 0, 1]]))
    w = torch.randn(2, 6)
    out = layer(w).double()
    assert out.shape == (2, 5, 7, 9)

    t = layer.affine(w).detach().double()
    f, phi, mix = layer.freqs.double(), layer.phases.double(), layer.weight.double() / math.sqrt(5)
    for n in range(2):
        angle = math.atan2(t[n, 1], t[n, 0])
        for i, j in [(0, 0), (3, 4), (6, 8), (2, 7)]:
            p = torch.tensor([(j + 0.5 - 4.5) / 8, (i + 0.5 - 3.5) / 8], dtype=torch.float64)
            q = p + torch.tensor([0.3, -0.1], dtype=torch.float64) - t[n, 2:]        # User, then learned shift.
            rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]],
                               dtype=torch.float64)
            features = torch.sin(2 * math.pi * (f @ (rot @ q) + phi))
            torch.testing.assert_close(out[n, :, i, j], mix @ features, rtol=0, atol=1e-5)


def test_magnitude_ema_is_the_input_gain():
    torch.manual_seed(2)
    layer = SynthesisLayer(w_dim=4, is_torgb=False, is_critically_sampled=False, use_fp16=False, in_channels=3,
                           out_channels=5, in_size=12, out_size=12, in_sampling_rate=8, out_sampling_rate=8,
                           in_cutoff=2, out_cutoff=2.5, in_half_width=2, out_half_width=1.5, conv_clamp=None,
                           magnitude_ema_beta=0.9)
    x, w = torch.randn(2, 3, 12, 12) * 3, torch.randn(2, 4)
    with torch.no_grad():
        layer.bias.copy_(torch.randn(5))
        y0 = layer(x, w)                                       # EMA 1: no gain.
        y1 = layer(x, w, update_emas=True)
        ema = torch.tensor(1.0).lerp(x.square().mean(), 0.1)  # lerp(mean x^2, ema, beta).
        torch.testing.assert_close(layer.magnitude_ema, ema, rtol=1e-6, atol=0)
        # The EMA only scales the input: layer(x) with EMA e equals layer(x / sqrt(e)) with EMA 1.
        y2 = layer(x, w)
        layer.magnitude_ema.fill_(1)
        torch.testing.assert_close(y2, layer(x / ema.sqrt(), w), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y1, y2, rtol=0, atol=0)    # The updating call already uses the new EMA.
    assert (y2 - y0).abs().max() > 1e-2

# ----------------------------------------------------------------------------
# Equivariance (StyleGAN3 Sec. 3): the output follows transforms of the input Fourier features.


def _network(img_resolution, seed, **kwargs):
    torch.manual_seed(seed)
    G = Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=img_resolution, img_channels=3, channel_base=256,
                  channel_max=16, num_layers=4, num_fp16_res=0, conv_clamp=None, **kwargs).eval()
    with torch.no_grad():  # A random learned rotation and translation per sample.
        G.synthesis.input.affine.weight.copy_(torch.randn_like(G.synthesis.input.affine.weight))
    return G


@pytest.mark.parametrize('img_resolution', [16, 32])
def test_integer_translation_equivariance(img_resolution):
    # Translating the features by (dx, dy) output pixels translates the image. At 16 px every layer
    # samples at 16/unit, so the shift is whole samples everywhere and each op commutes with it exactly:
    # only float32 rounding (~120 dB) and the borders remain, and the 10-sample margins keep the border
    # effects of 4 layers out of the image. At 32 px the input samples at 16/unit, so one output pixel
    # is half an input sample: the first layer's up filter must then interpolate the band-limited
    # features (|f| <= 2/unit) exactly, and their spectral images (14-18/unit) lie deep in its stopband.
    # Measured 90-98 dB (16 px) and 107-115 dB (32 px); bound 80 dB. Unaligned images differ at 20-35 dB.
    G = _network(img_resolution, seed=3)
    assert G.synthesis.sampling_rates.min() == 16
    ws = G.mapping(torch.randn(2, 8), None)
    with torch.no_grad():
        img = G.synthesis(ws)
        n = img_resolution
        for dx, dy in [(1, 0), (0, 1), (3, -2)]:
            G.synthesis.input.transform.copy_(torch.tensor([[1, 0, -dx / n], [0, 1, -dy / n], [0, 0, 1]]))
            moved = G.synthesis(ws)
            a = moved[..., max(dy, 0):n + min(dy, 0), max(dx, 0):n + min(dx, 0)]
            b = img[..., max(-dy, 0):n + min(-dy, 0), max(-dx, 0):n + min(-dx, 0)]
            assert _psnr(a, b) > 80, (dx, dy, _psnr(a, b))
            assert _psnr(moved, img) < 40                     # The images did change.


def test_mirror_equivariance_checks_grid_centring():
    # With mirror-symmetric kernels, mirroring the features mirrors the image exactly, if every layer's
    # padding keeps its sample grid centred on the origin (an off-by-one pad breaks this, not translation).
    G = _network(32, seed=4)
    with torch.no_grad():
        G.synthesis.input.affine.weight.zero_()              # Mirroring does not commute with rotation.
        for name in G.synthesis.layer_names:
            weight = getattr(G.synthesis, name).weight
            weight.copy_((weight + weight.flip(3) + weight.flip(2) + weight.flip(2, 3)) / 4)
        ws = G.mapping(torch.randn(2, 8), None)
        img = G.synthesis(ws)
        for transform, mirror in [([[-1, 0, 0], [0, 1, 0], [0, 0, 1]], lambda x: x.flip(3)),
                                  ([[1, 0, 0], [0, -1, 0], [0, 0, 1]], lambda x: x.flip(2))]:
            G.synthesis.input.transform.copy_(torch.tensor(transform, dtype=torch.float32))
            mirrored = G.synthesis(ws)
            assert _psnr(mirrored, mirror(img)) > 80
            assert _psnr(mirrored, img) < 40

# ----------------------------------------------------------------------------
# The tri-plane generator with a StyleGAN3 backbone.


def _sg3_options(monkeypatch, **overrides):
    """Training options of the tiny-sg3 preset shrunk to 32 px images and 32 px planes."""
    def fake_dataset(data, use_labels, xflip, mirror_labels, seed):
        return dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data, use_labels=True,
                               max_size=4, xflip=False, resolution=32, random_seed=seed), 'fake'
    monkeypatch.setattr(training_options, 'dataset_kwargs', fake_dataset)
    fast = {**FAST_OVERRIDES, 'triplane_channels': 4, 'backbone_kwargs': {'num_layers': 3, 'margin_size': 4},
            'rendering': {'depth_resolution': 6, 'depth_resolution_importance': 6}, **overrides}
    opts = resolve_preset('tiny-sg3', fast)
    return training_options.build_training_options({**opts, 'data': 'fake.zip'})[0]


def test_options_plumbing(monkeypatch):
    opts = _sg3_options(monkeypatch)
    assert opts.G_kwargs.backbone_arch == 'stylegan3' and opts.G_kwargs.num_layers == 3
    assert resolve_preset('tiny-sg3')['backbone_kwargs'] == {'num_layers': 8}
    # The StyleGAN2 presets do not name the option (official configurations stay as upstream's).
    plain = training_options.build_training_options({**resolve_preset('tiny', FAST_OVERRIDES), 'data': 'x'})[0]
    assert 'backbone_arch' not in plain.G_kwargs and 'num_layers' not in plain.G_kwargs
    with pytest.raises(ValueError, match="backbone_arch must be one of stylegan2, stylegan3, got 'stylegan4'"):
        _sg3_options(monkeypatch, backbone_arch='stylegan4')
    with pytest.raises(ValueError, match='backbone_kwargs.channel_base: set by another option'):
        _sg3_options(monkeypatch, backbone_kwargs={'channel_base': 64})
    with pytest.raises(ValueError, match="TriPlaneGenerator: backbone_arch must be one of stylegan2, stylegan3"):
        dnnlib.util.construct_class_by_name(**{**opts.G_kwargs, 'backbone_arch': 'stylegan4'}, c_dim=25,
                                            img_resolution=32, img_channels=3)


def test_tiny_sg3_trains_and_reloads(monkeypatch, tmp_path):
    opts = _sg3_options(monkeypatch)
    common = dict(c_dim=25, img_resolution=32, img_channels=3)
    torch.manual_seed(5)
    G = dnnlib.util.construct_class_by_name(**opts.G_kwargs, **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**opts.D_kwargs, **common).train().requires_grad_(False)
    assert type(G.backbone.synthesis) is SynthesisNetwork and G.num_ws == 5
    loss = dnnlib.util.construct_class_by_name(device=torch.device('cpu'), G=G, D=D, **opts.loss_kwargs)
    G_opt = torch.optim.Adam(G.parameters(), lr=opts.G_opt_kwargs.lr, betas=(0.0, 0.99), eps=1e-8)
    D_opt = torch.optim.Adam(D.parameters(), lr=opts.D_opt_kwargs.lr, betas=(0.0, 0.99), eps=1e-8)
    before = {name: p.detach().clone() for name, p in G.backbone.named_parameters()}

    n = opts.batch_gpu
    c = _cameras(n)
    real = torch.rand(n, 3, 32, 32) * 2 - 1
    for step in range(2):
        for phase, net, opt in [('Gmain', G, G_opt), ('Greg', G, G_opt), ('Dmain', D, D_opt), ('Dreg', D, D_opt)]:
            net.requires_grad_(True)
            opt.zero_grad(set_to_none=True)
            loss.accumulate_gradients(phase, real, c, torch.randn(n, G.z_dim), c, gain=1, cur_nimg=step * n)
            grads = {name: p.grad for name, p in net.named_parameters()}
            assert all(g is None or torch.isfinite(g).all() for g in grads.values()), phase
            if phase == 'Gmain':   # The adversarial loss reaches every backbone parameter.
                for name, g in grads.items():
                    if name.startswith('backbone.'):
                        assert g is not None and g.abs().max() > 0, name
            opt.step()
            net.requires_grad_(False)
    moved = [name for name, p in G.backbone.named_parameters() if not torch.equal(p, before[name])]
    assert len(moved) == len(before)
    emas = [layer.magnitude_ema.item() for layer in G.backbone.synthesis.modules() if isinstance(layer, SynthesisLayer)]
    assert all(e != 1 for e in emas)  # Dmain's generator pass updates the input-gain EMAs.

    # A snapshot rebuilds the same generator (random Fourier frequencies and filters included).
    path = tmp_path / 'network-snapshot.pkl'
    legacy.save_network_pkl(str(path), G=G, D=D, G_ema=G)
    G2 = legacy.load_network_pkl(str(path))['G_ema']
    assert G2.backbone_arch == 'stylegan3'
    z = torch.randn(2, G.z_dim)
    G.eval()
    with torch.no_grad():
        torch.manual_seed(6)
        a = G(z, _cameras(2))
        torch.manual_seed(6)
        b = G2(z, _cameras(2))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
