"""The training loop: phased G/D optimisation with lazy regularisation, EMA, ADA, ticks, snapshots.

One process per device; `rank` and `num_gpus` describe the process group (already initialised by the
launcher when num_gpus > 1). Gradients are averaged across ranks after each phase and only rank 0
writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import random
import time

import numpy as np
import torch

import dnnlib
from torch_utils import misc, training_stats
from torch_utils.misc import profiled
from training import accel, distributed, image_grid, training_state
from training.loss import ema_beta, lazy_regularization

# ----------------------------------------------------------------------------


def _memory_gb() -> tuple[float, float]:
    """(current, peak) resident memory of this process in GiB."""
    cur = peak = float('nan')
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('VmRSS:'):
                    cur = int(line.split()[1]) / 2 ** 20
                elif line.startswith('VmHWM:'):
                    peak = int(line.split()[1]) / 2 ** 20
    except OSError:
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
    return cur, peak


@contextlib.contextmanager
def rng_neutral(device: torch.device, seed: int | None = None):
    """Run maintenance (summaries, image grids, metrics) without touching the training RNG streams, so that
    a run resumed from a training state continues exactly; optionally seeded for repeatable grids."""
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []):
        if seed is not None:
            torch.manual_seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _fault_injection(rank: int) -> int | None:
    """EG3D_FAULT_INJECT='rank=R,batch=B' makes rank R raise at batch B (tests of failure handling)."""
    spec = os.environ.get('EG3D_FAULT_INJECT')
    if not spec:
        return None
    fields = dict(item.split('=') for item in spec.split(','))
    return int(fields['batch']) if int(fields['rank']) == rank else None


def _distributed(num_gpus: int) -> bool:
    return num_gpus > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()


def average_gradients(module: torch.nn.Module, num_gpus: int, num_microbatches: int) -> None:
    """Sum gradients across ranks in one flat all-reduce and divide by the number of micro-batches (each
    contributed the gradient of its mean loss), then scrub NaN/Inf (NaN -> 0, +-Inf -> +-1e5).

    Upstream divides by the number of ranks only, so its gradient scale grows with gradient
    accumulation; here one process accumulating N micro-batches equals N ranks with one each."""
    params = [p for p in module.parameters() if p.numel() > 0 and p.grad is not None]
    if not params:
        return
    flat = torch.cat([p.grad.flatten() for p in params])
    if _distributed(num_gpus):
        torch.distributed.all_reduce(flat)
    flat /= num_microbatches
    torch.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.reshape(p.shape)


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """p_ema <- lerp(p, p_ema, beta) for parameters; buffers copied; rendering settings followed."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
    if hasattr(G, 'neural_rendering_resolution'):
        G_ema.neural_rendering_resolution = G.neural_rendering_resolution
    if hasattr(G, 'rendering_kwargs'):
        G_ema.rendering_kwargs = G.rendering_kwargs.copy()


def microbatch_seed(random_seed: int, batch_idx: int, phase_idx: int, microbatch: int) -> int:
    """Seed of everything random in one micro-batch of one phase (latents, camera labels, GPC swaps,
    renderer jitter, augmentation, regulariser points). A function of the global micro-batch index, so
    results do not depend on how the batch is spread over ranks, and a resumed run draws the same."""
    state = np.random.SeedSequence([random_seed, batch_idx, phase_idx, microbatch]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval) -> list:
    """Gmain/Greg and Dmain/Dreg sharing one optimiser per network (lazy regularisation), or Gboth/Dboth
    when a network's interval is None."""
    phases = []
    for name, module, opt_kwargs, reg_interval in [('G', G, G_opt_kwargs, G_reg_interval),
                                                   ('D', D, D_opt_kwargs, D_reg_interval)]:
        kwargs, _ = lazy_regularization(opt_kwargs, reg_interval)
        opt = dnnlib.construct_class_by_name(params=module.parameters(), **kwargs)
        if reg_interval is None:
            phases.append(dnnlib.EasyDict(name=name + 'both', module=module, opt=opt, interval=1))
        else:
            phases.append(dnnlib.EasyDict(name=name + 'main', module=module, opt=opt, interval=1))
            phases.append(dnnlib.EasyDict(name=name + 'reg', module=module, opt=opt, interval=reg_interval))
    return phases

