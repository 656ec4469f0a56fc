"""The EG3D loss: non-saturating logistic GAN loss with dual discrimination, R1, blurred early training,
generator pose conditioning and density regularisation (EG3D Sec. 4 and supplement; StyleGAN2-ADA).

Phases, as the training loop schedules them: Gmain (adversarial G), Greg (density regularisation),
Gboth (both, when G's regularisation is not lazy), Dmain (fakes and reals), Dreg (R1), Dboth.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import training_stats
from torch_utils.misc import profiled
from torch_utils.ops import upfirdn2d
from training.dual_discriminator import filtered_resizing

PHASES = ('Gmain', 'Greg', 'Gboth', 'Dmain', 'Dreg', 'Dboth')
DENSITY_REG_TYPES = ('l1', 'monotonic-detach', 'monotonic-fixed')


class Loss:
    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        raise NotImplementedError()


def blur_kernel(sigma: float) -> torch.Tensor | None:
    """Upstream's blur taps: 2^(-(x / sigma)^2) for |x| <= floor(3 sigma), normalised (base 2, not a
    standard Gaussian). None when the kernel would be a single tap."""
    size = int(np.floor(sigma * 3))
    if size <= 0:
        return None
    f = torch.arange(-size, size + 1, dtype=torch.float32).div(sigma).square().neg().exp2()
    return f / f.sum()


def blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    f = blur_kernel(sigma)
    return image if f is None else upfirdn2d.filter2d(image, f.to(image.device))


class StyleGAN2Loss(Loss):
    """EG3D's loss (upstream's class name and constructor arguments).

    The path-length arguments (pl_*) and r1_gamma_init / r1_gamma_fade_kimg are accepted for
    configuration compatibility; upstream ignores them, and so do we, except that asking for a
    path-length regulariser (pl_weight != 0) is an error rather than a silent no-op.
    """

    def __init__(self,
        device,                                         # Device of the networks.
        G,                                              # Generator (TriPlaneGenerator interface).
        D,                                              # Discriminator (DualDiscriminator interface).
        augment_pipe                            = None, # Augmentation applied to everything D sees, or None.
        r1_gamma                                = 10,   # R1 weight gamma; 0 disables Dreg.
        style_mixing_prob                       = 0,    # Probability of mixing two latents at a random layer.
        pl_weight                               = 0,    # Path-length regulariser: not implemented (upstream neither).
        pl_batch_shrink                         = 2,    # Unused.
        pl_decay                                = 0.01, # Unused.
        pl_no_weight_grad                       = False,# Unused.
        blur_init_sigma                         = 0,    # Initial blur sigma (pixels) applied to images D sees.
        blur_fade_kimg                          = 0,    # The blur fades linearly to 0 over this many kimg.
        r1_gamma_init                           = 0,    # Unused (upstream neither).
        r1_gamma_fade_kimg                      = 0,    # Unused (upstream neither).
        neural_rendering_resolution_initial     = 64,   # Raw render resolution at the start.
        neural_rendering_resolution_final       = None, # Resolution reached after the fade, or None to keep the initial one.
        neural_rendering_resolution_fade_kimg   = 0,    # Length of that fade in kimg (0: jump to final at once).
        gpc_reg_fade_kimg                       = 1000, # The GPC swap probability fades from 1 to gpc_reg_prob over this many kimg.
        gpc_reg_prob                            = None, # Final swap probability; None disables GPC (zeros condition G).
        dual_discrimination                     = False,# D sees the raw image too (6 channels).
        filter_mode                             = 'antialiased', # How reals are resized to the raw resolution.
        synthesis_kwargs                        = None, # Extra kwargs for G.synthesis / G.sample_mixed (e.g. noise_mode).
    ):
        super().__init__()
        if pl_weight != 0:
            raise ValueError('StyleGAN2Loss: pl_weight != 0 asks for a path-length regulariser, which EG3D '
                             'does not have (upstream silently ignored it)')
        self.device = device
        self.G = G
        self.D = D
        self.augment_pipe = augment_pipe
        self.r1_gamma = r1_gamma
        self.style_mixing_prob = style_mixing_prob
        self.blur_init_sigma = blur_init_sigma
        self.blur_fade_kimg = blur_fade_kimg
        self.neural_rendering_resolution_initial = neural_rendering_resolution_initial
        self.neural_rendering_resolution_final = neural_rendering_resolution_final
        self.neural_rendering_resolution_fade_kimg = neural_rendering_resolution_fade_kimg
        self.gpc_reg_fade_kimg = gpc_reg_fade_kimg
        self.gpc_reg_prob = gpc_reg_prob
        self.dual_discrimination = dual_discrimination
        self.filter_mode = filter_mode
        self.synthesis_kwargs = dict(synthesis_kwargs or {})
        self.resample_filter = upfirdn2d.setup_filter([1, 3, 3, 1], device=device)
        self.blur_raw_target = True
        reg_type = G.rendering_kwargs.get('reg_type', 'l1')
        if G.rendering_kwargs.get('density_reg', 0) > 0 and reg_type not in DENSITY_REG_TYPES:
            raise ValueError(f"StyleGAN2Loss: reg_type {reg_type!r} is not implemented (upstream accepted "
                             f"'l1-alt' and 'total-variation' but silently did nothing); use one of "
                             f"{', '.join(DENSITY_REG_TYPES)}, or density_reg=0")

    # ------------------------------------------------------------------------
    # Schedules, recomputed from cur_nimg on every call (so resuming at any cur_nimg is exact).

    def blur_sigma(self, cur_nimg: int) -> float:
        if self.blur_fade_kimg <= 0:
            return 0
        return max(1 - cur_nimg / (self.blur_fade_kimg * 1e3), 0) * self.blur_init_sigma

    def swap_prob(self, cur_nimg: int) -> float | None:
        if self.gpc_reg_prob is None:
            return None
        alpha = min(cur_nimg / (self.gpc_reg_fade_kimg * 1e3), 1) if self.gpc_reg_fade_kimg > 0 else 1
        return (1 - alpha) * 1 + alpha * self.gpc_reg_prob

    def neural_rendering_resolution(self, cur_nimg: int) -> int:
        if self.neural_rendering_resolution_final is None:
            return self.neural_rendering_resolution_initial
        fade = self.neural_rendering_resolution_fade_kimg
        alpha = min(cur_nimg / (fade * 1e3), 1) if fade > 0 else 1  # Upstream divides by zero for fade 0.
        return int(np.rint(self.neural_rendering_resolution_initial * (1 - alpha)
                           + self.neural_rendering_resolution_final * alpha))

    # ------------------------------------------------------------------------

    def _conditioning(self, c: torch.Tensor, swap_prob: float | None, per_sample: bool = True) -> torch.Tensor:
        """Generator pose conditioning (EG3D Sec. 4.4): with probability swap_prob condition on another
        sample's camera (the batch rolled by one), else on the rendering camera; zeros without GPC."""
        if swap_prob is None:
            return torch.zeros_like(c)
        swapped = torch.roll(c.clone(), 1, 0)
        u = torch.rand([c.shape[0], 1], device=c.device) if per_sample else torch.rand([], device=c.device)
        return torch.where(u < swap_prob, swapped, c)

    def _mapping(self, z, c, swap_prob, update_emas=False, per_sample=True):
        ws = self.G.mapping(z, self._conditioning(c, swap_prob, per_sample), update_emas=update_emas)
        if self.style_mixing_prob > 0:
            with profiled('style_mixing'):
                cutoff = torch.empty([], dtype=torch.int64, device=ws.device).random_(1, ws.shape[1])
                cutoff = torch.where(torch.rand([], device=ws.device) < self.style_mixing_prob, cutoff,
                                     torch.full_like(cutoff, ws.shape[1]))
                mixed = self.G.mapping(torch.randn_like(z), c, update_emas=False)
                layer = torch.arange(ws.shape[1], device=ws.device)[None, :, None]
                ws = torch.where(layer < cutoff, ws, mixed)
        return ws

    def run_G(self, z, c, swap_prob, neural_rendering_resolution, update_emas=False) -> dict:
        ws = self._mapping(z, c, swap_prob, update_emas=update_emas)
        return self.G.synthesis(ws, c, neural_rendering_resolution=neural_rendering_resolution,
                                update_emas=update_emas, **self.synthesis_kwargs)

    def run_D(self, img: dict, c, blur_sigma=0, update_emas=False) -> torch.Tensor:
        """Blur and augment what D sees, writing the results back into `img` (R1 differentiates with
        respect to those tensors, as upstream), then run D."""
        if blur_sigma > 0:
            with profiled('blur'):
                img['image'] = blur(img['image'], blur_sigma)
        if self.augment_pipe is not None:
            with profiled('augment'):
                raw_size = img['image_raw'].shape[2:]
                raw_up = F.interpolate(img['image_raw'], size=img['image'].shape[2:], mode='bilinear',
                                       align_corners=False, antialias=True)
                pair = self.augment_pipe(torch.cat([img['image'], raw_up], dim=1))
                img['image'] = pair[:, :3]
                img['image_raw'] = F.interpolate(pair[:, 3:], size=raw_size, mode='bilinear',
                                                 align_corners=False, antialias=True)
        with profiled('D'):
            return self.D(img, c, update_emas=update_emas)

    def real_images(self, real_img: torch.Tensor, neural_rendering_resolution: int, blur_sigma: float) -> dict:
        """The real pair for dual discrimination: the image and its antialiased downsample to the raw
        resolution (blurred like the fakes' images, since fake raw images are never blurred)."""
        raw = filtered_resizing(real_img, size=neural_rendering_resolution, f=self.resample_filter,
                                filter_mode=self.filter_mode)
        if self.blur_raw_target and blur_sigma > 0:
            raw = blur(raw, blur_sigma)
        return {'image': real_img, 'image_raw': raw}

    # ------------------------------------------------------------------------

    def accumulate_gradients(self, phase, real_img, real_c, gen_z, gen_c, gain, cur_nimg):
        if phase not in PHASES:
            raise ValueError(f'StyleGAN2Loss: unknown phase {phase!r}')
        rk = self.G.rendering_kwargs
        if rk.get('density_reg', 0) == 0:
            phase = {'Greg': None, 'Gboth': 'Gmain'}.get(phase, phase)
        if self.r1_gamma == 0:
            phase = {'Dreg': None, 'Dboth': 'Dmain'}.get(phase, phase)
        if phase is None:
            return
        blur_sigma = self.blur_sigma(cur_nimg)
        swap_prob = self.swap_prob(cur_nimg)
        res = self.neural_rendering_resolution(cur_nimg)
        real = self.real_images(real_img, res, blur_sigma) if phase in ('Dmain', 'Dreg', 'Dboth') else None

        if phase in ('Gmain', 'Gboth'):
            with profiled('Gmain_forward'):
                gen_img = self.run_G(gen_z, gen_c, swap_prob, res)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Gmain = F.softplus(-gen_logits)
                training_stats.report('Loss/G/loss', loss_Gmain)
            with profiled('Gmain_backward'):
                loss_Gmain.mean().mul(gain).backward()

        if phase in ('Greg', 'Gboth'):
            with profiled('Greg'):
                self._density_reg(gen_z, gen_c, swap_prob, gain)

        if phase in ('Dmain', 'Dboth'):
            with profiled('Dgen_forward'):
                gen_img = self.run_G(gen_z, gen_c, swap_prob, res, update_emas=True)
                gen_logits = self.run_D(gen_img, gen_c, blur_sigma=blur_sigma, update_emas=True)
                training_stats.report('Loss/scores/fake', gen_logits)
                training_stats.report('Loss/signs/fake', gen_logits.sign())
                loss_Dgen = F.softplus(gen_logits)
            with profiled('Dgen_backward'):
                loss_Dgen.mean().mul(gain).backward()

        if phase in ('Dmain', 'Dreg', 'Dboth'):
            name = {'Dmain': 'Dreal', 'Dreg': 'Dr1', 'Dboth': 'Dreal_Dr1'}[phase]
            with profiled(name + '_forward'):
                want_r1 = phase in ('Dreg', 'Dboth')
                img = {key: value.detach().requires_grad_(want_r1) for key, value in real.items()}
                real_logits = self.run_D(img, real_c, blur_sigma=blur_sigma)
                training_stats.report('Loss/scores/real', real_logits)
                training_stats.report('Loss/signs/real', real_logits.sign())
                loss_Dreal = 0
                if phase in ('Dmain', 'Dboth'):
                    loss_Dreal = F.softplus(-real_logits)
                    training_stats.report('Loss/D/loss', loss_Dgen + loss_Dreal)
                loss_Dr1 = 0
                if want_r1:
                    with profiled('R1'):
                        keys = ['image', 'image_raw'] if self.dual_discrimination else ['image']
                        grads = torch.autograd.grad(outputs=[real_logits.sum()], inputs=[img[k] for k in keys],
                                                    create_graph=True, only_inputs=True)
                        r1_penalty = sum(g.square().sum([1, 2, 3]) for g in grads)
                    loss_Dr1 = r1_penalty * (self.r1_gamma / 2)
                    training_stats.report('Loss/r1_penalty', r1_penalty)
                    training_stats.report('Loss/D/reg', loss_Dr1)
            with profiled(name + '_backward'):
                (loss_Dreal + loss_Dr1).mean().mul(gain).backward()

    # ------------------------------------------------------------------------

    def _sigma_pairs(self, ws, points, perturbed):
        """Raw densities at `points` and at `perturbed`, in one sample_mixed call."""
        coords = torch.cat([points, perturbed], dim=1)
        sigma = self.G.sample_mixed(coords, torch.randn_like(coords), ws, update_emas=False,
                                    **self.synthesis_kwargs)['sigma']
        half = sigma.shape[1] // 2
        return sigma[:, :half], sigma[:, half:]

    def _density_reg(self, gen_z, gen_c, swap_prob, gain):
        """Density regularisation (EG3D supplement): densities at random points in [-1, 1]^3 should not
        change under a small perturbation (l1); optionally density should not decrease along -z
        (monotonic). One conditioning draw per batch, as upstream."""
        rk = self.G.rendering_kwargs
        reg_type = rk.get('reg_type', 'l1')
        n = gen_z.shape[0]
        box_warp = rk['box_warp']
        if reg_type == 'l1':
            ws = self._mapping(gen_z, gen_c, swap_prob, per_sample=False)
            points = torch.rand((n, 1000, 3), device=gen_z.device) * 2 - 1
            perturbed = points + torch.randn_like(points) * rk['density_reg_p_dist']
            sigma_a, sigma_b = self._sigma_pairs(ws, points, perturbed)
            loss = F.l1_loss(sigma_a, sigma_b) * rk['density_reg']
            loss.mul(gain).backward()
            return
        # Monotonic variants: first the ordering term, then the l1 term with a box-relative step.
        ws = self._mapping(gen_z, gen_c, swap_prob, per_sample=False)
        front = torch.rand((n, 2000, 3), device=gen_z.device) * 2 - 1
        behind = front + torch.tensor([0, 0, -1], device=gen_z.device) * (1 / 256) * box_warp
        sigma_front, sigma_behind = self._sigma_pairs(ws, front, behind)
        if reg_type == 'monotonic-detach':
            sigma_front = sigma_front.detach()
        (F.relu(sigma_front - sigma_behind).mean() * 10).mul(gain).backward()

        ws = self._mapping(gen_z, gen_c, swap_prob, per_sample=False)
        points = torch.rand((n, 1000, 3), device=gen_z.device) * 2 - 1
        perturbed = points + torch.randn_like(points) * (1 / 256) * box_warp
        sigma_a, sigma_b = self._sigma_pairs(ws, points, perturbed)
        (F.l1_loss(sigma_a, sigma_b) * rk['density_reg']).mul(gain).backward()


def lazy_regularization(opt_kwargs: dict, reg_interval: float | None) -> tuple[dict, float]:
    """Adam settings for a lazily regularised network (StyleGAN2 Sec. 3.1): with the regulariser run every
    `reg_interval` minibatches, scale lr by mb_ratio = I / (I + 1) and betas to the power mb_ratio."""
    opt_kwargs = dict(opt_kwargs)
    if 'betas' in opt_kwargs:  # torch >= 2.x's Adam wants both betas as floats (upstream writes [0, 0.99]).
        opt_kwargs['betas'] = [float(beta) for beta in opt_kwargs['betas']]
    if reg_interval is None:
        return opt_kwargs, 1.0
    mb_ratio = reg_interval / (reg_interval + 1)
    opt_kwargs['lr'] = opt_kwargs['lr'] * mb_ratio
    opt_kwargs['betas'] = [beta ** mb_ratio for beta in opt_kwargs['betas']]
    return opt_kwargs, mb_ratio


def ema_beta(batch_size: int, ema_kimg: float, ema_rampup: float | None, cur_nimg: int) -> float:
    """Per-step G_ema decay: half-life ema_kimg * 1000 images, shortened to cur_nimg * ema_rampup
    early in training."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


