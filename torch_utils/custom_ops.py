"""Building and loading the fused-op plugins.

A plugin is compiled at first use with torch.utils.cpp_extension and ninja (the host compiler for the
CPU build, nvcc for CUDA), into a cache directory keyed by a hash of its sources, the torch, CUDA and
Python versions, the compiler and its flags. A cached build loads without running ninja or importing
the build tools. Builds are guarded by a lock that cannot hang: the waiting side gives up after a
timeout with an error naming the lock file, and a killed build's lock is released by the kernel (an
flock), so it never goes stale. A build is made in a private directory and published by a rename, so
a half-built plugin is never loaded. Failures raise BuildError carrying a one-line cause.

Ahead of time, e.g. into a shared cache for a cluster (then set EG3D_EXTENSIONS_DIR to it):

    python -m torch_utils.custom_ops --build-all [--cache-dir DIR] [--device cpu|cuda|all]

Environment: EG3D_EXTENSIONS_DIR (cache root; default $DNNLIB_CACHE_DIR or ~/.cache/dnnlib, then
torch_extensions), EG3D_BUILD_LOCK_TIMEOUT (seconds, default 600), EG3D_BUILD_VERBOSE (0 quiet,
1 one line per build (default), 2 the compiler commands), CXX (the host compiler).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import uuid

import torch

import dnnlib

__all__ = ['PluginSpec', 'BuildError', 'LockTimeout', 'get_plugin', 'cache_root', 'build_all']

BUILD_FORMAT = 2              # Layout of a build directory (build.json); part of the key.
DEFAULT_LOCK_TIMEOUT = 600.0  # Seconds; a cold build of one plugin takes 10-60 s on 2 cores.


@dataclasses.dataclass(frozen=True)
class PluginSpec:
    name: str                  # Plugin name, e.g. 'bias_act'; part of the module and directory names.
    sources: tuple[str, ...]   # Files compiled into the plugin (.cpp host code, .cu kernels), relative to source_dir.
    headers: tuple[str, ...]   # Files they include, relative to source_dir: hashed and copied along.
    source_dir: str            # Where the files are.


class BuildError(RuntimeError):
    """A plugin could not be built or loaded; `cause` says why in one line."""

    def __init__(self, cause: str):
        super().__init__(cause)
        self.cause = cause


class LockTimeout(BuildError):
    """Another process held the build lock for longer than the timeout."""


_loaded: dict[tuple, object] = {}                 # (module name, build dir) -> module
_key_locks: dict[tuple, threading.Lock] = {}      # One build at a time per plugin in this process.
_dict_lock = threading.Lock()


def cache_root(cache_dir: str | None = None) -> str:
    """The directory holding the builds: `cache_dir`, $EG3D_EXTENSIONS_DIR, or the dnnlib cache."""
    return os.path.abspath(cache_dir or os.environ.get('EG3D_EXTENSIONS_DIR')
                           or dnnlib.util.make_cache_dir_path('torch_extensions'))


def _verbosity() -> int:
    try:
        return int(os.environ.get('EG3D_BUILD_VERBOSE', '1'))
    except ValueError:
        return 1


def _lock_timeout(timeout: float | None) -> float:
    if timeout is not None:
        return float(timeout)
    try:
        return float(os.environ.get('EG3D_BUILD_LOCK_TIMEOUT', DEFAULT_LOCK_TIMEOUT))
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT

# ----------------------------------------------------------------------------------------------------
# Build configuration and its key.


def _host_compiler() -> str:
    return os.environ.get('CXX', 'cl' if sys.platform == 'win32' else 'c++')


def _cpu_fingerprint() -> str:
    """What -march=native depends on: the CPU model and feature flags."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8', errors='replace') as f:
            text = f.read()
        lines = [line for line in text.splitlines() if line.startswith(('model name', 'flags', 'Features'))]
        return '\n'.join(sorted(set(lines)))
    except OSError:
        return f'{platform.machine()} {platform.processor()}'