# ----------------------------------------------------------------------------


def training_loop(
    run_dir                 = '.',      # Output directory.
    training_set_kwargs     = {},       # Options for the training set.
    data_loader_kwargs      = {},       # Options for torch.utils.data.DataLoader.
    G_kwargs                = {},       # Options for the generator network.
    D_kwargs                = {},       # Options for the discriminator network.
    G_opt_kwargs            = {},       # Options for the generator optimiser.
    D_opt_kwargs            = {},       # Options for the discriminator optimiser.
    augment_kwargs          = None,     # Options for the augmentation pipeline, or None to disable it.
    loss_kwargs             = {},       # Options for the loss function.
    metrics                 = [],       # Metric names to evaluate at each network snapshot.
    random_seed             = 0,        # Global random seed.
    num_gpus                = 1,        # Number of processes (ranks) taking part.
    rank                    = 0,        # Rank of this process in [0, num_gpus).
    batch_size              = 4,        # Total batch size for one training iteration.
    batch_gpu               = 4,        # Samples processed at once by one rank (gradient accumulation).
    ema_kimg                = 10,       # Half-life of the generator EMA, in kimg.
    ema_rampup              = 0.05,     # EMA ramp-up coefficient; None disables the ramp-up.
    G_reg_interval          = None,     # How often to run G's regulariser (None: not lazy).
    D_reg_interval          = 16,       # How often to run R1 (None: not lazy).
    augment_p               = 0,        # Initial augmentation probability.
    ada_target              = None,     # ADA target for the mean sign of D(real); None disables ADA.
    ada_interval            = 4,        # Iterations between ADA adjustments.
    ada_kimg                = 500,      # ADA adjustment speed: kimg for p to go from 0 to 1.
    total_kimg              = 25000,    # Training length in thousands of real images.
    kimg_per_tick           = 4,        # Progress print interval.
    image_snapshot_ticks    = 50,       # Ticks between image grids; None disables them.
    network_snapshot_ticks  = 50,       # Ticks between network snapshots; None disables them.
    image_grid_size         = None,     # (columns, rows) of the image grids; None: upstream's rule.
    resume_pkl              = None,     # Network snapshot to fine-tune from (weights only, as upstream).
    resume_kimg             = 0,        # First kimg to report when resuming.
    resume_state            = None,     # Training state to continue exactly (training-state-*.pt), or None.
    training_options        = None,     # The resolved options (plain data), stored in training states.
    cudnn_benchmark         = True,     # Enable torch.backends.cudnn.benchmark?
    precision               = 'fp32',   # 'fp32', or autocast 'bf16' / 'fp16' on CUDA (training/accel.py).
    compile_mode            = None,     # torch.compile mode for G's backbone and SR and D; None = eager.
    allow_tf32              = False,    # Allow TF32 on CUDA (upstream's policy: off).
    abort_fn                = None,     # Callback returning True to stop training early.
    progress_fn             = None,     # Callback(cur_kimg, total_kimg) for progress reports.
    device                  = None,     # torch.device; None: cuda:rank when CUDA is available, else the CPU.
):
    start_time = time.time()
    if device is None:
        device = torch.device('cuda', rank) if torch.cuda.is_available() else torch.device('cpu')
    np.random.seed(random_seed * num_gpus + rank)
    torch.manual_seed(random_seed * num_gpus + rank)
    accel.check(device, precision, compile_mode)  # Before any work: bf16 / fp16 need CUDA.
    if device.type == 'cuda':
        torch.backends.cudnn.benchmark = cudnn_benchmark
    accel.set_tf32(device, allow_tf32)  # Upstream's policy by default: exact float32.
    training_stats.reset()  # A fresh account for this run (a resumed run restores its own below).
    distributed.reset_stop_request()
    log = print if rank == 0 else (lambda *args, **kwargs: None)
    if batch_size % (batch_gpu * num_gpus) != 0:
        raise ValueError(f'batch_size {batch_size} is not divisible by batch_gpu {batch_gpu} x num_gpus {num_gpus}')

    # Data.
    log('Loading training set...')
    training_set = dnnlib.construct_class_by_name(**training_set_kwargs)
    from training.sampler import InfiniteSampler
    state = training_state.load(resume_state) if resume_state is not None else None
    loop_state = state['training_state']['loop'] if state is not None else None
    start_nimg = loop_state['cur_nimg'] if loop_state is not None else resume_kimg * 1000
    sampler = InfiniteSampler(dataset=training_set, rank=rank, num_replicas=num_gpus, seed=random_seed,
                              start_idx=start_nimg - resume_kimg * 1000, block_size=batch_size // num_gpus)
    loader_kwargs = dict(data_loader_kwargs)
    if device.type != 'cuda':
        loader_kwargs['pin_memory'] = False
    if loader_kwargs.get('num_workers', 0) == 0:
        loader_kwargs.pop('prefetch_factor', None)
    # Worker seeds come from a generator of their own, not from the global RNG (exact resume).
    loader_generator = torch.Generator().manual_seed(random_seed * num_gpus + rank)
    training_set_iterator = iter(torch.utils.data.DataLoader(dataset=training_set, sampler=sampler,
                                                             batch_size=batch_size // num_gpus,
                                                             generator=loader_generator, **loader_kwargs))
    log(f'Num images: {len(training_set)}; image shape: {training_set.image_shape}; '
        f'label shape: {training_set.label_shape}')

    # Networks.
    common_kwargs = dict(c_dim=training_set.label_dim, img_resolution=training_set.resolution,
                         img_channels=training_set.num_channels)
    G = dnnlib.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    D = dnnlib.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False).to(device)
    if hasattr(G, 'dataset_label_std'):
        G.dataset_label_std.copy_(torch.as_tensor(training_set.get_label_std(), dtype=torch.float32))
    G_ema = copy.deepcopy(G).eval()

    if resume_pkl is not None and rank == 0:
        import legacy
        log(f'Resuming from "{resume_pkl}"')
        resume_data = legacy.load_network_pkl(resume_pkl)
        for name, module in [('G', G), ('D', D), ('G_ema', G_ema)]:
            misc.copy_params_and_buffers(resume_data[name], module, require_all=False)

    if rank == 0:
        with rng_neutral(device, seed=random_seed), torch.no_grad():
            z = torch.randn([batch_gpu, G.z_dim], device=device)
            c = torch.from_numpy(np.stack([training_set.get_label(i % len(training_set)) for i in range(batch_gpu)]))
            img = misc.print_module_summary(G, [z, c.to(device)])
            misc.print_module_summary(D, [img, c.to(device)])

    # Augmentation.
    augment_pipe = None
    ada_stats = None
    if augment_kwargs is not None and (augment_p > 0 or ada_target is not None):
        augment_pipe = dnnlib.construct_class_by_name(**augment_kwargs).train().requires_grad_(False).to(device)
        augment_pipe.p.copy_(torch.as_tensor(augment_p))
        if ada_target is not None:
            ada_stats = training_stats.Collector(regex='Loss/signs/real')

    # Same starting point on every rank.
    if _distributed(num_gpus):
        for module in [G, D, G_ema, augment_pipe]:
            if module is not None:
                for tensor in misc.params_and_buffers(module):
                    torch.distributed.broadcast(tensor, src=0)

    # torch.compile on the training copies (G_ema, snapshots and metrics stay eager).
    accel.compile_networks(G, D, compile_mode)
    scaler = accel.FP16LossScaler(enabled=(precision == 'fp16'))

    loss = dnnlib.construct_class_by_name(device=device, G=G, D=D, augment_pipe=augment_pipe, **loss_kwargs)
    phases = build_phases(G, D, G_opt_kwargs, D_opt_kwargs, G_reg_interval, D_reg_interval)
    optimizers = {'G': phases[0].opt, 'D': phases[-1].opt}

    # Metrics are resolved up front so that a bad name fails before any training.
    if metrics:
        from metrics import metric_main
        for metric in metrics:
            if not metric_main.is_valid_metric(metric):
                raise ValueError(f'unknown metric {metric!r}; valid: {", ".join(metric_main.list_valid_metrics())}')

    # Image grids.
    grid_size = grid_z = grid_c = None
    if rank == 0 and image_snapshot_ticks is not None:
        log('Exporting sample images...')
        grid_size, images, labels = image_grid.setup_snapshot_image_grid(training_set, random_seed, image_grid_size)
        image_grid.save_image_grid(images, os.path.join(run_dir, 'reals.png'), drange=[0, 255], grid_size=grid_size)
        grid_z = torch.randn([labels.shape[0], G.z_dim], generator=torch.Generator().manual_seed(random_seed))
        grid_z = grid_z.to(device).split(batch_gpu)
        grid_c = torch.from_numpy(labels).to(device).split(batch_gpu)

    # Logs.
    stats_collector = training_stats.Collector(regex='.*')
    stats_metrics = dict()
    stats_jsonl = None
    stats_tfevents = None
    if rank == 0:
        stats_jsonl = open(os.path.join(run_dir, 'stats.jsonl'), 'at')
        try:
            import torch.utils.tensorboard as tensorboard
            stats_tfevents = tensorboard.SummaryWriter(run_dir)
        except ImportError as err:
            log(f'Skipping tfevents export: {err}')

    # The loop.
    log(f'Training for {total_kimg} kimg...')
    log()
    cur_nimg = start_nimg
    cur_tick = 0
    batch_idx = 0
    if state is not None:
        training_state.restore(state, rank, num_gpus, device, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                               optimizers=optimizers, collectors={'ada': ada_stats, 'ticks': stats_collector},
                               random_seed=random_seed)
        cur_tick, batch_idx = loop_state['cur_tick'], loop_state['batch_idx']
        log(f'Resuming exactly from "{resume_state}" at kimg {cur_nimg / 1000:.3f}, tick {cur_tick}')
    tick_start_nimg = cur_nimg
    tick_start_time = time.time()
    maintenance_time = tick_start_time - start_time
    if progress_fn is not None:
        progress_fn(0, total_kimg)
    microbatches_per_rank = batch_size // (num_gpus * batch_gpu)
    fault = _fault_injection(rank)
    while True:
        if fault is not None and batch_idx == fault:
            raise RuntimeError(f'injected failure on rank {rank} at batch {batch_idx} (EG3D_FAULT_INJECT)')

        # Fetch data.
        with profiled('data_fetch'):
            phase_real_img, phase_real_c = next(training_set_iterator)
            phase_real_img = (phase_real_img.to(device).to(torch.float32) / 127.5 - 1).split(batch_gpu)
            phase_real_c = phase_real_c.to(device).split(batch_gpu)

        # Execute the phases, each micro-batch with its own random streams.
        for phase_idx, phase in enumerate(phases):
            if batch_idx % phase.interval != 0:
                continue
            with profiled(phase.name):
                phase.opt.zero_grad(set_to_none=True)
                phase.module.requires_grad_(True)
                for k, (real_img, real_c) in enumerate(zip(phase_real_img, phase_real_c)):
                    seed = microbatch_seed(random_seed, batch_idx, phase_idx, rank * microbatches_per_rank + k)
                    gen = torch.Generator().manual_seed(seed)
                    gen_z = torch.randn([real_img.shape[0], G.z_dim], generator=gen).to(device)
                    label_idx = torch.randint(len(training_set), [real_img.shape[0]], generator=gen).tolist()
                    gen_c = torch.from_numpy(np.stack([training_set.get_label(i) for i in label_idx])).to(device)
                    with torch.random.fork_rng(devices=[device] if device.type == 'cuda' else []), \
                            accel.autocast(device, precision):
                        torch.manual_seed(seed)
                        loss.accumulate_gradients(phase=phase.name, real_img=real_img, real_c=real_c, gen_z=gen_z,
                                                  gen_c=gen_c, gain=phase.interval * scaler.scale, cur_nimg=cur_nimg)
                phase.module.requires_grad_(False)
                with profiled(phase.name + '_opt'):
                    if scaler.unscale(phase.module, _distributed(num_gpus)):  # fp16: skip non-finite steps.
                        average_gradients(phase.module, num_gpus, num_gpus * microbatches_per_rank)
                        phase.opt.step()

        # EMA.
        with profiled('Gema'):
            update_ema(G_ema, G, ema_beta(batch_size, ema_kimg, ema_rampup, cur_nimg))

        cur_nimg += batch_size
        batch_idx += 1

        # ADA: move p toward the target sign of D's real outputs.
        if ada_stats is not None and batch_idx % ada_interval == 0:
            from training.augment import ada_update
            ada_stats.update()
            ada_update(augment_pipe.p, ada_stats['Loss/signs/real'], ada_target, batch_size, ada_interval, ada_kimg)

        # Tick? A stop request (SIGTERM / SIGUSR1 on any rank) ends the run here, with a training state.
        preempted = distributed.agree(distributed.stop_requested(), num_gpus, device)
        done = cur_nimg >= total_kimg * 1000 or preempted
        if not done and cur_tick != 0 and cur_nimg < tick_start_nimg + kimg_per_tick * 1000:
            continue

        # Tick line.
        tick_end_time = time.time()
        cpu_mem, cpu_peak = _memory_gb()
        sec_per_tick = tick_end_time - tick_start_time
        tick_kimg = (cur_nimg - tick_start_nimg) / 1e3
        fields = [
            f"tick {training_stats.report0('Progress/tick', cur_tick):<5d}",
            f"kimg {training_stats.report0('Progress/kimg', cur_nimg / 1e3):<8.1f}",
            f"time {dnnlib.format_time(training_stats.report0('Timing/total_sec', tick_end_time - start_time)):<12s}",
            f"sec/tick {training_stats.report0('Timing/sec_per_tick', sec_per_tick):<7.1f}",
            f"sec/kimg {training_stats.report0('Timing/sec_per_kimg', sec_per_tick / max(tick_kimg, 1e-8)):<7.2f}",
            f"img/s {training_stats.report0('Timing/images_per_sec', tick_kimg * 1e3 / max(sec_per_tick, 1e-8)):<7.2f}",
            f"maintenance {training_stats.report0('Timing/maintenance_sec', maintenance_time):<6.1f}",
            f"cpumem {training_stats.report0('Resources/cpu_mem_gb', cpu_mem):<6.2f}",
        ]
        if device.type == 'cuda':
            fields += [
                f"gpumem {training_stats.report0('Resources/peak_gpu_mem_gb', torch.cuda.max_memory_allocated(device) / 2**30):<6.2f}",
                f"reserved {training_stats.report0('Resources/peak_gpu_mem_reserved_gb', torch.cuda.max_memory_reserved(device) / 2**30):<6.2f}",
            ]
            torch.cuda.reset_peak_memory_stats()
        fields += [f"augment {training_stats.report0('Progress/augment', float(augment_pipe.p) if augment_pipe is not None else 0):.3f}"]
        training_stats.report0('Resources/cpu_mem_peak_gb', cpu_peak)
        training_stats.report0('Timing/total_hours', (tick_end_time - start_time) / (60 * 60))
        training_stats.report0('Timing/total_days', (tick_end_time - start_time) / (24 * 60 * 60))
        log(' '.join(fields), flush=True)

        if not done and abort_fn is not None and abort_fn():
            done = True
            log()
            log('Aborting...')
        if preempted:
            log('Stop requested: writing a training state and exiting')

        # Collect statistics (before the snapshot, so a training state holds nothing uncollected).
        stats_collector.update()
        stats_dict = stats_collector.as_dict()

        # Image snapshot.
        if rank == 0 and image_snapshot_ticks is not None and (done or cur_tick % image_snapshot_ticks == 0):
            with torch.no_grad(), profiled('image_snapshot'), rng_neutral(device, seed=random_seed):
                out = [G_ema(z=z, c=c, noise_mode='const') for z, c in zip(grid_z, grid_c)]
            kimg = cur_nimg // 1000
            images = torch.cat([o['image'] for o in out])
            image_grid.save_image_grid(images, os.path.join(run_dir, f'fakes{kimg:06d}.png'), [-1, 1], grid_size)
            raw = torch.cat([o['image_raw'] for o in out])
            image_grid.save_image_grid(raw, os.path.join(run_dir, f'fakes{kimg:06d}_raw.png'), [-1, 1], grid_size)
            depth = image_grid.depth_to_image(torch.cat([o['image_depth'] for o in out]))
            image_grid.save_image_grid(depth, os.path.join(run_dir, f'fakes{kimg:06d}_depth.png'), [-1, 1], grid_size)

        # Network snapshot.
        snapshot_pkl = None
        if network_snapshot_ticks is not None and (done or cur_tick % network_snapshot_ticks == 0):
            with profiled('network_snapshot'):
                if _distributed(num_gpus):
                    for module in [G, D, G_ema, augment_pipe]:
                        if module is not None:
                            misc.check_ddp_consistency(module)
                snapshot_pkl = os.path.join(run_dir, f'network-snapshot-{cur_nimg // 1000:06d}.pkl')
                rank_states = training_state.gather_rank_states(training_state.capture_rank_state(device), num_gpus)
                if rank == 0:
                    import legacy
                    legacy.save_network_pkl(snapshot_pkl, G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                                            training_set_kwargs=dict(training_set_kwargs))
                    loop = dict(cur_nimg=cur_nimg, cur_tick=cur_tick + 1, batch_idx=batch_idx, num_gpus=num_gpus,
                                batch_size=batch_size, random_seed=random_seed)
                    training_state.save(os.path.join(run_dir, training_state.state_file_name(cur_nimg // 1000)),
                                        G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe,
                                        training_set_kwargs=dict(training_set_kwargs), optimizers=optimizers,
                                        loop=loop, rank_states=rank_states, options=training_options,
                                        collectors={'ada': ada_stats, 'ticks': stats_collector})

        # Metrics.
        if snapshot_pkl is not None and metrics:
            from metrics import metric_main
            if rank == 0:
                log('Evaluating metrics...')
            for metric in metrics:
                with rng_neutral(device):
                    result_dict = metric_main.calc_metric(metric=metric, G=G_ema, dataset_kwargs=training_set_kwargs,
                                                          num_gpus=num_gpus, rank=rank, device=device)
                if rank == 0:
                    metric_main.report_metric(result_dict, run_dir=run_dir, snapshot_pkl=snapshot_pkl)
                stats_metrics.update(result_dict.results)

        # Update logs.
        timestamp = time.time()
        if stats_jsonl is not None:
            fields = dict(stats_dict, timestamp=timestamp)
            stats_jsonl.write(json.dumps(fields) + '\n')
            stats_jsonl.flush()
        if stats_tfevents is not None:
            global_step = int(cur_nimg / 1e3)
            walltime = timestamp - start_time
            for name, value in stats_dict.items():
                stats_tfevents.add_scalar(name, value.mean, global_step=global_step, walltime=walltime)
            for name, value in stats_metrics.items():
                stats_tfevents.add_scalar(f'Metrics/{name}', value, global_step=global_step, walltime=walltime)
            stats_tfevents.flush()
        if progress_fn is not None:
            progress_fn(cur_nimg // 1000, total_kimg)

        # Update state.
        cur_tick += 1
        tick_start_nimg = cur_nimg
        tick_start_time = time.time()
        maintenance_time = tick_start_time - tick_end_time
        if done:
            break

    if stats_jsonl is not None:
        stats_jsonl.close()
    if stats_tfevents is not None:
        stats_tfevents.close()
    log()
    log('Exiting...')
    return dnnlib.EasyDict(G=G, D=D, G_ema=G_ema, augment_pipe=augment_pipe, cur_nimg=cur_nimg, cur_tick=cur_tick,
                           preempted=preempted)
