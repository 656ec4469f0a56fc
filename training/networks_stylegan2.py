"""StyleGAN2 mapping, synthesis and discriminator networks (Karras et al. 2020, "Analyzing and Improving
the Image Quality of StyleGAN"), parameter-compatible with the official EG3D checkpoints.

EG3D builds on these: the tri-plane backbone is a Generator with 96 output channels, the
super-resolution modules are SynthesisBlocks, and the dual discriminator is made of DiscriminatorBlocks,
a MappingNetwork for the camera and a DiscriminatorEpilogue. Parameter names, shapes, initialisation,
runtime weight gains (the equalized learning rate, ProGAN Sec. 4.1) and the order of operations follow
upstream so that official weights reproduce official outputs.

fp16: blocks flagged use_fp16 compute in float16 on CUDA only; on other devices they run in float32.
"""

from __future__ import annotations

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import _impl, bias_act, conv2d_resample, fma, upfirdn2d, upfirdn2d_nhwc, winograd

# ----------------------------------------------------------------------------
# Functions.


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale x to unit mean square along `dim` (StyleGAN's pixel norm on z and the c embedding)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


FUSE_SINGLE_SAMPLE_ON_CPU = True  # See modulated_conv2d.


def modulated_conv2d(
    x,                          # Input activations: [N, C_in, H, W].
    weight,                     # Convolution weight: [C_out, C_in, kh, kw].
    styles,                     # Per-sample scale of each input channel: [N, C_in].
    noise           = None,     # Added after demodulation: broadcastable to [N, C_out, H', W'], or None.
    up              = 1,        # Integer upsampling factor.
    down            = 1,        # Integer downsampling factor.
    padding         = 0,        # Padding in the upsampled image's pixels.
    resample_filter = None,     # FIR filter for resampling (upfirdn2d.setup_filter), or None.
    demodulate      = True,     # Normalise each output channel's weights (StyleGAN2 Eq. 3)?
    flip_weight     = True,     # True: correlation (torch's conv2d); False: true convolution.
    fused_modconv   = True,     # One grouped convolution per batch instead of scaling activations?
) -> torch.Tensor:
    """Weight modulation and demodulation, StyleGAN2 Sec. 2.2: w'_ijk = s_i w_ijk, then
    w''_ijk = w'_ijk / sqrt(sum_ik w'_ijk^2 + 1e-8) (Eq. 1 and 3)."""
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw], 'modulated_conv2d: weight')
    misc.assert_shape(x, [None, in_channels, None, None], 'modulated_conv2d: x')
    misc.assert_shape(styles, [batch_size, in_channels], 'modulated_conv2d: styles')

    # fp16: divide out the largest magnitudes first, so that sum(w'^2) cannot overflow. Demodulation
    # removes the scale again.
    if x.dtype == torch.float16 and demodulate:
        weight = weight * (1 / np.sqrt(in_channels * kh * kw) / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)

    # A batch of one on the CPU: the fused path is one plain convolution with the modulated weight, and
    # the non-fused one only adds passes over the activations (x * styles, the output scaling, and
    # their gradients). Same result up to rounding.
    if not fused_modconv and batch_size == 1 and x.device.type == 'cpu' and FUSE_SINGLE_SAMPLE_ON_CPU:
        fused_modconv = True

    # Fused 3x3 without resampling on the CPU: Winograd F(4x4, 3x3), where it pays, with the modulation
    # applied to the transformed kernel; the demodulation coefficients from the squared kernel's sums
    # (sum_i s_i^2 sum_k w_ik^2: the same as Eq. 3 up to rounding).
    if fused_modconv and (kh, kw, up, down, padding) == (3, 3, 1, 1, 1) and winograd.applicable(x, weight):
        wt = (weight if flip_weight else weight.flip([2, 3])).to(x.dtype)
        s = styles.to(x.dtype)
        dcoefs = (s.square() @ wt.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt() if demodulate else None
        x = winograd.conv3x3_modulated(x, wt, s, dcoefs)
        return x.add_(noise) if noise is not None else x

    w = None
    dcoefs = None
    if demodulate or fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch_size, 1, -1, 1, 1)  # [N, C_out, C_in, kh, kw]
    if demodulate:
        dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # [N, C_out]
    if demodulate and fused_modconv:
        w = w * dcoefs.reshape(batch_size, -1, 1, 1, 1)

    # Non-fused: scale the activations, convolve with the shared weight, scale the output channels.
    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up, down=down,
                                            padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            x = fma.fma(x, dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        elif demodulate:
            x = x * dcoefs.to(x.dtype).reshape(batch_size, -1, 1, 1)
        elif noise is not None:
            x = x.add_(noise.to(x.dtype))
        return x

    # Fused 1x1 (ToRGB): a batched matrix product [N, C_out, C_in] @ [N, C_in, H*W]; the grouped 1x1
    # convolution it replaces runs group by group on the CPU, then concatenates.
    if kh == 1 and kw == 1 and up == 1 and down == 1 and padding == 0:
        n, _, h, wd = x.shape
        x = torch.bmm(w.reshape(batch_size, out_channels, in_channels).to(x.dtype), x.reshape(n, in_channels, h * wd))
        x = x.reshape(batch_size, out_channels, h, wd)
        return x.add_(noise) if noise is not None else x

    # Fused: the batch becomes the groups of one grouped convolution.
    x = x.reshape(1, -1, *x.shape[2:])
    w = w.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=resample_filter, up=up, down=down,
                                        padding=padding, groups=batch_size, flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    if noise is not None:
        x = x.add_(noise)
    return x

# ----------------------------------------------------------------------------
# Layers with equalized learning rate: weights stored at unit variance, scaled at run time.


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """y = act(x W^T * lr/sqrt(in) + b * lr); stored weights are N(0, 1/lr^2) (ProGAN Sec. 4.1)."""

    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Learn a bias?
        activation      = 'linear', # Activation name (bias_act.activation_funcs), at its default gain.
        lr_multiplier   = 1,        # Learning-rate multiplier (0.01 in the mapping network).
        bias_init       = 0,        # Initial bias value (1 for the style affines).
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def extra_repr(self) -> str:
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation}'


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalized learning rate, optional FIR up/downsampling, bias, activation, clamp."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        kernel_size,                    # Width and height of the kernel.
        bias            = True,         # Learn a bias?
        activation      = 'linear',     # Activation name, applied at its default gain.
        up              = 1,            # Integer upsampling factor.
        down            = 1,            # Integer downsampling factor.
        resample_filter = [1, 3, 3, 1], # Low-pass filter taps for resampling.
        conv_clamp      = None,         # Clamp the output to +-X (scaled by the gain); None = no clamp.
        channels_last   = False,        # Expect channels_last input and keep weights channels_last?
        trainable       = True,         # False stores weight and bias as buffers (Freeze-D).
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.up = up
        self.down = down
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        weight = torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x: torch.Tensor, gain: float = 1) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias.to(x.dtype) if self.bias is not None else None
        x = conv2d_resample.conv2d_resample(x=x, w=w.to(x.dtype), f=self.resample_filter, up=self.up, down=self.down,
                                            padding=self.padding, flip_weight=(self.up == 1))
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, b, act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, activation={self.activation}, '
                f'up={self.up}, down={self.down}')

