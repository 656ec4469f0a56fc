"""Shapes from a tri-plane generator: its density on a regular grid, written as an .mrc volume or
turned into a triangle mesh (.ply) by marching cubes, with optional vertex colours.

Grid. N^3 points (N = shape resolution) filling the cube [-b/2, b/2]^3 that the tri-planes span
(b = rendering_kwargs['box_warp']): index i on an axis is the world coordinate -b/2 + i * b / (N - 1),
so both faces of the cube are sampled and the voxel size is b / (N - 1). The value at a point is the
decoder's raw density sigma (before the softplus), as upstream. The outer `pad` voxels of every face
(upstream: int(30 N / 256)) are set to `pad_value` (-1000), which closes meshes at the box border.

World axes are EG3D's (docs/camera_conventions.md): +y up, the subject faces +z (where the frontal
camera sits), +x is the subject's left (image right in the frontal view).

Output axes and units, as upstream's files (viewers and scripts made for them keep working):
- .mrc: the array a[i, j, k] = sigma(x = b/2 - i vs, y = -b/2 + j vs, z = -b/2 + k vs), i.e. world x
  reversed on axis 0. MRC readers take axis 2 as the map's x, so a viewer shows map (x, y, z) =
  world (z, y, -x): the world turned 90 degrees about +y. Voxel size in the header: 0 as upstream
  (a viewer takes 1 unit per voxel), or b / (N - 1) world units with units='world'.
- .ply, units='voxel' (default, upstream's): vertex (u, v, w) = ((z + b/2) / vs, (y + b/2) / vs,
  (b/2 - x) / vs), the same frame as the .mrc map, in voxel indices from 0 to N - 1.
- .ply, units='world': vertex (x, y, z) in world coordinates, EG3D's axes as above.
Faces wind counter-clockwise seen from outside (normals point out of the shape; upstream's point in).

Upstream computes the grid with a float division that shears x and y by a fraction of a voxel, and
runs the mapping and backbone again for every chunk of points. Here indices are exact, the planes
are computed once, and the volume is processed in slabs of x: memory stays bounded by a slab and the
mesh (the full N^3 volume is never held; .mrc slabs go straight to a memory-mapped file).
"""

from __future__ import annotations

import mmap
from typing import Callable, Iterator

import numpy as np
import torch

import dnnlib
from torch_utils import misc

SHAPE_FORMATS = ('.mrc', '.ply')
SHAPE_UNITS = ('voxel', 'world')
DEFAULT_LEVEL = 10.0        # Raw density of the surface (upstream's marching-cubes level).
DEFAULT_PAD_VALUE = -1000.0  # Density written into the border voxels (gen_samples upstream; gen_videos uses 0).


def default_pad(resolution: int) -> int:
    """Upstream's border width: int(30 N / 256) voxels (60 at N = 512)."""
    return int(30 * resolution / 256)


def voxel_size(resolution: int, box_warp: float) -> float:
    return float(box_warp) / (resolution - 1)


def _require(module: str):
    try:
        return __import__(module, fromlist=['_'])
    except ImportError:
        raise ImportError(f'shape extraction needs {module.split(".")[0]}: pip install -e .[shapes] '
                          f'(scikit-image, mrcfile)') from None

# ----------------------------------------------------------------------------
# The field: raw density and colour of one latent at world points.


