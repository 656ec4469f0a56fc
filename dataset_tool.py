"""dataset_tool: make an EG3D dataset (uncompressed zip or folder of PNGs plus dataset.json).

Sources: a folder of images, a zip, or a procedural 3D dataset "synthetic:KIND" (box, shapes, heads).

    python dataset_tool.py --source=synthetic:box --dest=~/datasets/box64.zip
    python dataset_tool.py --source=photos/ --poses=cameras.json --dest=faces.zip \\
        --transform=center-crop --resolution=256x256 --mirror

Output images are named {idx:08d}[:5]/img{idx:08d}.png (PNG, no compression) as upstream; labels are
the 25-number EG3D cameras (16 cam2world + 9 normalised intrinsics). Crops adjust the intrinsics so
that labels stay true to the output pixels. Labels are validated (orthonormal rotation, positive
focal, principal point near the centre) with messages naming the file; a summary is printed and,
when there are cameras, a plot of their centres and viewing directions is written beside --dest.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import shutil
import tempfile
import time
import zipfile

import click
import numpy as np
import PIL.Image
import PIL.ImageDraw

import dnnlib
from training import dataset as ds
from training import synthetic

# ----------------------------------------------------------------------------
# Sources: a list of names, an image per name and optional labels.


class Source:
    def __init__(self, names, load, labels_where, where, close=None):
        self.names = names                  # Source-relative names, sorted.
        self.load = load                    # load(index) -> (PIL image, label or None), index 0, 1, 2, ...
        self.labels_where = labels_where    # File the labels come from (for messages).
        self.where = where                  # where(name) -> the image's location (for messages).
        self.close = close or (lambda: None)


def open_folder_or_zip(path: str, max_images: int | None) -> Source:
    files = ds.list_files(path)
    exts = ds.image_extensions()
    names = [f for f in files if os.path.splitext(f)[1].lower() in exts][:max_images]
    if not names:
        raise ds.DatasetError(f'{path}: no image files found')
    is_dir = os.path.isdir(path)
    zf = None if is_dir else zipfile.ZipFile(path)

    def read(name):
        if not is_dir:
            return zf.read(name)
        with open(os.path.join(path, name), 'rb') as f:
            return f.read()

    def where(name):
        return os.path.join(path, name) if is_dir else f'{path}:{name}'

    labels = None
    if 'dataset.json' in files:
        labels = ds.load_labels_json(read('dataset.json'), where('dataset.json'))

    def load(i):
        img = ds.decode_image(io.BytesIO(read(names[i])), where(names[i]))
        return img, None if labels is None else labels.get(names[i])
    return Source(names, load, where('dataset.json'), where, close=zf.close if zf else None)


def _render_synthetic(args):
    kind, seed, idx, resolution, cameras = args
    return synthetic.render_item(kind, seed, idx, resolution, cameras)


def open_synthetic(kind: str, count: int, resolution: int, seed: int, cameras, workers: int) -> Source:
    """Rendered on the fly, in order, by `workers` processes (items do not depend on the split)."""
    names = [f'{kind}/{i:08d}.png' for i in range(count)]
    jobs = [(kind, seed, i, resolution, cameras) for i in range(count)]
    pool = multiprocessing.get_context().Pool(workers) if workers > 1 and count > 1 else None
    results = pool.imap(_render_synthetic, jobs, chunksize=8) if pool else map(_render_synthetic, jobs)
    expected = iter(range(count))

    def load(i):
        if i != next(expected):
            raise RuntimeError('synthetic items are read in order')
        image, c = next(results)
        return PIL.Image.fromarray(image), c.tolist()
    def close():
        if pool is not None:
            pool.terminate()
            pool.join()
    return Source(names, load, f'synthetic:{kind}', lambda name: f'synthetic:{name}', close)

# ----------------------------------------------------------------------------
# Poses and per-image transforms.


def read_poses(path: str, names: list[str]) -> dict[str, list]:
    """Camera labels from a JSON: dataset.json's {"labels": [[name, label], ...]} or {name: label}.

    A label is 25 numbers or {"cam2world": 4x4, "intrinsics": 3x3}. Names match source-relative paths,
    or base names when those are unique.
    """
    try:
        with open(path, 'rb') as f:
            obj = json.loads(f.read())
    except (OSError, ValueError) as err:
        raise ds.DatasetError(f'{path}: cannot read the poses ({err})') from None
    if isinstance(obj, dict) and 'labels' in obj:
        table = ds.labels_from_json(obj, path) or {}
    elif isinstance(obj, dict):
        table = {str(k).replace('\\', '/'): v for k, v in obj.items()}
    else:
        raise ds.DatasetError(f'{path}: expected {{"labels": [[name, label], ...]}} or {{name: label}}')
    for key, value in table.items():
        if isinstance(value, dict):
            try:
                table[key] = (np.asarray(value['cam2world'], float).reshape(16).tolist() +
                              np.asarray(value['intrinsics'], float).reshape(9).tolist())
            except (KeyError, ValueError, TypeError):
                raise ds.DatasetError(f'{path}: the pose of "{key}" needs "cam2world" (4x4) and '
                                      f'"intrinsics" (3x3)') from None
    by_base, known = {}, set(names)
    for name in names:
        by_base.setdefault(os.path.basename(name), []).append(name)
    out = {}
    for key, value in table.items():
        if key in known or key not in by_base:
            out[key] = value
        elif len(by_base[key]) == 1:
            out[by_base[key][0]] = value
    missing = [n for n in names if n not in out]
    if missing:
        raise ds.DatasetError(f'{path}: no pose for {len(missing)} of {len(names)} images, e.g. "{missing[0]}"')
    return out


def parse_resolution(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        w, _, h = text.lower().partition('x')
        return int(w), int(h or w)
    except ValueError:
        raise click.BadParameter(f'"{text}": expected WxH, e.g. 256x256') from None


def transform_image(img: PIL.Image.Image, transform: str | None, res: tuple[int, int] | None):
    """The output image and the affine map (ax, bx, ay, by) of normalised coordinates u' = a u + b."""
    w, h = img.size
    if transform is None:
        if res is not None and res != (w, h):
            img = img.resize(res, PIL.Image.LANCZOS)   # Normalised coordinates are unchanged.
        return img, (1.0, 0.0, 1.0, 0.0)
    out_w, out_h = res or (min(w, h),) * 2
    if transform == 'center-crop':
        cw = ch = min(w, h)
    else:  # center-crop-wide: crop to out_w:out_h, then pad to a square out_w canvas.
        if out_h > out_w:
            raise click.BadParameter('center-crop-wide needs --resolution WxH with W >= H')
        cw = min(w, int(round(h * out_w / out_h)))
        ch = int(round(cw * out_h / out_w))
    x0, y0 = (w - cw) // 2, (h - ch) // 2
    img = img.crop((x0, y0, x0 + cw, y0 + ch)).resize((out_w, out_h), PIL.Image.LANCZOS)
    canvas_w, canvas_h, oy = out_w, out_h, 0
    if transform == 'center-crop-wide':
        canvas_h, oy = out_w, (out_w - out_h) // 2
        canvas = PIL.Image.new(img.mode, (out_w, out_w))
        canvas.paste(img, (0, oy))
        img = canvas
    # Source u (in [0, 1] over w) -> crop pixels -> output pixels -> canvas-normalised.
    ax, bx = w * out_w / (cw * canvas_w), -x0 * out_w / (cw * canvas_w)
    ay, by = h * out_h / (ch * canvas_h), (oy - y0 * out_h / ch) / canvas_h
    return img, (ax, bx, ay, by)


