"""StyleGAN2 layers against closed forms, float64 references and the official EG3D fixtures."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils import misc
from training import networks_stylegan2 as nets


def _seed(s):
    torch.manual_seed(s)
    return torch.Generator().manual_seed(s)


def _lrelu_inv(y, alpha=0.2):
    return torch.where(y >= 0, y, y / alpha)


def _small_options(fixtures_dir):
    return json.loads((fixtures_dir / 'official-small-config.json').read_text())['meta']['training_options']


def _backbone_from_options(opts, **kwargs):
    """The tri-plane backbone as upstream's TriPlaneGenerator builds it (facts 5.1)."""
    g = opts['G_kwargs']
    return nets.Generator(z_dim=g['z_dim'], c_dim=25, w_dim=g['w_dim'], img_resolution=256, img_channels=96,
                          mapping_kwargs=g['mapping_kwargs'], channel_base=g['channel_base'],
                          channel_max=g['channel_max'], num_fp16_res=g['num_fp16_res'], conv_clamp=g['conv_clamp'],
                          fused_modconv_default=g['fused_modconv_default'], **kwargs)


def _discriminator_from_options(opts, img_resolution):
    """The StyleGAN2 pieces of upstream's DualDiscriminator (6 input channels, facts 5.5)."""
    d = opts['D_kwargs']
    return nets.Discriminator(c_dim=25, img_resolution=img_resolution, img_channels=6,
                              channel_base=d['channel_base'], channel_max=d['channel_max'],
                              num_fp16_res=d['num_fp16_res'], conv_clamp=d['conv_clamp'],
                              block_kwargs=d['block_kwargs'], mapping_kwargs=d['mapping_kwargs'],
                              epilogue_kwargs=d['epilogue_kwargs'])


def _shapes(module):
    return {name: list(t.shape) for name, t in misc.named_params_and_buffers(module)}

# ----------------------------------------------------------------------------
# Layers against closed forms (float64).


def test_fully_connected_layer_closed_form():
    _seed(0)
    fc = nets.FullyConnectedLayer(7, 5, activation='lrelu', lr_multiplier=0.1, bias_init=0.3).double()
    with torch.no_grad():
        fc.bias.add_(torch.randn(5, dtype=torch.float64))
    x = torch.randn(6, 7, dtype=torch.float64)
    pre = x @ (fc.weight * 0.1 / math.sqrt(7)).T + fc.bias * 0.1
    torch.testing.assert_close(fc(x), F.leaky_relu(pre, 0.2) * math.sqrt(2), rtol=0, atol=1e-12)

    lin = nets.FullyConnectedLayer(7, 5, lr_multiplier=0.5).double()
    torch.testing.assert_close(lin(x), x @ (lin.weight * 0.5 / math.sqrt(7)).T, rtol=0, atol=1e-12)

    # Stored weights are N(0, 1/lr^2): the effective weight has std lr / sqrt(in) * (1 / lr).
    big = nets.FullyConnectedLayer(256, 512, lr_multiplier=0.01)
    assert abs(big.weight.std().item() * 0.01 - 1) < 0.01           # 131k samples: 3 sigma ~ 0.006.
    assert torch.all(big.bias == 0) and torch.all(nets.FullyConnectedLayer(3, 4, bias_init=1).bias == 1)


def test_conv2d_layer_closed_form():
    _seed(1)
    conv = nets.Conv2dLayer(4, 6, kernel_size=3, activation='lrelu', conv_clamp=0.5).double()
    with torch.no_grad():
        conv.bias.copy_(torch.randn(6, dtype=torch.float64))
    x = torch.randn(2, 4, 9, 9, dtype=torch.float64)
    gain = 0.7
    pre = F.conv2d(x, conv.weight / math.sqrt(4 * 9), conv.bias, padding=1)
    ref = (F.leaky_relu(pre, 0.2) * math.sqrt(2) * gain).clamp(-0.5 * gain, 0.5 * gain)  # Clamp after gain.
    out = conv(x, gain=gain)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    assert (out.abs() < 0.5 * gain - 1e-9).any() and (out.abs() == 0.5 * gain).any()


