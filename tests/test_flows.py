"""One parametrized suite over every transform of ``boltzgen.flows`` (float64 unless noted)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch.func import functional_call

from boltzgen.errors import InputError, ShapeError
from boltzgen.flows import (
    CouplingLayer,
    ElementwiseTransform,
    Flow,
    InvertedBijection,
    Permutation,
    RQSpline,
    SmoothMixture,
    TruncatedNormalBase,
    build_flow,
    make_bijections,
    roots,
)

D = 4
CIRC = torch.tensor([True, False, True, False])
GROUPS = torch.tensor([0, 1, 0, 2])  # generation order for masks="hierarchical"


@dataclass
class Case:
    name: str
    make: Callable[[], torch.nn.Module]  # fresh, randomised, float64 module
    circular: torch.Tensor  # (d,) mask of the input space
    smooth: bool  # C-infinity (check 3 derivatives across the seam) vs C1
    elementwise: bool = False
    out_circular: torch.Tensor | None = None  # mask of the output space (default: circular)

    @property
    def circ_out(self) -> torch.Tensor:
        return self.circular if self.out_circular is None else self.out_circular


def _randomise(module: torch.nn.Module, scale: float) -> torch.nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module.double()


def _elementwise(
    bij: Callable[[bool], object], circ: torch.Tensor
) -> Callable[[], ElementwiseTransform]:
    def make():
        return _randomise(
            ElementwiseTransform(
                circ, None if bool(circ.all()) else bij(False), bij(True) if circ.any() else None
            ),
            0.7,
        )

    return make


def _coupling(kind: str, cheap: str = "density") -> Callable[[], CouplingLayer]:
    def make():
        ib, cb = make_bijections(kind, n_components=3, n_bins=4, cheap=cheap)
        layer = CouplingLayer([False, True, True, False], CIRC, ib, cb, hidden=(6,))
        return _randomise(layer, 0.3)

    return make


def _flow(kind: str, masks: str = "alternate") -> Callable[[], Flow]:
    def make():
        f = build_flow(
            D,
            CIRC,
            kind=kind,
            n_layers=3 if masks != "hierarchical" else 5,
            hidden=(6,),
            n_components=3,
            n_bins=4,
            masks=masks,
            groups=GROUPS if masks == "hierarchical" else None,
        )
        return _randomise(f, 0.2)

    return make


def _perm() -> Permutation:
    return Permutation([2, 0, 3, 1]).double()


ALL_I = torch.zeros(3, dtype=torch.bool)
ALL_C = torch.ones(3, dtype=torch.bool)
CASES = [
    Case(
        "smooth-interval",
        _elementwise(lambda c: SmoothMixture(1, circular=c), ALL_I),
        ALL_I,
        True,
        True,
    ),
    Case(
        "smooth-circular",
        _elementwise(lambda c: SmoothMixture(1, circular=c), ALL_C),
        ALL_C,
        True,
        True,
    ),
    Case(
        "smooth-mix-interval",
        _elementwise(lambda c: SmoothMixture(4, circular=c), ALL_I),
        ALL_I,
        True,
        True,
    ),
    Case(
        "smooth-mix-circular",
        _elementwise(lambda c: SmoothMixture(4, circular=c), ALL_C),
        ALL_C,
        True,
        True,
    ),
    Case(
        "smooth-mix-inverted",
        _elementwise(lambda c: InvertedBijection(SmoothMixture(3, circular=c)), CIRC),
        CIRC,
        True,
        True,
    ),
    Case(
        "spline-interval",
        _elementwise(lambda c: RQSpline(5, circular=c), ALL_I),
        ALL_I,
        False,
        True,
    ),
    Case(
        "spline-circular",
        _elementwise(lambda c: RQSpline(5, circular=c), ALL_C),
        ALL_C,
        False,
        True,
    ),
    Case("coupling-smooth-density", _coupling("smooth", "density"), CIRC, True),
    Case("coupling-smooth-sample", _coupling("smooth", "sample"), CIRC, True),
    Case("coupling-spline", _coupling("spline"), CIRC, False),
    Case("permutation", _perm, CIRC, True, out_circular=CIRC[[2, 0, 3, 1]]),
    Case("flow-smooth", _flow("smooth"), CIRC, True),
    Case("flow-spline", _flow("spline"), CIRC, False),
    Case("flow-smooth-grouped", _flow("smooth", "grouped"), CIRC, True),
    Case("flow-spline-grouped", _flow("spline", "grouped"), CIRC, False),
    Case("flow-smooth-hierarchical", _flow("smooth", "hierarchical"), CIRC, True),
    Case("flow-spline-hierarchical", _flow("spline", "hierarchical"), CIRC, False),
]
IDS = [c.name for c in CASES]


def _points(case: Case, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, case.circular.numel(), generator=g, dtype=torch.float64)
    return torch.where(case.circular, x, 0.03 + 0.94 * x)


def _circ_diff(a: torch.Tensor, b: torch.Tensor, circ: torch.Tensor) -> torch.Tensor:
    d = a - b
    return torch.where(circ, torch.remainder(d + 0.5, 1.0) - 0.5, d)


def _made(case: Case, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return case.make()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_round_trip(case: Case) -> None:
    t = _made(case)
    x = _points(case, 64)
    y, ld = t(x)
    x2, ld2 = t.inverse(y)
    assert y.shape == x.shape and ld.shape == (64,)
    assert _circ_diff(x2, x, case.circular).abs().max() < 1e-9
    assert (ld + ld2).abs().max() < 1e-8
    # outputs stay in the domain
    assert bool(((y >= 0) & (y <= 1)).all())


@pytest.mark.parametrize("case", CASES, ids=IDS)
@pytest.mark.parametrize("direction", ["forward", "inverse"])
def test_logdet_matches_autograd_jacobian(case: Case, direction: str) -> None:
    t = _made(case)
    x = _points(case, 5)
    fn = t if direction == "forward" else t.inverse
    _, ld = fn(x)
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: fn(v[None])[0][0], x[i])
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign != 0  # permutations may be orientation-reversing
        assert abs(logabs.item() - ld[i].item()) < 1e-8


def _checked_params(t: torch.nn.Module, case: Case) -> list[str]:
    """Parameters to check: all of an elementwise transform; biases of conditioners (cheap)."""
    names = [n for n, _ in t.named_parameters()]
    return names if case.elementwise else [n for n in names if n.endswith("bias")]


def _call_inverse(t: torch.nn.Module, params: dict, y: torch.Tensor):
    class _Inv(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, v):
            return self.inner.inverse(v)

    return functional_call(_Inv(t), {f"inner.{k}": v for k, v in params.items()}, (y,))


def _inverse_fn(t: torch.nn.Module, names: list[str]):
    fixed = {n: p.detach() for n, p in t.named_parameters()}

    def fn(v, *ps):
        full = dict(fixed)
        full.update(dict(zip(names, ps, strict=True)))
        return _call_inverse(t, full, v)

    params = [fixed[n].clone().requires_grad_(True) for n in names]
    return fn, params


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_gradcheck_inverse(case: Case) -> None:
    """Gradients of the inverse (values and log-det) w.r.t. the input and parameters."""
    t = _made(case)
    y = t(_points(case, 3))[0].detach().requires_grad_(True)
    fn, params = _inverse_fn(t, _checked_params(t, case))
    assert torch.autograd.gradcheck(fn, (y, *params), atol=1e-6, rtol=1e-4)


SMOOTH = [c for c in CASES if c.smooth]


@pytest.mark.parametrize("case", SMOOTH, ids=[c.name for c in SMOOTH])
def test_gradgradcheck_inverse(case: Case) -> None:
    """Second derivatives through the root-finding inverse are exact (not just finite)."""
    t = _made(case)
    y = t(_points(case, 2))[0].detach().requires_grad_(True)
    fn, params = _inverse_fn(t, _checked_params(t, case)[-1:])
    assert torch.autograd.gradgradcheck(fn, (y, *params), atol=1e-5, rtol=1e-3)


def _derivs(t: torch.nn.Module, x: torch.Tensor, order: int) -> list[torch.Tensor]:
    """Elementwise transforms: [y, y', y'', ...] per coordinate at points x (n, d)."""
    x = x.clone().requires_grad_(True)
    y, _ = t(x)
    out, cur = [y.detach()], y
    for _ in range(order):
        (cur,) = torch.autograd.grad(cur.sum(), x, create_graph=True)
        out.append(cur.detach())
    return out


@pytest.mark.parametrize(
    "case", [c for c in CASES if c.circular.any()], ids=[c.name for c in CASES if c.circular.any()]
)
def test_periodic_and_smooth_across_seam(case: Case) -> None:
    t = _made(case)
    eps = 1e-6
    circ = case.circular
    if case.elementwise:
        order = 3 if case.smooth else 1
        # the input seam (0 = 1) and the seam of the rotated inner map (x = s)
        seams = [torch.zeros(circ.numel(), dtype=torch.float64)]
        raw = getattr(t, "raw", None)
        if raw is not None:
            seams.append(torch.remainder(raw[:, -1].detach(), 1.0))  # inner map seam at x = s
        for seam in seams:
            lo = _derivs(t, torch.remainder(seam - eps, 1.0)[None], order)
            hi = _derivs(t, torch.remainder(seam + eps, 1.0)[None], order)
            assert _circ_diff(lo[0], hi[0], circ)[0, circ].abs().max() < 1e-4
            for k in range(1, order + 1):
                scale = 1.0 + lo[k].abs().max()
                gap = (lo[k] - hi[k])[0, circ].abs().max() / scale
                assert gap < 1e-3, f"derivative {k} jumps by {gap:.3g} across the seam"
        return
    # multivariate: value and Jacobian continuous when a circular input crosses 0 = 1
    x = _points(case, 3)
    for j in torch.nonzero(circ).flatten().tolist():
        xl, xh = x.clone(), x.clone()
        xl[:, j], xh[:, j] = 1.0 - eps, eps
        yl, yh = t(xl)[0], t(xh)[0]
        assert _circ_diff(yl, yh, case.circ_out).abs().max() < 1e-4
        for i in range(x.shape[0]):
            jl = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], xl[i])
            jh = torch.autograd.functional.jacobian(lambda v: t(v[None])[0][0], xh[i])
            assert (jl - jh).abs().max() / (1 + jl.abs().max()) < 1e-3


