"""The EG3D generator (Chan et al. 2022, "Efficient Geometry-aware 3D Generative Adversarial Networks"):
a StyleGAN2 backbone paints three feature planes, a small MLP decodes plane features into density and
colour features, a volume renderer integrates them along camera rays into a raw feature image, and a
super-resolution network turns that into the final image (EG3D Fig. 2, Sec. 4).

Compatible with upstream's TriPlaneGenerator: constructor, public methods, parameter and buffer names
(eg3d-facts 5.1, 5.6), so official weights give official images. Ours besides: the tri-plane size,
plane channels and decoder width are parameters (upstream fixes 256, 32 and 64), so that small models
run on a CPU, the `dataset_label_std` buffer exists from construction, and backbone_arch='stylegan3'
paints the planes with StyleGAN3's alias-free synthesis network (training/networks_stylegan3.py).
"""

from __future__ import annotations

import torch

import dnnlib
from torch_utils import misc, persistence
from torch_utils.ops import render_ops_fused
from training import networks_stylegan3
from training.networks_stylegan2 import FullyConnectedLayer, Generator as StyleGAN2Backbone
from training.volumetric_rendering.ray_sampler import RaySampler
from training.volumetric_rendering.renderer import ImportanceRenderer

SR_MODULE_PREFIX = 'training.superresolution.'
REQUIRED_RENDERING_KWARGS = ('superresolution_module', 'sr_antialias', 'ray_start', 'ray_end', 'box_warp',
                             'depth_resolution', 'depth_resolution_importance')
# Backbone architectures: the class that paints the planes, and its arguments that only it takes.
BACKBONES = {
    'stylegan2': (StyleGAN2Backbone, ()),
    'stylegan3': (networks_stylegan3.Generator, ('fused_modconv_default',)),  # StyleGAN3 always fuses.
}

# ----------------------------------------------------------------------------


