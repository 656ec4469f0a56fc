"""ADA's augmentation pipeline against closed forms: analytic warps of band-limited images, colour
matrices written out as vector formulas, wavelet identities, the p update's arithmetic."""

import copy
import dataclasses
import math
import pickle

import numpy as np
import pytest
import scipy.ndimage
import torch

import dnnlib
from torch_utils import training_stats
from training import augment
from training.augment import AugmentPipe, ada_update

BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1,
           brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
GEOMETRIC = ['xflip', 'rotate90', 'xint', 'scale', 'rotate', 'aniso', 'xfrac']
COLOUR = ['brightness', 'contrast', 'lumaflip', 'hue', 'saturation']


@pytest.fixture(autouse=True)
def _single_thread():
    """These ops are tiny: one thread avoids OpenMP barriers stalling on a loaded 2-core machine
    (gradgradcheck ran 20x slower with 2 threads under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def pipe_with(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe

# ----------------------------------------------------------------------------
# Independent references.


class BandLimited:
    """A few random low-frequency sinusoids per sample and channel, |f| <= 0.9, evaluated anywhere in
    centred pixel coordinates (x = column + 0.5 - W/2, y = row + 0.5 - H/2)."""

    def __init__(self, n, c, size, rng, max_cycles=3, terms=3):
        self.k = rng.uniform(-max_cycles, max_cycles, [n, c, terms, 2]) * 2 * np.pi / size  # rad/pixel
        self.phase = rng.uniform(0, 2 * np.pi, [n, c, terms])
        self.amp = rng.uniform(0.1, 0.3, [n, c, terms])

    def __call__(self, x, y):  # x, y: [n, H, W] -> [n, c, H, W]
        arg = (self.k[..., 0, None, None] * x[:, None, None] + self.k[..., 1, None, None] * y[:, None, None]
               + self.phase[..., None, None])
        return (self.amp[..., None, None] * np.cos(arg)).sum(2)


def pixel_centres(n, h, w):
    y, x = np.meshgrid(np.arange(h) + 0.5 - h / 2, np.arange(w) + 0.5 - w / 2, indexing='ij')
    return np.broadcast_to(x, (n, h, w)), np.broadcast_to(y, (n, h, w))


def rot(t):
    return np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]])


def scl(sx, sy):
    return np.diag([sx, sy, 1.0])


def trn(tx, ty):
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])


def forward_matrix(prm, i):
    """Sample i's forward map (input point -> output point), composed from the parameter values:
    xflip, rotate90, xint, scale, pre-rotation, aniso, post-rotation, xfrac (ADA Appendix B order)."""
    g = lambda t: t[i].double().numpy()  # noqa: E731
    steps = [scl(1 - 2 * g(prm.xflip), 1), rot(g(prm.rotate90) * np.pi / 2), trn(*g(prm.xint)),
             scl(g(prm.scale), g(prm.scale)), rot(g(prm.rotate_pre)), scl(g(prm.aniso), 1 / g(prm.aniso)),
             rot(g(prm.rotate_post)), trn(*g(prm.xfrac))]
    m = np.eye(3)
    for s in steps:
        m = s @ m
    return m


def expected_warp(f, prm, n, h, w, margin):
    """The analytically warped images out(s) = f(F^-1 s), and the interior mask: output pixels whose
    source lies at least `margin` pixels inside the input."""
    x, y = pixel_centres(n, h, w)
    src_x, src_y = np.empty_like(x), np.empty_like(y)
    for i in range(n):
        inv = np.linalg.inv(forward_matrix(prm, i))
        src_x[i] = inv[0, 0] * x[i] + inv[0, 1] * y[i] + inv[0, 2]
        src_y[i] = inv[1, 0] * x[i] + inv[1, 1] * y[i] + inv[1, 2]
    mask = (np.abs(src_x) < w / 2 - margin) & (np.abs(src_y) < h / 2 - margin)
    return f(src_x, src_y), mask


V = np.ones(3) / np.sqrt(3)  # Luma axis.


def expected_colour(name, x, prm):
    """The colour transform `name` of RGB images x [n, 3, H, W] written as vector formulas."""
    q = lambda t: t.double().numpy()[:, None, None, None]  # noqa: E731
    luma = (x * V[None, :, None, None]).sum(1, keepdims=True) * V[None, :, None, None]  # v (v . x)
    if name == 'brightness':
        return x + q(prm.brightness)
    if name == 'contrast':
        return x * q(prm.contrast)
    if name == 'lumaflip':
        return x - 2 * q(prm.lumaflip) * luma
    if name == 'hue':
        t = q(prm.hue)
        return luma + np.cos(t) * (x - luma) + np.sin(t) * np.cross(V, x, axisb=1, axisc=1)
    if name == 'saturation':
        return luma + q(prm.saturation) * (x - luma)
    raise KeyError(name)

# ----------------------------------------------------------------------------
# Filters.


@pytest.mark.parametrize('name, taps, order', [('sym2', augment.SYM2, 2), ('sym6', augment.SYM6, 6)])
def test_wavelet_taps_are_the_symlet_lowpass(name, taps, order):
    """Orthonormal (sum sqrt 2, unit norm, orthogonal to even shifts) with `order` vanishing moments."""
    h = np.asarray(taps)
    assert len(h) == 2 * order
    assert abs(h.sum() - np.sqrt(2)) < 1e-9
    for shift in range(order):
        assert abs(np.dot(h[:len(h) - 2 * shift], h[2 * shift:]) - (shift == 0)) < 1e-9
    n = np.arange(len(h))
    for k in range(order):
        assert abs(np.sum((-1) ** n * n ** k * h)) < 1e-8


def test_filter_bank_splits_octaves():
    bank = augment.band_filters(augment.SYM2, 4)
    delta = np.zeros(bank.shape[1])
    delta[bank.shape[1] // 2] = 1
    np.testing.assert_allclose(bank.sum(0), delta, atol=1e-12)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-15)  # Zero phase.
    t = np.arange(bank.shape[1]) - bank.shape[1] // 2
    resp = lambda k, w: float(np.sum(bank[k] * np.cos(w * t)))  # noqa: E731
    assert resp(0, 0) == pytest.approx(1) and resp(3, np.pi) == pytest.approx(1)
    for k, edge in enumerate([np.pi / 8, np.pi / 4, np.pi / 2]):  # Neighbours cross near 1/2 at the edges.
        assert 0.4 < resp(k, edge) < 0.6 and 0.4 < resp(k + 1, edge) < 0.6
        assert all(abs(resp(j, edge)) < 0.1 for j in range(4) if j not in (k, k + 1))

# ----------------------------------------------------------------------------
# Geometric transforms.


def subset(prm, index):
    return augment.AugmentParams(**{k.name: getattr(prm, k.name)[index] for k in dataclasses.fields(prm)})


def covering(prm, name, n):
    """n samples of a larger draw, taking first one sample of every distinct value of the transform's
    parameter (both flips, all four quarter turns, a zero and a nonzero integer shift)."""
    keys = {'xflip': prm.xflip.tolist(), 'rotate90': prm.rotate90.tolist(),
            'xint': (prm.xint != 0).any(1).tolist()}.get(name, [0] * len(prm.xflip))
    firsts = [keys.index(k) for k in sorted(set(keys))]
    return subset(prm, firsts + [i for i in range(len(keys)) if i not in firsts][:n - len(firsts)])


@pytest.mark.parametrize('name', GEOMETRIC + ['all'])
def test_geometric_matches_analytic_warp(name):
    n, c, h, w = 6, 3, 56, 64
    rng = np.random.default_rng()
    pipe = pipe_with(**({k: 1 for k in GEOMETRIC} if name == 'all' else {name: 1}))
    prm = covering(pipe.sample_params(64, h, w, generator=seeded(int(rng.integers(1 << 31)))), name, n)
    f = BandLimited(n, c, w, rng)
    x, y = pixel_centres(n, h, w)
    images = torch.tensor(f(x, y), dtype=torch.float32)

    out = pipe.apply(images, prm).double().numpy()
    expected, mask = expected_warp(f, prm, n, h, w, margin=8)
    assert mask.sum() > n * 200, 'interior too small to test'
    err = np.abs(out - expected)[np.broadcast_to(mask[:, None], out.shape)]
    assert err.max() < 1e-2, f'{name}: max abs error {err.max():.4f} in the interior'
    moved = sum(not np.allclose(forward_matrix(prm, i), np.eye(3)) for i in range(n))
    if name == 'xflip':
        assert sorted(set(prm.xflip.tolist())) == [0, 1]
    elif name == 'rotate90':
        assert sorted(set(prm.rotate90.tolist())) == [0, 1, 2, 3]
    else:
        assert moved >= n - 1


def test_geometric_same_warp_on_both_halves():
    rng = np.random.default_rng()
    pipe = pipe_with(**{k: 1 for k in GEOMETRIC})
    a, b = torch.rand(3, 3, 16, 16) * 2 - 1, torch.rand(3, 3, 16, 16) * 2 - 1
    prm = pipe.sample_params(3, 16, 16, generator=seeded(int(rng.integers(1 << 31))))
    both = pipe.apply(torch.cat([a, b], dim=1), prm)
    torch.testing.assert_close(both[:, :3], pipe.apply(a, prm), atol=1e-6, rtol=0)
    torch.testing.assert_close(both[:, 3:], pipe.apply(b, prm), atol=1e-6, rtol=0)


def test_geometric_second_order_gradients():
    """R1 is taken through augmented reals: gradgradcheck (float64) through the warp, made nonlinear by
    a tanh so that second derivatives are not trivially zero."""
    pipe = pipe_with(**{k: 1 for k in GEOMETRIC})
    prm = pipe.sample_params(1, 8, 8, generator=seeded(3))
    assert not torch.allclose(pipe.geometric_matrix(prm), torch.eye(3))
    images = (torch.rand(1, 2, 8, 8, dtype=torch.float64) * 2 - 1).requires_grad_(True)
    fn = lambda x: torch.tanh(pipe.apply(x, prm) * 2)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (images,))
    assert torch.autograd.gradgradcheck(fn, (images,))

# ----------------------------------------------------------------------------
# Colour transforms.


@pytest.mark.parametrize('name', COLOUR)
def test_colour_matches_closed_form(name):
    n = 32
    pipe = pipe_with(**{name: 1})
    prm = pipe.sample_params(n, 8, 8, generator=seeded(int(np.random.default_rng().integers(1 << 31))))
    x = torch.rand(n, 3, 8, 8) * 2 - 1
    out = pipe.apply(x, prm).double().numpy()
    np.testing.assert_allclose(out, expected_colour(name, x.double().numpy(), prm), atol=1e-5, rtol=0)
    if name == 'lumaflip':
        assert 0 < int(prm.lumaflip.sum()) < n
    else:
        identity = {'brightness': 0, 'hue': 0}.get(name, 1)
        assert bool((getattr(prm, name) != identity).all())


def test_colour_same_matrix_on_both_halves_and_order():
    """All colour transforms at once on a 6-channel input: brightness, contrast, lumaflip, hue,
    saturation in that order, the same draw on channels 0-2 and 3-5."""
    n = 6
    pipe = pipe_with(**{k: 1 for k in COLOUR})
    prm = pipe.sample_params(n, 8, 8, generator=seeded(int(np.random.default_rng().integers(1 << 31))))
    x = torch.rand(n, 6, 8, 8) * 2 - 1
    out = pipe.apply(x, prm).double().numpy()
    for half in (slice(0, 3), slice(3, 6)):
        ref = x[:, half].double().numpy()
        for name in COLOUR:
            ref = expected_colour(name, ref, prm)
        np.testing.assert_allclose(out[:, half], ref, atol=1e-5, rtol=0)


def test_colour_matrix_bad_channels():
    with pytest.raises(ValueError, match='channels'):
        pipe_with(brightness=1)(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'):
        pipe_with(brightness=1)(torch.zeros(2, 3, 8))

# ----------------------------------------------------------------------------
# Filtering, noise, cutout, probabilities.


def test_imgfilter_matches_separable_convolution():
    n, c, h, w = 3, 3, 16, 12
    pipe = pipe_with(imgfilter=1)
    prm = pipe.sample_params(n, h, w, generator=seeded(5))
    x = torch.rand(n, c, h, w, dtype=torch.float64) * 2 - 1
    out = pipe.apply(x, prm).numpy()
    bank = augment.band_filters(augment.SYM2, 4)
    for i in range(n):
        g = prm.imgfilter[i].double().numpy()
        g = g / np.sqrt(np.sum(np.asarray(augment.IMGFILTER_EXPECTED_POWER) * g ** 2))
        taps = g @ bank
        ref = scipy.ndimage.convolve1d(x[i].numpy(), taps, axis=2, mode='mirror')
        ref = scipy.ndimage.convolve1d(ref, taps, axis=1, mode='mirror')
        np.testing.assert_allclose(out[i], ref, atol=1e-10)
    # Equal gains in every band leave the image unchanged.
    prm.imgfilter = torch.full_like(prm.imgfilter, 1.7)
    np.testing.assert_allclose(pipe.apply(x, prm).numpy(), x.numpy(), atol=1e-12)


def test_noise_and_cutout():
    n, size = 4, 64
    pipe = pipe_with(noise=1, cutout=1)
    prm = pipe.sample_params(n, size, size, generator=seeded(11))
    prm.noise = torch.tensor([0.05, 0.1, 0.2, 0.3])
    prm.cutout_pos = torch.tensor([[0.5, 0.5], [0.25, 0.75], [0.0, 0.0], [0.9, 0.3]])
    x = torch.rand(n, 3, size, size) + 1  # Never zero, so the cutout shows as exact zeros.
    out = pipe.apply(x, prm)
    for i in range(n):
        zero = out[i] == 0
        cx, cy = prm.cutout_pos[i].tolist()
        side = prm.cutout_size[i].item() * size
        cols = [j for j in range(size) if abs((j + 0.5) - cx * size) < side / 2]
        rows = [j for j in range(size) if abs((j + 0.5) - cy * size) < side / 2]
        assert int(zero.sum()) == 3 * len(rows) * len(cols)
        assert bool(zero[:, rows][:, :, cols].all())
        kept = ~zero
        assert (out[i] - x[i])[kept].std().item() == pytest.approx(prm.noise[i].item(), rel=0.1)


def test_probabilities():
    """Fractions of a large draw against upstream's semantics: each transform with probability p, the
    two arbitrary rotations each with 1 - sqrt(1 - p) so that at least one happens with probability p."""
    p, n = 0.6, 40000
    prm = pipe_with(p, **BGC).sample_params(n, 64, 64, generator=seeded(0))
    tol = 4 * math.sqrt(0.25 / n)
    frac = lambda mask: mask.float().mean().item()  # noqa: E731
    assert frac(prm.xflip == 1) == pytest.approx(p / 2, abs=tol)
    assert frac(prm.rotate90 != 0) == pytest.approx(p * 3 / 4, abs=tol)
    assert frac(prm.scale != 1) == pytest.approx(p, abs=tol)
    assert frac(prm.rotate_pre != 0) == pytest.approx(1 - math.sqrt(1 - p), abs=tol)
    assert frac((prm.rotate_pre != 0) | (prm.rotate_post != 0)) == pytest.approx(p, abs=tol)
    assert frac(prm.hue != 0) == pytest.approx(p, abs=tol)
    assert frac(prm.lumaflip == 1) == pytest.approx(p / 2, abs=tol)
    assert prm.xint.abs().max().item() <= round(0.125 * 64)
    on = prm.scale != 1
    assert torch.log2(prm.scale[on]).std().item() == pytest.approx(0.2, rel=0.05)
    on = prm.saturation != 1
    assert torch.log2(prm.saturation[on]).std().item() == pytest.approx(1.0, rel=0.05)


def test_p_zero_is_exact_identity_and_p_half_changes_images():
    pipe = pipe_with(0.0, **BGC, imgfilter=1, noise=1, cutout=1)
    x = torch.rand(4, 6, 16, 16) * 2 - 1
    assert torch.equal(pipe(x), x)
    assert torch.equal(pipe.apply(x, pipe.sample_params(4, 16, 16)), x)  # A p = 0 draw is the identity.
    pipe.p.fill_(0.5)
    torch.manual_seed(1)
    assert not torch.equal(pipe(x), x)

# ----------------------------------------------------------------------------
# The p update and persistence.


def test_ada_update_steps():
    batch, interval, kimg, target = 32, 4, 500, 0.6
    step = batch * interval / (kimg * 1000)
    p = torch.zeros([])
    for i in range(1, 11):  # Signs held above the target: p rises by one step per interval.
        ada_update(p, 0.8, target, batch, interval, kimg)
        assert p.item() == pytest.approx(i * step, rel=1e-5)
    for i in range(1, 4):  # Below the target: falls.
        ada_update(p, 0.3, target, batch, interval, kimg)
        assert p.item() == pytest.approx((10 - i) * step, rel=1e-5)
    for _ in range(20):  # ... and stops at 0.
        ada_update(p, -1.0, target, batch, interval, kimg)
    assert p.item() == 0
    ada_update(p, target, target, batch, interval, kimg)  # At the target: unchanged.
    ada_update(p, float('nan'), target, batch, interval, kimg)  # Nothing collected: unchanged.
    assert p.item() == 0
    with pytest.raises(ValueError):
        ada_update(p, 0.8, target, batch, interval, 0)


def test_ada_update_from_reported_signs():
    """As the training loop runs it: signs of D(real) reported to training_stats, collected every
    interval, fed to ada_update; p moves by one step per interval in the sign's direction."""
    training_stats.reset()
    pipe = pipe_with(0.0, **BGC)
    stats = training_stats.Collector(regex='Loss/signs/real')
    batch, interval, kimg = 8, 4, 0.1
    step = batch * interval / (kimg * 1000)
    history = []
    for logit_sign in [1] * 5 + [-1] * 3:
        for _ in range(interval):
            logits = torch.randn(batch).abs() * logit_sign
            training_stats.report('Loss/signs/real', logits.sign())
        stats.update()
        ada_update(pipe.p, stats['Loss/signs/real'], 0.6, batch, interval, kimg)
        history.append(pipe.p.item())
    np.testing.assert_allclose(history, np.array([1, 2, 3, 4, 5, 4, 3, 2]) * step, rtol=1e-5)
    training_stats.reset()


def test_persistence_and_snapshot_copy():
    pipe = dnnlib.util.construct_class_by_name(class_name='training.augment.AugmentPipe', **BGC)
    pipe.p.fill_(0.25)
    assert dict(pipe.init_kwargs) == BGC
    rebuilt = type(pipe)(**pipe.init_kwargs)
    rebuilt.load_state_dict(pipe.state_dict())
    assert sorted(pipe.state_dict()) == ['Hz_fbank', 'Hz_geom', 'p']
    for clone in (rebuilt, copy.deepcopy(pipe), pickle.loads(pickle.dumps(pipe))):
        assert clone.p.item() == 0.25
        x = torch.rand(2, 3, 16, 16)
        prm = pipe.sample_params(2, 16, 16, generator=seeded(2))
        torch.testing.assert_close(clone.apply(x, prm), pipe.apply(x, prm))
