"""torch_utils: training_stats across gloo ranks, copy_params_and_buffers, shape checks, persistence."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from torch_utils import misc, persistence, training_stats


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _stats_worker(rank, world, port, values, out_dir):
    torch.distributed.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                                         world_size=world)
    torch.set_num_threads(1)
    training_stats.init_multiprocessing(rank, sync_device=None)
    collector = training_stats.Collector(regex='Loss/.*')
    for chunk in values[rank]:
        training_stats.report('Loss/a', torch.tensor(chunk, dtype=torch.float32))
    if rank == 1:
        training_stats.report('Loss/only_rank1', 3.0)
    training_stats.report('Other/ignored', 1.0)
    collector.update()
    result = {name: (collector.num(name), collector.mean(name), collector.std(name)) for name in collector.names()}
    torch.save(result, os.path.join(out_dir, f'{rank}.pt'))
    # A second interval with nothing new keeps the previous values (keep_previous).
    collector.update()
    assert collector.num('Loss/a') == result['Loss/a'][0]
    torch.distributed.destroy_process_group()


def test_training_stats_two_gloo_ranks_match_numpy(tmp_path):
    rng = np.random.default_rng()
    values = [[rng.standard_normal(5).tolist(), rng.standard_normal(3).tolist()],
              [rng.standard_normal(7).tolist()]]
    mp.start_processes(_stats_worker, args=(2, _free_port(), values, str(tmp_path)), nprocs=2, join=True,
                       start_method='spawn')
    allvals = np.concatenate([np.concatenate(v) for v in values]).astype(np.float32).astype(np.float64)
    for rank in range(2):
        res = torch.load(tmp_path / f'{rank}.pt')
        assert set(res) == {'Loss/a', 'Loss/only_rank1'}
        num, mean, std = res['Loss/a']
        assert num == allvals.size
        np.testing.assert_allclose([mean, std], [allvals.mean(), allvals.std()], rtol=1e-10)
        assert res['Loss/only_rank1'] == (1, 3.0, 0.0)


def test_training_stats_single_process():
    training_stats.reset()
    collector = training_stats.Collector(regex='T/.*')
    data = np.random.default_rng().standard_normal(50)
    for v in data:
        training_stats.report('T/x', float(v))
    collector.update()
    assert collector.num('T/x') == 50
    np.testing.assert_allclose([collector.mean('T/x'), collector.std('T/x')], [data.mean(), data.std()], rtol=1e-10)
    assert collector.as_dict()['T/x']['num'] == 50
    collector.update()  # Nothing new: previous values kept.
    assert collector.num('T/x') == 50


def test_copy_params_and_buffers_names_missing_key():
    src = torch.nn.Sequential(torch.nn.Linear(3, 4))
    dst = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    with pytest.raises(KeyError, match=r'"1\.weight"'):
        misc.copy_params_and_buffers(src, dst, require_all=True)
    misc.copy_params_and_buffers(src, dst, require_all=False)
    assert torch.equal(dst[0].weight, src[0].weight)
    bad = {'0.weight': torch.randn(5, 3)}
    with pytest.raises(ValueError, match='0.weight'):
        misc.copy_params_and_buffers(bad, dst)


def test_assert_shape():
    x = torch.randn(2, 25)
    misc.assert_shape(x, [None, 25])
    with pytest.raises(AssertionError, match='camera.*dimension 1.*got 24'):
        misc.assert_shape(torch.randn(2, 24), [None, 25], name='camera')
    with pytest.raises(AssertionError, match='3 dimensions'):
        misc.assert_shape(x, [None, 25, 1])


def test_constant_cache():
    a = misc.constant([1, 2, 3], dtype=torch.float32)
    b = misc.constant([1, 2, 3], dtype=torch.float32)
    assert a is b and a.tolist() == [1, 2, 3]
    assert misc.constant([1, 2, 3], dtype=torch.float64) is not a


def test_print_module_summary(capsys):
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    out = misc.print_module_summary(net, [torch.randn(5, 3)])
    text = capsys.readouterr().out
    assert out.shape == (5, 2)
    assert 'Total' in text and str(3 * 4 + 4 + 4 * 2 + 2) in text


def test_persistent_class_records_kwargs():
    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, width, depth=2, **extra):
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(width, width) for _ in range(depth)])

    net = Net(8, depth=3, note='x')
    assert net.init_kwargs == {'width': 8, 'depth': 3, 'note': 'x'}
    rebuilt = Net(**net.init_kwargs)
    assert len(rebuilt.layers) == 3 and persistence.is_persistent(rebuilt)


def test_two_collectors_watch_the_same_names():
    training_stats.reset()
    ada = training_stats.Collector(regex='Loss/signs/real')
    ticks = training_stats.Collector(regex='Loss/.*')
    training_stats.report('Loss/signs/real', [1.0, -1.0, 1.0])
    ada.update()
    assert ada.num('Loss/signs/real') == 3
    training_stats.report('Loss/signs/real', [1.0])
    training_stats.report('Loss/G/loss', 2.0)
    ada.update()
    ticks.update()
    assert ada.num('Loss/signs/real') == 1 and ada.mean('Loss/signs/real') == 1.0
    assert ticks.num('Loss/signs/real') == 4 and abs(ticks.mean('Loss/signs/real') - 0.5) < 1e-12
    assert ticks.names() == ['Loss/G/loss', 'Loss/signs/real']