class OSGDecoder(torch.nn.Module):
    """Tri-plane features -> raw density and colour features (EG3D Sec. 4.1): the mean over the planes,
    FC -> softplus -> FC to 1 + C outputs; sigma is output 0 (unactivated), the C features are
    sigmoid(.) * 1.002 - 0.001 (all of them, not only RGB). Ray directions are ignored.

    Not persistent, as upstream (the generator rebuilds it); upstream's attribute names (net, hidden_dim).
    On the CPU the softplus is a host kernel (torch_utils/ops/render_ops), and under no_grad the whole
    MLP runs in chunks of rows that stay in cache.
    """

    def __init__(self,
        n_features,                 # Channels per plane.
        options,                    # {'decoder_lr_mul': lr multiplier, 'decoder_output_dim': C} (upstream's dict).
        hidden_dim      = 64,       # Width of the hidden layer (64 upstream).
    ):
        super().__init__()
        self.hidden_dim = hidden_dim
        lr_mul = options['decoder_lr_mul']
        self.net = torch.nn.Sequential(
            FullyConnectedLayer(n_features, hidden_dim, lr_multiplier=lr_mul),
            torch.nn.Softplus(),
            FullyConnectedLayer(hidden_dim, 1 + options['decoder_output_dim'], lr_multiplier=lr_mul),
        )

    def forward(self, sampled_features: torch.Tensor, ray_directions: torch.Tensor) -> dict:
        """sampled_features [N, 3, M, C] -> {'rgb': [N, M, C_out], 'sigma': [N, M, 1]}."""
        return self.forward_plane_mean(sampled_features.mean(1), ray_directions)

    def forward_plane_mean(self, x: torch.Tensor, ray_directions: torch.Tensor) -> dict:
        """As forward, from the mean over the planes [N, M, C] (the renderer's one-pass plane gather)."""
        _ = ray_directions  # No view dependence (EG3D Sec. 4.1).
        n, m, c = x.shape
        plugin = self._host_kernels(x)
        # The fast path only under no_grad (not merely when nothing requires grad): the path, and so the
        # output's last bits, then depends on the grad mode alone, not on which parameters are frozen.
        if plugin is not None and not torch.is_grad_enabled():
            return self._forward_chunked(plugin, x)
        fc1, softplus, fc2 = self.net
        h = fc1(x.reshape(n * m, c))
        h = softplus(h) if plugin is None else _HostSoftplus.apply(h, plugin)
        x = fc2(h).reshape(n, m, -1)
        rgb = torch.sigmoid(x[..., 1:])
        # Sigmoid with a little headroom (MipNeRF); in place when no graph needs the sigmoid's output.
        if torch.is_grad_enabled() and rgb.requires_grad:
            rgb = rgb * (1 + 2 * _HEADROOM) - _HEADROOM
        else:
            rgb = rgb.mul_(1 + 2 * _HEADROOM).sub_(_HEADROOM)
        return {'rgb': rgb, 'sigma': x[..., 0:1]}

    def _host_kernels(self, x: torch.Tensor):
        """The renderer's host kernels (torch_utils/ops/render_ops) for CPU float32 / float64 inputs of
        the standard FC -> Softplus -> FC net, else None (torch's path: CUDA, other dtypes, EG3D_FUSED_OPS=0)."""
        if len(self.net) != 3 or type(self.net[1]) is not torch.nn.Softplus \
                or (self.net[1].beta, self.net[1].threshold) != (1.0, 20.0):
            return None
        return render_ops_fused.host_plugin(x)

    def _forward_chunked(self, plugin, x: torch.Tensor) -> dict:
        """The no_grad forward on the host in chunks of rows, so that the [rows, hidden] activations
        stay in cache and are never allocated at full size: addmm, softplus in place, addmm into a
        chunk buffer, then sigma and the colour sigmoid written out in one pass."""
        n, m, c = x.shape
        fc1, _, fc2 = self.net
        w1, b1 = _fc_parameters(fc1, x.dtype)
        w2, b2 = _fc_parameters(fc2, x.dtype)
        rows, c_out = n * m, fc2.out_features - 1
        x = x.reshape(rows, c)
        sigma = x.new_empty([rows, 1])
        rgb = x.new_empty([rows, c_out])
        chunk = min(rows, _DECODER_CHUNK)
        hidden = x.new_empty([chunk, fc1.out_features])
        out = x.new_empty([chunk, fc2.out_features])
        for s in range(0, rows, chunk):
            e = min(rows, s + chunk)
            h = torch.addmm(b1, x[s:e], w1, out=hidden[:e - s])
            plugin.softplus(h, out=h)
            o = torch.addmm(b2, h, w2, out=out[:e - s])
            plugin.decoder_tail(o, sigma[s:e], rgb[s:e], 1 + 2 * _HEADROOM, -_HEADROOM)
        return {'rgb': rgb.view(n, m, c_out), 'sigma': sigma.view(n, m, 1)}


_HEADROOM = 0.001       # The colour sigmoid's headroom: sigmoid(x) * (1 + 2 h) - h.
_DECODER_CHUNK = 16384  # Rows per chunk of the decoder's host forward (its [rows, 64] hidden: 4 MiB).


