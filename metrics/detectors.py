"""Feature detectors (Inception for FID/KID/IS, VGG16 for precision/recall): finding and loading them.

A detector is a TorchScript module with upstream's calling convention: uint8 images [N, 3, H, W] at
any resolution in, `detector(images, return_features=True)` -> features [N, D] (Inception 2048,
VGG16 4096) and, for the Inception network, `detector(images, no_output_bias=True)` -> class
probabilities [N, 1008].

Where a detector comes from, first match wins:
  1. `locations` given by the caller (calc_metrics --detector): directories holding the detector's
     file, or 'NAME=PATH' entries (inception=/models/inception.pt);
  2. $EG3D_DETECTOR_DIR (directories, separated by os.pathsep) or $EG3D_DETECTOR_<NAME> (a file);
  3. its URL, through dnnlib.open_url's download cache ($DNNLIB_CACHE_DIR/downloads).
Offline without a local copy, DetectorError names the option, the variables and the URL.

Formats, told apart by content, neither executes Python code from the file:
  - a TorchScript archive (zip; torch.jit.save): torch.jit.load;
  - upstream's pickle of a TorchScript module (inception-2015-12-05.pkl, vgg16.pkl): a restricted
    unpickler whose only globals rebuild a TorchScript module from archive bytes embedded in the
    pickle; any other global is refused with its name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import warnings
from typing import Any, Sequence

import torch

import dnnlib

# ----------------------------------------------------------------------------

_NGC = 'https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/metrics'


@dataclasses.dataclass(frozen=True)
class DetectorSpec:
    name:   str                 # Short name: 'inception', 'vgg16'; also the NAME in NAME=PATH and env vars.
    url:    str                 # Upstream download URL (a pickle of a TorchScript module).
    files:  tuple[str, ...]     # File names looked for in detector directories, in order.


DETECTORS = {
    'inception': DetectorSpec('inception', f'{_NGC}/inception-2015-12-05.pkl',
                              ('inception-2015-12-05.pt', 'inception-2015-12-05.pkl')),
    'vgg16':     DetectorSpec('vgg16', f'{_NGC}/vgg16.pkl', ('vgg16.pt', 'vgg16.pkl')),
}

DIR_ENV = 'EG3D_DETECTOR_DIR'
OPTION = '--detector'


class DetectorError(RuntimeError):
    """A detector that cannot be found or loaded; the message says where it was looked for."""


def env_var(name: str) -> str:
    """The per-detector environment variable: EG3D_DETECTOR_INCEPTION, EG3D_DETECTOR_VGG16."""
    return f'EG3D_DETECTOR_{name.upper()}'

# ----------------------------------------------------------------------------
# Finding the file.


def _split_locations(locations: Sequence[str] | str | None) -> list[str]:
    if locations is None:
        return []
    if isinstance(locations, str):
        locations = [locations]
    out = []
    for loc in locations:
        out += [part.strip() for part in str(loc).split(',') if part.strip()]
    return out


def find_detector(name: str, locations: Sequence[str] | str | None = None, cache_dir: str | None = None) -> str:
    """Path of a local copy of detector `name`, downloading through dnnlib's cache as the last resort."""
    if name not in DETECTORS:
        raise DetectorError(f'unknown detector {name!r}; known: {", ".join(DETECTORS)}')
    spec = DETECTORS[name]

    def in_dir(directory: str, where: str) -> str | None:
        if not os.path.isdir(directory):
            raise DetectorError(f'{where}: {directory} is not a directory (give a directory holding '
                                f'{" or ".join(spec.files)}, or {name}=PATH)')
        for fname in spec.files:
            if os.path.isfile(os.path.join(directory, fname)):
                return os.path.join(directory, fname)
        return None

    # 1. The caller's locations: NAME=PATH entries for this detector, then directories.
    entries = _split_locations(locations)
    for entry in entries:
        key, sep, path = entry.partition('=')
        if sep and key.strip().lower() == name:
            if not os.path.isfile(path):
                raise DetectorError(f'{OPTION} {entry}: {path}: no such file')
            return path
    for entry in entries:
        if '=' not in entry:
            if os.path.isfile(entry):
                raise DetectorError(f'{OPTION} {entry}: a file must be named, as {name}={entry} '
                                    f'(detectors: {", ".join(DETECTORS)})')
            found = in_dir(entry, f'{OPTION} {entry}')
            if found:
                return found

    # 2. Environment variables.
    path = os.environ.get(env_var(name))
    if path:
        if not os.path.isfile(path):
            raise DetectorError(f'${env_var(name)}={path}: no such file')
        return path
    for directory in _split_locations(os.environ.get(DIR_ENV, '').replace(os.pathsep, ',')):
        found = in_dir(directory, f'${DIR_ENV}')
        if found:
            return found

    # 3. The URL, through the download cache.
    try:
        return dnnlib.open_url(spec.url, cache_dir=cache_dir, return_filename=True)
    except OSError as err:
        looked = ', '.join(entries + [p for p in os.environ.get(DIR_ENV, '').split(os.pathsep) if p]) or 'nowhere'
        detail = str(err) if isinstance(err, dnnlib.OfflineError) else f'fetching {spec.url} failed ({err})'
        raise DetectorError(
            f'the {name} detector is not available: no local copy of {" or ".join(spec.files)} (looked in: {looked}), '
            f'and {detail}. Give it with {OPTION}=DIR or {OPTION}={name}=PATH, or set ${DIR_ENV} or '
            f'${env_var(name)}.') from None