def test_normalize_2nd_moment():
    x = torch.randn(5, 11, dtype=torch.float64) * 3
    y = nets.normalize_2nd_moment(x)
    torch.testing.assert_close(y.square().mean(dim=1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-8)

# ----------------------------------------------------------------------------
# Modulated convolution.


def _modconv_reference(x, weight, styles, noise, up, demodulate):
    """Per sample: scale the weight, demodulate, and convolve (zero insertion + FIR for up=2), float64."""
    outs = []
    f = torch.tensor([1., 3., 3., 1.], dtype=torch.float64)
    f = torch.outer(f, f) / 64 * 4  # Normalised [1,3,3,1] FIR with gain up^2 = 4.
    for n in range(x.shape[0]):
        w = weight * styles[n].reshape(1, -1, 1, 1)
        if demodulate:
            w = w / (w.square().sum(dim=[1, 2, 3], keepdim=True) + 1e-8).sqrt()
        xn = x[n:n + 1]
        if up == 1:
            y = F.conv2d(xn, w, padding=1)
        else:
            # Transposed conv with stride 2 (a true convolution over the zero-inserted image), then the FIR.
            y = F.conv_transpose2d(xn, w.transpose(0, 1), stride=2)
            c = y.shape[1]
            y = F.conv2d(F.pad(y, [1, 1, 1, 1]), f[None, None].expand(c, 1, 4, 4), groups=c)
        outs.append(y)
    y = torch.cat(outs)
    return y + noise if noise is not None else y


@pytest.mark.parametrize('up', [1, 2])
@pytest.mark.parametrize('demodulate', [True, False])
def test_modulated_conv2d_fused_nonfused_and_reference(up, demodulate):
    gen = _seed(2)
    x = torch.randn(3, 5, 6, 6, dtype=torch.float64, generator=gen)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, generator=gen)
    styles = torch.randn(3, 5, dtype=torch.float64, generator=gen) + 1
    noise = torch.randn(3, 1, 6 * up, 6 * up, dtype=torch.float64, generator=gen) * 0.3
    f = torch.tensor([1., 3., 3., 1.])
    f = (torch.outer(f, f) / 64)
    kw = dict(up=up, padding=1, resample_filter=f, demodulate=demodulate, flip_weight=(up == 1))
    fused = nets.modulated_conv2d(x, weight, styles, noise=noise, fused_modconv=True, **kw)
    nonfused = nets.modulated_conv2d(x, weight, styles, noise=noise, fused_modconv=False, **kw)
    torch.testing.assert_close(fused, nonfused, rtol=0, atol=1e-10)
    ref = _modconv_reference(x, weight, styles, noise, up, demodulate)
    torch.testing.assert_close(fused, ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize('up', [1, 2])
def test_modulated_conv2d_single_sample_cpu_takes_fused_path(monkeypatch, up):
    # A batch of one on the CPU asked for the non-fused path gets the fused one (one plain convolution);
    # values and gradients (input, weight, styles, noise) equal the non-fused definition and the
    # per-sample float64 reference.
    gen = _seed(9)
    x = torch.randn(1, 5, 6, 6, dtype=torch.float64, generator=gen)
    weight = torch.randn(4, 5, 3, 3, dtype=torch.float64, generator=gen)
    styles = torch.randn(1, 5, dtype=torch.float64, generator=gen) + 1
    noise = torch.randn(1, 1, 6 * up, 6 * up, dtype=torch.float64, generator=gen) * 0.3
    f = torch.tensor([1., 3., 3., 1.])
    f = torch.outer(f, f) / 64
    kw = dict(up=up, padding=1, resample_filter=f, flip_weight=(up == 1))
    grad_out = torch.randn(1, 4, 6 * up, 6 * up, dtype=torch.float64, generator=gen)
    calls = []
    real_resample = nets.conv2d_resample.conv2d_resample
    monkeypatch.setattr(nets.conv2d_resample, 'conv2d_resample', lambda *a, **k: calls.append(k) or real_resample(*a, **k))

    def run(switch):
        monkeypatch.setattr(nets, 'FUSE_SINGLE_SAMPLE_ON_CPU', switch)
        inputs = [t.clone().requires_grad_() for t in (x, weight, styles, noise)]
        y = nets.modulated_conv2d(inputs[0], inputs[1], inputs[2], noise=inputs[3], fused_modconv=False, **kw)
        return y, torch.autograd.grad(y, inputs, grad_out)

    fast, fast_grads = run(True)
    assert calls[-1].get('groups') == 1  # The fused call: the weight carries the styles, groups = batch.
    slow, slow_grads = run(False)
    assert 'groups' not in calls[-1]
    torch.testing.assert_close(fast, slow, rtol=0, atol=1e-10)
    for a, b in zip(fast_grads, slow_grads):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
    torch.testing.assert_close(fast, _modconv_reference(x, weight, styles, noise, up, True), rtol=0, atol=1e-10)


def test_modulated_conv2d_demodulated_unit_variance():
    # With unit-variance i.i.d. input, output channel j has variance sum_ik w''_ijk^2 = 1 (StyleGAN2
    # Sec. 2.2). Estimated over 16 channels x 8 samples x 30^2 interior pixels (no zero padding);
    # neighbouring outputs are correlated, so the estimate's std is about 1%; tolerance 5%.
    gen = _seed(3)
    x = torch.randn(8, 32, 32, 32, dtype=torch.float64, generator=gen)
    weight = torch.randn(16, 32, 3, 3, dtype=torch.float64, generator=gen)
    styles = torch.rand(8, 32, dtype=torch.float64, generator=gen) * 3 + 0.1
    y = nets.modulated_conv2d(x, weight, styles, padding=0)
    assert abs(y.var().item() - 1) < 0.05
    per_channel = y.var(dim=[0, 2, 3])
    assert (per_channel - 1).abs().max().item() < 0.15
    # Without demodulation the variance scales with the styles; a closed form for one sample:
    y1 = nets.modulated_conv2d(x[:1], weight, styles[:1], padding=0, demodulate=False)
    expected = (weight * styles[0].reshape(1, -1, 1, 1)).square().sum(dim=[1, 2, 3])
    assert ((y1.var(dim=[0, 2, 3]) / expected) - 1).abs().max().item() < 0.15


def test_modulated_conv2d_fp16_prenormalisation():
    # In float16 the weight and styles are divided by their inf-norms first; demodulation cancels that,
    # so the result matches float32 at fp16 precision even for styles that overflow sum(w'^2) in fp16.
    gen = _seed(4)
    x = torch.randn(2, 8, 6, 6, generator=gen)
    weight = torch.randn(4, 8, 3, 3, generator=gen)
    styles = (torch.rand(2, 8, generator=gen) + 0.5) * 300
    ref = nets.modulated_conv2d(x, weight, styles, padding=1, fused_modconv=False)
    try:
        out = nets.modulated_conv2d(x.half(), weight, styles, padding=1, fused_modconv=False)
    except RuntimeError as err:  # pragma: no cover - depends on the CPU build's half support.
        pytest.skip(f'float16 conv2d unavailable on this CPU build: {err}')
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, rtol=0, atol=2e-2)