def _fc_parameters(fc: FullyConnectedLayer, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight^T [in, out], bias [1, out]) with their gains, as FullyConnectedLayer.forward applies them."""
    w = fc.weight.to(dtype) * fc.weight_gain
    b = fc.bias.to(dtype)
    if fc.bias_gain != 1:
        b = b * fc.bias_gain
    return w.t(), b.unsqueeze(0)


class _HostSoftplus(torch.autograd.Function):
    """torch.nn.Softplus() by the host kernel; its gradient dy * sigmoid(x) too, or by torch's ops when
    a graph of the gradient is being built (double backward)."""

    @staticmethod
    def forward(ctx, x, plugin):
        ctx.save_for_backward(x)
        ctx.plugin = plugin
        return plugin.softplus(x)

    @staticmethod
    def backward(ctx, dy):
        x, = ctx.saved_tensors
        if torch.is_grad_enabled():
            return dy * torch.sigmoid(x), None
        return ctx.plugin.softplus_grad(dy, x), None

# ----------------------------------------------------------------------------


def _superresolution_class(name: str) -> type:
    """The SR class a rendering_kwargs entry names; only classes of training/superresolution.py."""
    if not isinstance(name, str) or not name.startswith(SR_MODULE_PREFIX) \
            or not name[len(SR_MODULE_PREFIX):].isidentifier():
        raise ValueError(f"rendering_kwargs['superresolution_module'] must name a class in training/"
                         f"superresolution.py ('{SR_MODULE_PREFIX}<Class>'), got {name!r}")
    cls = dnnlib.util.get_obj_by_name(name)
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"rendering_kwargs['superresolution_module']: {name} is not a network class")
    return cls


@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    """z, camera -> {'image', 'image_raw', 'image_depth'} (EG3D Fig. 2)."""

    def __init__(self,
        z_dim,                              # Input latent (Z) dimensionality.
        c_dim,                              # Conditioning label (C) dimensionality: 25 (camera).
        w_dim,                              # Intermediate latent (W) dimensionality.
        img_resolution,                     # Output (super-resolved) image resolution.
        img_channels,                       # Number of output image channels (3).
        sr_num_fp16_res     = 0,            # > 0: super-resolution in fp16 (CUDA only) with conv_clamp 256.
        mapping_kwargs      = {},           # Extra MappingNetwork arguments (num_layers, ...).
        rendering_kwargs    = {},           # Renderer and generator options (eg3d-facts 2.3), kept as a dict.
        sr_kwargs           = {},           # Extra super-resolution constructor arguments.
        triplane_resolution = 256,          # Plane resolution = backbone img_resolution (256 upstream).
        triplane_channels   = 32,           # Channels per plane (backbone: 3x this) and decoder outputs (32).
        decoder_hidden_dim  = 64,           # Hidden width of the OSGDecoder MLP (64 upstream).
        backbone_arch       = 'stylegan2',  # 'stylegan2' (EG3D) or 'stylegan3' (alias-free, networks_stylegan3).
        **synthesis_kwargs,                 # Backbone arguments (channel_base, channel_max, num_fp16_res, ...).
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.triplane_resolution = triplane_resolution
        self.triplane_channels = triplane_channels
        rendering_kwargs = dict(rendering_kwargs)
        missing = [key for key in REQUIRED_RENDERING_KWARGS if key not in rendering_kwargs]
        if missing:
            raise ValueError(f'TriPlaneGenerator: rendering_kwargs lacks {missing} (eg3d-facts 2.3 lists the keys)')
        sr_class = _superresolution_class(rendering_kwargs.get('superresolution_module'))
        if backbone_arch not in BACKBONES:
            raise ValueError(f'TriPlaneGenerator: backbone_arch must be one of {", ".join(BACKBONES)}, '
                             f'got {backbone_arch!r}')
        backbone_class, ignored_kwargs = BACKBONES[backbone_arch]
        self.backbone_arch = backbone_arch

        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = backbone_class(z_dim, c_dim, w_dim, img_resolution=triplane_resolution,
                                       img_channels=triplane_channels * 3, mapping_kwargs=mapping_kwargs,
                                       **{k: v for k, v in synthesis_kwargs.items() if k not in ignored_kwargs})
        self.superresolution = sr_class(channels=triplane_channels, img_resolution=img_resolution,
                                        sr_num_fp16_res=sr_num_fp16_res, sr_antialias=rendering_kwargs['sr_antialias'],
                                        w_dim=w_dim, **sr_kwargs)
        self.decoder = OSGDecoder(triplane_channels, {'decoder_lr_mul': rendering_kwargs.get('decoder_lr_mul', 1),
                                                      'decoder_output_dim': triplane_channels},
                                  hidden_dim=decoder_hidden_dim)
        # Label std of the training set (upstream's loop registers it later); zeros until the loop sets it.
        self.register_buffer('dataset_label_std', torch.zeros([c_dim]))
        self.num_ws = self.backbone.num_ws
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None

    def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False) -> torch.Tensor:
        """z [N, z_dim], camera label c [N, 25] -> ws [N, num_ws, w_dim]. The camera conditions the mapping
        scaled by c_scale (0 when absent, as upstream), or not at all with c_gen_conditioning_zero."""
        if self.rendering_kwargs.get('c_gen_conditioning_zero', False):
            c = torch.zeros_like(c)
        return self.backbone.mapping(z, c * self.rendering_kwargs.get('c_scale', 0), truncation_psi=truncation_psi,
                                     truncation_cutoff=truncation_cutoff, update_emas=update_emas)

    def planes(self, ws, update_emas=False, **synthesis_kwargs) -> torch.Tensor:
        """ws -> tri-planes [N, 3, C, H, W] (backbone channels 0..C-1 are plane 0, and so on). On the CPU the
        StyleGAN2 backbone stores them channels-last (a view of its [N, H, W, 3 C] skip image), the layout the
        renderer's plane gather reads in place; use .reshape, not .view, to merge N and the planes."""
        with misc.profiled('backbone'):
            planes = self.backbone.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
        return planes.view(planes.shape[0], 3, -1, planes.shape[-2], planes.shape[-1])

    def synthesis(self, ws, c, neural_rendering_resolution=None, update_emas=False, cache_backbone=False,
                  use_cached_backbone=False, **synthesis_kwargs) -> dict:
        """ws [N, num_ws, w_dim], rendering camera c [N, 25] -> {'image': [N, 3, img_res, img_res],
        'image_raw': [N, 3, R, R], 'image_depth': [N, 1, R, R]} with R the neural rendering resolution
        (stored when given, as upstream). cache_backbone keeps the planes; use_cached_backbone reuses
        them (camera-only changes skip the backbone)."""
        misc.assert_shape(c, [ws.shape[0], 25], 'TriPlaneGenerator.synthesis: camera label c')
        cam2world_matrix = c[:, :16].view(-1, 4, 4)
        intrinsics = c[:, 16:25].view(-1, 3, 3)
        if neural_rendering_resolution is None:
            neural_rendering_resolution = self.neural_rendering_resolution
        else:
            neural_rendering_resolution = int(neural_rendering_resolution)
            self.neural_rendering_resolution = neural_rendering_resolution
        res = neural_rendering_resolution

        ray_origins, ray_directions = self.ray_sampler(cam2world_matrix, intrinsics, res)
        if use_cached_backbone and self._last_planes is not None:
            planes = self._last_planes
        else:
            planes = self.planes(ws, update_emas=update_emas, **synthesis_kwargs)
        if cache_backbone:
            self._last_planes = planes

        features, depth, _ = self.renderer(planes, self.decoder, ray_origins, ray_directions, self.rendering_kwargs)
        n = features.shape[0]
        feature_image = features.permute(0, 2, 1).reshape(n, features.shape[-1], res, res).contiguous()
        depth_image = depth.permute(0, 2, 1).reshape(n, 1, res, res)
        rgb_image = feature_image[:, :3]

        sr_kwargs = {k: v for k, v in synthesis_kwargs.items() if k != 'noise_mode'}
        image = self.superresolution(rgb_image, feature_image, ws,
                                     noise_mode=self.rendering_kwargs.get('superresolution_noise_mode', 'none'),
                                     **sr_kwargs)
        return {'image': image, 'image_raw': rgb_image, 'image_depth': depth_image}

    def sample(self, coordinates, directions, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False,
               **synthesis_kwargs) -> dict:
        """Raw density and colour features at points [N, M, 3] for latents z: {'rgb', 'sigma'}."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.sample_mixed(coordinates, directions, ws, update_emas=update_emas, **synthesis_kwargs)

    def sample_mixed(self, coordinates, directions, ws, truncation_psi=1, truncation_cutoff=None, update_emas=False,
                     **synthesis_kwargs) -> dict:
        """As sample(), for given ws: {'rgb': [N, M, C], 'sigma': [N, M, 1] raw (unactivated)}.
        truncation_psi and truncation_cutoff are accepted for upstream's signature and unused."""
        _ = truncation_psi, truncation_cutoff
        planes = self.planes(ws, update_emas=update_emas, **synthesis_kwargs)
        return self.renderer.run_model(planes, self.decoder, coordinates, directions, self.rendering_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, neural_rendering_resolution=None,
                update_emas=False, cache_backbone=False, use_cached_backbone=False, **synthesis_kwargs) -> dict:
        """mapping then synthesis; the same camera c conditions and renders."""
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, neural_rendering_resolution=neural_rendering_resolution,
                              cache_backbone=cache_backbone, use_cached_backbone=use_cached_backbone,
                              **synthesis_kwargs)

    def extra_repr(self) -> str:
        return (f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, '
                f'img_resolution={self.img_resolution:d}, triplane={self.triplane_channels:d}x'
                f'{self.triplane_resolution:d}^2')
