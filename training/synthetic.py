"""A procedural 3D dataset: simple objects ray-cast analytically in numpy from EG3D-like cameras.

Independent of the GAN renderer: rays come from the pinhole model of the 25-number labels (OpenCV
cam2world, normalised intrinsics, pixel centres at (j + 0.5) / R), hit points from closed-form
ray/ellipsoid and ray/box intersections (tori by sphere tracing their exact distance function),
shading is Lambertian under two fixed world-space lights, and the background is black (what an
empty EG3D volume renders). Objects sit inside EG3D's box [-0.5, 0.5]^3 around the origin.

Kinds ("synthetic:KIND"):
    box     (the default) one centred box, random proportions and colour: easy to learn, clearly 3-D.
    shapes  one sphere, box or torus with a random orientation, size and colour.
    heads   composed head-like objects (skull, hair cap, eyes, nose, mouth, ears) facing +z.

Item i of seed s is a pure function of (kind, s, i, resolution, camera options): its camera comes
from np.random.default_rng([s, i, 0]) and its object from default_rng([s, i, 1]).
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools

import numpy as np

from training.dataset import Dataset, DatasetError

KINDS = ('box', 'shapes', 'heads')
DEFAULT_KIND = 'box'

# ----------------------------------------------------------------------------
# Cameras (EG3D convention, facts section 4).


@dataclasses.dataclass(frozen=True)
class CameraDistribution:
    """How cameras are drawn, as EG3D's LookAtPoseSampler: an orbit round the origin aimed at a pivot."""
    radius:    float = 2.7              # Distance of the camera centre from the world origin.
    focal:     float = 4.2647           # Normalised focal length (FFHQ's; "FOV 18.837" in EG3D's convention).
    pivot:     tuple = (0.0, 0.0, 0.0)  # Point the cameras look at.
    yaw_std:   float = 0.35             # Std of the yaw h around pi/2 (radians).
    pitch_std: float = 0.15             # Std of the pitch parameter v around pi/2.
    full_360:  bool = False             # Yaw uniform over the full circle instead of Gaussian.


