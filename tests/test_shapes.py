"""training/shapes.py: the density grid in slabs, .mrc layout, slab-wise marching cubes, the PLY writer,
and meshes of an analytic ellipsoid generator in the documented axes and units."""

import numpy as np
import pytest
import torch

from tests.generators import Ellipsoid, ellipsoid_G, read_ply, tiny_G
from training import shapes

mrcfile = pytest.importorskip('mrcfile')
measure = pytest.importorskip('skimage.measure')


def _field_fn(fn):
    """sigma_fn for density_slabs from a numpy function of world points [M, 3] (float64)."""
    calls = []

    def sigma(points):
        calls.append(len(points))
        return torch.from_numpy(fn(points.astype(np.float64)).astype(np.float32))
    return sigma, calls


def _canonical_triangles(verts, faces, decimals=3):
    """Triangles as position tuples, rotated to start at their smallest vertex (winding kept)."""
    out = set()
    for tri in np.round(np.asarray(verts, dtype=np.float64)[faces], decimals):
        keys = [tuple(v) for v in tri]
        i = min(range(3), key=lambda k: keys[k])
        out.add(tuple(keys[i:] + keys[:i]))
    return out

# ----------------------------------------------------------------------------


def test_density_slabs_grid_and_borders():
    n, box, pad, top = 20, 1.6, 3, 5
    rng = np.random.default_rng(0)
    coef = rng.normal(size=3)
    sigma, calls = _field_fn(lambda p: p @ coef + 0.3 * np.sin(7 * p[:, 0]))
    vol = np.concatenate([s for _, s in shapes.density_slabs(sigma, n, box, pad=pad, pad_top=top, pad_value=-7,
                                                             slab=6)])
    assert vol.shape == (n, n, n) and vol.dtype == np.float32
    g = -box / 2 + np.arange(n) * box / (n - 1)                   # Both faces of the cube are sampled.
    x, y, z = np.meshgrid(g, g, g, indexing='ij')
    expected = np.stack([x, y, z], -1) @ coef + 0.3 * np.sin(7 * x)
    inner = (slice(pad, n - pad), slice(pad, n - top), slice(pad, n - pad))
    np.testing.assert_allclose(vol[inner], expected[inner], atol=1e-5)
    border = np.ones_like(vol, dtype=bool)
    border[inner] = False
    assert (vol[border] == -7).all()
    assert sum(calls) == (n - 2 * pad) ** 2 * (n - pad - top)       # Border points are never evaluated.
    assert shapes.default_pad(512) == 60 and shapes.default_pad(256) == 30


def test_mrc_layout_reverses_x(tmp_path):
    """a[i, j, k] = sigma(b/2 - i vs, -b/2 + j vs, -b/2 + k vs) (the module docstring)."""
    n, box = 12, 1.0
    fn = lambda p: 100 * p[:, 0] + 10 * p[:, 1] + p[:, 2]  # noqa: E731
    sigma, _ = _field_fn(fn)
    path = tmp_path / 'v.mrc'
    shapes.write_mrc(str(path), shapes.density_slabs(sigma, n, box, pad=0, slab=5), n, voxel_size_header=0.25)
    with mrcfile.open(str(path)) as mrc:
        a = np.array(mrc.data)
        assert mrc.header.mode == 2 and float(mrc.voxel_size.x) == 0.25
    vs = box / (n - 1)
    i, j, k = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing='ij')
    pts = np.stack([box / 2 - i * vs, -box / 2 + j * vs, -box / 2 + k * vs], -1).reshape(-1, 3)
    np.testing.assert_allclose(a, fn(pts).reshape(n, n, n), atol=1e-4)
    assert [p.name for p in tmp_path.iterdir()] == ['v.mrc']      # No temporary file left.


@pytest.mark.parametrize('slab', [1, 4, 9, 40])
def test_slab_marching_cubes_equals_one_pass(slab):
    """Slabs (with an empty one in the middle: two blobs) give exactly the whole-volume mesh."""
    n = 33
    g = np.linspace(-1, 1, n)
    x, y, z = np.meshgrid(g, g, g, indexing='ij')
    blob = lambda cx, r: 10 + 30 * (1 - ((x - cx) ** 2 + (y - 0.1) ** 2 + (z + 0.05) ** 2 * 1.7) / r ** 2)  # noqa: E731
    vol = np.maximum(blob(-0.55, 0.3), blob(0.5, 0.37)).astype(np.float32)
    slabs = ((x0, vol[x0:x0 + slab]) for x0 in range(0, n, slab))
    verts, faces = shapes.marching_cubes_slabs(slabs, level=10)
    ref_v, ref_f, _, _ = measure.marching_cubes(vol, level=10, gradient_direction='ascent')
    assert len(verts) == len(ref_v) and len(faces) == len(ref_f)
    assert len(np.unique(verts, axis=0)) == len(verts)           # Seam vertices merged, none duplicated.
    assert _canonical_triangles(verts, faces) == _canonical_triangles(ref_v, ref_f)


