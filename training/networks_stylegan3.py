"""StyleGAN3's alias-free generator (Karras et al. 2021, "Alias-Free Generative Adversarial Networks"),
usable on its own and as the tri-plane backbone of training/triplane.py (backbone_arch='stylegan3').

Every feature map is read as a band-limited continuous signal sampled on a grid (Sec. 2): a layer
convolves, upsamples to twice the rate, applies the leaky ReLU there, and low-pass filters back down
(filtered_lrelu, Sec. 3.2), so that new frequencies stay below each layer's cutoff and the network
commutes with translation (and, with radial filters, rotation) of its Fourier-feature input.

Class names, constructor arguments and parameter/buffer names follow upstream StyleGAN3's
networks_stylegan3.py; the code is written from the paper (Sec. 3, App. F) and is not checked against
official StyleGAN3 weights (none are used in EG3D).
"""

from __future__ import annotations

import numpy as np
import scipy.special
import torch

from torch_utils import misc, persistence
from torch_utils.ops import filtered_lrelu
from training import networks_stylegan2

# ----------------------------------------------------------------------------
# Low-pass filter design: Kaiser-windowed sinc (separable) or jinc (radial), App. F.


def kaiser_attenuation(numtaps: int, width: float, fs: float) -> float:
    """Stopband attenuation in dB that a Kaiser-window FIR of `numtaps` taps reaches with a transition
    band `width` Hz wide at sampling rate `fs` (Kaiser's empirical formula, Kaiser 1974)."""
    return 2.285 * (numtaps - 1) * np.pi * (width / (fs / 2)) + 7.95


def kaiser_beta(attenuation: float) -> float:
    """Kaiser window shape parameter for a stopband attenuation in dB (Kaiser 1974)."""
    if attenuation > 50:
        return 0.1102 * (attenuation - 8.7)
    if attenuation >= 21:
        return 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    return 0.0


def design_lowpass_filter(numtaps: int, cutoff: float, width: float, fs: float,
                          radial: bool = False) -> torch.Tensor | None:
    """Windowed-sinc low-pass filter with the -6 dB point at `cutoff` Hz and a transition band `width` Hz
    wide centred on it, for sampling rate `fs`; the Kaiser window is chosen for the most attenuation
    that `numtaps` taps allow (kaiser_attenuation). Separable: 1-D taps [numtaps]. radial: a 2-D jinc
    (the ideal disk filter) under a radial Kaiser window, [numtaps, numtaps]. Unit DC gain. None for
    numtaps == 1 (identity)."""
    if numtaps == 1:
        return None
    assert numtaps > 1 and 0 < cutoff < fs / 2 and width > 0
    f = cutoff / fs                                     # Cutoff in cycles per sample.
    beta = kaiser_beta(kaiser_attenuation(numtaps, width, fs))
    t = np.arange(numtaps) - (numtaps - 1) / 2          # Tap positions, centred.
    if not radial:
        h = 2 * f * np.sinc(2 * f * t) * np.kaiser(numtaps, beta)
    else:
        r = np.hypot(t[:, None], t[None, :])
        # Impulse response of the disk |freq| < f: f J1(2 pi f r) / r, tending to pi f^2 at r = 0.
        jinc = np.where(r > 0, f * scipy.special.j1(2 * np.pi * f * r) / np.maximum(r, 1e-12), np.pi * f * f)
        # A radially symmetric window over the disk inscribed in the support keeps the response isotropic
        # (an outer product of 1-D windows would not).
        radius = numtaps / 2
        window = np.i0(beta * np.sqrt(np.clip(1 - (r / radius) ** 2, 0, 1))) / np.i0(beta) * (r <= radius)
        h = jinc * window
    return torch.as_tensor(h / h.sum(), dtype=torch.float32)

# ----------------------------------------------------------------------------