def lookat_cam2world(origin: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV cam2world [N, 4, 4] of cameras at `origin` [N, 3] looking at `target`, world +y up.

    Columns: right = normalize(forward x up) (image right), down = forward x right (image down),
    forward; for a camera on +z looking at the origin this is x_cam = +x, y_cam = -y, z_cam = -z.
    """
    origin, target = np.atleast_2d(origin).astype(np.float64), np.atleast_2d(target).astype(np.float64)
    forward = _normalize(target - origin)
    right = _normalize(np.cross(forward, [0.0, 1.0, 0.0]))
    down = np.cross(forward, right)
    pose = np.zeros([origin.shape[0], 4, 4])
    pose[:, :3, 0], pose[:, :3, 1], pose[:, :3, 2], pose[:, :3, 3] = right, down, forward, origin
    pose[:, 3, 3] = 1
    return pose


def orbit_origin(h: np.ndarray, v: np.ndarray, radius: float) -> np.ndarray:
    """Camera centres [N, 3] for yaw h and pitch v as EG3D: phi = arccos(1 - 2v/pi), (pi/2, pi/2) -> +z."""
    phi = np.arccos(1 - 2 * np.clip(v, 1e-5, np.pi - 1e-5) / np.pi)
    return radius * np.stack([-np.sin(phi) * np.cos(h), np.cos(phi), np.sin(phi) * np.sin(h)], axis=-1)


def make_camera_labels(pose: np.ndarray, focal: float, cx: float = 0.5, cy: float = 0.5) -> np.ndarray:
    """25-number labels [N, 25]: flattened cam2world and normalised intrinsics [fx, 0, cx, 0, fy, cy, 0, 0, 1]."""
    intrinsics = np.array([focal, 0, cx, 0, focal, cy, 0, 0, 1], dtype=np.float64)
    return np.concatenate([pose.reshape(-1, 16), np.tile(intrinsics, (pose.shape[0], 1))], axis=1)


def sample_camera_labels(rng: np.random.Generator, n: int, dist: CameraDistribution) -> np.ndarray:
    """n camera labels [n, 25] (float64) drawn from `dist`."""
    if dist.full_360:
        h = rng.uniform(0, 2 * np.pi, size=n)
    else:
        h = np.pi / 2 + dist.yaw_std * rng.standard_normal(n)
    v = np.pi / 2 + dist.pitch_std * rng.standard_normal(n)
    origin = orbit_origin(h, v, dist.radius)
    return make_camera_labels(lookat_cam2world(origin, np.broadcast_to(dist.pivot, origin.shape)), dist.focal)


@functools.lru_cache(maxsize=8)
def _pixel_grid(resolution: int) -> np.ndarray:
    """Homogeneous normalised pixel centres [R*R, 3], row-major: ((j + 0.5) / R, (i + 0.5) / R, 1)."""
    uv = (np.arange(resolution) + 0.5) / resolution
    u, v = np.meshgrid(uv, uv, indexing='xy')
    grid = np.stack([u.ravel(), v.ravel(), np.ones(u.size)], axis=1)
    grid.setflags(write=False)
    return grid


def camera_rays(c: np.ndarray, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Camera centre [3] and unit ray directions [R*R, 3] (row-major pixels) of one label [25]."""
    pose, k = np.asarray(c, np.float64)[:16].reshape(4, 4), np.asarray(c, np.float64)[16:].reshape(3, 3)
    to_world = pose[:3, :3] @ np.linalg.inv(k)          # K^-1 [u, v, 1] is the camera-space point at z = 1.
    return pose[:3, 3].copy(), _normalize(_pixel_grid(resolution) @ to_world.T)

# ----------------------------------------------------------------------------
# Scenes and ray casting.


@dataclasses.dataclass
class Primitive:
    """One solid; its local frame is centred at `center` and rotated by `rotation` (local -> world)."""
    kind:     str                      # 'ellipsoid', 'box' or 'torus' (round the local y axis).
    center:   np.ndarray               # [3] world position.
    size:     np.ndarray               # Ellipsoid radii [3]; box half-extents [3]; torus [major, minor, 0].
    color:    np.ndarray               # [3] albedo in [0, 1].
    rotation: np.ndarray = dataclasses.field(default_factory=lambda: np.eye(3))  # [3, 3]


@dataclasses.dataclass
class Scene:
    primitives: list                                                      # Primitives (union).
    lights:     np.ndarray = dataclasses.field(default_factory=lambda: np.array(
                    [[-0.40, 0.60, 0.70], [0.55, 0.15, -0.80]]))           # [L, 3] directions toward lights.
    strengths:  tuple = (0.75, 0.30)                                      # Diffuse strength per light.
    ambient:    float = 0.22                                              # Ambient fraction of the albedo.


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(np.einsum('...i,...i->...', x, x))[..., None]


def _hit_ellipsoid(o: np.ndarray, d: np.ndarray, radii: np.ndarray):
    os_, ds = o / radii, d / radii                         # Scaled to the unit sphere.
    a = np.sum(ds * ds, axis=1)
    b = ds @ os_
    cc = os_ @ os_ - 1
    disc = b * b - a * cc
    t = np.where(disc >= 0, (-b - np.sqrt(np.maximum(disc, 0))) / a, np.inf)
    t = np.where(t > 0, t, np.inf)
    p = o + np.where(np.isfinite(t), t, 0)[:, None] * d
    return t, _normalize(p / radii ** 2)


def _hit_box(o: np.ndarray, d: np.ndarray, half: np.ndarray):
    with np.errstate(divide='ignore', invalid='ignore'):
        t1, t2 = (-half - o) / d, (half - o) / d          # Slab entries and exits per axis.
    near, far = np.minimum(t1, t2), np.maximum(t1, t2)
    t_near = np.maximum(np.maximum(near[:, 0], near[:, 1]), near[:, 2])
    t_far = np.minimum(np.minimum(far[:, 0], far[:, 1]), far[:, 2])
    t = np.where((t_near <= t_far) & (t_near > 0), t_near, np.inf)
    axis = np.where(near[:, 0] == t_near, 0, np.where(near[:, 1] == t_near, 1, 2))
    rows = np.arange(d.shape[0])
    n = np.zeros_like(d)
    n[rows, axis] = -np.sign(d[rows, axis])
    return t, n


def _hit_torus(o: np.ndarray, d: np.ndarray, size: np.ndarray, steps: int = 160, eps: float = 1e-6):
    major, minor = size[0], size[1]

    def sdf(p):
        return np.hypot(np.hypot(p[:, 0], p[:, 2]) - major, p[:, 1]) - minor

    t_mid, t_ball = _hit_ellipsoid(o, d, np.full(3, major + minor))[0], np.full(d.shape[0], np.inf)
    active = np.flatnonzero(np.isfinite(t_mid))          # Start at the bounding sphere.
    t = t_mid.copy()
    t_exit = t[active] + 2 * (major + minor) + 1e-3
    for _ in range(steps):
        if active.size == 0:
            break
        dist = sdf(o + t[active, None] * d[active])
        hit = dist < eps
        t_ball[active[hit]] = t[active[hit]]
        t[active] += dist
        keep = ~hit & (t[active] < t_exit)
        active, t_exit = active[keep], t_exit[keep]
    p = o + np.where(np.isfinite(t_ball), t_ball, 0)[:, None] * d
    ring = np.stack([p[:, 0], np.zeros(len(p)), p[:, 2]], axis=1)
    ring = major * ring / np.maximum(np.linalg.norm(ring, axis=1, keepdims=True), 1e-12)
    return t_ball, _normalize(p - ring + 1e-12)


_HIT = {'ellipsoid': _hit_ellipsoid, 'box': _hit_box, 'torus': _hit_torus}


def _bounding_radius(prim: Primitive) -> float:
    size = np.asarray(prim.size, np.float64)
    return {'ellipsoid': size.max(), 'box': np.linalg.norm(size), 'torus': size[0] + size[1]}[prim.kind]


def _rays_near(origin: np.ndarray, dirs: np.ndarray, centre: np.ndarray, radius: float) -> np.ndarray:
    """Indices of the rays that pass within `radius` of `centre` (a cheap cull, exact for the result)."""
    oc = centre - origin
    along = dirs @ oc
    return np.flatnonzero(oc @ oc - along * along <= radius ** 2 + 1e-9)


def _cast(scene: Scene, origin: np.ndarray, dirs: np.ndarray):
    """Hits only: ray indices [H], distances [H], normals [H, 3], albedos [H, 3]."""
    centres = np.array([np.asarray(p.center, np.float64) for p in scene.primitives])
    radii = np.array([_bounding_radius(p) for p in scene.primitives])
    mid = centres.mean(axis=0)
    near = _rays_near(origin, dirs, mid, (np.linalg.norm(centres - mid, axis=1) + radii).max())
    sub = dirs[near]
    t_best = np.full(near.size, np.inf)
    normal, albedo = np.zeros_like(sub), np.zeros_like(sub)
    for prim, centre, radius in zip(scene.primitives, centres, radii):
        rays = _rays_near(origin, sub, centre, radius)
        if rays.size == 0:
            continue
        rot = np.asarray(prim.rotation, np.float64)
        t, n_local = _HIT[prim.kind]((origin - centre) @ rot, sub[rays] @ rot, np.asarray(prim.size, np.float64))
        closer = t < t_best[rays]
        hit_rays = rays[closer]
        t_best[hit_rays] = t[closer]
        normal[hit_rays] = n_local[closer] @ rot.T
        albedo[hit_rays] = prim.color
    hit = np.flatnonzero(np.isfinite(t_best))
    return near[hit], t_best[hit], normal[hit], albedo[hit]


def cast_rays(scene: Scene, origin: np.ndarray, dirs: np.ndarray):
    """Nearest hits of rays from `origin` [3] along `dirs` [M, 3].

    Returns distance [M] (inf = miss), unit normal [M, 3] and albedo [M, 3].
    """
    idx, t_hit, n_hit, a_hit = _cast(scene, origin, dirs)
    t, normal, albedo = np.full(dirs.shape[0], np.inf), np.zeros_like(dirs), np.zeros_like(dirs)
    t[idx], normal[idx], albedo[idx] = t_hit, n_hit, a_hit
    return t, normal, albedo


def render_scene(scene: Scene, c: np.ndarray, resolution: int, ssaa: int = 2):
    """Shaded image [R, R, 3] (float in [0, 1], black background) and coverage [R, R] seen by label c.

    Each pixel averages ssaa x ssaa rays through the centres of its sub-pixels.
    """
    origin, dirs = camera_rays(c, resolution * ssaa)
    idx, _t, normal, albedo = _cast(scene, origin, dirs)
    lights = _normalize(np.asarray(scene.lights, np.float64))
    shade = scene.ambient + np.maximum(normal @ lights.T, 0) @ np.asarray(scene.strengths, np.float64)
    rgba = np.zeros((dirs.shape[0], 4))
    rgba[idx, :3] = np.clip(albedo * shade[:, None], 0, 1)
    rgba[idx, 3] = 1
    rgba = rgba.reshape(resolution, ssaa, resolution, ssaa, 4)
    rgba = sum(rgba[:, i, :, j] for i in range(ssaa) for j in range(ssaa)) / ssaa ** 2  # Box filter.
    return rgba[..., :3], rgba[..., 3]


def mirror_scene(scene: Scene) -> Scene:
    """The scene reflected across the x = 0 plane (objects and lights); our shapes are x-symmetric locally."""
    s = np.diag([-1.0, 1.0, 1.0])
    prims = [dataclasses.replace(p, center=p.center * [-1, 1, 1], rotation=s @ p.rotation @ s)
             for p in scene.primitives]
    return dataclasses.replace(scene, primitives=prims, lights=np.asarray(scene.lights) * [-1, 1, 1])

# ----------------------------------------------------------------------------
# Object kinds.


def _color(rng, hue=(0.0, 1.0), sat=(0.45, 0.85), val=(0.75, 1.0)) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(rng.uniform(*hue) % 1.0, rng.uniform(*sat), rng.uniform(*val)))


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _rotation(axis: int, angle: float) -> np.ndarray:
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    rot = np.eye(3)
    rot[i, i] = rot[j, j] = np.cos(angle)
    rot[i, j], rot[j, i] = -np.sin(angle), np.sin(angle)
    return rot


