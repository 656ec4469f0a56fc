"""ADA, adaptive discriminator augmentation (Karras et al. 2020, "Training Generative Adversarial Networks
with Limited Data", Sec. 2-3 and Appendix B).

Every image D sees passes through AugmentPipe. Each transform is applied to a sample with probability
p times its multiplier (the 'bgc' set used by train.py sets xflip ... saturation to 1), in the paper's
order: geometric (xflip, rotate90, xint, scale, pre-rotation, aniso, post-rotation, xfrac), colour
(brightness, contrast, lumaflip, hue, saturation), image-space filtering, additive noise, cutout.

- Geometric transforms are composed into one 3x3 matrix per sample and executed once (Appendix B):
  reflect-pad, upsample 2x with the sym6 wavelet low-pass, bilinear grid_sample at twice the
  resolution, downsample 2x with the mirrored filter. All linear in the image, so differentiable to
  any order (R1 is taken through augmented reals).
- Colour transforms are one 4x4 matrix per sample acting on RGB; a 6-channel input (the dual
  discriminator's image and upsampled raw image) gets the same matrix on channels 0-2 and 3-5.
- p is a buffer that the training loop tunes with ada_update() (ADA Sec. 3).

Coordinates: pixel (row i, column j) of an H x W image has its centre at x = j + 0.5 - W/2,
y = i + 0.5 - H/2. A rotation by theta acts on (x, y) as [[cos, -sin], [sin, cos]]. Transforms are
recorded as forward maps (input point -> output point); the output samples the input at G @ (x, y, 1),
G being the inverse of their composition.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import persistence
from torch_utils.misc import profiled
from torch_utils.ops import upfirdn2d

# Orthonormal low-pass (decomposition) taps of two Symlet wavelets, as published by PyWavelets (MIT
# licence): pywt.Wavelet('sym2').dec_lo and pywt.Wavelet('sym6').dec_lo. tests/test_augment.py checks
# that they are orthonormal and have the vanishing moments that define them.
SYM2 = [-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025]
SYM6 = [0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
        0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
        -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148]

# Share of an image's power assumed to fall in each filter band (lowest first) when the band gains are
# normalised to keep the expected power: most of a natural image's power is at low frequencies.
IMGFILTER_EXPECTED_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)

_LUMA = np.array([1, 1, 1]) / np.sqrt(3)  # The luma axis v of ADA Appendix B (colour transforms).

# ----------------------------------------------------------------------------
# Filters.


def band_filters(taps, num_bands: int = 4) -> np.ndarray:
    """Zero-phase octave filter bank [num_bands, K] from an orthonormal wavelet low-pass h, lowest band
    first, summing to a unit impulse.

    With L(w) = |H(w)|^2 / 2 (half the autocorrelation of h) and 1 - L its power complement, band k >= 1
    of n covers [pi / 2^(n-k), pi / 2^(n-k-1)] as L(w) L(2w) ... L(2^(n-k-2) w) (1 - L(2^(n-k-1) w)); band 0
    covers [0, pi / 2^(n-1)] as L(w) L(2w) ... L(2^(n-2) w). The sum telescopes to 1. For n = 4 the
    edges are pi/8, pi/4, pi/2, the four bands of ADA Appendix B.
    """
    h = np.asarray(taps, dtype=np.float64)
    lo = np.convolve(h, h[::-1]) / 2
    hi = -lo
    hi[len(hi) // 2] += 1

    def dilate(f, factor):  # f(w) -> f(factor * w): insert factor - 1 zeros between taps.
        out = np.zeros((len(f) - 1) * factor + 1)
        out[::factor] = f
        return out

    bands = []
    for k in range(num_bands):
        lows = num_bands - 1 if k == 0 else num_bands - 1 - k  # Low-pass stages, at dilations 1, 2, 4, ...
        f = np.ones(1)
        for i in range(lows):
            f = np.convolve(f, dilate(lo, 2 ** i))
        if k > 0:
            f = np.convolve(f, dilate(hi, 2 ** lows))
        bands.append(f)
    size = max(len(f) for f in bands)
    bank = np.zeros([num_bands, size])
    for k, f in enumerate(bands):
        start = (size - len(f)) // 2
        bank[k, start: start + len(f)] = f
    return bank

# ----------------------------------------------------------------------------
# Batched 3x3 (2-D homogeneous) and 4x4 (colour) matrices.


def _mat3(rows, ref: torch.Tensor) -> torch.Tensor:
    """[N, 3, 3] from two rows of six scalars-or-[N] entries; the last row is (0, 0, 1)."""
    n = ref.shape[0]
    vals = [torch.as_tensor(v, dtype=ref.dtype, device=ref.device).expand(n) for v in rows]
    zero, one = torch.zeros_like(vals[0]), torch.ones_like(vals[0])
    return torch.stack(vals + [zero, zero, one], dim=1).reshape(n, 3, 3)


def translate2d(tx, ty, ref):
    return _mat3([1, 0, tx, 0, 1, ty], ref)


def scale2d(sx, sy, ref):
    return _mat3([sx, 0, 0, 0, sy, 0], ref)


def rotate2d(cos, sin, ref):
    return _mat3([cos, -sin, 0, sin, cos, 0], ref)


def _color_matrix(m3: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
    """[N, 4, 4] colour transform from a [N, 3, 3] linear part and an optional [N, 3] offset."""
    out = torch.eye(4, dtype=m3.dtype, device=m3.device).repeat(m3.shape[0], 1, 1)
    out[:, :3, :3] = m3
    if offset is not None:
        out[:, :3, 3] = offset
    return out

# ----------------------------------------------------------------------------
# Parameters of one draw.


@dataclasses.dataclass
class AugmentParams:
    """Per-sample parameters of one draw, as forward transforms. A transform not applied to a sample
    holds its identity value. Tensors are [N] unless noted."""
    xflip:       torch.Tensor   # 1: mirror x, 0: keep.
    rotate90:    torch.Tensor   # Quarter turns, 0..3 (int64).
    xint:        torch.Tensor   # [N, 2] integer translation in pixels (x, y).
    scale:       torch.Tensor   # Isotropic scale factor.
    rotate_pre:  torch.Tensor   # Rotation before the anisotropic scaling, radians.
    aniso:       torch.Tensor   # Anisotropic scaling: x by aniso, y by 1 / aniso.
    rotate_post: torch.Tensor   # Rotation after the anisotropic scaling, radians.
    xfrac:       torch.Tensor   # [N, 2] translation in pixels (x, y), fractional.
    brightness:  torch.Tensor   # Added to every colour channel.
    contrast:    torch.Tensor   # Colour channels multiplied by it.
    lumaflip:    torch.Tensor   # 1: reflect the colour along the luma axis, 0: keep.
    hue:         torch.Tensor   # Rotation about the luma axis, radians.
    saturation:  torch.Tensor   # Chroma (the part orthogonal to the luma axis) multiplied by it.
    imgfilter:   torch.Tensor   # [N, 4] gains of the frequency bands, lowest first (before normalising).
    noise:       torch.Tensor   # Standard deviation of the additive Gaussian noise.
    cutout_size: torch.Tensor   # Side of the erased square as a fraction of the image size; 0: none.
    cutout_pos:  torch.Tensor   # [N, 2] its centre (x, y) as a fraction of the image size.

# ----------------------------------------------------------------------------


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """ADA's augmentation pipeline (upstream's class name, constructor arguments and defaults). Each
    multiplier scales the probability p with which its transform is applied to a sample."""

    def __init__(self,
        xflip           = 0,            # Probability multiplier for x-flip.
        rotate90        = 0,            # Probability multiplier for rotations by multiples of 90 degrees.
        xint            = 0,            # Probability multiplier for integer translation.
        xint_max        = 0.125,        # Range of integer translation, as a fraction of the image size.
        scale           = 0,            # Probability multiplier for isotropic scaling.
        rotate          = 0,            # Probability multiplier for arbitrary rotation.
        aniso           = 0,            # Probability multiplier for anisotropic scaling.
        xfrac           = 0,            # Probability multiplier for fractional translation.
        scale_std       = 0.2,          # Log2 standard deviation of isotropic scaling.
        rotate_max      = 1,            # Range of arbitrary rotation, 1 = full circle.
        aniso_std       = 0.2,          # Log2 standard deviation of anisotropic scaling.
        xfrac_std       = 0.125,        # Standard deviation of fractional translation, as a fraction of the image size.
        brightness      = 0,            # Probability multiplier for brightness.
        contrast        = 0,            # Probability multiplier for contrast.
        lumaflip        = 0,            # Probability multiplier for luma flip.
        hue             = 0,            # Probability multiplier for hue rotation.
        saturation      = 0,            # Probability multiplier for saturation.
        brightness_std  = 0.2,          # Standard deviation of brightness (images in [-1, 1]).
        contrast_std    = 0.5,          # Log2 standard deviation of contrast.
        hue_max         = 1,            # Range of hue rotation, 1 = full circle.
        saturation_std  = 1,            # Log2 standard deviation of saturation.
        imgfilter       = 0,            # Probability multiplier for image-space filtering.
        imgfilter_bands = (1, 1, 1, 1), # Probability multipliers for the 4 frequency bands, lowest first.
        imgfilter_std   = 1,            # Log2 standard deviation of the band gains.
        noise           = 0,            # Probability multiplier for additive RGB noise.
        cutout          = 0,            # Probability multiplier for cutout.
        noise_std       = 0.1,          # Standard deviation of the additive noise.
        cutout_size     = 0.5,          # Side of the cutout square, as a fraction of the image size.
    ):
        super().__init__()
        self.register_buffer('p', torch.zeros([]))  # Overall probability; set by the training loop.
        self.xflip, self.rotate90, self.xint, self.xint_max = float(xflip), float(rotate90), float(xint), float(xint_max)
        self.scale, self.rotate, self.aniso, self.xfrac = float(scale), float(rotate), float(aniso), float(xfrac)
        self.scale_std, self.rotate_max = float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        self.imgfilter, self.imgfilter_bands = float(imgfilter), [float(b) for b in imgfilter_bands]
        self.imgfilter_std = float(imgfilter_std)
        self.noise, self.cutout = float(noise), float(cutout)
        self.noise_std, self.cutout_size = float(noise_std), float(cutout_size)
        if len(self.imgfilter_bands) != 4:
            raise ValueError(f'AugmentPipe: imgfilter_bands needs 4 multipliers, got {list(imgfilter_bands)}')

        # Geometric resampling filter: sym6 normalised to sum 1 (upsampling uses it with gain 4 and
        # downsampling mirrored), and its centre of mass in taps, which fixes where samples lie.
        self.register_buffer('Hz_geom', upfirdn2d.setup_filter(SYM6))
        taps = np.asarray(SYM6)
        self.geom_centroid = float((np.arange(len(taps)) * taps).sum() / taps.sum())
        # Image-space filtering: 4 octave bands built from sym2.
        self.register_buffer('Hz_fbank', torch.as_tensor(band_filters(SYM2, 4), dtype=torch.float32))

    # ------------------------------------------------------------------------
    # Drawing parameters.

    def sample_params(self, batch_size: int, height: int, width: int, device=None,
                      generator: torch.Generator | None = None) -> AugmentParams:
        """Draw the per-sample transforms for a batch of height x width images (the distributions of
        ADA Appendix B); `generator` makes a draw reproducible."""
        device = self.p.device if device is None else torch.device(device)
        n = batch_size
        p = self.p.to(device=device, dtype=torch.float32)

        def rand(*shape):
            return torch.rand([n, *shape], device=device, generator=generator)

        def randn(*shape):
            return torch.randn([n, *shape], device=device, generator=generator)

        def chance(prob):  # [N] bool: apply this transform to the sample?
            return rand() < prob

        zeros, ones = torch.zeros([n], device=device), torch.ones([n], device=device)
        size = torch.tensor([width, height], dtype=torch.float32, device=device)
        prm = dict(xflip=zeros, rotate90=zeros.long(), xint=zeros[:, None].repeat(1, 2), scale=ones,
                   rotate_pre=zeros, aniso=ones, rotate_post=zeros, xfrac=zeros[:, None].repeat(1, 2),
                   brightness=zeros, contrast=ones, lumaflip=zeros, hue=zeros, saturation=ones,
                   imgfilter=ones[:, None].repeat(1, 4), noise=zeros, cutout_size=zeros,
                   cutout_pos=torch.full([n, 2], 0.5, device=device))

        # Pixel blitting.
        if self.xflip > 0:
            prm['xflip'] = torch.where(chance(p * self.xflip), torch.floor(rand() * 2), zeros)
        if self.rotate90 > 0:
            prm['rotate90'] = torch.where(chance(p * self.rotate90), torch.floor(rand() * 4), zeros).long()
        if self.xint > 0:
            t = torch.round((rand(2) * 2 - 1) * self.xint_max * size)
            prm['xint'] = torch.where(chance(p * self.xint)[:, None], t, prm['xint'])

        # General geometric transforms. The two rotations share the probability so that at least one
        # of them happens with probability p * rotate.
        if self.scale > 0:
            prm['scale'] = torch.where(chance(p * self.scale), torch.exp2(randn() * self.scale_std), ones)
        p_rot = 1 - torch.sqrt(1 - (p * self.rotate).clamp(0, 1))
        if self.rotate > 0:
            prm['rotate_pre'] = torch.where(chance(p_rot), (rand() * 2 - 1) * math.pi * self.rotate_max, zeros)
        if self.aniso > 0:
            prm['aniso'] = torch.where(chance(p * self.aniso), torch.exp2(randn() * self.aniso_std), ones)
        if self.rotate > 0:
            prm['rotate_post'] = torch.where(chance(p_rot), (rand() * 2 - 1) * math.pi * self.rotate_max, zeros)
        if self.xfrac > 0:
            t = randn(2) * self.xfrac_std * size
            prm['xfrac'] = torch.where(chance(p * self.xfrac)[:, None], t, prm['xfrac'])

        # Colour transforms.
        if self.brightness > 0:
            prm['brightness'] = torch.where(chance(p * self.brightness), randn() * self.brightness_std, zeros)
        if self.contrast > 0:
            prm['contrast'] = torch.where(chance(p * self.contrast), torch.exp2(randn() * self.contrast_std), ones)
        if self.lumaflip > 0:
            prm['lumaflip'] = torch.where(chance(p * self.lumaflip), torch.floor(rand() * 2), zeros)
        if self.hue > 0:
            prm['hue'] = torch.where(chance(p * self.hue), (rand() * 2 - 1) * math.pi * self.hue_max, zeros)
        if self.saturation > 0:
            prm['saturation'] = torch.where(chance(p * self.saturation), torch.exp2(randn() * self.saturation_std), ones)

        # Image-space filtering, noise, cutout.
        if self.imgfilter > 0:
            bands = torch.tensor(self.imgfilter_bands, device=device)
            on = rand(4) < p * self.imgfilter * bands
            prm['imgfilter'] = torch.where(on, torch.exp2(randn(4) * self.imgfilter_std), prm['imgfilter'])
        if self.noise > 0:
            prm['noise'] = torch.where(chance(p * self.noise), randn().abs() * self.noise_std, zeros)
        if self.cutout > 0:
            prm['cutout_size'] = torch.where(chance(p * self.cutout), torch.full_like(zeros, self.cutout_size), zeros)
            prm['cutout_pos'] = rand(2)
        return AugmentParams(**prm)

    # ------------------------------------------------------------------------
    # From parameters to matrices.

    @staticmethod
    def geometric_matrix(prm: AugmentParams) -> torch.Tensor:
        """[N, 3, 3] sampling matrix: output pixel coordinates -> input coordinates, i.e. the inverse of
        the forward transforms composed in order (first xflip, last xfrac)."""
        ref = prm.scale
        quarter_cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=ref.device)  # Exact for quarter turns.
        quarter_sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=ref.device)
        k = prm.rotate90 % 4
        inverses = [
            scale2d(1 - 2 * prm.xflip, 1, ref),
            rotate2d(quarter_cos[k], -quarter_sin[k], ref),
            translate2d(-prm.xint[:, 0], -prm.xint[:, 1], ref),
            scale2d(1 / prm.scale, 1 / prm.scale, ref),
            rotate2d(torch.cos(prm.rotate_pre), -torch.sin(prm.rotate_pre), ref),
            scale2d(1 / prm.aniso, prm.aniso, ref),
            rotate2d(torch.cos(prm.rotate_post), -torch.sin(prm.rotate_post), ref),
            translate2d(-prm.xfrac[:, 0], -prm.xfrac[:, 1], ref),
        ]
        G = inverses[0]
        for m in inverses[1:]:
            G = G @ m
        return G

    @staticmethod
    def color_matrix(prm: AugmentParams) -> torch.Tensor:
        """[N, 4, 4] colour transform acting on (r, g, b, 1): brightness first, saturation last."""
        ref = prm.brightness
        eye = torch.eye(3, device=ref.device)
        v = _LUMA
        vv = torch.tensor(np.outer(v, v), dtype=torch.float32, device=ref.device)
        cross = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float32,
                             device=ref.device)  # cross @ a = v x a.
        c, s = torch.cos(prm.hue)[:, None, None], torch.sin(prm.hue)[:, None, None]
        forwards = [
            _color_matrix(eye.expand(len(ref), 3, 3), prm.brightness[:, None].expand(-1, 3)),
            _color_matrix(eye * prm.contrast[:, None, None]),
            _color_matrix(eye - 2 * vv * prm.lumaflip[:, None, None]),
            _color_matrix(vv + (eye - vv) * c + cross * s),  # Rodrigues' rotation about v.
            _color_matrix(vv + (eye - vv) * prm.saturation[:, None, None]),
        ]
        C = forwards[0]
        for m in forwards[1:]:
            C = m @ C
        return C

    # ------------------------------------------------------------------------
    # Applying a draw.

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Augment [N, C, H, W] images in [-1, 1] (C = 3, or 6 for the dual discriminator) with a fresh draw."""
        _check_images(images)
        if float(self.p) == 0:  # ADA starts at p = 0: nothing to draw.
            return images
        prm = self.sample_params(images.shape[0], images.shape[2], images.shape[3], device=images.device)
        return self.apply(images, prm)

    def apply(self, images: torch.Tensor, prm: AugmentParams) -> torch.Tensor:
        """Apply a given draw: geometric, colour, filtering, noise, cutout (skipping stages that leave
        every sample unchanged, so p = 0 returns the input exactly)."""
        _check_images(images)
        n = images.shape[0]
        G = self.geometric_matrix(prm)
        C = self.color_matrix(prm)
        eye3, eye4 = torch.eye(3, device=G.device), torch.eye(4, device=C.device)
        geom_id = (G == eye3).flatten(1).all(1)
        color_id = (C == eye4).flatten(1).all(1)
        todo = torch.stack([~geom_id.all(), ~color_id.all(), (prm.imgfilter != 1).any(),
                            (prm.noise != 0).any(), (prm.cutout_size != 0).any()]).tolist()
        x = images
        if todo[0]:
            with profiled('augment_geom'):
                warped = warp_affine(x, G.to(x.dtype), self.Hz_geom.to(x.dtype), self.geom_centroid)
                x = torch.where(geom_id.reshape(n, 1, 1, 1), x, warped)  # Untouched samples stay exact.
        if todo[1]:
            with profiled('augment_color'):
                x = apply_color_matrix(x, C.to(x.dtype))
        if todo[2]:
            with profiled('augment_filter'):
                x = self._apply_imgfilter(x, prm.imgfilter.to(x.dtype))
        if todo[3]:
            x = x + torch.randn_like(x) * prm.noise.to(x.dtype).reshape(n, 1, 1, 1)
        if todo[4]:
            x = x * _cutout_mask(x, prm.cutout_size, prm.cutout_pos)
        return x

    def _apply_imgfilter(self, x: torch.Tensor, gains: torch.Tensor) -> torch.Tensor:
        """Amplify or weaken each frequency band by its gain, normalised so that an image whose power
        splits over the bands as IMGFILTER_EXPECTED_POWER keeps its expected power. The per-sample 1-D
        filter sum_k g_k band_k is applied along x, then y."""
        n, c, h, w = x.shape
        expected = torch.tensor(IMGFILTER_EXPECTED_POWER, dtype=x.dtype, device=x.device)
        gains = gains / (gains.square() * expected).sum(1, keepdim=True).sqrt()
        taps = gains @ self.Hz_fbank.to(x.dtype)  # [N, K]
        k = taps.shape[1]
        weight = taps.repeat_interleave(c, dim=0)[:, None, None, :]  # [N*C, 1, 1, K]: zero-phase, no flip needed.
        y = _reflect_pad(x, [k // 2, k // 2, k // 2, k // 2]).reshape(1, n * c, h + k - 1, w + k - 1)
        y = F.conv2d(y, weight, groups=n * c)
        y = F.conv2d(y, weight.transpose(2, 3), groups=n * c)
        return y.reshape(n, c, h, w)

# ----------------------------------------------------------------------------
# The stages.


def _check_images(images) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        shape = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f'AugmentPipe: expected a floating-point [N, C, H, W] image batch, got {shape}')


def _reflect_pad(x: torch.Tensor, pad) -> torch.Tensor:
    """Mirror padding [left, right, top, bottom] of any size (repeated reflections when a side needs
    more than the image holds)."""
    left, right, top, bottom = pad
    if (left or right or top or bottom) and min(x.shape[2:]) < 2:
        raise ValueError(f'AugmentPipe: cannot mirror-pad images of size {list(x.shape[2:])}')
    while left or right or top or bottom:
        h, w = x.shape[2:]
        step = [min(left, w - 1), min(right, w - 1), min(top, h - 1), min(bottom, h - 1)]
        x = F.pad(x, step, mode='reflect')
        left, right, top, bottom = (a - b for a, b in zip([left, right, top, bottom], step))
    return x


def warp_affine(x: torch.Tensor, G: torch.Tensor, f: torch.Tensor, centroid: float,
                max_pad: float = 1.0) -> torch.Tensor:
    """out(s) = x(G s) for [N, 3, 3] sampling matrices G in centred pixel coordinates (ADA Appendix B):
    reflect-pad x just enough, upsample 2x with the low-pass f, sample bilinearly on a 2x grid,
    downsample 2x with f mirrored (so up and down together are zero-phase).

    f: 1-D taps summing to 1 whose centre of mass is `centroid` taps; the sample positions of both
    resampling steps are placed by it, which keeps an asymmetric filter such as sym6 from shifting the
    image. Padding beyond max_pad image sizes per side is replaced by zeros.
    """
    n, c, h, w = x.shape
    taps = f.shape[0]
    hv, wv = 2 * h + taps - 2, 2 * w + taps - 2   # 2x grid: the downsampling then gives exactly h x w.
    e = ((taps - 1) / 2 - centroid) / 2           # Offset of the 2x grid that centres the downsampling.

    # Output coordinates of the 2x grid's corner samples, and where G sends them.
    sx, sy = (wv - 1) / 4, (hv - 1) / 4
    corners = torch.tensor([[e - sx, e - sy, 1], [e + sx, e - sy, 1], [e - sx, e + sy, 1], [e + sx, e + sy, 1]],
                           dtype=torch.float64)
    u = (G.detach().double().cpu() @ corners.t())[:, :2]  # [N, 2, 4]
    lo, hi = u.amin(dim=(0, 2)).tolist(), u.amax(dim=(0, 2)).tolist()

    # Padding so that every sample falls inside the valid part of the upsampled image.
    def pads(size, lo, hi):
        p0 = math.ceil((taps - 1 - centroid) / 2 + 0.5 - size / 2 - lo)
        p1 = math.ceil(hi - size / 2 + centroid / 2)
        cap = int(max_pad * size)
        return min(max(p0, 0), cap), min(max(p1, 0), cap)
    px0, px1 = pads(w, lo[0], hi[0])
    py0, py1 = pads(h, lo[1], hi[1])
    x = _reflect_pad(x, [px0, px1, py0, py1])
    x = upfirdn2d.upfirdn2d(x, f, up=2, gain=4)   # Valid part only: no padding.
    hu, wu = x.shape[2:]

    # Normalised grid coordinates (align_corners=False) of the 2x output grid -> input coordinates ->
    # normalised coordinates of the upsampled image, as one affine map per sample.
    out_to_s = torch.tensor([[wv / 4, 0, e], [0, hv / 4, e], [0, 0, 1]], dtype=G.dtype, device=G.device)
    u_to_in = torch.tensor([[4 / wu, 0, (4 * px0 + 2 * w - 2 * taps + 2 * centroid + 1) / wu - 1],
                            [0, 4 / hu, (4 * py0 + 2 * h - 2 * taps + 2 * centroid + 1) / hu - 1],
                            [0, 0, 1]], dtype=G.dtype, device=G.device)
    theta = (u_to_in @ G @ out_to_s)[:, :2, :]
    grid = F.affine_grid(theta, [n, c, hv, wv], align_corners=False)
    x = F.grid_sample(x, grid, mode='bilinear', padding_mode='zeros', align_corners=False)
    return upfirdn2d.upfirdn2d(x, f, down=2, flip_filter=True)


def apply_color_matrix(x: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """x' = C [x; 1] per sample, on every group of 3 channels (RGB, or both halves of the dual
    discriminator's 6 channels); a 1-channel image is treated as grey RGB and mapped to the mean."""
    n, ch, h, w = x.shape
    if ch % 3 == 0:
        y = x.reshape(n, ch // 3, 3, h * w)
        y = C[:, None, :3, :3] @ y + C[:, None, :3, 3:]
        return y.reshape(n, ch, h, w)
    if ch == 1:
        gain = C[:, :3, :3].sum(2).mean(1).reshape(n, 1, 1, 1)
        return x * gain + C[:, :3, 3].mean(1).reshape(n, 1, 1, 1)
    raise ValueError(f'AugmentPipe: colour transforms need 1 or a multiple of 3 channels, got {ch}')


def _cutout_mask(x: torch.Tensor, size: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """[N, 1, H, W] mask, 0 inside each sample's square (centre pos, side size, as fractions)."""
    n, _, h, w = x.shape
    cx = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
    cy = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
    size, pos = size.to(x.dtype).reshape(n, 1, 1, 1), pos.to(x.dtype)
    inside_x = (cx.reshape(1, 1, 1, w) - pos[:, 0].reshape(n, 1, 1, 1)).abs() < size / 2
    inside_y = (cy.reshape(1, 1, h, 1) - pos[:, 1].reshape(n, 1, 1, 1)).abs() < size / 2
    return (~(inside_x & inside_y)).to(x.dtype)

# ----------------------------------------------------------------------------


def ada_update(p: torch.Tensor, mean_sign: float, ada_target: float, batch_size: int, ada_interval: int,
               ada_kimg: float) -> None:
    """ADA's p update (Sec. 3): every ada_interval iterations, move p in place by
    sign(E[sign(D(real))] - ada_target) * batch_size * ada_interval / (ada_kimg * 1000), so that p could
    go from 0 to 1 in ada_kimg thousand images; never below 0. A NaN mean (no real images seen since
    the last update) leaves p unchanged."""
    if ada_kimg <= 0 or batch_size <= 0 or ada_interval <= 0:
        raise ValueError(f'ada_update: ada_kimg, batch_size and ada_interval must be positive, got '
                         f'{ada_kimg}, {batch_size}, {ada_interval}')
    if math.isnan(mean_sign):
        return
    adjust = float(np.sign(mean_sign - ada_target)) * batch_size * ada_interval / (ada_kimg * 1000)
    with torch.no_grad():
        p.copy_((p + adjust).clamp(min=0))