# ----------------------------------------------------------------------------
# Loading without executing code from the file.


class _Bytes:
    """Stand-in for an io.BytesIO inside a detector pickle (built by a call with the bytes, or by
    NEWOBJ plus its (value, position, dict) state): holds the bytes, does nothing else."""

    def __init__(self, data: bytes = b''):
        if not isinstance(data, (bytes, bytearray)):
            raise pickle.UnpicklingError(f'io.BytesIO: expected bytes, got {type(data).__name__}')
        self.data = bytes(data)

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or not state or not isinstance(state[0], (bytes, bytearray)):
            raise pickle.UnpicklingError('io.BytesIO: expected a (bytes, position, dict) state')
        self.data = bytes(state[0])


def _latin1_bytes(obj: Any, encoding: str = 'utf-8', errors: str = 'strict') -> bytes:
    """Stand-in for _codecs.encode, which protocol-2 pickles use for bytes: only str -> latin-1 bytes."""
    if not isinstance(obj, str) or encoding != 'latin1':
        raise pickle.UnpicklingError('_codecs.encode: only the latin1 encoding of a string is allowed')
    return obj.encode('latin1')


def _jit_load_bytes(f: Any, map_location: Any = None, _extra_files: Any = None) -> torch.jit.ScriptModule:
    """Stand-in for torch.jit.load(io.BytesIO(archive)): the archive's TorchScript, never Python code."""
    if isinstance(f, _Bytes) and hasattr(f, 'data'):
        data = f.data
    elif isinstance(f, (bytes, bytearray)):
        data = bytes(f)
    else:
        raise pickle.UnpicklingError(f'torch.jit.load: expected embedded archive bytes, got {type(f).__name__}')
    return _jit_load(io.BytesIO(data))


def _jit_load(f: Any) -> torch.jit.ScriptModule:
    """torch.jit.load on the CPU, without its deprecation warning (upstream's detectors are TorchScript)."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='.*torch.jit.load.*deprecated', category=DeprecationWarning)
        return torch.jit.load(f, map_location='cpu')


# The globals a pickle of a TorchScript module may name, each mapped to a safe replacement; in the form
# of the `extra_globals` of a generic restricted unpickler.
DETECTOR_PICKLE_GLOBALS: dict[str, Any] = {
    'torch.jit._serialization.load': _jit_load_bytes,
    'torch.jit.load':                _jit_load_bytes,
    '_io.BytesIO':                   _Bytes,
    'io.BytesIO':                    _Bytes,
    '_codecs.encode':                _latin1_bytes,
}


class _DetectorUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        full = f'{module}.{name}'
        if full in DETECTOR_PICKLE_GLOBALS:
            return DETECTOR_PICKLE_GLOBALS[full]
        raise pickle.UnpicklingError(f'refused global "{full}": a detector pickle may only rebuild a '
                                     f'TorchScript module from embedded archive bytes')

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError('refused a persistent id')


def load_detector_file(path: str) -> torch.jit.ScriptModule:
    """A TorchScript detector from a TorchScript archive or a pickle of one, on the CPU, in eval mode."""
    try:
        with open(path, 'rb') as f:
            is_archive = f.read(4) == b'PK\x03\x04'  # A zip's first local header (a pickle may embed one later).
            f.seek(0)
            if is_archive:
                module = _jit_load(path)
            else:
                module = _DetectorUnpickler(f).load()
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, TypeError, AttributeError,
            IndexError, KeyError) as err:
        raise DetectorError(
            f'{path}: cannot load this detector safely: {err}. If it is a trusted upstream pickle this loader '
            f'does not know, convert it once on a trusted machine to a TorchScript archive (torch.jit.save '
            f'of the unpickled module) and pass that file instead.') from None
    if not isinstance(module, torch.jit.ScriptModule):
        raise DetectorError(f'{path}: expected a TorchScript module, got {type(module).__name__}')
    return module.eval()


_file_digests: dict[tuple[str, int, int], str] = {}
_loaded: dict[tuple[str, str, str], torch.nn.Module] = {}


def file_digest(path: str) -> str:
    """md5 of a file's content (memoised per path, size and mtime): keys the real-statistics cache."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _file_digests:
        md5 = hashlib.md5()
        with open(path, 'rb') as f:
            for chunk in iter(lambda: f.read(1 << 20), b''):
                md5.update(chunk)
        _file_digests[key] = md5.hexdigest()
    return _file_digests[key]


def get_detector(name: str, device: torch.device | str, locations: Sequence[str] | str | None = None,
                 cache_dir: str | None = None) -> tuple[torch.nn.Module, str]:
    """(detector on `device`, content digest of its file); loaded once per process, file and device."""
    path = find_detector(name, locations, cache_dir=cache_dir)
    digest = file_digest(path)
    key = (name, digest, str(device))
    if key not in _loaded:
        _loaded[key] = load_detector_file(path).to(device)
    return _loaded[key], digest