_BOX_TURN = _rotation(1, -np.pi / 6) @ _rotation(0, np.pi / 9)  # Yaw -30 degrees after a 20-degree tilt toward +z.


def make_scene(kind: str, rng: np.random.Generator) -> Scene:
    """A random object of one kind (see the module docstring)."""
    if kind == 'box':  # Turned so that a frontal camera sees three faces, each shaded differently.
        return Scene([Primitive('box', np.zeros(3), rng.uniform(0.11, 0.17, size=3), _color(rng), _BOX_TURN)])
    if kind == 'shapes':
        shape = rng.choice(['sphere', 'box', 'torus'])
        center = rng.uniform(-0.05, 0.05, size=3)
        if shape == 'sphere':
            prim = Primitive('ellipsoid', center, np.full(3, rng.uniform(0.14, 0.22)), _color(rng))
        elif shape == 'box':
            prim = Primitive('box', center, rng.uniform(0.09, 0.17, size=3), _color(rng), _random_rotation(rng))
        else:
            size = np.array([rng.uniform(0.13, 0.18), rng.uniform(0.045, 0.07), 0])
            prim = Primitive('torus', center, size, _color(rng), _random_rotation(rng))
        return Scene([prim])
    if kind == 'heads':
        return Scene(_head(rng))
    raise ValueError(f'unknown synthetic kind "{kind}"; choose one of {", ".join(KINDS)}')


