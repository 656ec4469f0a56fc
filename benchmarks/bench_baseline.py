"""Every row of upstream's CPU baseline (../shared/reference/official-cpu-baseline.md) with our code, at the
same configurations and by the same method: build the networks, 1 warm-up, median of 3, each row in its
own process, peak RSS of the process including set-up. Prints ours beside upstream's figure, the speed-up
(upstream / ours) and the verdict of issue 15's target: at least 3x faster with peak memory no higher.

    .venv/bin/python benchmarks/bench_baseline.py                     # all five rows (~3 min)
    .venv/bin/python benchmarks/bench_baseline.py --rows small_forward,small_gmain
    .venv/bin/python benchmarks/bench_baseline.py --markdown          # the table of docs/perf.md
    .venv/bin/python benchmarks/bench_baseline.py --threads 1         # upstream's figures are 2 threads
    .venv/bin/python benchmarks/bench_baseline.py --omp-passive 1     # on a machine shared with other work

The rows are bench_models.py's (configurations, cameras, the loss phases); this script only selects
upstream's rows and reports against them. Besides the wall-time median, the process CPU time of a step
and the throughput of a 2048^3 matmul during the row are shown: on a machine shared with other work
the wall time also measures the neighbours (upstream's machine ran the matmul at ~250 GFLOP/s).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_models  # noqa: E402

BASELINE_ROWS = ['small_forward', 'small_gmain', 'small_fourphase', 'ffhq512_forward', 'ffhq512_gmain']
TARGET = 3.0  # Issue 15: at least 3x faster than upstream on every row.

LABELS = {
    'small_forward': ('small', 'G forward (eval, no grad, noise const)'),
    'small_gmain': ('small', 'Gmain step'),
    'small_fourphase': ('small', 'Gmain + Greg + Dmain + Dreg (no optimiser step)'),
    'ffhq512_forward': ('ffhq512-128', 'G forward, neural rendering 128'),
    'ffhq512_gmain': ('ffhq512 at neural 64', 'Gmain step'),
}


def verdict(r: dict) -> tuple[float, bool, bool]:
    """(speed-up upstream/ours, reaches TARGET x, peak RSS no higher than upstream's)."""
    up_s, up_gib = bench_models.ROWS[r['row']][4]
    speedup = up_s / r['median_s']
    return speedup, speedup >= TARGET, r['peak_rss_gib'] <= up_gib


def print_rows(results: list[dict], markdown: bool) -> None:
    if markdown:
        print('| config | measurement | batch | ours: median | ours: CPU time | ours: peak RSS | matmul GFLOP/s | '
              'upstream: median | upstream: peak RSS | speed-up | 3x target (time, memory) |')
        print('|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|')
    for r in results:
        up_s, up_gib = bench_models.ROWS[r['row']][4]
        speedup, fast, lean = verdict(r)
        config, what = LABELS[r['row']]
        ok = ('yes' if fast else 'NO') + ', ' + ('yes' if lean else 'NO')
        if markdown:
            print(f'| {config} | {what} | {r["batch"]} | {r["median_s"]:.2f} s | {r["cpu_s"]:.2f} s | '
                  f'{r["peak_rss_gib"]:.2f} GiB | {r["matmul_gflops"]:.0f} | {up_s:.2f} s | {up_gib:.2f} GiB | '
                  f'{speedup:.2f}x | {ok} |')
        else:
            print(f'{config:<20} {what:<48} b{r["batch"]}  ours {r["median_s"]:6.2f} s (min {r["min_s"]:.2f}, '
                  f'CPU {r["cpu_s"]:.2f} s) {r["peak_rss_gib"]:.2f} GiB | upstream {up_s:5.2f} s {up_gib:.2f} GiB '
                  f'| {speedup:5.2f}x (target {up_s / TARGET:.2f} s) | 3x: {ok} | matmul '
                  f'{r["matmul_gflops"]:.0f} GFLOP/s', flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--rows', default='all', help=f'comma-separated, or "all" ({", ".join(BASELINE_ROWS)})')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--warmup', type=int, default=1)
    parser.add_argument('--threads', type=int, default=2, help='torch threads (upstream figures: 2)')
    parser.add_argument('--omp-passive', type=int, default=0,
                        help='OMP_WAIT_POLICY=PASSIVE for the rows (1: for a machine shared with other work) or '
                             'the environment\'s (0, default: the OpenMP default unless set, as train.py runs and '
                             'as upstream\'s figures were taken)')
    parser.add_argument('--markdown', action='store_true', help='also print the markdown table of docs/perf.md')
    parser.add_argument('--profile', action='store_true', help='print a profile of one extra step per row')
    args = parser.parse_args()

    names = BASELINE_ROWS if args.rows == 'all' else [r.strip() for r in args.rows.split(',') if r.strip()]
    unknown = [r for r in names if r not in BASELINE_ROWS]
    if unknown:
        parser.error(f'unknown rows {unknown}; choose from {BASELINE_ROWS} or "all"')
    import torch
    print(f'torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, '
          f'{args.threads} threads, OMP_WAIT_POLICY='
          f'{"PASSIVE" if args.omp_passive else os.environ.get("OMP_WAIT_POLICY", "default")}, '
          f'EG3D_FUSED_OPS={os.environ.get("EG3D_FUSED_OPS", "1")}, {args.warmup} warm-up + median of '
          f'{args.repeats}, one process per row, load average before {os.getloadavg()[0]:.2f}', flush=True)
    results = []
    for name in names:
        results.append(bench_models.run_in_subprocess(name, args))
        print_rows(results[-1:], markdown=False)
    print(f'load average after: {" ".join(f"{v:.2f}" for v in os.getloadavg())}')
    if args.markdown:
        print()
        print_rows(results, markdown=True)
    missed = [r['row'] for r in results if not all(verdict(r)[1:])]
    print('all rows reach the 3x target' if not missed else f'rows missing the 3x target: {", ".join(missed)}')


if __name__ == '__main__':
    main()