def _host_flags() -> tuple[list[str], list[str]]:
    """Compiler and linker flags of the host (CPU) build."""
    cflags, ldflags = ['-O3'], []
    if sys.platform == 'win32':
        return ['/O2', '/openmp'], []
    machine = platform.machine().lower()
    if machine in ('x86_64', 'amd64'):
        cflags.append('-march=native')
    elif machine in ('aarch64', 'arm64'):
        cflags.append('-mcpu=native')
    # OpenMP only where torch itself runs on libgomp: the plugin then shares torch's runtime (same
    # soname) and thread count instead of bringing a second one.
    if sys.platform.startswith('linux') and 'OpenMP' in torch.__config__.parallel_info():
        cflags.append('-fopenmp')
        ldflags.append('-fopenmp')
    return cflags, ldflags


def _cuda_flags() -> tuple[list[str], list[str], list[str]]:
    return ['-O3', '-DEG_PLUGIN_CUDA=1'], ['-O3', '-DEG_PLUGIN_CUDA=1'], []


def _cuda_arch_key() -> str:
    if os.environ.get('TORCH_CUDA_ARCH_LIST'):
        return os.environ['TORCH_CUDA_ARCH_LIST']
    try:
        caps = {torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}
        return ' '.join(f'{a}.{b}' for a, b in sorted(caps))
    except Exception:  # noqa: BLE001 - no driver: the build fails later with its own message.
        return 'unknown'


def _source_digest(spec: PluginSpec) -> str:
    h = hashlib.sha256()
    for rel in sorted(set(spec.sources) | set(spec.headers)):
        path = os.path.join(spec.source_dir, rel)
        try:
            with open(path, 'rb') as f:
                data = f.read()
        except OSError as e:
            raise BuildError(f'cannot read plugin source {path}: {e.strerror}') from e
        h.update(rel.encode() + b'\0' + hashlib.sha256(data).digest())
    return h.hexdigest()


def build_config(spec: PluginSpec, device: str) -> dict:
    """Everything a build depends on; its hash names the build."""
    config = dict(format=BUILD_FORMAT, plugin=spec.name, device=device, sources=_source_digest(spec),
                  torch=torch.__version__,
                  cuda=torch.version.cuda, python=sys.implementation.cache_tag, machine=platform.machine(),
                  abi=sysconfig.get_config_var('EXT_SUFFIX'), cxx=_host_compiler())
    if device == 'cpu':
        config['cflags'], config['ldflags'] = _host_flags()
        if any('native' in f for f in config['cflags']):
            config['cpu'] = hashlib.sha256(_cpu_fingerprint().encode()).hexdigest()[:16]
    else:
        config['cflags'], config['cuda_cflags'], config['ldflags'] = _cuda_flags()
        config['cuda_arch'] = _cuda_arch_key()
    return config


def _config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:20]

# ----------------------------------------------------------------------------------------------------
# The build lock.


class BuildLock:
    """An exclusive lock on `path` (flock: released by the kernel when its holder dies, so a killed
    build never leaves it stale). Gives up after `timeout` seconds with LockTimeout naming the file."""

    def __init__(self, path: str, timeout: float, poll: float = 0.1):
        self.path, self.timeout, self.poll = path, timeout, poll
        self._fd: int | None = None

    def __enter__(self) -> 'BuildLock':
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.timeout
        while not _try_lock(fd):
            if time.monotonic() >= deadline:
                holder = _read_holder(fd)
                os.close(fd)
                raise LockTimeout(f'timed out after {self.timeout:g} s waiting for the build lock {self.path}'
                                  f'{f" (held by {holder})" if holder else ""}; if no build is running, '
                                  f'delete that file')
            time.sleep(self.poll)
        self._fd = fd
        with contextlib.suppress(OSError):  # Who holds it, for the message of a waiting process.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f'pid {os.getpid()} on {socket.gethostname()} since {time.ctime()}'.encode(), 0)
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None