def test_seam_check_detects_interval_maps() -> None:
    """The seam test has power: an interval spline/smooth map is not periodic in f'."""
    torch.manual_seed(0)
    for bij in (RQSpline(5), SmoothMixture(3)):
        t = _randomise(ElementwiseTransform(ALL_I, bij, None), 0.7)
        lo = _derivs(t, torch.full((1, 3), 1 - 1e-6, dtype=torch.float64), 1)
        hi = _derivs(t, torch.full((1, 3), 1e-6, dtype=torch.float64), 1)
        assert (lo[1] - hi[1]).abs().max() > 1e-2


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_second_derivatives_finite(case: Case) -> None:
    """Double backward of a log-density through the inverse w.r.t. input and parameters."""
    t = _made(case)
    params = list(t.parameters())
    y = _points(case, 8).requires_grad_(True)
    u, ld = t.inverse(y)
    lp = -((u - 0.5) ** 2).sum(-1) + ld
    (g,) = torch.autograd.grad(lp.sum(), y, create_graph=True)
    loss = (g**2).sum()
    grads = torch.autograd.grad(loss, [y, *params], allow_unused=True)
    assert torch.isfinite(g).all()
    for gr in grads:
        assert gr is None or torch.isfinite(gr).all()
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads[1:]) or not params


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_state_dict_round_trip(case: Case) -> None:
    t1 = _made(case, seed=0)
    t2 = _made(case, seed=1)
    x = _points(case, 16)
    buf = io.BytesIO()
    torch.save(t1.state_dict(), buf)
    buf.seek(0)
    t2.load_state_dict(torch.load(buf))
    y1, l1 = t1(x)
    y2, l2 = t2(x)
    assert torch.equal(y1, y2) and torch.equal(l1, l2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "kind,cheap", [("smooth", "density"), ("smooth", "sample"), ("spline", "density")]
)
def test_fused_dispatch_matches_separate_bijections(kind: str, cheap: str, dtype) -> None:
    """The speed-up that runs the interval and circular columns of a layer as one masked
    evaluation leaves values, log-dets, the inverse and the parameter gradients unchanged."""
    from boltzgen.flows.base import BijectionDispatch

    circ = torch.tensor([True, False, False, True, False, True, True])
    torch.manual_seed(0)
    fused = BijectionDispatch(circ, *make_bijections(kind, 3, 4, cheap))
    apart = BijectionDispatch(circ, *make_bijections(kind, 3, 4, cheap), fuse=False)
    assert fused.fused is not None and apart.fused is None
    g = torch.Generator().manual_seed(3)
    x = torch.where(circ, 1.0, 0.94) * torch.rand(64, 7, generator=g, dtype=dtype) + 0.03 * ~circ
    raw = (1.5 * torch.randn(64, 7, fused.n_params, generator=g, dtype=dtype)).requires_grad_()
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for inverse in (False, True):
        (y1, l1), (y2, l2) = (d(x, raw, inverse=inverse) for d in (fused, apart))
        assert (y1 - y2).abs().max() <= tol and (l1 - l2).abs().max() <= 10 * tol
        (g1,) = torch.autograd.grad((l1 + y1).sum(), raw)
        (g2,) = torch.autograd.grad((l2 + y2).sum(), raw)
        assert (g1 - g2).abs().max() <= 10 * tol * max(1.0, g2.abs().max().item())


