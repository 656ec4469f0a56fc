"""EasyDict, object construction by dotted name, a download cache, and a stdout/stderr tee."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import re
import shutil
import sys
import tempfile
import types
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, BinaryIO

# ----------------------------------------------------------------------------


class EasyDict(dict):
    """A dict whose keys are also attributes: `d.key` is `d['key']`."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        del self[name]


def format_time(seconds: float) -> str:
    """Human-readable duration, as the tick lines print it: '45s', '3m 05s', '2h 03m', '1d 04h 00m'."""
    s = int(round(seconds))
    if s < 60:
        return f'{s}s'
    if s < 3600:
        return f'{s // 60}m {s % 60:02d}s'
    if s < 86400:
        return f'{s // 3600}h {(s // 60) % 60:02d}m'
    return f'{s // 86400}d {(s // 3600) % 24:02d}h {(s // 60) % 60:02d}m'

# ----------------------------------------------------------------------------
# Objects by dotted name ("training.triplane.TriPlaneGenerator").


def get_obj_by_name(name: str) -> Any:
    """Import the longest importable module prefix of `name` and walk the rest as attributes."""
    parts = name.split('.')
    for split in range(len(parts), 0, -1):
        module_name = '.'.join(parts[:split])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            # Only swallow "this prefix is not a module"; a missing dependency inside it must surface.
            if err.name is not None and not module_name.startswith(err.name):
                raise
            continue
        try:
            for attr in parts[split:]:
                obj = getattr(obj, attr)
        except AttributeError:
            raise ImportError(f'cannot find "{name}": module "{module_name}" has no attribute '
                              f'"{".".join(parts[split:])}"') from None
        return obj
    raise ImportError(f'cannot find "{name}": no importable module prefix')


def call_func_by_name(*args, func_name: str, **kwargs) -> Any:
    func = get_obj_by_name(func_name)
    if not callable(func):
        raise TypeError(f'"{func_name}" is not callable')
    return func(*args, **kwargs)


def construct_class_by_name(*args, class_name: str, **kwargs) -> Any:
    """`construct_class_by_name(class_name='torch.optim.Adam', lr=1e-3, params=...)`."""
    return call_func_by_name(*args, func_name=class_name, **kwargs)

# ----------------------------------------------------------------------------
# Cache directory and downloads.


def make_cache_dir_path(*paths: str) -> str:
    """Where downloads are cached: $DNNLIB_CACHE_DIR, else ~/.cache/dnnlib (as upstream)."""
    if 'DNNLIB_CACHE_DIR' in os.environ:
        return os.path.join(os.environ['DNNLIB_CACHE_DIR'], *paths)
    home = os.environ.get('HOME') or os.environ.get('USERPROFILE') or tempfile.gettempdir()
    return os.path.join(home, '.cache', 'dnnlib', *paths)


class OfflineError(OSError):
    """A URL could not be fetched and is not in the cache."""


def _cache_file_name(url: str) -> str:
    digest = hashlib.md5(url.encode('utf-8')).hexdigest()
    base = re.sub(r'[^0-9a-zA-Z_.-]+', '_', os.path.basename(urllib.parse.urlparse(url).path)) or 'file'
    return f'{digest}_{base}'


def open_url(url: str, cache_dir: str | None = None, cache: bool = True, timeout: float = 5.0,
             return_filename: bool = False, verbose: bool = True) -> BinaryIO | str:
    """Open a local path, a file:// URL or an http(s) URL, caching downloads under `cache_dir`.

    A download that fails (no network, closed port) raises OfflineError naming the URL and the cache
    path where a copy could be placed by hand.
    """
    if not re.match('^[a-z]+://', url):  # Local path.
        if not os.path.isfile(url):
            raise FileNotFoundError(f'{url}: no such file')
        return url if return_filename else open(url, 'rb')
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == 'file':
        path = urllib.request.url2pathname(parsed.path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f'{url}: no such file')
        return path if return_filename else open(path, 'rb')

    cache_dir = cache_dir or make_cache_dir_path('downloads')
    cache_path = os.path.join(cache_dir, _cache_file_name(url))
    if cache and os.path.isfile(cache_path):
        return cache_path if return_filename else open(cache_path, 'rb')

    if verbose:
        print(f'Downloading {url} ...', file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as res:
            data = res.read()
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        reason = getattr(err, 'reason', err)
        raise OfflineError(f'cannot download {url} ({reason}); to use it offline, place a copy at '
                           f'{cache_path} (or set DNNLIB_CACHE_DIR) or pass a local path') from None
    if not cache:
        return io.BytesIO(data)
    os.makedirs(cache_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix='.tmp-')
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.replace(tmp, cache_path)
    return cache_path if return_filename else open(cache_path, 'rb')

# ----------------------------------------------------------------------------


class Logger:
    """Tee stdout and stderr to a log file (and keep writing to the console)."""

    def __init__(self, file_name: str | None = None, file_mode: str = 'w', should_flush: bool = True):
        self.file = open(file_name, file_mode) if file_name is not None else None
        self.should_flush = should_flush
        self.stdout = sys.stdout
        self.stderr = sys.stderr
        sys.stdout = self
        sys.stderr = self

    def __enter__(self) -> 'Logger':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, text: str | bytes) -> None:
        if isinstance(text, bytes):
            text = text.decode()
        if not text:
            return
        if self.file is not None:
            self.file.write(text)
        self.stdout.write(text)
        if self.should_flush:
            self.flush()

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()
        self.stdout.flush()

    def isatty(self) -> bool:
        return False

    def close(self) -> None:
        self.flush()
        if sys.stdout is self:
            sys.stdout = self.stdout
        if sys.stderr is self:
            sys.stderr = self.stderr
        if self.file is not None:
            self.file.close()
            self.file = None


def atomic_write_path(path: str):
    """Context manager yielding a temporary path beside `path`; renamed onto it only on success."""
    @contextlib.contextmanager
    def ctx():
        directory = os.path.dirname(os.path.abspath(path)) or '.'
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix='.' + os.path.basename(path) + '.', suffix='.tmp')
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions.
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
    return ctx()