def adjust_intrinsics(c: np.ndarray, affine) -> np.ndarray:
    ax, bx, ay, by = affine
    c = np.array(c, dtype=np.float64)
    c[16], c[17], c[18] = ax * c[16], ax * c[17], ax * c[18] + bx
    c[20], c[21] = ay * c[20], ay * c[21] + by
    return c


def normalise_mode(img: PIL.Image.Image) -> PIL.Image.Image:
    if img.mode in ('L', 'RGB'):
        return img
    return img.convert('L' if img.mode in ('1', 'LA') else 'RGB')   # RGBA, P, CMYK, ... -> RGB.

# ----------------------------------------------------------------------------
# Output.


class Writer:
    """Writes files into a zip or a folder under a temporary name; `commit()` renames it onto dest."""

    def __init__(self, dest: str):
        self.dest = dest
        self.is_zip = dest.lower().endswith('.zip')
        parent = os.path.dirname(os.path.abspath(dest))
        os.makedirs(parent, exist_ok=True)
        if not self.is_zip and os.path.isdir(dest) and os.listdir(dest):
            raise click.ClickException(f'{dest}: the destination folder exists and is not empty')
        if self.is_zip:
            self._ctx = dnnlib.util.atomic_write_path(dest)
            self.tmp = self._ctx.__enter__()
            self.zip = zipfile.ZipFile(self.tmp, 'w', compression=zipfile.ZIP_STORED)
        else:
            self.tmp = tempfile.mkdtemp(dir=parent, prefix=f'.{os.path.basename(os.path.abspath(dest))}.tmp-')

    def write(self, name: str, data: bytes) -> None:
        if self.is_zip:  # A fixed timestamp: one seed and source give identical bytes.
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            self.zip.writestr(info, data, compress_type=zipfile.ZIP_STORED)
        else:
            os.makedirs(os.path.dirname(os.path.join(self.tmp, name)), exist_ok=True)
            with open(os.path.join(self.tmp, name), 'wb') as f:
                f.write(data)

    def commit(self) -> None:
        if self.is_zip:
            self.zip.close()
            self._ctx.__exit__(None, None, None)
        else:
            os.chmod(self.tmp, 0o777 & ~_umask())
            if os.path.isdir(self.dest):
                os.rmdir(self.dest)  # Empty (checked above).
            os.replace(self.tmp, self.dest)

    def abort(self) -> None:
        if self.is_zip:
            self.zip.close()
            self._ctx.__exit__(RuntimeError, RuntimeError('aborted'), None)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def png_bytes(img: PIL.Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format='png', compress_level=0, optimize=False)
    return buf.getvalue()