def _head(rng) -> list:
    s = rng.uniform(0.9, 1.1)
    a = np.array([0.155, 0.2, 0.17]) * s * rng.uniform(0.93, 1.07, size=3)
    skin = _color(rng, hue=(0.02, 0.11), sat=(0.25, 0.65), val=(0.45, 0.98))
    hair = _color(rng, hue=(0.0, 0.15), sat=(0.2, 0.8), val=(0.08, 0.7))
    lips = np.clip(skin * [1.0, 0.6, 0.6], 0, 1)
    eye = _color(rng, hue=(0.0, 1.0), sat=(0.2, 0.6), val=(0.1, 0.35))

    def front(x, y):  # z of the skull surface at (x, y).
        return a[2] * np.sqrt(max(1 - (x / a[0]) ** 2 - (y / a[1]) ** 2, 0))

    er, ex, ey = 0.022 * s, 0.36 * a[0], 0.1 * a[1]
    return [
        Primitive('ellipsoid', np.zeros(3), a, skin),                                               # Skull.
        Primitive('ellipsoid', np.array([0, 0.3 * a[1], -0.12 * a[2]]), a * [1.05, 0.8, 1.03], hair),  # Hair cap.
        Primitive('ellipsoid', np.array([-ex, ey, front(ex, ey) - 0.4 * er]), np.full(3, er), eye),    # Eyes.
        Primitive('ellipsoid', np.array([ex, ey, front(ex, ey) - 0.4 * er]), np.full(3, er), eye),
        Primitive('ellipsoid', np.array([0, -0.12 * a[1], front(0, -0.12 * a[1])]),
                  np.array([0.024, 0.045, 0.035]) * s, skin),                                        # Nose.
        Primitive('ellipsoid', np.array([0, -0.45 * a[1], front(0, -0.45 * a[1]) - 0.008]),
                  np.array([0.05, 0.013, 0.02]) * s, lips),                                          # Mouth.
        Primitive('ellipsoid', np.array([-a[0], 0, -0.05 * a[2]]), np.array([0.022, 0.05, 0.035]) * s, skin),
        Primitive('ellipsoid', np.array([a[0], 0, -0.05 * a[2]]), np.array([0.022, 0.05, 0.035]) * s, skin),
    ]