@pytest.mark.parametrize("circular", [False, True])
def test_smooth_inverse_float32_hard_parameters(circular: bool) -> None:
    """Steep, far-from-identity maps in float32: the solver converges well before its bound,
    round trips to float32 accuracy and gives finite log-dets."""
    torch.manual_seed(0)
    b = SmoothMixture(8, circular=circular)
    raw = 5.0 * torch.randn(4000, b.n_params)
    x = torch.rand(4000)
    y, ld = b(x, raw)
    prm = b._prepare(raw)
    target = torch.remainder(y - prm[-1], 1.0) if circular else y
    _, n_iter = roots.solve_monotone(lambda u: b._core(u, prm), target)
    assert n_iter < 60
    x2, ld2 = b.inverse(y, raw)
    y2, _ = b(x2, raw)
    assert _circ_diff(y2, y, torch.tensor(circular)).abs().max() < 2e-5
    assert torch.isfinite(ld).all() and torch.isfinite(ld2).all()
    assert (ld + ld2).abs().max() < 1e-3


# ---------------------------------------------------------------- flows: API, forces, training


@pytest.mark.parametrize("kind", ["smooth", "spline"])
@pytest.mark.parametrize("cheap", ["density", "sample"])
def test_flow_sample_log_prob_force(kind: str, cheap: str) -> None:
    if kind == "spline" and cheap == "sample":
        pytest.skip("cheap only applies to smooth flows")
    torch.manual_seed(0)
    f = _randomise(build_flow(D, CIRC, kind=kind, n_layers=2, hidden=(8,), cheap=cheap), 0.1)
    y, lq = f.sample(32)
    assert y.shape == (32, D) and lq.shape == (32,)
    assert (f.log_prob(y) - lq).abs().max() < 1e-8
    lp, force = f.force(y)
    assert force.shape == (32, D)
    # force matching: the parameter gradient of a force loss exists and is finite
    loss = ((force - 1.0) ** 2).mean()
    grads = torch.autograd.grad(loss, list(f.parameters()), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0
    # the force agrees with finite differences of log q (along a random direction)
    v = torch.randn(32, D, dtype=torch.float64)
    h = 1e-6
    fd = (f.log_prob(y + h * v) - f.log_prob(y - h * v)) / (2 * h)
    assert (fd - (force * v).sum(-1)).abs().max() < 1e-4


def test_flow_rejects_bad_input() -> None:
    f = build_flow(3, [True, False, False], kind="spline", n_layers=2, hidden=(4,))
    with pytest.raises(ShapeError):
        f.log_prob(torch.rand(5, 4))
    with pytest.raises(InputError, match="leave"):
        f.log_prob(torch.tensor([[0.5, 1.5, 0.5]]))
    with pytest.raises(InputError, match="NaN"):
        f.log_prob(torch.tensor([[float("nan"), 0.5, 0.5]]))
    with pytest.raises(InputError):
        build_flow(3, [True], kind="spline")
    with pytest.raises(InputError):
        build_flow(3, None, kind="nope")
    # circular dims wrap
    y = torch.tensor([[0.25, 0.5, 0.5]])
    assert torch.allclose(f.log_prob(y), f.log_prob(y + torch.tensor([[1.0, 0.0, 0.0]])))


def test_truncated_normal_base() -> None:
    """Normalised on [0, 1] (box dims), uniform on circular dims; samples match the density."""
    base = TruncatedNormalBase(torch.tensor([False, True]), scale=0.2).double()
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    pts = torch.stack([grid, torch.full_like(grid, 0.3)], 1)
    dens = base.log_prob(pts).exp()
    assert abs(torch.trapezoid(dens, grid).item() - 1.0) < 1e-6
    torch.manual_seed(0)
    u = base.sample(20000)
    assert u.dtype == torch.float64 and bool(((u >= 0) & (u <= 1)).all())
    mean_model = torch.trapezoid(dens * grid, grid).item()
    assert abs(u[:, 0].mean().item() - mean_model) < 0.01
    assert abs(u[:, 1].std().item() - (1 / 12) ** 0.5) < 0.01  # uniform circular dim
    flow = build_flow(2, [False, True], kind="spline", n_layers=2, hidden=(4,), base="truncnormal")
    y, lq = flow.sample(16)
    assert (flow.log_prob(y) - lq).abs().max() < 1e-4


def _torus_data(n: int, g: torch.Generator) -> torch.Tensor:
    """Two wrapped-normal modes on the 2-torus, one straddling the seam."""
    centres = torch.tensor([[0.02, 0.3], [0.6, 0.75]])
    idx = torch.randint(0, 2, (n,), generator=g)
    return torch.remainder(centres[idx] + 0.06 * torch.randn(n, 2, generator=g), 1.0)


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_training_fits_torus_density(kind: str) -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    flow = build_flow(2, [True, True], kind=kind, n_layers=4, hidden=(32, 32))
    opt = torch.optim.Adam(flow.parameters(), lr=5e-3)
    test = _torus_data(2000, g)
    with torch.no_grad():
        nll0 = -flow.log_prob(test).mean().item()
    for _ in range(250):
        loss = -flow.log_prob(_torus_data(256, g)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        nll = -flow.log_prob(test).mean().item()
    # entropy of the data is about log(2) + 2 * 0.5 * log(2 pi e 0.06^2) = -2.1
    assert nll < min(nll0 - 2.0, -1.2), (nll0, nll)


def test_reverse_kl_training_through_root_finding() -> None:
    """cheap='density' smooth flow: sampling root-finds, and gradients flow through it."""
    torch.manual_seed(0)
    flow = build_flow(2, [True, False], kind="smooth", n_layers=2, hidden=(16,), n_components=4)

    def log_p(y: torch.Tensor) -> torch.Tensor:
        return 4.0 * torch.cos(2 * math.pi * (y[:, 0] - 0.1)) - 20.0 * (y[:, 1] - 0.4) ** 2

    opt = torch.optim.Adam(flow.parameters(), lr=1e-2)
    losses = []
    for _ in range(60):
        y, lq = flow.sample(256)
        loss = (lq - log_p(y)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-10:]) / 10 < sum(losses[:5]) / 5 - 1.0


def test_direction_convention(monkeypatch: pytest.MonkeyPatch) -> None:
    """forward = data -> base everywhere: with cheap="density" the density direction
    (Flow.forward, log_prob) never root-finds and sampling (Flow.inverse) does."""
    import boltzgen.flows.smooth as smooth

    calls = []
    real = smooth.implicit_inverse

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(smooth, "implicit_inverse", counting)
    torch.manual_seed(0)
    f = build_flow(3, [True, False, False], kind="smooth", n_layers=2, hidden=(4,))
    y = torch.rand(5, 3, dtype=torch.float32)
    u, ld = f.forward(y)
    f.log_prob(y)
    assert not calls
    y2, ld2 = f.inverse(u)
    assert calls
    assert torch.allclose(y2, y, atol=1e-4) and torch.allclose(ld2, -ld, atol=1e-4)


@pytest.mark.parametrize("schedule", ["alternate", "grouped"])
@pytest.mark.parametrize(
    "circular",
    [
        [True, False, True, False, False],
        [False] * 5,
        [True] * 5,
        [False, False, False, False, True],
    ],
)
def test_coupling_masks_transform_every_dim_and_condition_on_the_rest(schedule, circular):
    from boltzgen.flows import coupling_masks

    masks = coupling_masks(5, 8, circular, schedule)
    assert len(masks) == 8
    assert all(bool(m.any()) and not bool(m.all()) for m in masks)  # each layer conditions
    cycle = masks[:4]
    assert bool(torch.stack(cycle).any(0).all())  # every dim transformed within four layers
    if schedule == "grouped":
        circ = torch.tensor(circular)
        for m in masks:  # a layer transforms circular dims or interval dims, never both
            assert not (bool((m & circ).any()) and bool((m & ~circ).any()))


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_hierarchical_flow_generates_each_group_from_earlier_groups_only(kind):
    """Base -> data: group g's output depends on the base values of groups <= g only, so the
    density factorises q(x_0) q(x_1 | x_0) ... (the Jacobian is block lower-triangular)."""
    groups = torch.tensor([2, 0, 1, 0, 1, 2, 0])
    circ = groups == 0
    flow = _randomise(
        build_flow(
            7, circ, kind=kind, n_layers=8, hidden=(8,), masks="hierarchical", groups=groups
        ),
        0.3,
    )
    u = torch.rand(1, 7, dtype=torch.float64) * 0.8 + 0.1
    jac = torch.autograd.functional.jacobian(lambda v: flow.transform.inverse(v)[0], u)[0, :, 0]
    later = groups[:, None] < groups[None, :]  # output row earlier than input column
    assert float(jac[later].abs().max()) == 0.0
    assert float(jac[groups[:, None] > groups[None, :]].abs().max()) > 1e-6  # really coupled
    with pytest.raises(InputError, match="groups"):
        build_flow(7, circ, masks="hierarchical")
    with pytest.raises(InputError, match="at least 3 layers"):
        build_flow(7, circ, n_layers=2, masks="hierarchical", groups=groups)


def test_unknown_mask_schedule_is_an_input_error():
    from boltzgen.flows import coupling_masks

    with pytest.raises(InputError, match="mask schedule"):
        coupling_masks(4, 2, None, "random")