if sys.platform == 'win32':
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _read_holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors='replace').strip()
    except OSError:
        return ''

# ----------------------------------------------------------------------------------------------------
# Building and loading.


def _import_extension(module_name: str, path: str):
    """Imports the compiled module at `path` (no build tools involved)."""
    loader = importlib.machinery.ExtensionFileLoader(module_name, path)
    spec = importlib.util.spec_from_file_location(module_name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def _first_error_line(text: str, compiler: str) -> str:
    """The line of a build log that says what went wrong."""
    text = re.sub(r"^Error building extension '[^']*':?", '', text.strip())  # torch's prefix.
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for pattern in (r':\s*(fatal )?error\b', r'\berror\b', r'fatal', r'not found|No such file'):
        for line in lines:
            if re.search(pattern, line, re.IGNORECASE) and not line.startswith(('FAILED:', 'ninja: build stopped')):
                return line
    failed = next((line for line in lines if line.startswith('FAILED:')), None)
    if failed:
        return f'the compiler ({compiler}) failed without a message: {failed}'
    return lines[0] if lines else 'the build failed without output'


def _check_prerequisites(device: str) -> None:
    """Fails early, with a clear cause, where a build cannot work."""
    if device == 'cpu':
        compiler = _host_compiler().split()[0]
        if shutil.which(compiler) is None:
            raise BuildError(f'no C++ compiler: {compiler!r} not found (set CXX)')
    elif device == 'cuda':
        if torch.version.cuda is None:
            raise BuildError('torch is a CPU build (no CUDA)')
        from torch.utils import cpp_extension
        nvcc = os.path.join(cpp_extension.CUDA_HOME, 'bin', 'nvcc') if cpp_extension.CUDA_HOME else shutil.which('nvcc')
        if not nvcc or not os.path.exists(nvcc):
            raise BuildError('no nvcc: install the CUDA toolkit or set CUDA_HOME')
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True).stdout
        m = re.search(r'release (\d+)\.(\d+)', out)
        if m and m.group(1) != torch.version.cuda.split('.')[0]:
            raise BuildError(f'version mismatch: nvcc is CUDA {m.group(1)}.{m.group(2)}, torch was built with '
                             f'CUDA {torch.version.cuda}')
    else:
        raise BuildError(f'no fused kernels for {device} devices')
    if shutil.which('ninja') is None:
        # The pip package's binary sits beside this interpreter (a venv that is not activated).
        candidates = [os.path.dirname(sys.executable)]
        with contextlib.suppress(ImportError, AttributeError):
            import ninja
            candidates.append(ninja.BIN_DIR)
        found = next((d for d in candidates if shutil.which('ninja', path=d)), None)
        if found is None:
            raise BuildError('ninja not found (pip install ninja)')
        os.environ['PATH'] = found + os.pathsep + os.environ.get('PATH', '')


_quiet_depth = 0
_quiet_lock = threading.Lock()


@contextlib.contextmanager
def _quiet_build_tools():
    """Silences torch.utils.cpp_extension's log (its compiler checks print multi-line warnings; a failure
    is reported in one line by us instead), also while several threads build."""
    global _quiet_depth
    logger = logging.getLogger('torch.utils.cpp_extension')
    with _quiet_lock:
        if _quiet_depth == 0:
            _quiet_build_tools.saved = logger.level
            logger.setLevel(logging.ERROR)
        _quiet_depth += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_depth -= 1
            if _quiet_depth == 0:
                logger.setLevel(_quiet_build_tools.saved)