# ----------------------------------------------------------------------------
# Mapping network: z (and the label c) to the intermediate latent w (StyleGAN Sec. 2).


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """MLP from normalised [z, embed(c)] to w, broadcast to num_ws copies, with truncation toward w_avg."""

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality; 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality; 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of ws to output; None = output [N, w_dim] without broadcast.
        num_layers      = 8,        # Number of mapping layers.
        embed_features  = None,     # Label embedding size; None = w_dim.
        layer_features  = None,     # Hidden layer size; None = w_dim.
        activation      = 'lrelu',  # Activation of the mapping layers.
        lr_multiplier   = 0.01,     # Learning-rate multiplier of the mapping layers.
        w_avg_beta      = 0.998,    # Decay of the running average of w; None = do not track w_avg.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features_list = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features_list[idx], features_list[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False) -> torch.Tensor:
        """ws [N, num_ws, w_dim] (or w [N, w_dim] when num_ws is None). truncation_psi: w <- w_avg +
        psi (w - w_avg) on the first `truncation_cutoff` ws (all when None). update_emas: move w_avg
        toward this batch's mean w."""
        with misc.profiled('mapping'):
            x = None
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim], 'MappingNetwork: z')
                x = normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim], 'MappingNetwork: c')
                y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
                x = torch.cat([x, y], dim=1) if x is not None else y

            for idx in range(self.num_layers):
                x = getattr(self, f'fc{idx}')(x)

            if update_emas and self.w_avg_beta is not None:
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

            if truncation_psi != 1:
                if self.w_avg_beta is None:
                    raise ValueError('MappingNetwork: truncation needs w_avg, but this network has w_avg_beta=None')
                if self.num_ws is None or truncation_cutoff is None:
                    x = self.w_avg.lerp(x, truncation_psi)
                else:
                    x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self) -> str:
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}'

