"""Benchmark: smooth-flow inversion cost and flow training throughput (side by side with zuko).

(a) Smooth-mixture coupling layer (d = 60, 20 circular dims, K = 8, 64x64 conditioner,
    batch 1024): time of the root-finding direction / time of the explicit direction, without
    and with a backward pass (the inverse then includes the implicit-gradient Newton steps).
    Anchor (not run here): a peer's grid-search inversion costs about 300x its forward.
(b) Training throughput (samples/s of a full NLL step: log_prob, backward, Adam) on a 60-D
    input, 4 coupling layers, 2x256 ReLU conditioners, 8 bins, batch 1024: our RQ-spline flow
    next to ``zuko.flows.NSF(60, bins=8, transforms=4, hidden_features=(256, 256), passes=2)``
    (zuko's coupling variant; box [-5, 5] domain, data N(0, 1)); our smooth-mixture flow
    (K = 8) with the same layout beside it.

(c) Force-matching step (``Flow.force`` with ``create_graph``, squared error, backward, Adam),
    d = 60 (20 circular), 4 layers, 64x64 SiLU conditioners, batch 256.

One torch thread, float32, median over interleaved repeats. Prints one JSON object per line.
Usage: ``python benchmarks/flows.py [--repeats 15]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch

from boltzgen.flows import CouplingLayer, build_flow, make_bijections, roots


def _ms(fn, repeats: int) -> list[float]:
    fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _emit(**kw) -> None:
    kw.setdefault("date", "2026-11-23")
    kw.setdefault("threads", torch.get_num_threads())
    kw.setdefault("torch", torch.__version__)
    kw.setdefault("cpu", platform.processor() or platform.machine())
    print(json.dumps(kw), flush=True)


def bench_inversion(repeats: int, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    d, batch = 60, 1024
    circ = torch.zeros(d, dtype=torch.bool)
    circ[::3] = True
    ib, cb = make_bijections("smooth", n_components=8, cheap="density")  # forward explicit
    layer = CouplingLayer(torch.arange(d) % 2 == 0, circ, ib, cb, hidden=(64, 64)).to(dtype)
    with torch.no_grad():  # a non-trivial map (zero-initialised heads would be too easy)
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = torch.rand(batch, d, dtype=dtype)
    with torch.no_grad():
        y, _ = layer(x)
        x_back, _ = layer.inverse(y)
    err = float((x_back - x).abs().max())
    iters = []
    orig = roots.solve_monotone

    def counting(*a, **k):
        res = orig(*a, **k)
        iters.append(res[1])
        return res

    roots.solve_monotone = counting
    try:
        fwd, inv, fwd_b, inv_b = [], [], [], []
        xr = x.clone().requires_grad_(True)
        yr = y.clone().requires_grad_(True)

        def f_b():
            out, ld = layer(xr)
            (out.sum() + ld.sum()).backward()

        def i_b():
            out, ld = layer.inverse(yr)
            (out.sum() + ld.sum()).backward()

        for _ in range(repeats):
            with torch.no_grad():
                fwd += _ms(lambda: layer(x), 1)
                inv += _ms(lambda: layer.inverse(y), 1)
            fwd_b += _ms(f_b, 1)
            inv_b += _ms(i_b, 1)
    finally:
        roots.solve_monotone = orig
    med = statistics.median
    _emit(
        bench="smooth_coupling_inverse_vs_forward",
        dtype=str(dtype).replace("torch.", ""),
        dim=d,
        n_circular=int(circ.sum()),
        batch=batch,
        n_components=8,
        forward_ms=med(fwd),
        inverse_ms=med(inv),
        ratio=med(inv) / med(fwd),
        forward_backward_ms=med(fwd_b),
        inverse_backward_ms=med(inv_b),
        ratio_with_backward=med(inv_b) / med(fwd_b),
        solver_iterations_median=med(iters),
        solver_iterations_max=max(iters),
        round_trip_max_abs_err=err,
    )


def bench_training(repeats: int) -> None:
    import zuko

    torch.manual_seed(0)
    d, batch = 60, 1024
    box = torch.zeros(d, dtype=torch.bool)
    flows = {
        "boltzgen_spline": build_flow(
            d, box, "spline", n_layers=4, hidden=(256, 256), n_bins=8, activation="relu"
        ),
        "zuko_nsf": zuko.flows.NSF(d, bins=8, transforms=4, hidden_features=(256, 256), passes=2),
        "boltzgen_smooth_density_explicit": build_flow(
            d, box, "smooth", n_layers=4, hidden=(256, 256), n_components=8, activation="relu"
        ),
        "boltzgen_smooth_density_rootfind": build_flow(
            d,
            box,
            "smooth",
            n_layers=4,
            hidden=(256, 256),
            n_components=8,
            activation="relu",
            cheap="sample",
        ),
    }
    g = torch.Generator().manual_seed(1)
    data_box = 0.5 + 0.15 * torch.randn(batch, d, generator=g)
    data_box = data_box.clamp(0.01, 0.99)
    data_real = torch.randn(batch, d, generator=g)
    steps = {}
    for name, flow in flows.items():
        opt = torch.optim.Adam(flow.parameters(), lr=1e-4)
        if name.startswith("zuko"):

            def step(flow=flow, opt=opt):
                loss = -flow().log_prob(data_real).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        else:

            def step(flow=flow, opt=opt):
                loss = -flow.log_prob(data_box).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()

        step()
        steps[name] = step
    times = {n: [] for n in flows}
    for _ in range(repeats):  # interleaved so load from other processes hits all alike
        for name, step in steps.items():
            times[name] += _ms(step, 1)
    zuko_ms = statistics.median(times["zuko_nsf"])
    for name, flow in flows.items():
        ms = statistics.median(times[name])
        _emit(
            bench="training_throughput_nll",
            flow=name,
            dim=d,
            batch=batch,
            layers=4,
            hidden=[256, 256],
            parameters=sum(p.numel() for p in flow.parameters()),
            step_ms=ms,
            samples_per_s=batch / ms * 1e3,
            speed_vs_zuko=zuko_ms / ms,
        )


def bench_force_matching(repeats: int) -> None:
    """(c) Force-matching step: grad_y log q (create_graph) -> loss -> backward -> Adam."""
    torch.manual_seed(0)
    d, batch = 60, 256
    circ = torch.zeros(d, dtype=torch.bool)
    circ[::3] = True
    g = torch.Generator().manual_seed(2)
    y = (0.5 + 0.15 * torch.randn(batch, d, generator=g)).clamp(0.01, 0.99)
    target = torch.randn(batch, d, generator=g)
    steps = {}
    for kind, cheap in (("smooth", "density"), ("smooth", "sample"), ("spline", "density")):
        flow = build_flow(d, circ, kind, n_layers=4, hidden=(64, 64), cheap=cheap)
        opt = torch.optim.Adam(flow.parameters(), lr=1e-4)

        def step(flow=flow, opt=opt):
            _, force = flow.force(y)
            loss = ((force - target) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[f"{kind}_{cheap}"] = step
    times = {n: [] for n in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name] += _ms(step, 1)
    for name, ts in times.items():
        ms = statistics.median(ts)
        _emit(
            bench="force_matching_step",
            flow=name,
            dim=d,
            n_circular=int(circ.sum()),
            batch=batch,
            layers=4,
            hidden=[64, 64],
            step_ms=ms,
            samples_per_s=batch / ms * 1e3,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    bench_inversion(args.repeats, torch.float32)
    bench_inversion(max(3, args.repeats // 3), torch.float64)
    bench_training(args.repeats)
    bench_force_matching(max(3, args.repeats // 2))


if __name__ == "__main__":
    main()
