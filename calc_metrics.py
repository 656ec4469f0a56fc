"""Compute quality metrics of a network snapshot, as the training loop does at each snapshot.

    python calc_metrics.py --metrics=fid50k_full,kid50k_full --network=network-snapshot-000400.pkl
    python calc_metrics.py --metrics=swd2k --network=model.pkl --data=~/datasets/ffhq-128.zip --mirror=1

Each result is printed as a JSON line and, when the snapshot sits in a training run directory
(beside training_options.json), appended to <run_dir>/metric-<name>.jsonl, as upstream.
Detectors (Inception, VGG16) load from --detector (a directory holding inception-2015-12-05.pt/.pkl and
vgg16.pt/.pkl, or NAME=PATH), $EG3D_DETECTOR_DIR, $EG3D_DETECTOR_<NAME>, or their URLs via the download
cache. swd* metrics need no detector.
"""

from __future__ import annotations

import os
import tempfile

import click
import torch

import dnnlib
import legacy
from metrics import detectors, metric_main

# ----------------------------------------------------------------------------


def _comma_list(ctx, param, value: str) -> list[str]:
    names = [v.strip() for v in value.split(',') if v.strip()]
    if not names:
        raise click.BadParameter('give at least one metric name', param=param)
    bad = [n for n in names if not metric_main.is_valid_metric(n)]
    if bad:
        valid = ', '.join(metric_main.list_valid_metrics())
        raise click.BadParameter(f'unknown metric(s) {", ".join(bad)}; valid: {valid}', param=param)
    return names


def run_dir_of(network_pkl: str) -> str | None:
    """The training run directory holding a local snapshot (it has training_options.json), else None."""
    if '://' in network_pkl or not os.path.isfile(network_pkl):
        return None
    run_dir = os.path.dirname(os.path.abspath(network_pkl))
    return run_dir if os.path.isfile(os.path.join(run_dir, 'training_options.json')) else None


def dataset_kwargs_for(G: torch.nn.Module, data: str | None, training_set_kwargs: dict | None,
                       mirror: bool | None, network_pkl: str) -> dnnlib.EasyDict:
    """The real set: --data, else the snapshot's training set; at G's resolution, with labels when G is
    conditional, x-flipped when --mirror says so."""
    if data is not None:
        kwargs = dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset', path=data)
    elif training_set_kwargs:
        kwargs = dnnlib.EasyDict(training_set_kwargs)
    else:
        raise click.UsageError(f'{network_pkl} does not record its training set: give --data')
    kwargs.resolution = G.img_resolution
    kwargs.use_labels = G.c_dim != 0
    if mirror is not None:
        kwargs.xflip = mirror
    return kwargs


def subprocess_fn(rank: int, args: dnnlib.EasyDict, temp_dir: str) -> None:
    """One rank: join the process group (when several), compute every metric, report on rank 0."""
    if args.num_gpus > 1:
        init_file = os.path.abspath(os.path.join(temp_dir, '.torch_distributed_init'))
        backend = 'nccl' if torch.cuda.is_available() else 'gloo'
        torch.distributed.init_process_group(backend=backend, init_method=f'file://{init_file}', rank=rank,
                                             world_size=args.num_gpus)
    device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        for metric in args.metrics:
            result = metric_main.calc_metric(metric=metric, G=args.G, dataset_kwargs=args.dataset_kwargs,
                                             num_gpus=args.num_gpus, rank=rank, device=device,
                                             detectors=args.detectors, verbose=args.verbose and rank == 0)
            if rank == 0:
                metric_main.report_metric(result, run_dir=args.run_dir, snapshot_pkl=args.network_pkl)
    finally:
        if args.num_gpus > 1:
            torch.distributed.destroy_process_group()


@click.command()
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', metavar='PATH', required=True)
@click.option('--metrics', help='Comma-separated metric names', metavar='LIST', default='fid50k_full',
              show_default=True, callback=_comma_list)
@click.option('--data', metavar='PATH',
              help='Real images (dataset folder or zip) [default: the snapshot\'s training set]')
@click.option('--mirror', help='Enable dataset x-flips [default: as in training]', type=bool, metavar='BOOL')
@click.option('--gpus', 'num_gpus', help='Number of processes (GPUs, or CPU processes without CUDA)',
              type=click.IntRange(min=1), default=1, show_default=True)
@click.option('--verbose', help='Print progress', type=bool, default=True, metavar='BOOL', show_default=True)
@click.option('--detector', 'detector_locations', multiple=True, metavar='DIR|NAME=PATH',
              help=f'Where detectors are: a directory or NAME=PATH (NAME: {", ".join(detectors.DETECTORS)}); '
                   f'repeatable [default: ${detectors.DIR_ENV}, then the URLs through the download cache]')
def main(network_pkl: str, metrics: list[str], data: str | None, mirror: bool | None, num_gpus: int, verbose: bool,
         detector_locations: tuple[str, ...]) -> None:
    """Compute metrics of a network snapshot; print a JSON line per metric."""
    if verbose:
        print(f'Loading network from "{network_pkl}"...', flush=True)
    try:
        with dnnlib.open_url(network_pkl, verbose=verbose) as f:
            snapshot = legacy.load_network_pkl(f)
    except OSError as err:
        raise click.ClickException(f'--network: {err}') from None
    G = snapshot['G_ema']
    args = dnnlib.EasyDict(G=G, metrics=metrics, num_gpus=num_gpus, verbose=verbose, network_pkl=network_pkl,
                           detectors=list(detector_locations) or None, run_dir=run_dir_of(network_pkl))
    args.dataset_kwargs = dataset_kwargs_for(G, data, snapshot.get('training_set_kwargs'), mirror, network_pkl)
    try:
        dnnlib.construct_class_by_name(**args.dataset_kwargs)  # Fail early, naming the file, on a bad dataset.
    except (OSError, ValueError) as err:
        raise click.ClickException(f'dataset: {err}') from None

    try:
        with tempfile.TemporaryDirectory() as temp_dir:
            if num_gpus == 1:
                subprocess_fn(0, args, temp_dir)
            else:
                torch.multiprocessing.start_processes(subprocess_fn, args=(args, temp_dir), nprocs=num_gpus,
                                                      start_method='spawn')
    except detectors.DetectorError as err:
        raise click.ClickException(str(err)) from None


if __name__ == '__main__':
    from torch_utils import malloc_tuning
    malloc_tuning.apply()  # Keep freed activations in the heap (see the module); EG3D_MALLOC_TUNING=0: off.
    main()
