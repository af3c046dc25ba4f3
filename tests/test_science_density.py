"""The composed generator's log q(x) against an independent change of variables.

``BoltzmannGenerator.log_prob`` and ``sample_positions`` add analytic log-determinants of the
internal-coordinate and unit-box maps to the flow's density. Comparing the two paths with each
other cannot catch a term both of them drop, so here the density is rebuilt from scratch: the
latent point u is pushed to Cartesian positions through the *values* of the library's inverse
maps (plus a rigid-body motion built here, for rigid="remove"), and the volume change is the
log|det| of that map's Jacobian computed by autograd. No library log-determinant enters.

* rigid="keep": x = X(u) is a bijection R^3n -> R^3n, so log q(x) = log q_flow(u) - log|det dX/du|.
* rigid="remove": x = R(a, b, c) X_c(u) + t with ZYZ Euler angles; the Haar measure of SO(3) is
  sin b da db dc, so the density on positions modulo rigid motion (the library's convention, see
  ``boltzgen.coordinates.transform``) is log q(x) = log q_flow(u) - log|det dx/d(u, t, a, b, c)|
  + log sin b, whatever t and the angles are.

A quadrature over a 3-atom molecule then checks that exp(log q) integrates to 1 and that the
generator's draws follow the marginal its log q implies. The guard is proven by dropping the
internal-coordinate log-det (as a bug would) and watching the same checks fail.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

import boltzgen as bg
from boltzgen.coordinates import InternalCoordinates

DATA = Path(__file__).resolve().parent / "data"
FF = str(DATA / "torsion_chain.xml")
TINY = {"n_layers": 2, "hidden": (16,), "n_components": 3, "n_bins": 4, "dtype": "float64"}


@pytest.fixture(scope="module")
def adp():
    return bg.System.alanine_dipeptide()


@pytest.fixture(scope="module")
def three_atoms():
    return bg.System.from_pdb(DATA / "three_atoms.pdb", forcefield=(FF,), temperature=350.0)


def _make_generator(system, kind: str, rigid: str, seed: int = 0) -> bg.BoltzmannGenerator:
    """A small float64 generator whose flow is far from the identity (random weights), so
    q is not the base density and every Jacobian term matters."""
    gen = bg.BoltzmannGenerator.build(system, flow=kind, rigid=rigid, seed=seed, **TINY)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in gen.flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return gen


def _rotation(euler: torch.Tensor) -> torch.Tensor:
    """(B, 3) ZYZ Euler angles (a, b, c) -> (B, 3, 3) rotations Rz(a) Ry(b) Rz(c)."""

    def rz(t):
        c, s, o, z = torch.cos(t), torch.sin(t), torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([c, -s, z, s, c, z, z, z, o], -1).view(-1, 3, 3)

    def ry(t):
        c, s, o, z = torch.cos(t), torch.sin(t), torch.ones_like(t), torch.zeros_like(t)
        return torch.stack([c, z, s, z, o, z, -s, z, c], -1).view(-1, 3, 3)

    return rz(euler[:, 0]) @ ry(euler[:, 1]) @ rz(euler[:, 2])


def _batched_jacobian_logdet(f, inp: torch.Tensor) -> torch.Tensor:
    """log|det df/dinp| (B,) for a map (B, d) -> (B, d) acting on each row independently:
    one backward pass per output column over the whole batch."""
    inp = inp.detach().requires_grad_(True)
    out = f(inp)
    rows = [
        torch.autograd.grad(out[:, j].sum(), inp, retain_graph=True)[0] for j in range(out.shape[1])
    ]
    return torch.linalg.slogdet(torch.stack(rows, 1))[1]


def independent_log_q(gen: bg.BoltzmannGenerator, u: torch.Tensor, seed: int = 0):
    """(x (B, n, 3), log q(x) (B,)) for latent box points u (B, d), by autograd only."""
    n = gen.system.n_atoms
    lq_flow = gen.flow.log_prob(u).detach()
    if gen.coords.ic.rigid == "keep":

        def to_x(v):
            return gen.coords.inverse(v)[0].reshape(len(v), 3 * n)

        ld = _batched_jacobian_logdet(to_x, u)
        return to_x(u).detach().view(-1, n, 3), lq_flow - ld
    g = torch.Generator().manual_seed(seed)
    b = len(u)
    t = torch.randn(b, 3, generator=g, dtype=u.dtype)
    euler = torch.stack(
        [
            (2 * torch.rand(b, generator=g, dtype=u.dtype) - 1) * math.pi,
            0.3 + (math.pi - 0.6) * torch.rand(b, generator=g, dtype=u.dtype),  # off the poles
            (2 * torch.rand(b, generator=g, dtype=u.dtype) - 1) * math.pi,
        ],
        -1,
    )
    d = u.shape[1]

    def to_x(v):
        xc = gen.coords.inverse(v[:, :d])[0]  # canonical frame, (B, n, 3)
        x = xc @ _rotation(v[:, d + 3 :]).transpose(1, 2) + v[:, None, d : d + 3]
        return x.reshape(len(v), 3 * n)

    full = torch.cat([u, t, euler], 1)
    ld = _batched_jacobian_logdet(to_x, full)
    return to_x(full).detach().view(-1, n, 3), lq_flow - ld + torch.log(torch.sin(euler[:, 1]))


def _latents(gen: bg.BoltzmannGenerator, n: int, seed: int) -> torch.Tensor:
    """Latent points the flow actually produces (inside the support)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        x, _ = gen.sample_positions(n)
        return gen.coords(x)[0]


