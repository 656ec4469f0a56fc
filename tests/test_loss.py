"""The EG3D loss on its own: loss values against hand-computed softplus expressions, R1 against finite
differences, schedules, lazy-regularisation optimiser settings and the EMA decay."""

import math

import numpy as np
import pytest
import torch

from torch_utils import training_stats
from training import loss as loss_mod
from training.training_loop import build_phases

rng = np.random.default_rng()


class StubG(torch.nn.Module):
    """Mapping is linear in (z, c); synthesis returns images that depend on ws; sigma = a . coords."""

    def __init__(self, density_reg=0.25, reg_type='l1'):
        super().__init__()
        self.z_dim, self.c_dim = 3, 25
        self.w = torch.nn.Parameter(torch.randn(3, 4))
        self.a = torch.nn.Parameter(torch.randn(3))
        self.rendering_kwargs = dict(density_reg=density_reg, reg_type=reg_type, box_warp=1,
                                     density_reg_p_dist=0.004)
        self.calls = []

    def mapping(self, z, c, update_emas=False):
        self.calls.append(('mapping', c.clone()))
        return (z @ self.w)[:, None, :].repeat(1, 2, 1)

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False, **kwargs):
        n, r = ws.shape[0], neural_rendering_resolution
        base = ws.mean(dim=[1, 2])[:, None, None, None]
        image = base * torch.ones(n, 3, 2 * r, 2 * r)
        return {'image': image, 'image_raw': base * torch.ones(n, 3, r, r), 'image_depth': torch.ones(n, 1, r, r)}

    def sample_mixed(self, coords, dirs, ws, update_emas=False, **kwargs):
        return {'sigma': (coords @ self.a)[..., None] * ws.mean(), 'rgb': coords}


class StubD(torch.nn.Module):
    """logit = sum over both images of v * x^2 / 2 (so dD/dx = v * x, a closed form for R1)."""

    def __init__(self, res):
        super().__init__()
        self.v_img = torch.nn.Parameter(torch.rand(1, 3, 2 * res, 2 * res) * 0.1)
        self.v_raw = torch.nn.Parameter(torch.rand(1, 3, res, res))
        self.seen = []

    def forward(self, img, c, update_emas=False):
        self.seen.append({k: v.detach().clone() for k, v in img.items()})
        out = (self.v_img * img['image'].square() / 2).sum([1, 2, 3]) + (self.v_raw * img['image_raw'].square() / 2).sum([1, 2, 3])
        return out[:, None]


def make_loss(res=4, **kwargs):
    G, D = StubG(), StubD(res)
    kw = dict(r1_gamma=2.0, neural_rendering_resolution_initial=res, dual_discrimination=True, blur_init_sigma=0)
    kw.update(kwargs)
    return loss_mod.StyleGAN2Loss('cpu', G, D, **kw), G, D


def collect(fn):
    training_stats.reset()
    col = training_stats.Collector(regex='.*')
    fn()
    col.update()
    return col


def test_gmain_and_dmain_losses_are_softplus_of_logits():
    loss, G, D = make_loss()
    z, c = torch.randn(3, 3), torch.randn(3, 25)
    real = torch.rand(3, 3, 8, 8) * 2 - 1
    col = collect(lambda: loss.accumulate_gradients('Gmain', real, c, z, c, gain=1, cur_nimg=0))
    logits = D.forward({k: v for k, v in G.synthesis(G.mapping(z, c), c, 4).items()}, c).detach().numpy().ravel()
    assert col.num('Loss/G/loss') == 3
    np.testing.assert_allclose(col.mean('Loss/G/loss'), np.mean(np.logaddexp(0, -logits.astype(np.float64))), rtol=1e-5)
    np.testing.assert_allclose(col.mean('Loss/scores/fake'), logits.mean(), rtol=1e-5)

    D.seen.clear()
    col = collect(lambda: loss.accumulate_gradients('Dmain', real, c, z, c, gain=1, cur_nimg=0))
    fake_logits = D.forward(G.synthesis(G.mapping(z, c), c, 4), c).detach().numpy().ravel()
    raw = torch.nn.functional.interpolate(real, size=(4, 4), mode='bilinear', antialias=True)
    real_logits = D.forward({'image': real, 'image_raw': raw}, c).detach().numpy().ravel()
    expected = np.logaddexp(0, fake_logits.astype(np.float64)) + np.logaddexp(0, -real_logits.astype(np.float64))
    np.testing.assert_allclose(col.mean('Loss/D/loss'), expected.mean(), rtol=1e-5)
    np.testing.assert_allclose(col.mean('Loss/scores/real'), real_logits.mean(), rtol=1e-5)