def test_ply_writer(tmp_path):
    rng = np.random.default_rng(1)
    verts = rng.normal(size=(7, 3)).astype(np.float32)
    faces = rng.integers(0, 7, size=(5, 3))
    colors = rng.integers(0, 256, size=(7, 3), dtype=np.uint8)
    shapes.write_ply(str(tmp_path / 'a.ply'), verts, faces, colors=colors, comments=('hello',))
    ply = read_ply(tmp_path / 'a.ply')
    np.testing.assert_array_equal(np.stack([ply['vertex'][k] for k in 'xyz'], 1), verts)
    np.testing.assert_array_equal(np.stack([ply['vertex'][k] for k in ('red', 'green', 'blue')], 1), colors)
    np.testing.assert_array_equal(ply['faces'], faces)
    assert ply['comments'] == ['hello']
    shapes.write_ply(str(tmp_path / 'empty.ply'), np.zeros([0, 3]), np.zeros([0, 3], dtype=np.int64))
    ply = read_ply(tmp_path / 'empty.ply')
    assert len(ply['vertex']) == 0 and ply['vertex'].dtype.names == ('x', 'y', 'z')

# ----------------------------------------------------------------------------
# A generator: the field computes the planes once and agrees with G.sample_mixed.


def test_density_field_matches_sample_mixed_and_runs_backbone_once():
    G = tiny_G()
    calls = []
    G.backbone.synthesis.register_forward_hook(lambda *a: calls.append(1))
    ws = G.mapping(torch.randn(1, G.z_dim), torch.randn(1, 25))
    field = shapes.DensityField(G, ws, max_batch=100)
    pts = torch.rand(1, 350, 3) - 0.5
    sigma, rgb = field.query(pts[0])
    assert len(calls) == 1                                        # 4 batches, one backbone pass.
    ref = G.sample_mixed(pts, torch.zeros_like(pts), ws, noise_mode='const')
    torch.testing.assert_close(sigma, ref['sigma'][0, :, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rgb, ref['rgb'][0, :, :3], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('units', ['world', 'voxel'])
def test_ellipsoid_mesh_in_documented_axes(tmp_path, units):
    """The .ply of an off-centre ellipsoid lies on it (mean distance far below a voxel), in world
    coordinates or in upstream's voxel frame (u, v, w) = ((z+b/2)/vs, (y+b/2)/vs, (b/2-x)/vs); faces
    point outward; vertex colours are the decoder's RGB at the vertex."""
    ell = Ellipsoid()
    G = ellipsoid_G(ell)
    n, box = 48, 1.0
    vs = box / (n - 1)
    field = shapes.DensityField(G, torch.zeros(1, G.num_ws, G.w_dim))
    path = tmp_path / 's.ply'
    summary = shapes.save_shape(str(path), field, n, fmt='.ply', units=units, colors=True)
    ply = read_ply(path)
    v = np.stack([ply['vertex'][k] for k in 'xyz'], 1).astype(np.float64)
    assert summary['vertices'] == len(v) > 500
    if units == 'voxel':
        assert v.min() >= 0 and v.max() <= n - 1
        v = np.stack([box / 2 - v[:, 2] * vs, -box / 2 + v[:, 1] * vs, -box / 2 + v[:, 0] * vs], 1)
    d = ell.distance(v)
    assert d.mean() < 0.1 * vs and d.max() < 0.5 * vs, (d.mean() / vs, d.max() / vs)
    # The mesh spans the ellipsoid's extent on each world axis (wrong axes or flips would not).
    np.testing.assert_allclose(v.min(0), ell.centre - ell.axes, atol=vs)
    np.testing.assert_allclose(v.max(0), ell.centre + ell.axes, atol=vs)
    tri = v[ply['faces']]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert (np.sum(normals * (tri.mean(1) - ell.centre), 1) > 0).all()
    colors = np.stack([ply['vertex'][k] for k in ('red', 'green', 'blue')], 1).astype(np.int64)
    assert np.abs(colors - np.round(255 * ell.rgb(v))).max() <= 1


def test_empty_shape_and_bad_arguments(tmp_path):
    G = tiny_G()
    field = shapes.DensityField(G, torch.zeros(1, G.num_ws, G.w_dim))
    summary = shapes.save_shape(str(tmp_path / 'e.ply'), field, 12, fmt='.ply', level=1e6)
    assert summary['vertices'] == 0 and len(read_ply(tmp_path / 'e.ply')['vertex']) == 0
    with pytest.raises(ValueError, match='format'):
        shapes.save_shape(str(tmp_path / 'x.obj'), field, 12, fmt='.obj')
    with pytest.raises(ValueError, match='.ply'):
        shapes.save_shape(str(tmp_path / 'x.mrc'), field, 12, fmt='.mrc', colors=True)
    with pytest.raises(ValueError, match='one latent'):
        shapes.DensityField(G, torch.zeros(2, G.num_ws, G.w_dim))


def test_unit_frames():
    """Grid index (x, y, z) -> world -b/2 + index * vs; the voxel frame is (z, y, N-1-x); voxel_to_world
    inverts it."""
    n, box = 9, 1.6
    idx = np.array([[0, 0, 0], [8, 0, 0], [2, 5, 7.5]])
    faces = np.array([[0, 1, 2]])
    world, f = shapes.mesh_to_units(idx, faces, n, box, 'world')
    np.testing.assert_allclose(world, [[-0.8, -0.8, -0.8], [0.8, -0.8, -0.8], [-0.4, 0.2, 0.7]])
    voxel, f2 = shapes.mesh_to_units(idx, faces, n, box, 'voxel')
    np.testing.assert_allclose(voxel, [[0, 0, 8], [0, 0, 0], [7.5, 5, 6]])
    np.testing.assert_array_equal(f, faces)
    np.testing.assert_array_equal(f2, faces)
    np.testing.assert_allclose(shapes.voxel_to_world(voxel, n, box), world)
    with pytest.raises(ValueError, match='units'):
        shapes.mesh_to_units(idx, faces, n, box, 'mm')
