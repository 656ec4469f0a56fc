"""Reference against fused custom ops at the shapes of the ffhq preset (EG3D FFHQ 512, neural rendering
128): the tri-plane backbone (StyleGAN2 at 256, 96 channels out), the super-resolution (8XDC: 128 -> 512)
and the dual discriminator at 512; and filtered_lrelu at layers of StyleGAN3's ffhq-1024 configs (T, and
R for its radial filters), their channels scaled down for a CPU (see sg3_cases).

    python benchmarks/bench_ops.py [--batch 1] [--repeats 5] [--threads N] [--quick] [--ops bias_act,...]

Each row: median time of the forward pass and of forward + backward (the gradient with respect to the
input, as training needs it), and the peak memory the call allocates (outputs, temporaries and tensors
saved for backward; CPU: from the profiler's allocation events, CUDA: the allocator's peak). The
upfirdn2d rows are the calls that conv2d_resample and upsample2d make inside those layers.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time

# Idle OpenMP threads sleep rather than spin (see docs/perf.md); must be set before torch loads OpenMP.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import scipy.signal  # noqa: E402
import scipy.special  # noqa: E402

from torch_utils.ops import _impl, bias_act, conv2d_resample, filtered_lrelu, upfirdn2d  # noqa: E402

OPS = {'bias_act': bias_act, 'upfirdn2d': upfirdn2d, 'filtered_lrelu': filtered_lrelu}


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
    """(region, layer, input shape, op(x, impl)) at batch n: the ffhq preset's layers."""
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


def stylegan3_layers(res: int = 1024, num_layers: int = 14, num_critical: int = 2, margin: int = 10,
                     channel_base: int = 32768, channel_max: int = 512) -> list[dict]:
    """The geometry of StyleGAN3's synthesis layers (Karras et al. 2021, App. F; its ffhq-1024 defaults):
    per layer the cutoff, stopband, sampling rate and size ramp geometrically from the first layer to the
    last, and filtered_lrelu runs at twice the larger of the input and output rates."""
    e = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = 2 * (res / 2 / 2) ** e
    stopbands = 2 ** 2.1 * (res / 2 * 2 ** 0.3 / 2 ** 2.1) ** e
    rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, res))))
    half_widths = np.maximum(stopbands, rates / 2) - cutoffs
    sizes = rates + margin * 2
    sizes[-2:] = res
    channels = np.rint(np.minimum(channel_base / 2 / cutoffs, channel_max))
    layers = []
    for i in range(num_layers + 1):
        j, torgb = max(i - 1, 0), i == num_layers
        tmp = max(rates[j], rates[i]) * (1 if torgb else 2)
        up, down = int(round(tmp / rates[j])), int(round(tmp / rates[i]))
        up_taps, down_taps = (6 * up if up > 1 and not torgb else 1), (6 * down if down > 1 and not torgb else 1)
        k = 1 if torgb else 3  # The convolution before filtered_lrelu (full padding: its output is k - 1 larger).
        total = (int(sizes[i]) - 1) * down + 1 - (int(sizes[j]) + k - 1) * up + up_taps + down_taps - 2
        lo = (total + up) // 2
        layers.append(dict(index=i, in_size=int(sizes[j]), size=int(sizes[j]) + k - 1, out=int(sizes[i]), up=up,
                           down=down,
                           channels=3 if torgb else int(channels[i]), padding=[lo, total - lo] * 2, torgb=torgb,
                           critical=i >= num_layers - num_critical, tmp_rate=float(tmp), up_taps=up_taps,
                           down_taps=down_taps, in_cutoff=float(cutoffs[j]), in_half_width=float(half_widths[j]),
                           out_cutoff=float(cutoffs[i]), out_half_width=float(half_widths[i])))
    return layers


def lowpass(numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False) -> torch.Tensor | None:
    """A Kaiser-windowed sinc (1-D) or jinc (radial, 2-D) low-pass, as StyleGAN3 designs its filters."""
    if numtaps == 1:
        return None
    if not radial:
        return torch.tensor(scipy.signal.firwin(numtaps, cutoff, width=width, fs=fs), dtype=torch.float32)
    t = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
    r = np.hypot(*np.meshgrid(t, t))
    f = scipy.special.j1(2 * np.pi * cutoff * r) / (np.pi * r)
    beta = scipy.signal.kaiser_beta(scipy.signal.kaiser_atten(numtaps, width / (fs / 2)))
    f = f * np.outer(*[np.kaiser(numtaps, beta)] * 2)
    return torch.tensor(f / f.sum(), dtype=torch.float32)