def modulated_conv2d(
    x,                          # Input activations: [N, C_in, H, W].
    w,                          # Convolution weight: [C_out, C_in, kh, kw].
    s,                          # Per-sample style of each input channel: [N, C_in].
    demodulate      = True,     # Normalise each output channel's weights (StyleGAN2 Eq. 3)?
    padding         = 0,        # Zero padding on every side.
    input_gain      = None,     # Scale of the input (a scalar tensor), applied after demodulation; None = 1.
) -> torch.Tensor:
    """StyleGAN2's weight (de)modulation as one grouped convolution; the input gain (the inverse RMS
    of the layer's input, tracked as an EMA, StyleGAN3 App. F) scales after demodulation so that it
    is not normalised away. The weight arithmetic runs in float32, the convolution in x.dtype."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = w.shape
    misc.assert_shape(x, [None, in_channels, None, None], 'modulated_conv2d: x')
    misc.assert_shape(s, [batch_size, in_channels], 'modulated_conv2d: styles')
    w = w.to(torch.float32).unsqueeze(0) * s.to(torch.float32).reshape(batch_size, 1, in_channels, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    if input_gain is not None:
        w = w * input_gain.to(torch.float32)
    x = x.reshape(1, batch_size * in_channels, *x.shape[2:])
    x = torch.nn.functional.conv2d(x, w.reshape(batch_size * out_channels, in_channels, kh, kw).to(x.dtype),
                                   padding=padding, groups=batch_size)
    return x.reshape(batch_size, out_channels, *x.shape[2:])

# ----------------------------------------------------------------------------


@persistence.persistent_class
class MappingNetwork(networks_stylegan2.MappingNetwork):
    """StyleGAN3's mapping: StyleGAN2's (normalised [z, embed(c)] -> lrelu MLP -> ws, truncation toward
    w_avg) with StyleGAN3's defaults and constructor arguments (2 layers)."""

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality; 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality; 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of ws to output.
        num_layers      = 2,        # Number of mapping layers.
        lr_multiplier   = 0.01,     # Learning-rate multiplier of the mapping layers.
        w_avg_beta      = 0.998,    # Decay of the running average of w used for truncation.
    ):
        super().__init__(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=num_ws, num_layers=num_layers,
                         lr_multiplier=lr_multiplier, w_avg_beta=w_avg_beta)

