"""benchmarks/bench_baseline.py: upstream's rows and the 3x verdict (no timing here)."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'benchmarks'))
import bench_baseline  # noqa: E402
import bench_models  # noqa: E402


def test_rows_are_upstreams_table():
    want = {'small_forward': (0.67, 0.76), 'small_gmain': (2.55, 1.85), 'small_fourphase': (5.61, 1.92),
            'ffhq512_forward': (7.21, 1.83), 'ffhq512_gmain': (25.4, 5.65)}
    assert {r: bench_models.ROWS[r][4] for r in bench_baseline.BASELINE_ROWS} == want
    assert [bench_models.ROWS[r][2] for r in bench_baseline.BASELINE_ROWS] == [4, 4, 4, 1, 1]  # Batch sizes.


@pytest.mark.parametrize('median, peak, fast, lean', [(0.2, 0.5, True, True), (0.3, 0.5, False, True),
                                                      (0.2, 0.9, True, False)])
def test_verdict_and_table(median, peak, fast, lean, capsys):
    r = dict(row='small_forward', batch=4, median_s=median, min_s=median, cpu_s=median, peak_rss_gib=peak,
             matmul_gflops=100.0)
    speedup, is_fast, is_lean = bench_baseline.verdict(r)
    assert speedup == pytest.approx(0.67 / median) and (is_fast, is_lean) == (fast, lean)
    bench_baseline.print_rows([r], markdown=True)
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f'{0.67 / median:.2f}x' in line
    assert line.endswith(f'| {"yes" if fast else "NO"}, {"yes" if lean else "NO"} |')