# ----------------------------------------------------------------------------
# Synthesis layers.


def test_synthesis_layer_noise_order_and_modes():
    # out = lrelu(demod_conv(x) + strength * noise + bias) * sqrt(2): noise after demodulation, before
    # bias and activation. Recover the pre-activation of the 'none' output and add the noise by hand.
    _seed(5)
    layer = nets.SynthesisLayer(6, 5, w_dim=8, resolution=8).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.7)
        layer.bias.copy_(torch.randn(5, dtype=torch.float64))
    x = torch.randn(2, 6, 8, 8, dtype=torch.float64)
    w = torch.randn(2, 8, dtype=torch.float64)
    none = layer(x, w, noise_mode='none')
    const = layer(x, w, noise_mode='const')
    pre_none = _lrelu_inv(none / math.sqrt(2))
    expected = F.leaky_relu(pre_none + 0.7 * layer.noise_const, 0.2) * math.sqrt(2)
    torch.testing.assert_close(const, expected, rtol=0, atol=1e-10)
    # Against a from-scratch computation of the 'none' output.
    styles = w @ (layer.affine.weight / math.sqrt(8)).T + layer.affine.bias
    ref = _modconv_reference(x, layer.weight, styles, None, 1, True) + layer.bias.reshape(1, -1, 1, 1)
    torch.testing.assert_close(none, F.leaky_relu(ref, 0.2) * math.sqrt(2), rtol=0, atol=1e-10)
    # Random noise is fresh per call; 'none' ignores the strength; fused and non-fused agree.
    assert not torch.allclose(layer(x, w, noise_mode='random'), layer(x, w, noise_mode='random'))
    torch.testing.assert_close(layer(x, w, noise_mode='const', fused_modconv=False), const, rtol=0, atol=1e-10)
    with pytest.raises(ValueError, match='noise_mode'):
        layer(x, w, noise_mode='bogus')
    # conv_clamp applies after the gain, scaled by it: clamp(act(.) * sqrt(2) * g, -c g, c g).
    layer.conv_clamp = 0.4
    clamped = layer(x, w, noise_mode='none', gain=0.5)
    torch.testing.assert_close(clamped, (none * 0.5).clamp(-0.2, 0.2), rtol=0, atol=1e-12)
    assert (clamped.abs() == 0.2).any() and (clamped.abs() < 0.2).any()