# ----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    """Fourier features (StyleGAN3 Sec. 3.1, App. F): `channels` sinusoids with frequencies uniform in the
    disk of radius `bandwidth`, sampled at `sampling_rate` on a `size` grid centred on the origin, then
    mixed by a learned linear map. w rotates and translates them (an affine layer initialised to the
    identity); the `transform` buffer (3x3, output -> feature coordinates) is a user transform applied
    first. Image coordinates: the final image spans [-0.5, 0.5]^2, x along width."""

    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        channels,                   # Number of output channels.
        size,                       # Output spatial size: int or [width, height].
        sampling_rate,              # Output sampling rate (samples per unit length).
        bandwidth,                  # Output bandwidth: the largest frequency (cycles per unit length).
    ):
        super().__init__()
        self.w_dim = w_dim
        self.channels = channels
        self.size = np.broadcast_to(np.asarray(size), [2]).astype(int)
        self.sampling_rate = sampling_rate
        self.bandwidth = bandwidth

        angle = torch.rand([channels]) * (2 * np.pi)
        radius = torch.rand([channels]).sqrt() * bandwidth   # sqrt: uniform density over the disk.
        freqs = torch.stack([angle.cos(), angle.sin()], dim=1) * radius[:, None]
        phases = torch.rand([channels]) - 0.5

        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = networks_stylegan2.FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():   # Identity at initialisation: rotation (cos, sin) = (1, 0), translation 0.
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1, 0, 0, 0]))
        self.register_buffer('transform', torch.eye(3, 3))
        self.register_buffer('freqs', freqs)
        self.register_buffer('phases', phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """w [N, w_dim] -> features [N, channels, height, width] (float32)."""
        misc.assert_shape(w, [None, self.w_dim], 'SynthesisInput: w')
        n = w.shape[0]
        t = self.affine(w)                                          # [N, 4]: (cos, sin, tx, ty), unnormalised.
        rot = t[:, :2] / t[:, :2].norm(dim=1, keepdim=True)
        c, s, tx, ty = rot[:, 0], rot[:, 1], t[:, 2], t[:, 3]
        one, zero = torch.ones_like(c), torch.zeros_like(c)
        m_rot = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(n, 3, 3)
        m_tra = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(n, 3, 3)
        m = m_rot @ m_tra @ self.transform.unsqueeze(0)             # Output point p -> feature point m p.

        # sin(2 pi (f . (A p + b) + phi)) = sin(2 pi ((A^T f) . p + f . b + phi)).
        freqs = self.freqs.unsqueeze(0) @ m[:, :2, :2]              # [N, C, 2]
        phases = self.phases.unsqueeze(0) + (self.freqs.unsqueeze(0) @ m[:, :2, 2:]).squeeze(2)  # [N, C]
        # Fade out frequencies that a user transform (scaling) pushes toward the Nyquist rate.
        amplitudes = (1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)).clamp(0, 1)

        width, height = (int(v) for v in self.size)
        xs = (torch.arange(width, device=w.device, dtype=torch.float32) + 0.5 - width / 2) / self.sampling_rate
        ys = (torch.arange(height, device=w.device, dtype=torch.float32) + 0.5 - height / 2) / self.sampling_rate
        arg = (xs.reshape(1, 1, width, 1) * freqs[:, None, None, :, 0] + ys.reshape(1, height, 1, 1)
               * freqs[:, None, None, :, 1] + phases[:, None, None, :])   # [N, H, W, C]
        x = torch.sin(arg * (2 * np.pi)) * amplitudes[:, None, None, :]
        x = x @ (self.weight / np.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2).contiguous()

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim:d}, channels={self.channels:d}, size={[int(v) for v in self.size]}, '
                f'sampling_rate={self.sampling_rate:g}, bandwidth={self.bandwidth:g}')

# ----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated convolution, then filtered_lrelu: upsample to tmp_sampling_rate with a low-pass at the
    input cutoff, bias + leaky ReLU there, low-pass at the output cutoff and decimate to the output
    rate (StyleGAN3 Sec. 3.2, Fig. 4). The ToRGB layer is a linear 1x1 modulated convolution without
    demodulation or resampling."""

    def __init__(self,
        w_dim,                          # Intermediate latent (W) dimensionality.
        is_torgb,                       # Is this the final ToRGB layer?
        is_critically_sampled,          # Does this layer use critical sampling (cutoff = Nyquist)?
        use_fp16,                       # Compute in fp16 (CUDA only)?
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        in_size,                        # Input spatial size: int or [width, height].
        out_size,                       # Output spatial size: int or [width, height].
        in_sampling_rate,               # Input sampling rate (samples per unit length).
        out_sampling_rate,              # Output sampling rate.
        in_cutoff,                      # Input cutoff frequency (fc).
        out_cutoff,                     # Output cutoff frequency.
        in_half_width,                  # Input transition band half-width (fh).
        out_half_width,                 # Output transition band half-width.
        conv_kernel         = 3,        # Convolution kernel size; ignored (1) for ToRGB.
        filter_size         = 6,        # Low-pass filter taps per lower-rate sample (taps = this x factor).
        lrelu_upsampling    = 2,        # The nonlinearity runs at this times the higher of in/out rates.
        use_radial_filters  = False,    # Radially symmetric down filter (rotation equivariance, Sec. 3.3)?
        conv_clamp          = 256,      # Clamp the output to +-X; None = no clamp.
        magnitude_ema_beta  = 0.999,    # Decay of the EMA of the input's mean square (input gain).
    ):
        super().__init__()
        self.w_dim = w_dim
        self.is_torgb = is_torgb
        self.is_critically_sampled = is_critically_sampled
        self.use_fp16 = use_fp16
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.in_size = np.broadcast_to(np.asarray(in_size), [2]).astype(int)
        self.out_size = np.broadcast_to(np.asarray(out_size), [2]).astype(int)
        self.in_sampling_rate = in_sampling_rate
        self.out_sampling_rate = out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.in_cutoff = in_cutoff
        self.out_cutoff = out_cutoff
        self.in_half_width = in_half_width
        self.out_half_width = out_half_width
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        # Parameters.
        self.affine = networks_stylegan2.FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer('magnitude_ema', torch.ones([]))

        # Resampling filters (App. F): taps scale with the rate change; ToRGB does not resample.
        self.up_factor = int(np.rint(self.tmp_sampling_rate / in_sampling_rate))
        self.down_factor = int(np.rint(self.tmp_sampling_rate / out_sampling_rate))
        if self.up_factor * in_sampling_rate != self.tmp_sampling_rate \
                or self.down_factor * out_sampling_rate != self.tmp_sampling_rate:
            raise ValueError(f'SynthesisLayer: sampling rates {in_sampling_rate} -> {out_sampling_rate} are not '
                             f'integer fractions of {self.tmp_sampling_rate}')
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        # Radial down filters in all but the critically sampled layers, whose cutoff is the Nyquist rate
        # of a square grid (Sec. 3.3).
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer('up_filter', design_lowpass_filter(self.up_taps, in_cutoff, in_half_width * 2,
                                                                self.tmp_sampling_rate))
        self.register_buffer('down_filter', design_lowpass_filter(self.down_taps, out_cutoff, out_half_width * 2,
                                                                  self.tmp_sampling_rate, radial=self.down_radial))

        # Padding that maps in_size to out_size with both grids centred on the origin: after the full
        # convolution (in + k - 1 samples) and zero insertion, input sample j sits at up * j; the output
        # centre lands on the input centre when pad_lo = (pad_total + up - 1) / 2 (rounded up when odd).
        pad_total = (self.out_size - 1) * self.down_factor + 1
        pad_total -= (self.in_size + self.conv_kernel - 1) * self.up_factor
        pad_total += self.up_taps + self.down_taps - 2
        pad_lo = (pad_total + self.up_factor) // 2
        pad_hi = pad_total - pad_lo
        self.padding = [int(pad_lo[0]), int(pad_hi[0]), int(pad_lo[1]), int(pad_hi[1])]

        self.act_gain = 1 if is_torgb else np.sqrt(2)
        self.slope = 1 if is_torgb else 0.2

    def forward(self, x, w, noise_mode='random', force_fp32=False, update_emas=False) -> torch.Tensor:
        """x [N, in_channels, in_h, in_w], w [N, w_dim] -> [N, out_channels, out_h, out_w].
        noise_mode is accepted for StyleGAN2's call signature; StyleGAN3 has no noise inputs."""
        _ = noise_mode
        misc.assert_shape(x, [None, self.in_channels, int(self.in_size[1]), int(self.in_size[0])], 'SynthesisLayer: x')
        if update_emas:
            magnitude_cur = x.detach().to(torch.float32).square().mean()
            self.magnitude_ema.copy_(magnitude_cur.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        input_gain = self.magnitude_ema.rsqrt()

        styles = self.affine(w)
        if self.is_torgb:
            styles = styles * (1 / np.sqrt(self.in_channels * self.conv_kernel ** 2))
        use_fp16 = self.use_fp16 and not force_fp32 and x.device.type == 'cuda'
        dtype = torch.float16 if use_fp16 else torch.float32
        x = modulated_conv2d(x.to(dtype), self.weight, styles, demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1, input_gain=input_gain)
        x = filtered_lrelu.filtered_lrelu(x, fu=self.up_filter, fd=self.down_filter, b=self.bias.to(dtype),
                                          up=self.up_factor, down=self.down_factor, padding=self.padding,
                                          gain=self.act_gain, slope=self.slope, clamp=self.conv_clamp)
        misc.assert_shape(x, [None, self.out_channels, int(self.out_size[1]), int(self.out_size[0])],
                          'SynthesisLayer: output')
        return x

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim:d}, is_torgb={self.is_torgb}, is_critically_sampled={self.is_critically_sampled}, '
                f'use_fp16={self.use_fp16}, in_sampling_rate={self.in_sampling_rate:g}, '
                f'out_sampling_rate={self.out_sampling_rate:g}, in_cutoff={self.in_cutoff:g}, '
                f'out_cutoff={self.out_cutoff:g}, in_half_width={self.in_half_width:g}, '
                f'out_half_width={self.out_half_width:g}, in_size={[int(v) for v in self.in_size]}, '
                f'out_size={[int(v) for v in self.out_size]}, in_channels={self.in_channels:d}, '
                f'out_channels={self.out_channels:d}')