def test_r1_penalty_closed_form_and_finite_differences():
    loss, G, D = make_loss(r1_gamma=3.0)
    real = torch.rand(2, 3, 8, 8) * 2 - 1
    c = torch.randn(2, 25)
    col = collect(lambda: loss.accumulate_gradients('Dreg', real, c, torch.randn(2, 3), c, gain=16, cur_nimg=0))
    raw = torch.nn.functional.interpolate(real, size=(4, 4), mode='bilinear', antialias=True)
    # dD/dx = v * x on both images: ||.||^2 summed.
    closed = ((D.v_img * real) ** 2).sum([1, 2, 3]) + ((D.v_raw * raw) ** 2).sum([1, 2, 3])
    np.testing.assert_allclose(col.mean('Loss/r1_penalty'), closed.mean().item(), rtol=1e-5)
    np.testing.assert_allclose(col.mean('Loss/D/reg'), closed.mean().item() * 1.5, rtol=1e-5)

    # Finite differences of D's logit with respect to the image of sample 0, independent of autograd.
    x = real[:1].double()
    v = D.v_img.detach().double()
    f = lambda im: (v * im.square() / 2).sum().item()  # noqa: E731
    eps, fd = 1e-6, torch.zeros_like(x)
    for i in range(x.numel()):
        d = torch.zeros(x.numel(), dtype=torch.float64)
        d[i] = eps
        d = d.reshape(x.shape)
        fd.view(-1)[i] = (f(x + d) - f(x - d)) / (2 * eps)
    raw_part = ((D.v_raw * raw[:1]) ** 2).sum().item()
    np.testing.assert_allclose(fd.square().sum().item() + raw_part, closed[0].item(), rtol=1e-6)
    # The R1 gradient reached D's parameters, scaled by gain 16.
    expected_grad = (3.0 / 2) * 16 * (2 * D.v_img.detach() * real.square()).mean(0, keepdim=True)
    np.testing.assert_allclose(D.v_img.grad.numpy(), expected_grad.numpy(), rtol=1e-4, atol=1e-7)


def test_schedules():
    loss, _, _ = make_loss(blur_init_sigma=10, blur_fade_kimg=200, gpc_reg_prob=0.5, gpc_reg_fade_kimg=1000,
                           neural_rendering_resolution_initial=64, neural_rendering_resolution_final=128,
                           neural_rendering_resolution_fade_kimg=1000)
    assert loss.blur_sigma(0) == 10 and loss.blur_sigma(100_000) == 5 and loss.blur_sigma(300_000) == 0
    assert loss.swap_prob(0) == 1 and abs(loss.swap_prob(500_000) - 0.75) < 1e-12 and loss.swap_prob(2_000_000) == 0.5
    assert [loss.neural_rendering_resolution(n) for n in (0, 500_000, 15_625, 2_000_000)] == [64, 96, 65, 128]
    assert loss_mod.blur_kernel(0.3) is None
    k = loss_mod.blur_kernel(1.0).numpy()
    ref = 2.0 ** (-np.arange(-3, 4) ** 2)
    np.testing.assert_allclose(k, ref / ref.sum(), rtol=1e-6)