def density_mismatch(gen: bg.BoltzmannGenerator, n: int = 6, seed: int = 0) -> dict[str, float]:
    """Largest |log q - independent log q| of ``log_prob`` and of ``sample_positions``."""
    u = _latents(gen, n, seed)
    x, ref = independent_log_q(gen, u, seed)
    with torch.no_grad():
        lq = gen.log_prob(x)
        torch.manual_seed(seed)
        xs, lqs = gen.sample_positions(n)
    # the sampling path: the same draws again, rebuilt independently from their latents
    _, ref_s = independent_log_q(gen, gen.coords(xs)[0].detach(), seed)
    return {
        "log_prob": float((lq - ref).abs().max()),
        "sample_positions": float((lqs.detach() - ref_s).abs().max()),
    }


@pytest.mark.parametrize("rigid", ["remove", "keep"])
@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_log_q_is_the_change_of_variables_of_the_flow(adp, kind, rigid):
    gen = _make_generator(adp, kind, rigid)
    bad = density_mismatch(gen)
    # float64 throughout: agreement to rounding (log q itself is O(100))
    assert bad["log_prob"] < 1e-6 and bad["sample_positions"] < 1e-6, bad


def _drop_ic_logdet(monkeypatch) -> None:
    """The bug the checks must catch: internal coordinates without their Jacobian."""
    fwd, inv = InternalCoordinates.forward, InternalCoordinates.inverse

    def forward(self, x):
        z, ld = fwd(self, x)
        return z, torch.zeros_like(ld)

    def inverse(self, z):
        x, ld = inv(self, z)
        return x, torch.zeros_like(ld)

    monkeypatch.setattr(InternalCoordinates, "forward", forward)
    monkeypatch.setattr(InternalCoordinates, "inverse", inverse)


@pytest.mark.parametrize("rigid", ["remove", "keep"])
def test_the_density_check_fails_without_the_internal_coordinate_jacobian(adp, rigid, monkeypatch):
    gen = _make_generator(adp, "smooth", rigid)
    _drop_ic_logdet(monkeypatch)
    bad = density_mismatch(gen)
    # sum 2 log b + log sin theta over 21 bonds of ~0.1 nm: about 80 nats are missing
    assert bad["log_prob"] > 10 and bad["sample_positions"] > 10, bad


