"""Generators for the gen_samples / gen_videos / shapes tests: a tiny TriPlaneGenerator, and a stand-in
whose density is an analytic, off-centre ellipsoid (its planes hold the coordinates themselves and its
decoder evaluates the closed form), so shapes can be checked against geometry rather than our output."""

import numpy as np
import torch

import dnnlib
import legacy
from training.dual_discriminator import DualDiscriminator
from training.triplane import TriPlaneGenerator

RENDERING = dict(image_resolution=32, disparity_space_sampling=False, clamp_mode='softplus',
                 superresolution_module='training.superresolution.SuperresolutionGeneric',
                 c_gen_conditioning_zero=False, gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none',
                 density_reg=0.25, density_reg_p_dist=0.004, reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True,
                 depth_resolution=6, depth_resolution_importance=6, ray_start=2.25, ray_end=3.3, box_warp=1,
                 avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])


def tiny_G(seed: int = 0, **rendering) -> TriPlaneGenerator:
    """16 x 16 planes with 8 channels, neural rendering 16 -> 32 px images, 6 + 6 depth samples."""
    torch.manual_seed(seed)
    G = TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=16, img_resolution=32, img_channels=3,
                          mapping_kwargs=dnnlib.EasyDict(num_layers=2), channel_base=256, channel_max=16,
                          fused_modconv_default='inference_only', num_fp16_res=0, conv_clamp=None,
                          rendering_kwargs=dnnlib.EasyDict(RENDERING, **rendering), sr_num_fp16_res=0,
                          sr_kwargs=dnnlib.EasyDict(input_resolution=16, block_channels=[16, 8], channel_base=256,
                                                    channel_max=16, fused_modconv_default='inference_only'),
                          triplane_resolution=16, triplane_channels=8, decoder_hidden_dim=16)
    G.neural_rendering_resolution = 16
    return G.eval().requires_grad_(False)

def save_tiny_snapshot(path, G=None) -> TriPlaneGenerator:
    """A network snapshot (our format) of tiny_G (as G and G_ema) and a tiny DualDiscriminator."""
    G = G or tiny_G()
    D = DualDiscriminator(c_dim=25, img_resolution=32, img_channels=3, channel_base=128, channel_max=16,
                          num_fp16_res=0, conv_clamp=None, block_kwargs=dict(freeze_layers=0), mapping_kwargs={},
                          epilogue_kwargs=dict(mbstd_group_size=2))
    legacy.save_network_pkl(str(path), G=G, D=D, G_ema=G, training_set_kwargs={'resolution': 32})
    return G

# ----------------------------------------------------------------------------
# The ellipsoid stand-in.


class Ellipsoid:
    """sigma(p) = level + gain (1 - q(p)), q = sum(((p - centre) / axes)^2): the level set sigma = level
    is the ellipsoid q = 1. RGB = 0.5 + p (channel-wise), a colour that names the position."""

    def __init__(self, centre=(0.08, -0.05, 0.11), axes=(0.24, 0.17, 0.2), level=10.0, gain=40.0):
        self.centre = np.asarray(centre, dtype=np.float64)
        self.axes = np.asarray(axes, dtype=np.float64)
        self.level, self.gain = level, gain

    def sigma(self, p: np.ndarray) -> np.ndarray:
        q = (((p - self.centre) / self.axes) ** 2).sum(-1)
        return self.level + self.gain * (1 - q)

    def rgb(self, p: np.ndarray) -> np.ndarray:
        return 0.5 + p

    def distance(self, p: np.ndarray) -> np.ndarray:
        """First-order distance of points to the surface q = 1: |q - 1| / |grad q| (exact to O(d^2))."""
        d = (p - self.centre) / self.axes
        grad = 2 * d / self.axes
        return np.abs((d ** 2).sum(-1) - 1) / np.linalg.norm(grad, axis=-1)