# ----------------------------------------------------------------------------
# Synthesis network (StyleGAN2 Fig. 2 and 7).


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution, then per-pixel noise, bias and activation (StyleGAN2 Fig. 2c)."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Output resolution (after upsampling).
        kernel_size     = 3,            # Convolution kernel size.
        up              = 1,            # Integer upsampling factor.
        use_noise       = True,         # Add per-pixel noise?
        activation      = 'lrelu',      # Activation name, applied at its default gain.
        resample_filter = [1, 3, 3, 1], # Low-pass filter taps for upsampling.
        conv_clamp      = None,         # Clamp the output to +-X (scaled by the gain); None = no clamp.
        channels_last   = False,        # Keep the weight channels_last?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                         .to(memory_format=memory_format))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1) -> torch.Tensor:
        """noise_mode: 'random' (fresh per call), 'const' (the noise_const buffer) or 'none'."""
        if noise_mode not in ('random', 'const', 'none'):
            raise ValueError(f"SynthesisLayer: noise_mode must be 'random', 'const' or 'none', got {noise_mode!r}")
        in_resolution = self.resolution // self.up
        misc.assert_shape(x, [None, self.in_channels, in_resolution, in_resolution], 'SynthesisLayer: x')
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        if self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up, padding=self.padding,
                             resample_filter=self.resample_filter, flip_weight=(self.up == 1),
                             fused_modconv=fused_modconv)
        act_gain = self.act_gain * gain
        act_clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=act_clamp)

    def extra_repr(self) -> str:
        return (f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, '
                f'resolution={self.resolution:d}, up={self.up}, activation={self.activation}')


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution to image channels, without demodulation (StyleGAN2 Fig. 7)."""

    def __init__(self,
        in_channels,                # Number of input channels.
        out_channels,               # Number of image channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        kernel_size     = 1,        # Convolution kernel size.
        conv_clamp      = None,     # Clamp the output to +-X; None = no clamp.
        channels_last   = False,    # Keep the weight channels_last?
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size])
                                         .to(memory_format=memory_format))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels * (kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True, add_to=None) -> torch.Tensor:
        """The image channels of x; add_to: an image to add them to (in place when that is faster), as the
        skip architecture does (the result is then that sum)."""
        styles = self.affine(w) * self.weight_gain
        if x.device.type == 'cpu' and self.weight.shape[2:] == (1, 1):
            return self._forward_bmm(x, styles, add_to)
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=fused_modconv)
        y = bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)
        if add_to is None:
            return y
        return add_to.add_(y.to(add_to.dtype, memory_format=torch.contiguous_format))

    def _forward_bmm(self, x, styles, add_to):
        """CPU: one batched product per image, [C_out, C_in] @ [C_in, H*W] (the grouped 1x1 convolution
        runs group by group on the CPU). For the skip image, which has more channels than x (the
        tri-plane backbone's 96), the bias rides along as an extra input column, and when the clamp
        provably cannot act (|y| <= sum_i |w_i| max|x_i| + |b| below it) the product accumulates straight
        into add_to: one pass over the image instead of three (product, bias_act, add). A channels-last
        add_to (SynthesisBlock's wide skip images) always takes that path and stays channels-last."""
        if add_to is None or (self.in_channels >= self.out_channels and not upfirdn2d_nhwc.is_nhwc(add_to)):
            # modulated_conv2d's fused 1x1 path is that batched product.
            y = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False, fused_modconv=True)
            y = bias_act.bias_act(y, self.bias.to(y.dtype), clamp=self.conv_clamp)
            return y if add_to is None else add_to.add_(y.to(add_to.dtype))
        n, _, h, wd = x.shape
        wm = self.weight.reshape(1, self.out_channels, self.in_channels) * styles.unsqueeze(1)  # [N, C_out, C_in]
        xf = x.reshape(n, self.in_channels, h * wd)

        dtype = add_to.dtype
        xf = xf.to(dtype)
        wa = torch.cat([wm, self.bias.reshape(1, -1, 1).expand(n, -1, 1)], dim=2).to(dtype)
        xa = torch.cat([xf, xf.new_ones([n, 1, h * wd])], dim=1)
        clamp = self.conv_clamp
        if clamp is not None:
            with torch.no_grad():
                lo, hi = torch.aminmax(xf, dim=2)
                xmax = torch.cat([torch.maximum(hi, -lo), hi.new_ones([n, 1])], dim=1).unsqueeze(2)
                if (wa.abs() @ xmax).max().item() * (1 + 1e-4) < clamp:
                    clamp = None
        if upfirdn2d_nhwc.is_nhwc(add_to):
            return self._accumulate_nhwc(wa, xa, add_to, clamp)
        if clamp is None and add_to.is_contiguous():
            acc = add_to.reshape(n, self.out_channels, h * wd)
            if torch.is_grad_enabled() and (acc.requires_grad or wa.requires_grad or xa.requires_grad):
                acc = torch.baddbmm(acc, wa, xa)  # In place on a view would cost a CopySlices in backward.
            else:
                acc = acc.baddbmm_(wa, xa)
            return acc.reshape(add_to.shape)
        y = torch.bmm(wa, xa).reshape(n, self.out_channels, h, wd)
        if clamp is not None:
            y = y.clamp(-clamp, clamp) if torch.is_grad_enabled() and y.requires_grad else y.clamp_(-clamp, clamp)
        return add_to.add_(y)

    @staticmethod
    def _accumulate_nhwc(wa, xa, add_to, clamp):
        """add_to + clamp(wa @ xa) for a channels-last add_to [N, C_out, H, W] (the tri-plane skip image
        on the CPU): the same product transposed, [H*W, C_in + 1] @ [C_in + 1, C_out] per image, whose
        rows are add_to's pixels; the result stays channels-last."""
        n, c, h, wd = add_to.shape
        a, b = xa.transpose(1, 2), wa.transpose(1, 2)                    # [N, H*W, C_in + 1], [N, C_in + 1, C_out]
        acc = add_to.permute(0, 2, 3, 1).reshape(n, h * wd, c)           # A view: add_to is channels-last.
        if clamp is None:
            if torch.is_grad_enabled() and (acc.requires_grad or a.requires_grad or b.requires_grad):
                acc = torch.baddbmm(acc, a, b)
            else:
                acc = acc.baddbmm_(a, b)
        else:
            y = torch.bmm(a, b)
            y = y.clamp(-clamp, clamp) if torch.is_grad_enabled() and y.requires_grad else y.clamp_(-clamp, clamp)
            acc = acc + y if torch.is_grad_enabled() and (acc.requires_grad or y.requires_grad) else acc.add_(y)
        return acc.view(n, h, wd, c).permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}'