def test_torgb_layer_closed_form():
    _seed(6)
    torgb = nets.ToRGBLayer(6, 3, w_dim=8, conv_clamp=0.8).double()
    with torch.no_grad():
        torgb.bias.copy_(torch.randn(3, dtype=torch.float64))
    x = torch.randn(2, 6, 5, 5, dtype=torch.float64)
    w = torch.randn(2, 8, dtype=torch.float64)
    styles = (w @ (torgb.affine.weight / math.sqrt(8)).T + torgb.affine.bias) / math.sqrt(6)
    ref = torch.einsum('oi,ni,nihw->nohw', torgb.weight[:, :, 0, 0], styles, x) + torgb.bias.reshape(1, -1, 1, 1)
    for fused in (True, False):
        torch.testing.assert_close(torgb(x, w, fused_modconv=fused), ref.clamp(-0.8, 0.8), rtol=0, atol=1e-12)


def test_synthesis_network_ws_slices():
    # Block b at index k (resolution 2^(k+2)) reads ws[:, 2k-1 : 2k+2] (b4: ws[:, 0:2]); ToRGB shares its
    # w with the next block's conv0. num_ws = 2 log2(res) - 2.
    _seed(7)
    net = nets.SynthesisNetwork(w_dim=8, img_resolution=32, img_channels=3, channel_base=128, channel_max=8,
                                num_fp16_res=0, conv_clamp=None)
    assert net.num_ws == 2 * 5 - 2
    ws = torch.randn(2, net.num_ws, 8)
    seen = {}
    hooks = [getattr(net, f'b{res}').register_forward_pre_hook(
        lambda mod, args, res=res: seen.__setitem__(res, args[2])) for res in net.block_resolutions]
    net(ws, noise_mode='const')
    for h in hooks:
        h.remove()
    for k, res in enumerate(net.block_resolutions):
        start = max(2 * k - 1, 0)
        torch.testing.assert_close(seen[res], ws[:, start:2 * k + 2], rtol=0, atol=0)


