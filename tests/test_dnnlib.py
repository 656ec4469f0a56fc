"""dnnlib: EasyDict, construction by name, open_url's cache and offline error, the Logger tee."""

import http.server
import os
import socket
import threading
import time

import pytest

import dnnlib
from dnnlib import util


def test_easydict_and_construct_by_name():
    d = dnnlib.EasyDict(a=1)
    d.b = 2
    assert d == {'a': 1, 'b': 2} and d.a == 1
    with pytest.raises(AttributeError):
        _ = d.missing
    frac = dnnlib.construct_class_by_name(3, 4, class_name='fractions.Fraction')
    assert float(frac) == 0.75
    assert dnnlib.get_obj_by_name('os.path.join') is os.path.join
    with pytest.raises(ImportError, match='no attribute'):
        dnnlib.get_obj_by_name('os.path.no_such_function')


def test_open_url_local_and_file_url(tmp_path):
    p = tmp_path / 'x.bin'
    p.write_bytes(b'hello')
    with dnnlib.open_url(str(p)) as f:
        assert f.read() == b'hello'
    with dnnlib.open_url(p.as_uri()) as f:
        assert f.read() == b'hello'
    with pytest.raises(FileNotFoundError, match='nope'):
        dnnlib.open_url(str(tmp_path / 'nope'))


def test_open_url_http_then_cache_hit(tmp_path):
    served = tmp_path / 'www'
    served.mkdir()
    payload = os.urandom(1000)
    (served / 'detector.pkl').write_bytes(payload)
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    server.RequestHandlerClass.log_message = lambda *a: None
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f'http://127.0.0.1:{server.server_address[1]}/detector.pkl'
    cache = tmp_path / 'cache'
    try:
        with dnnlib.open_url(url, cache_dir=str(cache), verbose=False) as f:
            assert f.read() == payload
    finally:
        server.shutdown()
        server.server_close()
    # The server is gone: the second open must come from the cache.
    path = dnnlib.open_url(url, cache_dir=str(cache), return_filename=True)
    assert os.path.dirname(path) == str(cache)
    with open(path, 'rb') as f:
        assert f.read() == payload


def test_open_url_offline_error_is_fast_and_clear(tmp_path, monkeypatch):
    sock = socket.socket()
    sock.bind(('127.0.0.1', 0))
    port = sock.getsockname()[1]
    sock.close()  # Nothing listens there now.
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path / 'dl'))
    url = f'http://127.0.0.1:{port}/metrics/inception.pkl'
    t0 = time.monotonic()
    with pytest.raises(dnnlib.OfflineError) as info:
        dnnlib.open_url(url, verbose=False)
    assert time.monotonic() - t0 < 5
    message = str(info.value)
    assert url in message and str(tmp_path / 'dl' / 'downloads') in message


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv('DNNLIB_CACHE_DIR', str(tmp_path))
    assert dnnlib.make_cache_dir_path('downloads') == os.path.join(str(tmp_path), 'downloads')


def test_logger_tees_to_file(tmp_path, capsys):
    log = tmp_path / 'log.txt'
    with dnnlib.Logger(str(log)):
        print('to both')
    assert 'to both' in capsys.readouterr().out
    assert log.read_text() == 'to both\n'


def test_atomic_write_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / 'out.bin'
    with pytest.raises(RuntimeError):
        with util.atomic_write_path(str(target)) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'partial')
            raise RuntimeError('interrupted')
    assert os.listdir(tmp_path) == []
    with util.atomic_write_path(str(target)) as tmp:
        with open(tmp, 'wb') as f:
            f.write(b'done')
    assert target.read_bytes() == b'done' and os.listdir(tmp_path) == ['out.bin']


def test_format_time():
    assert [util.format_time(s) for s in (5, 185, 7380, 93600)] == ['5s', '3m 05s', '2h 03m', '1d 02h 00m']