class DensityField:
    """sigma and RGB of a tri-plane generator for fixed ws at world points [M, 3].

    The planes are computed once (noise_mode='const', as upstream's G.sample); every query then
    runs only the plane look-up and the decoder, in batches of `max_batch` points. Density noise
    (rendering_kwargs['density_noise']) is off so that the field is deterministic.
    """

    def __init__(self, G, ws: torch.Tensor, max_batch: int = 2 ** 17, **synthesis_kwargs):
        if ws.shape[0] != 1:
            raise ValueError(f'DensityField: one latent at a time, got ws {list(ws.shape)}')
        self.G = G
        self.box_warp = float(G.rendering_kwargs['box_warp'])
        self.options = {**G.rendering_kwargs, 'density_noise': 0}
        self.max_batch = int(max_batch)
        synthesis_kwargs.setdefault('noise_mode', 'const')
        with torch.no_grad():
            self.planes = G.planes(ws, **synthesis_kwargs)
        self.device = self.planes.device

    @torch.no_grad()
    def query(self, points: np.ndarray | torch.Tensor, rgb: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """World points [M, 3] -> (raw sigma [M], decoder RGB [M, 3] in about [0, 1] or None), on the CPU."""
        points = torch.as_tensor(points, dtype=torch.float32).reshape(-1, 3)
        sigmas, rgbs = [torch.zeros([0])], [torch.zeros([0, 3])]
        n = points.shape[0]
        batch = -(-n // max(-(-n // self.max_batch), 1))            # Equal batches of at most max_batch.
        for start in range(0, n, max(batch, 1)):
            coords = points[start:start + batch].to(self.device).unsqueeze(0)
            dirs = torch.tensor([0, 0, -1], dtype=torch.float32, device=self.device).expand_as(coords)
            with misc.profiled('shape_field'):
                out = self.G.renderer.run_model(self.planes, self.G.decoder, coords, dirs, self.options)
            # Copies, so that the batch's full decoder output is freed.
            sigmas.append(out['sigma'][0, :, 0].float().cpu().clone())
            if rgb:
                rgbs.append(out['rgb'][0, :, :3].float().cpu().clone())
            del out
        return torch.cat(sigmas), (torch.cat(rgbs) if rgb else None)

    def sigma(self, points) -> torch.Tensor:
        return self.query(points, rgb=False)[0]

# ----------------------------------------------------------------------------
# The volume, slab by slab.


def density_slabs(sigma_fn: Callable[[np.ndarray], torch.Tensor], resolution: int, box_warp: float,
                  pad: int | None = None, pad_top: int | None = None, pad_value: float = DEFAULT_PAD_VALUE,
                  slab: int = 8) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (x0, s) with s [S, N, N] float32 = sigma at x indices x0 .. x0 + S - 1 (all y, z), in
    world-axis order (not reversed). Border voxels (`pad` on every face, `pad_top` at the high end
    of y if given) are set to pad_value without being evaluated."""
    n = int(resolution)
    if n < 2:
        raise ValueError(f'shape resolution must be >= 2, got {n}')
    pad = default_pad(n) if pad is None else int(pad)
    top = pad if pad_top is None else int(pad_top)
    vs = voxel_size(n, box_warp)
    axis = (-box_warp / 2 + np.arange(n, dtype=np.float64) * vs).astype(np.float32)
    y_lo, y_hi, z_lo, z_hi = pad, n - top, pad, n - pad
    yz = None
    if y_hi > y_lo and z_hi > z_lo:
        yy, zz = np.meshgrid(axis[y_lo:y_hi], axis[z_lo:z_hi], indexing='ij')
        yz = np.stack([yy.ravel(), zz.ravel()], axis=1)                       # [Y*Z, 2]
    for x0 in range(0, n, slab):
        x1 = min(x0 + slab, n)
        out = np.full([x1 - x0, n, n], pad_value, dtype=np.float32)
        xs = [x for x in range(x0, x1) if pad <= x < n - pad]
        if xs and yz is not None:
            pts = np.empty([len(xs), yz.shape[0], 3], dtype=np.float32)
            pts[:, :, 0] = axis[xs][:, None]
            pts[:, :, 1:] = yz[None]
            values = sigma_fn(pts.reshape(-1, 3)).numpy().reshape(len(xs), y_hi - y_lo, z_hi - z_lo)
            out[xs[0] - x0:xs[-1] - x0 + 1, y_lo:y_hi, z_lo:z_hi] = values
        yield x0, out


def write_mrc(path: str, slabs: Iterator[tuple[int, np.ndarray]], resolution: int,
              voxel_size_header: float | None = None) -> None:
    """Write slabs from density_slabs as an .mrc volume (mode 2, float32) with x reversed on axis 0
    (upstream's layout, see the module docstring); temporary name, then rename."""
    mrcfile = _require('mrcfile')
    n = int(resolution)
    with dnnlib.util.atomic_write_path(path) as tmp:
        with mrcfile.new_mmap(tmp, shape=(n, n, n), mrc_mode=2, overwrite=True) as mrc:
            data = mrc.data
            for x0, s in slabs:
                x1 = x0 + s.shape[0]
                data[n - x1:n - x0] = s[::-1]
                data.flush()
                _drop_pages(data)
            if voxel_size_header is not None:
                mrc.voxel_size = voxel_size_header


def _drop_pages(array: np.memmap) -> None:
    """Let the kernel reclaim the written (already flushed) pages, so they do not pile up in RSS."""
    mm = getattr(array, '_mmap', None)
    if mm is not None and hasattr(mm, 'madvise') and hasattr(mmap, 'MADV_DONTNEED'):
        try:
            mm.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass

# ----------------------------------------------------------------------------
# Meshes.


def marching_cubes_slabs(slabs: Iterator[tuple[int, np.ndarray]], level: float = DEFAULT_LEVEL
                         ) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (Lewiner, scikit-image) over a volume given as consecutive x slabs.

    Each slab is processed with the last x plane of the one before, so every cube of the volume is
    triangulated exactly once; vertices on a shared plane are identical in both slabs and are
    merged. The result equals one marching-cubes pass over the whole volume, up to vertex order.
    Returns (vertices [V, 3] float64 in (x, y, z) voxel indices, faces [F, 3] int64 with normals
    pointing toward lower values, i.e. out of the dense shape).
    """
    measure = _require('skimage.measure')
    verts, faces, count = [], [], 0
    prev = None                 # (x index, last plane) of the previous slab.
    seam = {}                   # (y, z) -> vertex id of vertices on the previous slab's last plane.
    for x0, s in slabs:
        if prev is not None:
            if prev[0] != x0 - 1:
                raise ValueError(f'marching_cubes_slabs: slabs are not consecutive (x {prev[0]} then {x0})')
            s = np.concatenate([prev[1][None], s], axis=0)
            base = x0 - 1
        else:
            base = x0
        prev = (base + s.shape[0] - 1, s[-1])
        if s.shape[0] < 2 or not (s.min() <= level <= s.max()):
            seam = {}
            continue
        # gradient_direction='ascent': the dense inside is where values rise; normals point out.
        v, f, _, _ = measure.marching_cubes(s, level=level, gradient_direction='ascent')
        v = v.astype(np.float64)
        v[:, 0] += base
        new_ids = np.full(len(v), -1, dtype=np.int64)          # Merged seam vertices: their earlier id.
        for i in np.nonzero(v[:, 0] == base)[0] if seam else ():
            new_ids[i] = seam.get((v[i, 1], v[i, 2]), -1)
        keep = new_ids < 0
        new_ids[keep] = count + np.arange(int(keep.sum()))
        verts.append(v[keep])
        faces.append(new_ids[f])
        top = base + s.shape[0] - 1
        seam = {(v[i, 1], v[i, 2]): new_ids[i] for i in np.nonzero(v[:, 0] == top)[0]}
        count += int(keep.sum())
    if not verts:
        return np.zeros([0, 3]), np.zeros([0, 3], dtype=np.int64)
    return np.concatenate(verts), np.concatenate(faces)


def mesh_to_units(verts: np.ndarray, faces: np.ndarray, resolution: int, box_warp: float, units: str
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(x, y, z) voxel-index vertices -> the documented output frame (module docstring). Both frames
    are rotations of index space (no mirror), so the faces keep their winding."""
    if units == 'world':
        return -box_warp / 2 + verts * voxel_size(resolution, box_warp), faces
    if units == 'voxel':
        return np.stack([verts[:, 2], verts[:, 1], (resolution - 1) - verts[:, 0]], axis=1), faces
    raise ValueError(f'shape units must be one of {SHAPE_UNITS}, got {units!r}')


def voxel_to_world(verts: np.ndarray, resolution: int, box_warp: float) -> np.ndarray:
    """Vertices in upstream's voxel frame (u, v, w) -> world (x, y, z)."""
    vs = voxel_size(resolution, box_warp)
    return np.stack([box_warp / 2 - verts[:, 2] * vs, -box_warp / 2 + verts[:, 1] * vs,
                     -box_warp / 2 + verts[:, 0] * vs], axis=1)


def write_ply(path: str, verts: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None,
              comments: tuple[str, ...] = ()) -> None:
    """Binary little-endian PLY: float x, y, z [, uchar red, green, blue] per vertex and a
    'vertex_indices' list (uchar count, int indices) per face, as plyfile writes upstream's meshes."""
    verts = np.asarray(verts)
    faces = np.asarray(faces)
    vdtype = [('x', '<f4'), ('y', '<f4'), ('z', '<f4')]
    if colors is not None:
        colors = np.asarray(colors)
        if colors.shape != (len(verts), 3) or colors.dtype != np.uint8:
            raise ValueError(f'write_ply: colors must be uint8 [{len(verts)}, 3], got {colors.dtype} {colors.shape}')
        vdtype += [('red', 'u1'), ('green', 'u1'), ('blue', 'u1')]
    vertex = np.empty(len(verts), dtype=vdtype)
    vertex['x'], vertex['y'], vertex['z'] = verts[:, 0], verts[:, 1], verts[:, 2]
    if colors is not None:
        vertex['red'], vertex['green'], vertex['blue'] = colors[:, 0], colors[:, 1], colors[:, 2]
    face = np.empty(len(faces), dtype=[('n', 'u1'), ('i', '<i4', (3,))])
    face['n'] = 3
    face['i'] = faces
    header = ['ply', 'format binary_little_endian 1.0', *[f'comment {c}' for c in comments],
              f'element vertex {len(verts)}', 'property float x', 'property float y', 'property float z']
    if colors is not None:
        header += ['property uchar red', 'property uchar green', 'property uchar blue']
    header += [f'element face {len(faces)}', 'property list uchar int vertex_indices', 'end_header']
    with dnnlib.util.atomic_write_path(path) as tmp:
        with open(tmp, 'wb') as f:
            f.write(('\n'.join(header) + '\n').encode('ascii'))
            f.write(vertex.tobytes())
            f.write(face.tobytes())

# ----------------------------------------------------------------------------


def rgb_to_uint8(rgb: torch.Tensor) -> np.ndarray:
    """Decoder RGB in [0, 1] -> uint8 (round(255 x), clamped): upstream's image conversion of 2 x - 1."""
    return (rgb * 255 + 0.5).clamp(0, 255).to(torch.uint8).numpy()


def save_shape(path: str, field: DensityField, resolution: int, fmt: str = '.mrc', units: str = 'voxel',
               level: float = DEFAULT_LEVEL, colors: bool = False, pad: int | None = None,
               pad_top: int | None = None, pad_value: float = DEFAULT_PAD_VALUE, slab: int = 8) -> dict:
    """Write the shape of `field` to `path` as .mrc or .ply (axes and units: module docstring).
    colors (.ply only): each vertex gets the decoder's RGB at its position. Returns a summary."""
    if fmt not in SHAPE_FORMATS:
        raise ValueError(f'shape format must be one of {SHAPE_FORMATS}, got {fmt!r}')
    if units not in SHAPE_UNITS:
        raise ValueError(f'shape units must be one of {SHAPE_UNITS}, got {units!r}')
    box = field.box_warp
    slabs = density_slabs(field.sigma, resolution, box, pad=pad, pad_top=pad_top, pad_value=pad_value, slab=slab)
    if fmt == '.mrc':
        if colors:
            raise ValueError('vertex colours need --shape-format=.ply')
        write_mrc(path, slabs, resolution, voxel_size_header=voxel_size(resolution, box) if units == 'world' else None)
        return {'path': path, 'format': fmt}
    verts_idx, faces = marching_cubes_slabs(slabs, level=level)
    verts, faces = mesh_to_units(verts_idx, faces, resolution, box, units)
    rgb = None
    if colors:
        world = -box / 2 + verts_idx * voxel_size(resolution, box)
        rgb = rgb_to_uint8(field.query(world.astype(np.float32))[1])
    comments = (f'eg3d-next shape: units={units}, resolution={resolution}, box_warp={box:g}, level={level:g}',
                'voxel: (u,v,w) = ((z+b/2)/vs, (y+b/2)/vs, (b/2-x)/vs), vs = b/(N-1); world: EG3D (x,y,z), +y up')
    write_ply(path, verts, faces, colors=rgb, comments=comments)
    return {'path': path, 'format': fmt, 'vertices': len(verts), 'faces': len(faces)}