# ----------------------------------------------------------------------------
# Items and the dataset.


def parse_source(path: str) -> str | None:
    """The kind of a "synthetic" or "synthetic:KIND" source, or None for anything else."""
    if not isinstance(path, str) or not (path == 'synthetic' or path.startswith('synthetic:')):
        return None
    kind = path.partition(':')[2] or DEFAULT_KIND
    if kind not in KINDS:
        raise DatasetError(f'{path}: unknown synthetic kind "{kind}"; choose one of {", ".join(KINDS)}')
    return kind


def render_item(kind: str, seed: int, idx: int, resolution: int, cameras: CameraDistribution = CameraDistribution(),
                ssaa: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Item idx of a seed: uint8 image [R, R, 3] and float64 camera label [25]."""
    c = sample_camera_labels(np.random.default_rng([seed, idx, 0]), 1, cameras)[0]
    scene = make_scene(kind, np.random.default_rng([seed, idx, 1]))
    rgb, _alpha = render_scene(scene, c, resolution, ssaa)
    return np.rint(rgb * 255).astype(np.uint8), c


class SyntheticDataset(Dataset):
    """The procedural dataset served directly (rendered per item, nothing on disk): path "synthetic:KIND"."""

    def __init__(self,
        path:        str = 'synthetic',     # "synthetic" or "synthetic:KIND" (box, shapes, heads).
        resolution:  int | None = 64,       # Image resolution (a power of two); None = 64.
        num_images:  int = 2000,            # Number of distinct items.
        seed:        int = 0,               # Item seed (independent of random_seed, the max_size subset seed).
        ssaa:        int = 2,               # Rays per pixel along each axis.
        cameras:     dict | None = None,    # CameraDistribution fields; None = EG3D's FFHQ-like defaults.
        cache:       bool = True,           # Keep rendered images in memory (3 R^2 bytes each, per process).
        **super_kwargs,                     # Dataset kwargs: max_size, use_labels, xflip, mirror_labels, random_seed.
    ):
        self._kind = parse_source(path)
        if self._kind is None:
            raise DatasetError(f'{path}: not a synthetic source (expected "synthetic:KIND")')
        resolution = 64 if resolution is None else int(resolution)
        if resolution < 4 or resolution & (resolution - 1):
            raise DatasetError(f'{path}: resolution {resolution} is not a power of two (>= 4)')
        self._resolution, self._seed, self._ssaa = resolution, seed, ssaa
        self._cameras = CameraDistribution(**(cameras or {}))
        self._cache = {} if cache else None
        super().__init__(name=f'synthetic-{self._kind}', raw_shape=[num_images, 3, resolution, resolution],
                         **super_kwargs)

    def _load_raw_image(self, raw_idx: int) -> np.ndarray:
        image = None if self._cache is None else self._cache.get(int(raw_idx))
        if image is None:
            image, _c = render_item(self._kind, self._seed, int(raw_idx), self._resolution, self._cameras, self._ssaa)
            image = image.transpose(2, 0, 1)
            if self._cache is not None:
                self._cache[int(raw_idx)] = image
        return image

    def _load_raw_labels(self) -> np.ndarray:
        return np.stack([sample_camera_labels(np.random.default_rng([self._seed, i, 0]), 1, self._cameras)[0]
                         for i in range(self._raw_shape[0])]).astype(np.float32)