def test_synthesis_block_resnet_and_fused_default():
    # Blocks compute in float32 (or float16 on CUDA), so this test does too.
    _seed(8)
    block = nets.SynthesisBlock(6, 4, w_dim=8, resolution=8, img_channels=3, is_last=True, architecture='resnet',
                                conv_clamp=None, fused_modconv_default='inference_only')
    x = torch.randn(2, 6, 4, 4)
    img = torch.randn(2, 3, 4, 4)
    ws = torch.randn(2, 3, 8)
    y_train, img_train = block(x, img.clone(), ws, noise_mode='none')  # Training: non-fused.
    block.eval()
    y_eval, img_eval = block(x, img.clone(), ws, noise_mode='none')    # Inference: fused.
    torch.testing.assert_close(y_train, y_eval, rtol=0, atol=1e-5)
    torch.testing.assert_close(img_train, img_eval, rtol=0, atol=1e-5)
    # resnet: (skip(x) + conv1(conv0(x))) / sqrt(2), the activation gains applied inside each layer.
    conv0 = block.conv0(x, ws[:, 0], noise_mode='none')
    expected = block.skip(x) * math.sqrt(0.5) + block.conv1(conv0, ws[:, 1], noise_mode='none') * math.sqrt(0.5)
    torch.testing.assert_close(y_eval, expected, rtol=0, atol=1e-5)
    # skip: img = upsample2d(img) + torgb(x, w_2); the [1,3,3,1] upsampling of a constant image is constant
    # away from the border.
    const_img = torch.full((2, 3, 4, 4), 0.25)
    _, out_img = block(x, const_img, ws, noise_mode='none')
    torgb = block.torgb(y_eval, ws[:, 2])
    torch.testing.assert_close((out_img - torgb)[:, :, 2:-2, 2:-2], torch.full((2, 3, 4, 4), 0.25), rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------
# Mapping network.


def test_mapping_truncation_and_w_avg():
    _seed(9)
    mapping = nets.MappingNetwork(z_dim=16, c_dim=5, w_dim=12, num_ws=6, num_layers=2, w_avg_beta=0.9)
    with torch.no_grad():
        mapping.w_avg.copy_(torch.randn(12))
    z, c = torch.randn(4, 16), torch.randn(4, 5)
    ws = mapping(z, c)
    assert ws.shape == (4, 6, 12) and torch.equal(ws[:, 0], ws[:, 5])

    torch.testing.assert_close(mapping(z, c, truncation_psi=0), mapping.w_avg.expand(4, 6, 12), rtol=0, atol=0)
    cut = mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(cut[:, :2], mapping.w_avg + 0.5 * (ws[:, :2] - mapping.w_avg), rtol=0, atol=1e-6)
    torch.testing.assert_close(cut[:, 2:], ws[:, 2:], rtol=0, atol=0)

    # w_avg moves only with update_emas (upstream's switch, in either mode): w_avg <- mean + beta (w_avg - mean).
    old = mapping.w_avg.clone()
    mapping.train()
    mapping(z, c)
    mapping.eval()
    mapping(z, c)
    assert torch.equal(mapping.w_avg, old)
    mapping.train()
    w = mapping(z, c, update_emas=True)[:, 0]
    torch.testing.assert_close(mapping.w_avg, w.mean(0) + 0.9 * (old - w.mean(0)), rtol=0, atol=1e-6)

    # D's mapping: no z, no broadcast, no w_avg.
    cmap = nets.MappingNetwork(z_dim=0, c_dim=5, w_dim=12, num_ws=None, w_avg_beta=None)
    assert cmap(None, c).shape == (4, 12) and not hasattr(cmap, 'w_avg')
    with pytest.raises(ValueError, match='w_avg'):
        cmap(None, c, truncation_psi=0.5)


def test_mapping_matches_official(fixtures_dir):
    data = np.load(fixtures_dir / 'official-small-s1.npz')
    G = _backbone_from_options(_small_options(fixtures_dir))
    prefix = 'G/backbone.mapping.'
    weights = {k[len(prefix):]: torch.from_numpy(data[k]) for k in data.files if k.startswith(prefix)}
    misc.copy_params_and_buffers(weights, G.mapping, require_all=True)
    z, c = torch.from_numpy(data['in/z']), torch.from_numpy(data['in/c_cond'])  # c_scale 1, GPC on.
    torch.testing.assert_close(G.mapping(z, c), torch.from_numpy(data['out/ws']), rtol=0, atol=1e-5)
    torch.testing.assert_close(G.mapping(z, c, truncation_psi=0.7, truncation_cutoff=14),
                               torch.from_numpy(data['out/ws_trunc0.7_cut14']), rtol=0, atol=1e-5)

# ----------------------------------------------------------------------------
# Discriminator.


def test_minibatch_std_closed_form():
    gen = _seed(10)
    x = torch.randn(6, 4, 3, 3, dtype=torch.float64, generator=gen)
    y = nets.MinibatchStdLayer(group_size=3, num_channels=2)(x)
    assert y.shape == (6, 6, 3, 3)
    torch.testing.assert_close(y[:, :4], x, rtol=0, atol=0)
    for n in range(6):
        members = x[[m for m in range(6) if m % 2 == n % 2]]  # 6 / 3 = 2 groups: n % 2.
        for f in range(2):
            std = (members[:, 2 * f:2 * f + 2].var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
            torch.testing.assert_close(y[n, 4 + f], std.expand(3, 3), rtol=0, atol=1e-12)
    # The group is clipped to the batch; a batch that does not split into groups is a clear error.
    torch.testing.assert_close(nets.MinibatchStdLayer(8)(x), nets.MinibatchStdLayer(6)(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match='not a multiple of the group size 4'):
        nets.MinibatchStdLayer(group_size=4)(x)


def test_freeze_d_layers():
    D = nets.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                           block_kwargs=dict(freeze_layers=5))
    params = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    # Layer order: b16 fromrgb 0, conv0 1, conv1 2, skip 3; b8 conv0 4, conv1 5, skip 6.
    for name in ['b16.fromrgb.weight', 'b16.conv0.weight', 'b16.conv1.bias', 'b16.skip.weight', 'b8.conv0.weight']:
        assert name in buffers and name not in params
    for name in ['b8.conv1.weight', 'b8.skip.weight', 'b4.conv.weight', 'b4.out.weight']:
        assert name in params


def test_discriminator_matches_official(fixtures_dir):
    # The StyleGAN2 pieces of the official DualDiscriminator: logits and the Dmain gradient norms.
    data = np.load(fixtures_dir / 'official-small-s1.npz')
    D = _discriminator_from_options(_small_options(fixtures_dir), img_resolution=128)
    weights = {k[2:]: torch.from_numpy(data[k]) for k in data.files if k.startswith('D/')}
    misc.copy_params_and_buffers(weights, D, require_all=True)

    def logits(k):
        img, raw, c = (torch.from_numpy(data[f'loss/Dmain/D.in.{key}#{k}']) for key in ('image', 'image_raw', 'c'))
        raw = F.interpolate(raw, size=img.shape[-2:], mode='bilinear', align_corners=False, antialias=True)
        return D(torch.cat([img, raw], dim=1), c)

    fake, real = logits(0), logits(1)
    torch.testing.assert_close(fake, torch.from_numpy(data['loss/Dmain/D.logits#0']), rtol=0, atol=1e-4)
    torch.testing.assert_close(real, torch.from_numpy(data['loss/Dmain/D.logits#1']), rtol=0, atol=1e-4)
    (F.softplus(fake).mean() + F.softplus(-real).mean()).backward()  # The Dmain loss without R1.
    for name, p in D.named_parameters():
        ref = float(data[f'gradnorm/Dmain/D/{name}'])
        assert abs(p.grad.norm().item() - ref) <= 1e-4 * ref + 1e-8, name

# ----------------------------------------------------------------------------
# Names and shapes against the official configurations.


@pytest.mark.parametrize('config', ['official-small-config.json', 'official-ffhq512-config.json'])
def test_names_and_shapes_match_official(fixtures_dir, config):
    cfg = json.loads((fixtures_dir / config).read_text())
    opts = cfg['meta']['training_options']
    res = opts['training_set_kwargs']['resolution']
    expected_g = {k[len('backbone.'):]: v for k, v in cfg['G'].items() if k.startswith('backbone.')}
    assert _shapes(_backbone_from_options(opts)) == expected_g
    expected_d = {k: v for k, v in cfg['D'].items() if k != 'resample_filter'}  # DualDiscriminator's own buffer.
    assert _shapes(_discriminator_from_options(opts, img_resolution=res)) == expected_d

    # The super-resolution modules' upsampling block (block1 of every upstream SR class) is a SynthesisBlock.
    prefix = 'superresolution.block1.'
    expected_sr = {k[len(prefix):]: v for k, v in cfg['G'].items() if k.startswith(prefix)}
    in_ch = expected_sr['conv0.weight'][1]
    out_ch = expected_sr['conv0.weight'][0]
    block = nets.SynthesisBlock(in_ch, out_ch, w_dim=512, resolution=res, img_channels=3, is_last=True,
                                use_fp16=True, conv_clamp=256, fused_modconv_default='inference_only')
    assert _shapes(block) == expected_sr

# ----------------------------------------------------------------------------
# Whole networks at tiny sizes.


def test_generator_and_discriminator_forward_backward():
    _seed(11)
    G = nets.Generator(z_dim=16, c_dim=25, w_dim=16, img_resolution=16, img_channels=12,
                       mapping_kwargs=dict(num_layers=2), channel_base=128, channel_max=16, num_fp16_res=2,
                       conv_clamp=256, fused_modconv_default='inference_only')
    D = nets.Discriminator(c_dim=25, img_resolution=16, img_channels=12, channel_base=128, channel_max=16,
                           num_fp16_res=2, epilogue_kwargs=dict(mbstd_group_size=2))
    z, c = torch.randn(4, 16), torch.randn(4, 25)

    for noise_mode, exempt in [('random', set()), ('none', {'noise_strength'})]:
        G.zero_grad(set_to_none=True)
        D.zero_grad(set_to_none=True)
        img = G(z, c, noise_mode=noise_mode)
        assert img.shape == (4, 12, 16, 16) and img.dtype == torch.float32 and torch.isfinite(img).all()
        logits = D(img, c)
        assert logits.shape == (4, 1) and torch.isfinite(logits).all()
        logits.square().sum().backward()
        for net in (G, D):
            for name, p in net.named_parameters():
                if name.split('.')[-1] in exempt:  # No noise is added, so its strength gets no gradient.
                    assert p.grad is None or p.grad.abs().max() == 0, name
                else:
                    assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.norm() > 0, name

    # Rebuilding from the recorded constructor kwargs gives the same structure.
    assert _shapes(type(G)(**G.init_kwargs)) == _shapes(G)
    assert _shapes(type(D)(**D.init_kwargs)) == _shapes(D)