def _build(spec: PluginSpec, device: str, config: dict, module_name: str, build_dir: str) -> None:
    """Compiles into a private directory and renames it to `build_dir`."""
    from torch.utils import cpp_extension  # Slow to import (about 3 s): only when building.

    tmp = f'{build_dir}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}'
    os.makedirs(tmp)
    copies = {}  # Copy in the build directory -> the source file it came from.
    try:
        for rel in spec.headers:
            shutil.copy2(os.path.join(spec.source_dir, rel), os.path.join(tmp, os.path.basename(rel)))
        for rel in spec.sources:
            name = os.path.basename(rel)
            if device == 'cpu' and name.endswith('.cu'):
                name = name[:-3] + '_host.cpp'  # The same kernel source, compiled by the host compiler.
            shutil.copy2(os.path.join(spec.source_dir, rel), os.path.join(tmp, name))
            copies[os.path.join(tmp, name)] = os.path.join(spec.source_dir, rel)
        verbose = _verbosity() >= 2
        try:
            with contextlib.nullcontext() if verbose else _quiet_build_tools():
                module = cpp_extension.load(
                    name=module_name, sources=list(copies), build_directory=tmp, verbose=verbose,
                    extra_cflags=config['cflags'], extra_cuda_cflags=config.get('cuda_cflags'),
                    extra_ldflags=config['ldflags'], extra_include_paths=[tmp], with_cuda=device == 'cuda',
                    is_python_module=True)
        except subprocess.CalledProcessError as e:  # torch's compiler checks ('c++ --version').
            cmd = ' '.join(e.cmd) if isinstance(e.cmd, (list, tuple)) else str(e.cmd)
            raise BuildError(f"the compiler {config['cxx']!r} failed: '{cmd}' exited with status "
                             f'{e.returncode}') from e
        except Exception as e:  # noqa: BLE001 - any failure becomes a one-line cause.
            line = _first_error_line(str(e), config['cxx'])
            for copy, source in copies.items():  # Name the file the user edits, not its copy.
                line = line.replace(copy, source)
            raise BuildError(line.replace(tmp + os.sep, spec.source_dir + os.sep)) from e
        # torch renames a module it has built before in this process (name_v1, ...): record what it made.
        record = dict(config, module=module.__name__, library=os.path.basename(module.__file__), built=time.ctime())
        with open(os.path.join(tmp, 'build.json'), 'w', encoding='utf-8') as f:
            json.dump(record, f, indent=2)
        os.rename(tmp, build_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _built_module(build_dir: str) -> tuple[str, str] | None:
    """(module name, library path) of a finished build, or None."""
    try:
        with open(os.path.join(build_dir, 'build.json'), encoding='utf-8') as f:
            record = json.load(f)
        path = os.path.join(build_dir, record['library'])
        return (record['module'], path) if os.path.isfile(path) else None
    except (OSError, ValueError, KeyError):
        return None


def plugin_location(spec: PluginSpec, device: str = 'cpu', cache_dir: str | None = None) -> tuple[str, str]:
    """(module name, build directory) of the current sources' build."""
    config = build_config(spec, device)
    key = _config_key(config)
    module_name = f'eg3d_{spec.name}_{device}_{key[:12]}'
    return module_name, os.path.join(cache_root(cache_dir), spec.name, f'{device}-{key}')


def get_plugin(spec: PluginSpec, device: str = 'cpu', cache_dir: str | None = None,
               lock_timeout: float | None = None):
    """The compiled plugin module for `device` ('cpu' or 'cuda'): from this process, from the cache, or
    built now. Raises BuildError (LockTimeout when the lock is held too long) with a one-line cause."""
    root = cache_root(cache_dir)
    module_name, build_dir = plugin_location(spec, device, root)
    key = (module_name, build_dir)
    with _dict_lock:
        if key in _loaded:
            return _loaded[key]
        key_lock = _key_locks.setdefault(key, threading.Lock())
    with key_lock:  # Other plugins may build in other threads meanwhile.
        if key in _loaded:
            return _loaded[key]
        built = _built_module(build_dir)
        if built is None:
            _check_prerequisites(device)
            built = _build_locked(spec, device, module_name, build_dir, lock_timeout)
        try:
            module = _import_extension(*built)
        except ImportError as e:
            raise BuildError(f'cannot load {built[1]}: {e}') from e
        with _dict_lock:
            _loaded[key] = module
        return module


def _build_locked(spec: PluginSpec, device: str, module_name: str, build_dir: str,
                  lock_timeout: float | None) -> tuple[str, str]:
    """Builds under the lock unless another process did meanwhile; (module name, library path)."""
    try:
        with BuildLock(build_dir + '.lock', _lock_timeout(lock_timeout)):
            for stale in glob.glob(glob.escape(build_dir) + '.tmp-*'):  # Left by killed builds.
                shutil.rmtree(stale, ignore_errors=True)
            built = _built_module(build_dir)  # Another process may have built it meanwhile.
            if built is None:
                shutil.rmtree(build_dir, ignore_errors=True)  # Unfinished or unreadable: start over.
                t0 = time.perf_counter()
                if _verbosity() >= 1:
                    print(f'custom_ops: building {spec.name} for {device} (one-time) in {build_dir}',
                          file=sys.stderr, flush=True)
                _build(spec, device, build_config(spec, device), module_name, build_dir)
                if _verbosity() >= 1:
                    print(f'custom_ops: built {spec.name} for {device} in {time.perf_counter() - t0:.1f} s',
                          file=sys.stderr, flush=True)
                built = _built_module(build_dir)
    except OSError as e:  # An unwritable cache, a full disk.
        raise BuildError(f'cannot build in {os.path.dirname(build_dir)}: {e.strerror or e}') from e
    if built is None:
        raise BuildError(f'the build of {spec.name} produced no module in {build_dir}')
    return built


def build_all(specs: dict[str, PluginSpec], devices: list[str], cache_dir: str | None = None,
              lock_timeout: float | None = None) -> int:
    """Builds every plugin for every device into the cache, in parallel; prints one line each as they
    finish. Returns the number of failures."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    def build(name: str, device: str) -> str:
        t0 = time.perf_counter()
        try:
            get_plugin(specs[name], device, cache_dir, lock_timeout)
        except BuildError as e:
            return f'{name:12s} {device:5s} FAILED  {e.cause}'
        _, build_dir = plugin_location(specs[name], device, cache_dir)
        return f'{name:12s} {device:5s} ok      {time.perf_counter() - t0:6.1f} s  {build_dir}'

    failures = 0
    with ThreadPoolExecutor(max(1, len(specs) * len(devices))) as pool:
        for job in as_completed([pool.submit(build, name, device) for device in devices for name in specs]):
            line = job.result()
            failures += ' FAILED ' in line
            print(line, flush=True)
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog='python -m torch_utils.custom_ops',
                                     description='Build the fused-op plugins ahead of time.')
    parser.add_argument('--build-all', action='store_true', help='build every plugin')
    parser.add_argument('--cache-dir', help='cache root (default: $EG3D_EXTENSIONS_DIR or the dnnlib cache)')
    parser.add_argument('--device', choices=['cpu', 'cuda', 'all'], default='all',
                        help="'all': the CPU build, plus CUDA when torch has it")
    parser.add_argument('--lock-timeout', type=float, default=None, help='seconds to wait for another build')
    args = parser.parse_args(argv)
    if not args.build_all:
        parser.print_help()
        return 2
    from torch_utils.ops import _impl  # The ops own the list of plugins.
    devices = ['cpu', 'cuda'] if args.device == 'all' else [args.device]
    if args.device == 'all' and torch.version.cuda is None:
        devices = ['cpu']
    print(f'cache: {cache_root(args.cache_dir)}')
    return 1 if build_all(_impl.PLUGINS, devices, args.cache_dir, args.lock_timeout) else 0


if __name__ == '__main__':
    # Run the imported module's main, so that the plugin specs of torch_utils.ops and this command share
    # one copy of this module (and its process cache).
    from torch_utils.custom_ops import main as _main
    raise SystemExit(_main())
