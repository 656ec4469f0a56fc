"""The demo: build a synthetic dataset, train the 'tiny' 3D-aware GAN on the CPU for a few kimg, check that it
learned (SWD against the first snapshot and the mean image; depth reprojection against a flat plane) and
write samples, a shape (.ply) and an orbit video. The README's first command:

    bash setup.sh && .venv/bin/python demo.py

Exits with 1 when a learning check fails. The work is in training/demo.py.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')  # Threads sleep while they wait (a shared CPU).

import click  # noqa: E402


@click.command()
@click.option('--outdir', default='demo-out', show_default=True, metavar='DIR',
              help='Dataset and run directories go here (each run gets a new numbered directory)')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), default=None, metavar='KIMG',
              help='Training length  [default: the tiny preset\'s]')
@click.option('--train-minutes', type=click.FloatRange(min=0, min_open=True), default=7.0, show_default=True,
              help='Wall-time cap of training; it then stops cleanly with a final snapshot')
@click.option('--images', type=click.IntRange(min=16), default=1000, show_default=True, help='Dataset size')
@click.option('--seed', type=click.IntRange(min=0), default=0, show_default=True, help='Training seed')
@click.option('--swd-images', type=click.IntRange(min=16), default=256, show_default=True,
              help='Images per SWD set')
@click.option('--set', 'settings', multiple=True, metavar='KEY=VALUE',
              help='Passed on to train.py (--set of any tiny preset field; repeatable)')
def main(outdir, kimg, train_minutes, images, seed, swd_images, settings):
    """Train a tiny 3D-aware GAN on the CPU from nothing and show what it learned (see README.md, "Demo")."""
    from training import demo
    opts = demo.DemoOptions(outdir=outdir, kimg=kimg, train_minutes=train_minutes, images=images, seed=seed,
                            swd_images=swd_images, train_args=tuple(f'--set={s}' for s in settings))
    try:
        summary = demo.run_demo(opts)
    except demo.DemoError as err:
        print(f'demo.py: {err}', file=sys.stderr)
        sys.exit(2)
    if not summary['passed']:
        print('demo.py: a learning check failed (see the FAIL lines above): the run did not learn enough in its '
              'budget', file=sys.stderr)
        sys.exit(1)
    print('[demo] all checks passed')


if __name__ == '__main__':
    main()