class CoordinatePlanes(torch.nn.Module):
    """Stands in for the backbone's synthesis network: every plane holds, in its channels 0 and 1,
    the plane coordinates (u, v) in [-1, 1] of its texel centres, so bilinear sampling returns the
    2-D projection of the query point exactly (inside the outermost texel centres)."""

    def __init__(self, resolution: int, channels: int):
        super().__init__()
        t = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 - 1
        plane = torch.zeros(channels, resolution, resolution)
        plane[0] = t[None, :].expand(resolution, resolution)    # Width index -> first plane coordinate.
        plane[1] = t[:, None].expand(resolution, resolution)    # Height index -> second.
        self.register_buffer('planes', plane.repeat(3, 1, 1))

    def forward(self, ws, **kwargs):
        return self.planes.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)


class EllipsoidDecoder(torch.nn.Module):
    """Reads the point back from the coordinate planes (plane 0 = (x, y), plane 1 = (x, z), EG3D's
    projections, scaled by 2 / box_warp) and returns the ellipsoid's sigma and colour."""

    def __init__(self, ellipsoid: Ellipsoid, channels: int, box_warp: float):
        super().__init__()
        self.ellipsoid, self.channels, self.box_warp = ellipsoid, channels, box_warp

    def forward(self, sampled_features, ray_directions):
        f = sampled_features.double()
        p = torch.stack([f[:, 0, :, 0], f[:, 0, :, 1], f[:, 1, :, 1]], dim=-1) * (self.box_warp / 2)
        p = p.numpy()
        sigma = torch.from_numpy(self.ellipsoid.sigma(p)).float().unsqueeze(-1)
        rgb = torch.zeros(*p.shape[:2], self.channels)
        rgb[..., :3] = torch.from_numpy(self.ellipsoid.rgb(p)).float()
        return {'rgb': rgb, 'sigma': sigma}


def ellipsoid_G(ellipsoid: Ellipsoid | None = None, plane_resolution: int = 64) -> TriPlaneGenerator:
    """tiny_G with the backbone's synthesis and the decoder replaced by the ellipsoid stand-ins."""
    G = tiny_G()
    ellipsoid = ellipsoid or Ellipsoid()
    G.backbone.synthesis = CoordinatePlanes(plane_resolution, G.triplane_channels)
    G.decoder = EllipsoidDecoder(ellipsoid, G.triplane_channels, float(G.rendering_kwargs['box_warp']))
    return G


def read_ply(path) -> dict:
    """A binary little-endian PLY (vertex x, y, z [, red, green, blue]; faces as uchar-count int lists
    of 3) -> {'vertex': structured array, 'faces': [F, 3], 'comments': [...]}; written independently of
    training/shapes.py's writer."""
    data = open(path, 'rb').read()
    end = data.index(b'end_header\n') + len(b'end_header\n')
    lines = data[:end].decode('ascii').splitlines()
    assert lines[0] == 'ply' and lines[1] == 'format binary_little_endian 1.0', lines[:2]
    types = {'float': '<f4', 'uchar': 'u1', 'int': '<i4'}
    elements, current = [], None
    for line in lines[2:]:
        words = line.split()
        if words[0] == 'element':
            current = [words[1], int(words[2]), []]
            elements.append(current)
        elif words[0] == 'property' and words[1] == 'list':
            assert words[2:] == ['uchar', 'int', 'vertex_indices'], line
            current[2] += [('n', 'u1'), ('i', '<i4', (3,))]
        elif words[0] == 'property':
            current[2].append((words[2], types[words[1]]))
    out, offset = {'comments': [line[8:] for line in lines if line.startswith('comment ')]}, end
    for name, count, dtype in elements:
        arr = np.frombuffer(data, dtype=np.dtype(dtype), count=count, offset=offset)
        offset += arr.nbytes
        out[name] = arr
    assert offset == len(data), 'trailing bytes after the last element'
    assert (out['face']['n'] == 3).all()
    out['faces'] = out['face']['i'].astype(np.int64)
    return out