# ------------------------------------------------------------------ 3 atoms: quadrature
def _quadrature(gen: bg.BoltzmannGenerator, n: int = 63):
    """Midpoint rule over the latent box [0, 1]^3 of a 3-atom molecule: the integral of
    exp(log q(x)) over positions modulo rigid motion, and the mass it puts in each of 7 slabs
    of the first bond column (u_0 in [k/7, (k+1)/7), 9 grid planes each)."""
    g1 = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    u = torch.cartesian_prod(g1, g1, g1)
    d = gen.dim

    def to_x(v):  # (u, t, Euler angles) -> positions, as in independent_log_q
        xc = gen.coords.inverse(v[:, :d])[0]
        x = xc @ _rotation(v[:, d + 3 :]).transpose(1, 2) + v[:, None, d : d + 3]
        return x.reshape(len(v), -1)

    # the volume element of positions modulo rigid motion per unit of u, by autograd
    euler = torch.tensor([0.4, 1.1, -0.7], dtype=torch.float64).expand(len(u), 3)
    full = torch.cat([u, torch.zeros(len(u), 3, dtype=torch.float64), euler], 1)
    log_vol = _batched_jacobian_logdet(to_x, full) - math.log(math.sin(1.1))
    x = to_x(full).detach().view(len(u), -1, 3)
    with torch.no_grad():
        density = (torch.exp(gen.log_prob(x) + log_vol) / n**3).numpy()
    slab = np.minimum((u[:, 0].numpy() * 7).astype(int), 6)
    return float(density.sum()), np.bincount(slab, weights=density, minlength=7)


def _bond_histogram_agreement(gen: bg.BoltzmannGenerator, seed: int = 0, n: int = 20_000):
    """(max |z| over the slabs, total): where ``n`` draws of ``gen.sample`` fall along the
    first bond column against the masses ``gen.log_prob`` implies (binomial z-scores)."""
    total, mass = _quadrature(gen)
    torch.manual_seed(seed)
    s = gen.sample(n, energies=False)
    with torch.no_grad():  # the draws' own bond column (values of the forward map only)
        u0 = gen.coords(torch.as_tensor(s.positions, dtype=torch.float64))[0][:, 0].numpy()
    observed = np.bincount(np.minimum((u0 * 7).astype(int), 6), minlength=7) / n
    expected = mass / max(total, 1e-300)
    z = (observed - expected) / np.sqrt(expected * (1 - expected) / n)
    return float(np.abs(z).max()), total


@pytest.mark.parametrize("kind", ["smooth", "spline"])
def test_log_q_integrates_to_one_and_draws_follow_it(three_atoms, kind):
    gen = _make_generator(three_atoms, kind, "remove", seed=3)
    zmax, total = _bond_histogram_agreement(gen)
    # midpoint rule, 63^3 points: measured error 4e-5 (smooth) and 3e-5 (spline, whose
    # density is only C^1 and needed the fine grid: 1.7e-3 at 28^3)
    assert total == pytest.approx(1.0, abs=5e-3)
    # 7 slabs, 20000 draws: for a correct density P(max |z| > 4.5) ~ 7 * 7e-6; over seeds
    # 0-11 the largest seen was 3.8. A wrong density term shifts the slabs by percents (z > 10)
    assert zmax < 4.5, zmax


def test_quadrature_fails_without_the_internal_coordinate_jacobian(three_atoms, monkeypatch):
    gen = _make_generator(three_atoms, "smooth", "remove", seed=3)
    _drop_ic_logdet(monkeypatch)
    total, _ = _quadrature(gen, n=21)
    # without 1/(b1^2 b2^2 sin theta) the "density" integrates to ~0.153^4 sin(109.5) ~ 5e-4
    assert not 0.5 < total < 2.0, total


def test_a_flow_that_is_its_own_target_has_ess_one(adp):
    # target = q (reduced energy -log q): every log-weight -u - log q is 0 and the Kish ESS
    # is exactly 1, provided sample() reports the same log q that log_prob computes
    gen = _make_generator(adp, "smooth", "remove")
    gen.energy = lambda x: -gen.log_prob(x)
    s = gen.sample(256)
    assert np.abs(s.log_weights).max() < 1e-8
    assert s.ess == pytest.approx(1.0, abs=1e-12)