def archive_name(idx: int) -> str:
    return f'{idx:08d}'[:5] + f'/img{idx:08d}.png'

# ----------------------------------------------------------------------------
# Conversion.


def checked_label(value, name: str, where: str, affine):
    """A class index (int) or a validated 25-number camera label (float64) with adjusted intrinsics."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, (int, float)) for x in value):
        raise ds.DatasetError(f'{where}: the label of "{name}" is not a list of numbers')
    c = np.asarray(value, dtype=np.float64)
    problems = ds.camera_label_problems(c)
    if not problems:
        c = adjust_intrinsics(c, affine)
        problems = ds.camera_label_problems(c)
        problems = [f'after the crop, {p}' for p in problems]
    if problems:
        raise ds.DatasetError(f'{where}: the label of "{name}": {"; ".join(problems)}')
    return c


def convert(source: Source, writer: Writer, transform: str | None, res, mirror: bool,
            poses: dict | None, poses_where: str | None):
    """Write every image (and its mirrored copy) and dataset.json; returns (labels [M, 25] or None, info)."""
    n = len(source.names)
    labels_where = poses_where or source.labels_where
    out_labels = {}
    first = None
    for i, name in enumerate(source.names):
        img, label = source.load(i)
        if poses is not None:
            label = poses[name]
        img, affine = transform_image(normalise_mode(img), transform, res)
        where = source.where(name)
        if first is None:
            first = (img.size, img.mode, where, label is not None)
            w, h = img.size
            if w != h or w < 4 or w & (w - 1):
                raise ds.DatasetError(f'{where}: the output would be {w}x{h}; it must be square with a '
                                      f'power-of-two side (use --resolution and --transform)')
        elif (img.size, img.mode) != first[:2]:
            raise ds.DatasetError(f'{where}: becomes {img.size[0]}x{img.size[1]} {img.mode} but {first[2]} '
                                  f'became {first[0][0]}x{first[0][1]} {first[1]}; all images must match')
        if (label is not None) != first[3]:
            raise ds.DatasetError(f'{labels_where}: no label for "{name if label is None else source.names[0]}"')
        c = None if label is None else checked_label(label, name, labels_where, affine)
        outputs = [(archive_name(i), img, c)]
        if mirror:
            c_mirror = ds.mirror_camera_label(c) if isinstance(c, np.ndarray) else c
            outputs.append((archive_name(n + i), img.transpose(PIL.Image.FLIP_LEFT_RIGHT), c_mirror))
        for arc, image, c in outputs:
            writer.write(arc, png_bytes(image))
            if c is not None:
                out_labels[arc] = c.tolist() if isinstance(c, np.ndarray) else c
    kinds = {type(c) for c in out_labels.values()}
    if len(kinds) > 1:
        raise ds.DatasetError(f'{labels_where}: mixes class indices and camera labels')
    order = sorted(out_labels)
    meta = {'labels': [[k, out_labels[k]] for k in order] if out_labels else None}
    writer.write('dataset.json', json.dumps(meta).encode())
    cams = np.array([out_labels[k] for k in order]) if out_labels and kinds == {list} else None
    mirrored = np.array([int(k[-12:-4]) >= n for k in order]) if cams is not None else None
    return cams, dict(count=n * (2 if mirror else 1), size=first[0], mode=first[1], mirrored=mirrored,
                      num_labels=len(out_labels))

# ----------------------------------------------------------------------------
# Summary and camera plot.


def camera_angles(cams: np.ndarray):
    """Distance from the origin, yaw (toward +x) and elevation (toward +y) of camera centres, degrees."""
    t = cams[:, [3, 7, 11]]
    yaw = np.degrees(np.arctan2(t[:, 0], t[:, 2]))
    elev = np.degrees(np.arctan2(t[:, 1], np.hypot(t[:, 0], t[:, 2])))
    return np.linalg.norm(t, axis=1), yaw, elev


def summary(cams: np.ndarray | None) -> str:
    if cams is None:
        return 'labels: none'
    dist, yaw, elev = camera_angles(cams)
    rng = lambda x, f: f'{f.format(x.min())} .. {f.format(x.max())}'  # noqa: E731
    return (f'labels: {len(cams)} cameras; distance from the origin {rng(dist, "{:.3f}")}; '
            f'yaw {rng(yaw, "{:+.1f}")} deg (mean {yaw.mean():+.1f}, std {yaw.std():.1f}); '
            f'elevation {rng(elev, "{:+.1f}")} deg (std {elev.std():.1f}); focal {rng(cams[:, 16], "{:.4f}")}; '
            f'principal point x {rng(cams[:, 18], "{:.3f}")}, y {rng(cams[:, 21], "{:.3f}")}')


def draw_camera_plot(cams: np.ndarray, path: str, mirrored: np.ndarray | None = None, title: str = '') -> None:
    """Camera centres (dots) and viewing directions (lines) in three views, with EG3D's [-0.5, 0.5]^3 box."""
    panel, margin = 360, 24
    views = [('top view: x right, z down', 0, 2, 1), ('front view: x right, y up', 0, 1, -1),
             ('side view: z right, y up', 2, 1, -1)]
    centres, forward = cams[:, [3, 7, 11]], cams[:, [2, 6, 10]]
    extent = 1.15 * max(np.abs(centres).max(), 0.6)
    scale = (panel / 2 - margin) / extent
    mirrored = np.zeros(len(cams), bool) if mirrored is None else mirrored
    img = PIL.Image.new('RGB', (panel * 3, panel + 40), 'white')
    draw = PIL.ImageDraw.Draw(img)
    draw.text((8, panel + 8), f'{title}  {len(cams)} cameras (blue; mirrored copies orange); lines: viewing '
              f'direction; grey: the box [-0.5, 0.5]^3', fill='black')
    step = max(1, len(cams) // 400)
    for k, (label, a, b, sign_b) in enumerate(views):
        ox, oy = k * panel + panel / 2, panel / 2

        def px(p):
            return ox + p[a] * scale, oy + sign_b * p[b] * scale
        draw.rectangle([k * panel + 2, 2, (k + 1) * panel - 3, panel - 3], outline=(200, 200, 200))
        draw.text((k * panel + 8, 6), label, fill='black')
        for i in range(0, len(cams), step):
            color = (230, 120, 20) if mirrored[i] else (40, 90, 220)
            start, end = px(centres[i]), px(centres[i] + 0.3 * extent * forward[i])
            draw.line([start, end], fill=tuple(c // 2 + 127 for c in color))
        for i in range(len(cams)):
            x, y = px(centres[i])
            draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=(230, 120, 20) if mirrored[i] else (40, 90, 220))
        half = 0.5 * scale
        draw.rectangle([ox - half, oy - half, ox + half, oy + half], outline=(120, 120, 120))
        draw.line([ox - 4, oy, ox + 4, oy], fill='black')
        draw.line([ox, oy - 4, ox, oy + 4], fill='black')
    with dnnlib.util.atomic_write_path(path) as tmp:
        img.save(tmp, format='png')


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def default_plot_path(dest: str) -> str:
    base = os.path.normpath(dest)
    return (base[:-4] if base.lower().endswith('.zip') else base) + '_cameras.png'

# ----------------------------------------------------------------------------


@click.command()
@click.option('--source', required=True, metavar='PATH',
              help='Folder or zip of images, or synthetic:KIND (box, shapes, heads)')
@click.option('--dest', required=True, metavar='PATH', help='Output .zip (uncompressed) or folder')
@click.option('--max-images', type=click.IntRange(min=1),
              help='Use at most this many images (synthetic: how many; default 2000)')
@click.option('--transform', type=click.Choice(['center-crop', 'center-crop-wide']), help='Crop before resizing')
@click.option('--resolution', metavar='WxH', help='Output resolution (synthetic default 64x64)')
@click.option('--poses', type=click.Path(exists=True, dir_okay=False), help='JSON of cameras to attach, by image name')
@click.option('--mirror', is_flag=True, help='Also write mirrored copies with mirrored camera labels')
@click.option('--plot-cameras', metavar='PNG|none',
              help='Camera plot [default: DEST_cameras.png when there are cameras]')
@click.option('--seed', type=int, default=0, show_default=True, help='Seed of a synthetic source')
@click.option('--cameras', type=click.Choice(['frontal', '360']), default='frontal', show_default=True,
              help='Synthetic cameras: FFHQ-like yaw/pitch spread, or the full circle of yaw')
@click.option('--yaw-std', type=float, default=synthetic.CameraDistribution.yaw_std, show_default=True,
              help='Synthetic yaw std (rad)')
@click.option('--pitch-std', type=float, default=synthetic.CameraDistribution.pitch_std, show_default=True,
              help='Synthetic pitch std')
@click.option('--workers', type=click.IntRange(min=1), default=min(2, os.cpu_count() or 1), show_default=True,
              help='Processes rendering a synthetic source')
def main(source, dest, max_images, transform, resolution, poses, mirror, plot_cameras, seed, cameras, yaw_std,
         pitch_std, workers):
    """Convert images (and cameras) into an EG3D dataset, or render the synthetic 3D dataset."""
    start = time.time()
    res = parse_resolution(resolution)
    try:
        kind = synthetic.parse_source(source)
        if kind is not None:
            side = (res or (64, 64))
            if side[0] != side[1]:
                raise click.BadParameter('synthetic sources are square: --resolution NxN')
            dist = synthetic.CameraDistribution(yaw_std=yaw_std, pitch_std=pitch_std, full_360=(cameras == '360'))
            src = open_synthetic(kind, max_images or 2000, side[0], seed, dist, workers)
            res = None
        else:
            src = open_folder_or_zip(source, max_images)
        pose_table = read_poses(poses, src.names) if poses else None
        writer = Writer(dest)
        try:
            cams, info = convert(src, writer, transform, res, mirror, pose_table, poses)
        except BaseException:
            writer.abort()
            raise
        finally:
            src.close()
        writer.commit()
    except ds.DatasetError as err:
        raise click.ClickException(str(err)) from None
    size_mb = (os.path.getsize(dest) if os.path.isfile(dest) else
               sum(os.path.getsize(os.path.join(r, f)) for r, _d, fs in os.walk(dest) for f in fs)) / 2**20
    print(f'dataset_tool: wrote {info["count"]} images ({info["size"][0]}x{info["size"][1]} {info["mode"]}) '
          f'to {dest} ({size_mb:.1f} MB) in {time.time() - start:.1f} s')
    class_labels = cams is None and info['num_labels']
    print(f'labels: {info["num_labels"]} class indices' if class_labels else summary(cams))
    if cams is not None and (plot_cameras or '').lower() != 'none':
        plot_path = plot_cameras or default_plot_path(dest)
        draw_camera_plot(cams, plot_path, info['mirrored'], title=os.path.basename(os.path.normpath(dest)))
        print(f'camera plot: {plot_path}')


if __name__ == '__main__':
    main()  # pylint: disable=no-value-for-parameter