SKIP_CHANNELS_LAST_MIN = 16  # Skip images with at least this many channels are channels-last on the CPU.


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: [const | conv0 (up 2x)], conv1, and ToRGB.

    Consumes num_conv + num_torgb ws; img = upsample2d(img) + torgb(x) ('skip', StyleGAN2 Fig. 7b).
    """

    def __init__(self,
        in_channels,                            # Input channels; 0 = the first block (learned constant).
        out_channels,                           # Output channels.
        w_dim,                                  # Intermediate latent (W) dimensionality.
        resolution,                             # Resolution of this block.
        img_channels,                           # Number of output image channels.
        is_last,                                # Is this the last block?
        architecture            = 'skip',       # 'orig', 'skip' or 'resnet'.
        resample_filter         = [1, 3, 3, 1], # Low-pass filter taps for upsampling.
        conv_clamp              = 256,          # Clamp conv outputs to +-X; None = no clamp.
        use_fp16                = False,        # Compute in float16 (on CUDA only)?
        fp16_channels_last      = False,        # Use channels_last memory format with fp16?
        fused_modconv_default   = True,         # Default fused_modconv: True, False or 'inference_only'.
        **layer_kwargs,                         # Extra SynthesisLayer arguments.
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"SynthesisBlock: architecture must be 'orig', 'skip' or 'resnet', got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = 0
        self.num_torgb = 0

        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        if in_channels != 0:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp,
                                        channels_last=self.channels_last, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, channels_last=self.channels_last, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        """x: [N, C_in, res/2, res/2] or None (first block); img: [N, img_channels, res/2, res/2] or
        None; ws: [N, num_conv + num_torgb, w_dim]. Returns (x, img) at this resolution; img is float32."""
        _ = update_emas  # Accepted for a uniform interface; nothing here tracks averages.
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim],
                          f'SynthesisBlock b{self.resolution}: ws')
        w_iter = iter(ws.unbind(dim=1))
        if ws.device.type != 'cuda':
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format
        if fused_modconv is None:
            fused_modconv = self.fused_modconv_default
        if fused_modconv == 'inference_only':
            fused_modconv = (not self.training)

        # Input.
        if self.in_channels == 0:
            x = self.const.to(dtype=dtype, memory_format=memory_format)
            x = x.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2],
                              f'SynthesisBlock b{self.resolution}: x')
            x = x.to(dtype=dtype, memory_format=memory_format)

        # Main layers.
        if self.in_channels == 0:
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        elif self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=np.sqrt(0.5), **layer_kwargs)
            x = y.add_(x)
        else:
            x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        # ToRGB: its w is shared with the next block's conv0 (see SynthesisNetwork.forward). A wide skip
        # image on the CPU is channels-last from the first block on (see skip_channels_last).
        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2],
                              f'SynthesisBlock b{self.resolution}: img')
            t = upfirdn2d_nhwc.polyphase_weight(self.resample_filter) if upfirdn2d_nhwc.is_nhwc(img) else None
            if t is not None:
                img = upfirdn2d_nhwc.upsample2d_nhwc(img, t)
            else:
                img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            if img is not None:
                img = self.torgb(x, next(w_iter), fused_modconv=fused_modconv, add_to=img)
            else:
                img = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
                img_format = torch.channels_last if self.skip_channels_last(img) else torch.contiguous_format
                img = img.to(dtype=torch.float32, memory_format=img_format)

        assert x.dtype == dtype
        assert img is None or img.dtype == torch.float32
        return x, img

    def skip_channels_last(self, img: torch.Tensor) -> bool:
        """Whether the skip image starts channels-last (NHWC): on the CPU, for images of at least
        SKIP_CHANNELS_LAST_MIN channels (the tri-plane backbone's 96, not the 3 of RGB), with the fused
        ops on (EG3D_FUSED_OPS=0: the reference layout everywhere). Later blocks keep the layout they
        get. The renderer's plane gather reads such planes in place instead of transposing them."""
        return (img.device.type == 'cpu' and self.img_channels >= SKIP_CHANNELS_LAST_MIN and img.shape[-1] > 1
                and self.architecture == 'skip' and _impl.enabled())

    def extra_repr(self) -> str:
        return f'resolution={self.resolution:d}, architecture={self.architecture}'


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """Blocks b4 ... b{img_resolution}; channels(res) = min(channel_base // res, channel_max)."""

    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution (a power of two >= 4).
        img_channels,               # Number of output channels.
        channel_base    = 32768,    # Overall multiplier for the number of channels.
        channel_max     = 512,      # Maximum number of channels in any layer.
        num_fp16_res    = 4,        # Use fp16 (on CUDA) for the N highest resolutions.
        **block_kwargs,             # Extra SynthesisBlock arguments.
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f'SynthesisNetwork: img_resolution must be a power of two >= 4, got {img_resolution}')
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.num_fp16_res = num_fp16_res
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            out_channels = channels_dict[res]
            use_fp16 = (res >= fp16_resolution)
            is_last = (res == self.img_resolution)
            block = SynthesisBlock(in_channels, out_channels, w_dim=w_dim, resolution=res, img_channels=img_channels,
                                   is_last=is_last, use_fp16=use_fp16, **block_kwargs)
            self.num_ws += block.num_conv
            if is_last:
                self.num_ws += block.num_torgb
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs) -> torch.Tensor:
        """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] (float32)."""
        with misc.profiled('synthesis'):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim], 'SynthesisNetwork: ws')
            ws = ws.to(torch.float32)
            block_ws = []
            w_idx = 0
            for res in self.block_resolutions:
                block = getattr(self, f'b{res}')
                block_ws.append(ws.narrow(1, w_idx, block.num_conv + block.num_torgb))
                w_idx += block.num_conv

            x = img = None
            for res, cur_ws in zip(self.block_resolutions, block_ws):
                with misc.profiled(f'b{res}'):
                    x, img = getattr(self, f'b{res}')(x, img, cur_ws, **block_kwargs)
        return img

    def extra_repr(self) -> str:
        return (f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, '
                f'img_channels={self.img_channels:d}, num_fp16_res={self.num_fp16_res:d}')