# ----------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """Fourier-feature input, num_layers filtered layers and a ToRGB layer (StyleGAN3 App. F, Fig. 4b).
    Cutoffs grow geometrically from first_cutoff to img_resolution / 2 over the first
    num_layers - num_critical layers and stay there; stopbands grow likewise from first_stopband to
    last_stopband_rel x the last cutoff; each layer samples at the smallest power of two >= twice its
    stopband (at most img_resolution) with margin_size extra samples on each side, cropped to the image
    in the last two layers."""

    def __init__(self,
        w_dim,                          # Intermediate latent (W) dimensionality.
        img_resolution,                 # Output image resolution.
        img_channels,                   # Number of output channels.
        channel_base        = 32768,    # Channels: min((channel_base / 2) / cutoff, channel_max).
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_layers          = 14,       # Number of filtered layers, excluding the input and ToRGB.
        num_critical        = 2,        # Number of critically sampled layers at the end.
        first_cutoff        = 2,        # Cutoff of the first layer (f_c,0).
        first_stopband      = 2 ** 2.1, # Stopband of the first layer (f_t,0).
        last_stopband_rel   = 2 ** 0.3, # Stopband of the last layer relative to its cutoff.
        margin_size         = 10,       # Extra samples on each side beyond the image, in the inner layers.
        output_scale        = 0.25,     # Scale of the final output.
        num_fp16_res        = 4,        # Layers with sampling rate * 2^num_fp16_res > img_resolution use fp16 (CUDA).
        **layer_kwargs,                 # Extra SynthesisLayer arguments (conv_kernel, use_radial_filters, ...).
    ):
        super().__init__()
        if num_layers < 1 or not 0 <= num_critical <= num_layers:
            raise ValueError(f'SynthesisNetwork: need num_layers >= 1 and 0 <= num_critical <= num_layers, '
                             f'got {num_layers} and {num_critical}')
        self.w_dim = w_dim
        self.num_ws = num_layers + 2
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.num_layers = num_layers
        self.num_critical = num_critical
        self.margin_size = margin_size
        self.output_scale = output_scale
        self.num_fp16_res = num_fp16_res

        # Per-layer geometry (index num_layers is ToRGB).
        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / max(num_layers - num_critical, 1), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels
        self.cutoffs, self.stopbands, self.sampling_rates = cutoffs, stopbands, sampling_rates
        self.half_widths, self.sizes, self.channels = half_widths, sizes, channels

        self.input = SynthesisInput(w_dim=w_dim, channels=int(channels[0]), size=int(sizes[0]),
                                    sampling_rate=float(sampling_rates[0]), bandwidth=float(cutoffs[0]))
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=(idx == num_layers), is_critically_sampled=(idx >= num_layers - num_critical),
                use_fp16=bool(sampling_rates[idx] * 2 ** num_fp16_res > img_resolution),
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
                in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]), **layer_kwargs)
            name = f'L{idx}_{layer.out_size[0]}_{layer.out_channels}'
            setattr(self, name, layer)
            self.layer_names.append(name)

    def forward(self, ws, **layer_kwargs) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (ws[:, 0] drives the input, ws[:, 1 + i] layer i)
        -> image [N, img_channels, img_resolution, img_resolution] (float32)."""
        with misc.profiled('synthesis'):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim], 'SynthesisNetwork: ws')
            ws = ws.to(torch.float32).unbind(dim=1)
            x = self.input(ws[0])
            for name, w in zip(self.layer_names, ws[1:]):
                x = getattr(self, name)(x, w, **layer_kwargs)
            if self.output_scale != 1:
                x = x * self.output_scale
        return x.to(torch.float32)

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, '
                f'img_channels={self.img_channels:d}, num_layers={self.num_layers:d}, '
                f'num_critical={self.num_critical:d}, margin_size={self.margin_size:d}, '
                f'num_fp16_res={self.num_fp16_res:d}')

# ----------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN3 generator: mapping then alias-free synthesis. As an EG3D backbone its image is the
    tri-plane stack (img_channels = 3 x plane channels)."""

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality; 0 = unconditional.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution.
        img_channels,               # Number of output channels.
        mapping_kwargs  = {},       # Extra MappingNetwork arguments.
        **synthesis_kwargs,         # Extra SynthesisNetwork arguments.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