def test_gpc_swaps_roll_the_batch():
    loss, G, D = make_loss(gpc_reg_prob=0.5, gpc_reg_fade_kimg=0)
    c = torch.randn(4, 25)
    torch.manual_seed(3)
    u = torch.rand(4, 1)
    torch.manual_seed(3)
    cond = loss._conditioning(c, 0.5)
    expected = torch.where(u < 0.5, torch.roll(c, 1, 0), c)
    assert torch.equal(cond, expected)
    assert torch.equal(loss._conditioning(c, None), torch.zeros_like(c))


def test_density_reg_l1_value():
    loss, G, D = make_loss()
    z, c = torch.randn(2, 3), torch.randn(2, 25)
    torch.manual_seed(5)
    loss.accumulate_gradients('Greg', None, None, z, c, gain=4, cur_nimg=0)
    grad = G.a.grad.clone()
    # Recompute with the same draws: no GPC -> no swap draw; points, then perturbations.
    torch.manual_seed(5)
    ws = G.mapping(z, torch.zeros_like(c))
    pts = torch.rand((2, 1000, 3)) * 2 - 1
    pert = pts + torch.randn_like(pts) * 0.004
    a = G.a.detach().clone().requires_grad_(True)
    s1, s2 = (pts @ a) * ws.mean(), (pert @ a) * ws.mean()
    ((s1 - s2).abs().mean() * 0.25 * 4).backward()
    # float32 means of 2000 signed terms, summed in another order than the loss sums them: 1e-4 relative.
    np.testing.assert_allclose(grad.numpy(), a.grad.numpy(), rtol=1e-4)


def test_unimplemented_density_reg_types_are_errors():
    G, D = StubG(reg_type='total-variation'), StubD(4)
    with pytest.raises(ValueError, match='total-variation.*not implemented'):
        loss_mod.StyleGAN2Loss('cpu', G, D)
    with pytest.raises(ValueError, match='path-length'):
        loss_mod.StyleGAN2Loss('cpu', StubG(), D, pl_weight=2)


def test_lazy_regularization_optimizer_settings():
    G, D = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    adam = dict(class_name='torch.optim.Adam', betas=[0, 0.99], eps=1e-8)
    phases = build_phases(G, D, dict(adam, lr=0.0025), dict(adam, lr=0.002), G_reg_interval=4, D_reg_interval=16)
    assert [p.name for p in phases] == ['Gmain', 'Greg', 'Dmain', 'Dreg']
    assert [p.interval for p in phases] == [1, 4, 1, 16]
    g, d = phases[0].opt.param_groups[0], phases[2].opt.param_groups[0]
    assert phases[0].opt is phases[1].opt
    assert math.isclose(g['lr'], 0.0025 * 4 / 5) and math.isclose(g['betas'][1], 0.99 ** (4 / 5))
    assert math.isclose(d['lr'], 0.002 * 16 / 17) and math.isclose(d['betas'][1], 0.99 ** (16 / 17))
    assert g['betas'][0] == 0 and d['betas'][0] == 0
    both = build_phases(G, D, dict(adam, lr=0.0025), dict(adam, lr=0.002), G_reg_interval=None, D_reg_interval=16)
    assert both[0].name == 'Gboth' and both[0].opt.param_groups[0]['lr'] == 0.0025


def test_ema_beta():
    assert math.isclose(loss_mod.ema_beta(32, 10, 0.05, cur_nimg=10_000_000), 0.5 ** (32 / 10000))
    assert math.isclose(loss_mod.ema_beta(32, 10, 0.05, cur_nimg=64_000), 0.5 ** (32 / 3200))  # In the ramp-up.
    assert loss_mod.ema_beta(32, 10, 0.05, cur_nimg=0) == 0  # G_ema starts as G.
    assert math.isclose(loss_mod.ema_beta(32, 10, None, cur_nimg=0), 0.5 ** (32 / 10000))