@persistence.persistent_class
class Generator(torch.nn.Module):
    """StyleGAN2 generator: mapping then synthesis. In EG3D it is the tri-plane backbone (256x256, 96 channels)."""

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

# ----------------------------------------------------------------------------
# Discriminator (StyleGAN2 Fig. 7c, 'resnet'), with projection conditioning (Miyato & Koyama 2018).


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution: [fromrgb], conv0, conv1 (down 2x), and a 1x1 skip (down 2x) for 'resnet'."""

    def __init__(self,
        in_channels,                        # Input channels; 0 = the first block (takes the image).
        tmp_channels,                       # Channels of the intermediate layers.
        out_channels,                       # Output channels.
        resolution,                         # Resolution of this block.
        img_channels,                       # Number of input image channels.
        first_layer_idx,                    # Index of the first layer (for Freeze-D).
        architecture        = 'resnet',     # 'orig', 'skip' or 'resnet'.
        activation          = 'lrelu',      # Activation name.
        resample_filter     = [1, 3, 3, 1], # Low-pass filter taps for downsampling.
        conv_clamp          = None,         # Clamp conv outputs to +-X; None = no clamp.
        use_fp16            = False,        # Compute in float16 (on CUDA only)?
        fp16_channels_last  = False,        # Use channels_last memory format with fp16?
        freeze_layers       = 0,            # Freeze-D: layers with index < this store buffers, not parameters.
    ):
        if in_channels not in (0, tmp_channels):
            raise ValueError(f'DiscriminatorBlock: in_channels must be 0 or tmp_channels ({tmp_channels}), '
                             f'got {in_channels}')
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"DiscriminatorBlock: architecture must be 'orig', 'skip' or 'resnet', "
                             f"got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.img_channels = img_channels
        self.first_layer_idx = first_layer_idx
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.channels_last = (use_fp16 and fp16_channels_last)
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))

        self.num_layers = 0

        def next_trainable() -> bool:
            trainable = (first_layer_idx + self.num_layers >= freeze_layers)
            self.num_layers += 1
            return trainable

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                       trainable=next_trainable(), conv_clamp=conv_clamp,
                                       channels_last=self.channels_last)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                                 trainable=next_trainable(), conv_clamp=conv_clamp, channels_last=self.channels_last)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                                 trainable=next_trainable(), resample_filter=resample_filter, conv_clamp=conv_clamp,
                                 channels_last=self.channels_last)
        if architecture == 'resnet':
            self.skip = Conv2dLayer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                                    trainable=next_trainable(), resample_filter=resample_filter,
                                    channels_last=self.channels_last)

    def forward(self, x, img, force_fp32=False):
        """x: [N, C_in, res, res] or None; img: [N, img_channels, res, res] or None. Returns (x, img) at res/2."""
        if (x if x is not None else img).device.type != 'cuda':
            force_fp32 = True
        dtype = torch.float16 if self.use_fp16 and not force_fp32 else torch.float32
        memory_format = torch.channels_last if self.channels_last and not force_fp32 else torch.contiguous_format

        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution],
                              f'DiscriminatorBlock b{self.resolution}: x')
            x = x.to(dtype=dtype, memory_format=memory_format)

        # FromRGB.
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution],
                              f'DiscriminatorBlock b{self.resolution}: img')
            img = img.to(dtype=dtype, memory_format=memory_format)
            y = self.fromrgb(img)
            x = x + y if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        # Main layers.
        if self.architecture == 'resnet':
            y = self.skip(x, gain=np.sqrt(0.5))
            x = self.conv0(x)
            x = self.conv1(x, gain=np.sqrt(0.5))
            x = y.add_(x)
        else:
            x = self.conv0(x)
            x = self.conv1(x)

        assert x.dtype == dtype
        return x, img

    def extra_repr(self) -> str:
        return f'resolution={self.resolution:d}, architecture={self.architecture}'


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the feature std over groups of samples as extra channels (ProGAN Sec. 3).

    Sample n belongs to group n % (N / G); each group of G samples shares one value per channel group.
    """

    def __init__(self,
        group_size,                 # Samples per group; clipped to the batch size; None = the whole batch.
        num_channels    = 1,        # Number of std channels to append (features split into this many groups).
    ):
        super().__init__()
        self.group_size = group_size
        self.num_channels = num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, C, H, W = x.shape
        with misc.suppress_tracer_warnings():
            G = torch.min(torch.as_tensor(self.group_size), torch.as_tensor(N)) if self.group_size is not None else N
            if N % int(G) != 0:
                raise ValueError(f'MinibatchStdLayer: the batch size {N} is not a multiple of the group size {int(G)}')
        F = self.num_channels
        c = C // F

        y = x.reshape(G, -1, F, c, H, W)    # [GnFcHW] Split the batch into groups of G (member index first).
        y = y - y.mean(dim=0)               # [GnFcHW] Subtract the group mean.
        y = y.square().mean(dim=0)          # [nFcHW]  Variance over the group.
        y = (y + 1e-8).sqrt()               # [nFcHW]  Std.
        y = y.mean(dim=[2, 3, 4])           # [nF]     Average over channels and pixels.
        y = y.reshape(-1, F, 1, 1)          # [nF11]
        y = y.repeat(G, 1, H, W)            # [NFHW]   Back to every sample and pixel.
        return torch.cat([x, y], dim=1)

    def extra_repr(self) -> str:
        return f'group_size={self.group_size}, num_channels={self.num_channels:d}'


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """The 4x4 head: minibatch std, conv, fc, out; with cmap, the projection sum(out * cmap) / sqrt(cmap_dim)."""

    def __init__(self,
        in_channels,                    # Number of input channels.
        cmap_dim,                       # Dimensionality of the mapped conditioning label; 0 = unconditional.
        resolution,                     # Resolution of this block (4).
        img_channels,                   # Number of input image channels (used by 'skip' only).
        architecture        = 'resnet', # 'orig', 'skip' or 'resnet'.
        mbstd_group_size    = 4,        # Group size for the minibatch std layer; None = the whole batch.
        mbstd_num_channels  = 1,        # Channels of the minibatch std layer; 0 = no such layer.
        activation          = 'lrelu',  # Activation name.
        conv_clamp          = None,     # Clamp the conv output to +-X; None = no clamp.
    ):
        if architecture not in ('orig', 'skip', 'resnet'):
            raise ValueError(f"DiscriminatorEpilogue: architecture must be 'orig', 'skip' or 'resnet', "
                             f"got {architecture!r}")
        super().__init__()
        self.in_channels = in_channels
        self.cmap_dim = cmap_dim
        self.resolution = resolution
        self.img_channels = img_channels
        self.architecture = architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(group_size=mbstd_group_size, num_channels=mbstd_num_channels) \
            if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3, activation=activation,
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * (resolution ** 2), in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False) -> torch.Tensor:
        """x: [N, C, 4, 4]; cmap: [N, cmap_dim] or None. Returns float32 logits [N, 1]."""
        _ = force_fp32  # The epilogue always runs in float32.
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution], 'DiscriminatorEpilogue: x')
        x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
        if self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution],
                              'DiscriminatorEpilogue: img')
            x = x + self.fromrgb(img.to(torch.float32))

        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.conv(x)
        x = self.fc(x.flatten(1))
        x = self.out(x)

        if self.cmap_dim > 0:
            misc.assert_shape(cmap, [None, self.cmap_dim], 'DiscriminatorEpilogue: cmap')
            x = (x * cmap).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        assert x.dtype == torch.float32
        return x

    def extra_repr(self) -> str:
        return f'resolution={self.resolution:d}, architecture={self.architecture}'


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """StyleGAN2 discriminator: blocks b{img_resolution} ... b8, then the 4x4 epilogue with label projection."""

    def __init__(self,
        c_dim,                          # Conditioning label (C) dimensionality; 0 = unconditional.
        img_resolution,                 # Input resolution (a power of two >= 8).
        img_channels,                   # Number of input channels.
        architecture        = 'resnet', # 'orig', 'skip' or 'resnet'.
        channel_base        = 32768,    # Overall multiplier for the number of channels.
        channel_max         = 512,      # Maximum number of channels in any layer.
        num_fp16_res        = 4,        # Use fp16 (on CUDA) for the N highest resolutions.
        conv_clamp          = 256,      # Clamp conv outputs to +-X; None = no clamp.
        cmap_dim            = None,     # Dimensionality of the mapped label; None = the channels at 4x4.
        block_kwargs        = {},       # Extra DiscriminatorBlock arguments.
        mapping_kwargs      = {},       # Extra MappingNetwork arguments.
        epilogue_kwargs     = {},       # Extra DiscriminatorEpilogue arguments.
    ):
        if img_resolution < 8 or img_resolution & (img_resolution - 1) != 0:
            raise ValueError(f'Discriminator: img_resolution must be a power of two >= 8, got {img_resolution}')
        super().__init__()
        self.c_dim = c_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        if cmap_dim is None:
            cmap_dim = channels_dict[4]
        if c_dim == 0:
            cmap_dim = 0

        common_kwargs = dict(img_channels=img_channels, architecture=architecture, conv_clamp=conv_clamp)
        cur_layer_idx = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res] if res < img_resolution else 0
            tmp_channels = channels_dict[res]
            out_channels = channels_dict[res // 2]
            use_fp16 = (res >= fp16_resolution)
            block = DiscriminatorBlock(in_channels, tmp_channels, out_channels, resolution=res,
                                       first_layer_idx=cur_layer_idx, use_fp16=use_fp16, **block_kwargs,
                                       **common_kwargs)
            setattr(self, f'b{res}', block)
            cur_layer_idx += block.num_layers
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None, w_avg_beta=None,
                                          **mapping_kwargs)
        self.b4 = DiscriminatorEpilogue(channels_dict[4], cmap_dim=cmap_dim, resolution=4, **epilogue_kwargs,
                                        **common_kwargs)

    def forward(self, img, c, update_emas=False, **block_kwargs) -> torch.Tensor:
        """img [N, img_channels, res, res], c [N, c_dim] -> logits [N, 1]."""
        _ = update_emas
        with misc.profiled('D'):
            x = None
            for res in self.block_resolutions:
                with misc.profiled(f'b{res}'):
                    x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
            cmap = self.mapping(None, c) if self.c_dim > 0 else None
            x = self.b4(x, img, cmap)
        return x

    def extra_repr(self) -> str:
        return f'c_dim={self.c_dim:d}, img_resolution={self.img_resolution:d}, img_channels={self.img_channels:d}'