def sg3_cases(n: int, quick: bool) -> list[tuple[str, str, tuple, object]]:
    """filtered_lrelu at layers of StyleGAN3-T (ffhq 1024): L1 (36 px, same rate: up 2, 12 taps, all 512
    channels), L4 (52 -> 84 px, the rate doubles: up 4, 24 taps; 128 of 512 channels), L8 (276 px; 32 of
    203 channels; also with StyleGAN3-R's 12x12 radial down filter), L10 (532 -> 1044 px, up 4; 4 of 81
    channels), L13 (critically sampled, 1044 -> 1024 px; 4 of 32 channels) and the ToRGB layer (1024 px,
    3 channels, bias and clamp only); StyleGAN3's conv_clamp 256 everywhere (so 2-bit masks)."""
    layers = stylegan3_layers()
    rows = [(1, 512, False), (4, 128, False), (8, 32, False), (8, 32, True), (10, 4, False), (13, 4, False),
            (14, 3, False)]
    if quick:
        rows = [r for r in rows if r[0] in (1, 4, 8)]
    out = []
    for index, ch, radial in rows:
        g = layers[index]
        fu = lowpass(g['up_taps'], g['in_cutoff'], g['in_half_width'] * 2, g['tmp_rate'])
        fd = lowpass(g['down_taps'], g['out_cutoff'], g['out_half_width'] * 2, g['tmp_rate'], radial)
        b = torch.randn(ch)
        kw = dict(up=g['up'], down=g['down'], padding=g['padding'], clamp=256,
                  gain=1 if g['torgb'] else math.sqrt(2), slope=1 if g['torgb'] else 0.2)
        what = ('ToRGB' if g['torgb'] else f'up {g["up"]}, {g["up_taps"]} taps{", radial" if radial else ""}'
                f'{", critical" if g["critical"] else ""}')
        out.append(('sg3', f'L{index} {g["in_size"]}->{g["out"]}: filtered_lrelu {what}', (n, ch, g['size'], g['size']),
                    lambda x, impl, fu=fu, fd=fd, b=b, kw=kw: filtered_lrelu.filtered_lrelu(x, fu, fd, b, impl=impl,
                                                                                            **kw)))
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
    parser.add_argument('--ops', default=','.join(OPS), help='comma-separated ops to benchmark')
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    ops = args.ops.split(',')
    for op in ops:
        if op not in OPS:
            parser.error(f'unknown op {op!r}; one of {", ".join(OPS)}')
        if _impl.fused_plugin(op, device) is None:
            print(f'fused {op} unavailable on {device}: {_impl.unavailable_cause(op, device)}')
            return 1
    print(f'torch {torch.__version__}, {device}, {torch.get_num_threads()} threads, batch {args.batch}, '
          f'median of {args.repeats}')
    header = (f'{"region":9s} {"layer":52s} {"input":20s} {"fwd ref":>8s} {"fused":>8s} {"x":>5s} '
              f'{"fwd+bwd ref":>11s} {"fused":>8s} {"x":>5s} {"peak MiB ref":>12s} {"fused":>7s}')
    print(header)
    print('-' * len(header))
    gen = torch.Generator().manual_seed(0)
    rows = cases(args.batch, args.quick) + sg3_cases(args.batch, args.quick)
    for region, layer, shape, op in rows:
        op_name = next((name for name in ('bias_act', 'filtered_lrelu') if name in layer), 'upfirdn2d')
        if op_name not in ops:
            continue
        module = OPS[op_name]
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
            used = module.last_impl
            assert used == impl, f'{layer}: asked for {impl}, ran {used}'
            row[impl] = (fwd, both, peak)
        (rf, rb, rp), (ff, fb, fp) = row['ref'], row['fused']
        print(f'{region:9s} {layer:52s} {"x".join(map(str, shape)):20s} {rf * 1e3:8.2f} {ff * 1e3:8.2f} '
              f'{rf / ff:5.1f} {rb * 1e3:11.2f} {fb * 1e3:8.2f} {rb / fb:5.1f} {rp / 2**20:12.1f} {fp / 2**20:7.1f}',
              flush=True)
    print('times in ms; x = reference time / fused time')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
