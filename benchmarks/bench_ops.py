"""Reference against fused custom ops at the shapes of the ffhq preset (EG3D FFHQ 512, neural rendering
128): the tri-plane backbone (StyleGAN2 at 256, 96 channels out), the super-resolution (8XDC: 128 -> 512)
and the dual discriminator at 512.

    python benchmarks/bench_ops.py [--batch 1] [--repeats 5] [--threads N] [--quick]

Each row: median time of the forward pass and of forward + backward (the gradient with respect to the
input, as training needs it), and the peak memory the call allocates (outputs, temporaries and tensors
saved for backward; CPU: from the profiler's allocation events, CUDA: the allocator's peak). The
upfirdn2d rows are the calls that conv2d_resample and upsample2d make inside those layers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# Idle OpenMP threads sleep rather than spin (see docs/perf.md); must be set before torch loads OpenMP.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from torch_utils.ops import _impl, bias_act, conv2d_resample, upfirdn2d  # noqa: E402


def upfirdn2d_calls(run) -> list[tuple]:
    """The upfirdn2d calls (x shape, f, kwargs) that `run` makes."""
    calls = []
    real = upfirdn2d.upfirdn2d

    def spy(x, f, **kw):
        calls.append((tuple(x.shape), f, kw))
        return real(x, f, **kw)
    conv2d_resample.upfirdn2d = upfirdn2d.upfirdn2d = spy
    try:
        with torch.no_grad():
            run()
    finally:
        conv2d_resample.upfirdn2d = upfirdn2d.upfirdn2d = real
    return calls


def cases(n: int, quick: bool) -> list[tuple[str, str, tuple, object]]:
    """(region, layer, input shape, op(x, impl)) at batch n."""
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    out = []

    def conv_up(region, name, cin, cout, res):  # SynthesisLayer conv0: up 2, 3x3.
        x, w = torch.zeros(n, 1, res // 2, res // 2), torch.zeros(1, 1, 3, 3)  # One channel to find the calls.
        for shape, ff, kw in upfirdn2d_calls(lambda: conv2d_resample.conv2d_resample(x, w, f, up=2, padding=1,
                                                                                     flip_weight=False)):
            out.append((region, f'{name}: FIR after transposed conv', (n, cout) + shape[2:],
                        lambda x, impl, ff=ff, kw=kw: upfirdn2d.upfirdn2d(x, ff, impl=impl, **kw)))

    def img_up(region, name, ch, res):  # Skip architecture: upsample the image by 2.
        out.append((region, f'{name}: upsample2d', (n, ch, res // 2, res // 2),
                    lambda x, impl: upfirdn2d.upsample2d(x, f, impl=impl)))

    def act(region, name, ch, res, clamp):  # bias + lrelu (gain sqrt 2) + clamp after a conv.
        b = torch.randn(ch)
        out.append((region, f'{name}: bias_act lrelu{" clamp" if clamp else ""}', (n, ch, res, res),
                    lambda x, impl: bias_act.bias_act(x, b, act='lrelu', clamp=clamp, impl=impl)))

    def conv_down(region, name, cin, cout, res, k):  # DiscriminatorBlock conv1 (3x3) / skip (1x1), down 2.
        x, w = torch.zeros(n, 1, res, res), torch.zeros(1, 1, k, k)
        for shape, ff, kw in upfirdn2d_calls(lambda: conv2d_resample.conv2d_resample(x, w, f, down=2,
                                                                                     padding=k // 2)):
            out.append((region, f'{name}: FIR before strided conv', (n, cin) + shape[2:],
                        lambda x, impl, ff=ff, kw=kw: upfirdn2d.upfirdn2d(x, ff, impl=impl, **kw)))

    conv_up('backbone', 'b256 conv0', 256, 128, 256)
    act('backbone', 'b256 conv0', 128, 256, None)
    img_up('backbone', 'b256 img', 96, 256)
    if not quick:
        act('backbone', 'b64 conv1', 512, 64, None)
    conv_up('superres', 'b512 conv0', 256, 128, 512)
    act('superres', 'b512 conv0', 128, 512, 256)
    img_up('superres', 'b512 img', 3, 512)
    conv_down('D', 'b512 conv1', 64, 128, 512, 3)
    conv_down('D', 'b512 skip', 64, 128, 512, 1)
    act('D', 'b512 conv0', 64, 512, 256)
    if not quick:
        conv_down('D', 'b128 conv1', 256, 512, 128, 3)
        act('D', 'b64 conv0', 512, 64, 256)
    return out


def timed(fn, repeats: int, device) -> float:
    """Median seconds of fn() after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == 'cuda':
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_bytes(fn, device) -> int:
    """Peak bytes allocated while fn() runs, beyond what was allocated before."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    current = peak = 0
    for event in sorted(prof.events(), key=lambda e: e.time_range.start):
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--batch', type=int, default=1)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: torch default)')
    parser.add_argument('--quick', action='store_true', help='fewer layers')
    parser.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if _impl.fused_plugin('bias_act', device) is None or _impl.fused_plugin('upfirdn2d', device) is None:
        print(f'fused ops unavailable on {device}: {_impl.unavailable_cause("bias_act", device)}')
        return 1
    print(f'torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {args.batch}, '
          f'median of {args.repeats}')
    header = (f'{"region":9s} {"layer":40s} {"input":20s} {"fwd ref":>8s} {"fused":>8s} {"x":>5s} '
              f'{"fwd+bwd ref":>11s} {"fused":>8s} {"x":>5s} {"peak MiB ref":>12s} {"fused":>7s}')
    print(header)
    print('-' * len(header))
    gen = torch.Generator().manual_seed(0)
    for region, layer, shape, op in cases(args.batch, args.quick):
        x = torch.randn(shape, generator=gen).to(device)
        xg = x.clone().requires_grad_()
        row = {}
        for impl in ('ref', 'fused'):
            with torch.no_grad():
                fwd = timed(lambda: op(x, impl), args.repeats, device)
            y = op(xg, impl)
            dy = torch.randn_like(y)
            del y

            def train_step():
                torch.autograd.grad(op(xg, impl), xg, dy)
            both = timed(train_step, args.repeats, device)
            peak = peak_bytes(train_step, device)
            used = (bias_act if 'bias_act' in layer else upfirdn2d).last_impl
            assert used == impl, f'{layer}: asked for {impl}, ran {used}'
            row[impl] = (fwd, both, peak)
        (rf, rb, rp), (ff, fb, fp) = row['ref'], row['fused']
        print(f'{region:9s} {layer:40s} {"x".join(map(str, shape)):20s} {rf * 1e3:8.2f} {ff * 1e3:8.2f} '
              f'{rf / ff:5.1f} {rb * 1e3:11.2f} {fb * 1e3:8.2f} {rb / fb:5.1f} {rp / 2**20:12.1f} {fp / 2**20:7.1f}',
              flush=True)
    print('times in ms; x = reference time / fused time')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
