"""Umbrella sampling + MBAR, metadynamics and a reweighted Boltzmann generator against a
closed-form free energy.

The molecule is a 4-carbon chain (``tests/data/torsion_chain.pdb`` / ``.xml``) with harmonic
bonds and angles and one torsion term V(phi) = 5 (1 + cos 2 phi) + 3.3 (1 + cos(phi - pi/2))
kJ/mol, and no other force. In internal coordinates the Boltzmann density factorises (the
Cartesian volume element b^2 sin(theta) of each placed atom holds no phi), so the marginal of
phi is exactly proportional to exp(-V(phi)/kT) and any dF between phi intervals is a 1-D
quadrature. The system is at 400 K, not the default 300 K, and the states are chosen so that
the answer at 300 K (a simulation or analysis that ignored the system's temperature) and the
answer with the sign flipped lie many error bars away.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.constants
import scipy.integrate

import boltzgen as bg
from boltzgen.enhanced import umbrella_sampling
from boltzgen.metadynamics import metadynamics

DATA = Path(__file__).resolve().parent / "data"
T = 400.0
TORSION = (0, 1, 2, 3)
# the two wells (upper at +pi/2, lower at -pi/2), and the barrier top against the lower well
WELLS = ((0.0, math.pi), (-math.pi, 0.0))
BARRIER = ((-0.5, 0.5), (-math.pi / 2 - 0.5, -math.pi / 2 + 0.5))


def torsion_potential(phi: np.ndarray) -> np.ndarray:
    """V(phi) in kJ/mol, as written in torsion_chain.xml (OpenMM: k (1 + cos(n phi - phase)))."""
    return 5.0 * (1 + np.cos(2 * phi)) + 3.3 * (1 + np.cos(phi - math.pi / 2))


def exact_df(state_a, state_b, temperature: float = T) -> float:
    """F(A) - F(B) in kT = -log(int_A exp(-V/kT) / int_B exp(-V/kT)), kT = R T (scipy)."""
    kt = scipy.constants.R / 1000.0 * temperature

    def z(lo, hi):
        return scipy.integrate.quad(lambda p: math.exp(-torsion_potential(p) / kt), lo, hi)[0]

    return -math.log(z(*state_a) / z(*state_b))


def exact_mean_energy(temperature: float = T, center: float | None = None, k: float = 0.0):
    """<U> in kJ/mol of the chain at ``temperature``, optionally under the umbrella bias
    0.5 k d^2 around ``center`` (U excludes the bias). The density factorises into 3 bonds
    (volume element b^2), 2 angles (sin theta) and phi, so <U> is a sum of 1-D quadratures:
    about kT/2 per bond and per angle (within 1 %), plus <V(phi)>."""
    kt = scipy.constants.R / 1000.0 * temperature
    quad = scipy.integrate.quad

    def mean(energy, jacobian, lo, hi):
        w = lambda q: jacobian(q) * math.exp(-energy(q) / kt)  # noqa: E731
        return (
            quad(lambda q: energy(q) * w(q), lo, hi, limit=200)[0] / quad(w, lo, hi, limit=200)[0]
        )

    bond = mean(lambda r: 0.5e5 * (r - 0.153) ** 2, lambda r: r * r, 0.1, 0.2)
    angle = mean(lambda q: 150.0 * (q - 1.9106332) ** 2, math.sin, 0.0, math.pi)

    def bias(p):
        if center is None:
            return 0.0
        d = abs(p - center) % (2 * math.pi)
        return 0.5 * k * min(d, 2 * math.pi - d) ** 2

    def boltzmann(p):
        return math.exp(-(torsion_potential(p) + bias(p)) / kt)

    norm = quad(boltzmann, -math.pi, math.pi, limit=200)[0]
    torsion = quad(lambda p: torsion_potential(p) * boltzmann(p), -math.pi, math.pi, limit=200)[0]
    return 3 * bond + 2 * angle + torsion / norm


def _block_sem(x: np.ndarray, n_blocks: int = 10) -> float:
    blocks = np.array([b.mean() for b in np.array_split(np.asarray(x), n_blocks)])
    return float(blocks.std(ddof=1) / np.sqrt(n_blocks))


@pytest.fixture(scope="module")
def chain():
    return bg.System.from_pdb(
        DATA / "torsion_chain.pdb",
        forcefield=(str(DATA / "torsion_chain.xml"),),
        temperature=T,
    )


def test_the_closed_form_tells_the_errors_apart():
    # what the tests below rely on: 1.73 and 3.44 kT at 400 K; 2.40 and 4.57 at 300 K
    for a, b in (WELLS, BARRIER):
        df = exact_df(a, b)
        assert df > 1.5
        assert abs(exact_df(a, b, 300.0) - df) > 0.65  # > 4 error bars of the runs below
        assert exact_df(b, a) == pytest.approx(-df)


def test_torsion_chain_energy_is_the_closed_form(chain):
    # the force field file says what torsion_potential says (and OpenMM's torsion sign is
    # mdtraj's / boltzgen.cv's), so the closed form is the system's
    import torch

    rng = np.random.default_rng(1)
    x = chain.positions[None] + 0.01 * rng.standard_normal((6, 4, 3))
    phi = bg.cv.Dihedral(TORSION)(x)
    with bg.EnergyModel(chain, platform="Reference") as em:
        u = em(torch.as_tensor(x, dtype=torch.float64)).numpy()
    # remove the harmonic terms by hand: bonds 0.153 nm / 1e5, angles 1.9106332 rad / 300
    e_bonds = sum(
        0.5 * 1e5 * (np.linalg.norm(x[:, i + 1] - x[:, i], axis=-1) - 0.153) ** 2 for i in range(3)
    )
    e_angles = 0.0
    for i in range(2):
        v1, v2 = x[:, i] - x[:, i + 1], x[:, i + 2] - x[:, i + 1]
        cos = np.sum(v1 * v2, -1) / np.linalg.norm(v1, axis=-1) / np.linalg.norm(v2, axis=-1)
        e_angles = e_angles + 0.5 * 300.0 * (np.arccos(cos) - 1.9106332) ** 2
    kt = scipy.constants.R / 1000.0 * T
    np.testing.assert_allclose(u * kt - e_bonds - e_angles, torsion_potential(phi), atol=1e-4)


@pytest.fixture(scope="module")
def umbrella(chain):
    # 16 windows, sqrt(kT/k) = 0.26 rad against a spacing of 0.39: neighbours overlap.
    # Friction 10/ps: the light chain's energy then decorrelates within ~0.1 ps
    return umbrella_sampling(
        chain,
        TORSION,
        np.linspace(-math.pi, math.pi, 16, endpoint=False),
        k=50.0,
        n_steps_per_window=40_000,
        n_equilibration=2_000,
        report_interval=20,
        friction=10.0,
        n_minimum_search=2_000,
        seed=0,
        platform="Reference",
    )


@pytest.mark.parametrize("states", [WELLS, BARRIER], ids=["wells", "barrier"])
def test_umbrella_mbar_matches_the_closed_form(umbrella, states):
    df, err = umbrella.free_energy_difference(*states)
    exact = exact_df(*states)
    # MBAR's error (frames thinned by their statistical inefficiency) is ~0.1 kT here: the
    # band of 3 errors excludes the 300 K answer (> 0.65 away) and the flipped sign
    assert 0.02 < err < 0.2, err
    assert abs(df - exact) < 3 * err, (df, err, exact)


def test_umbrella_profile_matches_the_closed_form(umbrella):
    centers, f, f_err = umbrella.profile(bins=24)
    kt = scipy.constants.R / 1000.0 * T
    # the exact bin free energies: -log of the bin's Boltzmann mass, min 0
    edges = np.linspace(-math.pi, math.pi, 25)
    exact = np.array(
        [
            -math.log(
                scipy.integrate.quad(lambda p: math.exp(-torsion_potential(p) / kt), lo, hi)[0]
            )
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
    )
    exact -= exact.min()
    ok = np.isfinite(f)
    assert ok.all()
    # the profile is relative to its lowest bin; compare shapes after matching the means
    diff = (f - exact) - np.mean(f - exact)
    assert np.abs(diff).max() < 0.5, np.round(diff, 2)
    # 4.6 kT from well to barrier top: a profile at 300 K would be 1.5 kT taller
    assert np.ptp(f) == pytest.approx(np.ptp(exact), abs=0.4)


def test_umbrella_windows_sample_the_systems_temperature(umbrella):
    # in stiff windows the MBAR dF hardly depends on the sampler's temperature (the mean
    # displacement from a centre is V'/k at any T), so the windows' own ensembles are checked:
    # each window's mean potential energy against its exact value at 400 K
    diff, var = [], []
    for c, e in zip(umbrella.centers, umbrella.potential_energy, strict=True):
        diff.append(e.mean() - exact_mean_energy(T, float(c), umbrella.k))
        var.append(_block_sem(e) ** 2)
    mean_diff, sem = float(np.mean(diff)), float(np.sqrt(np.sum(var)) / len(diff))
    # ~0.06 kJ/mol; a 300 K sampler is 5/2 R (100 K) = 2.1 kJ/mol lower (bonds and angles)
    assert sem < 0.3, sem
    assert abs(mean_diff) < 4 * sem + 0.05, (mean_diff, sem)
    assert np.abs(diff).max() < 1.5, np.round(diff, 2)


@pytest.fixture(scope="module")
def metad(chain):
    return metadynamics(
        chain,
        [bg.cv.Dihedral(TORSION, name="phi")],
        n_metadynamics_steps=100_000,
        n_steps=400_000,
        report_interval=50,
        langevin=bg.LangevinConfig(friction=10.0, seed=0, platform="Reference"),
    )


@pytest.mark.parametrize("states", [WELLS, BARRIER], ids=["wells", "barrier"])
def test_metadynamics_reweighting_matches_the_closed_form(metad, states):
    df, err = metad.free_energy_difference(0, *states)
    exact = exact_df(*states)
    assert 0.02 < err < 0.2, err
    assert abs(df - exact) < 3 * err, (df, err, exact)
    # the frozen bias flattens phi (an unweighted count would be far off): the weights matter
    inside = [((metad.cv[:, 0] >= lo) & (metad.cv[:, 0] < hi)).mean() for lo, hi in states]
    assert abs(-math.log(inside[0] / inside[1]) - exact) > 5 * err


def test_metadynamics_reweighted_energy_is_the_closed_form(metad):
    # the fixed-bias phase reweighted to the unbiased ensemble: <U> at 400 K
    w = np.exp(metad.log_weights - metad.log_weights.max())
    e = metad.potential_energy
    mean = float(np.sum(w * e) / np.sum(w))
    parts = [
        float(np.sum(wb * eb) / np.sum(wb))
        for wb, eb in zip(np.array_split(w, 20), np.array_split(e, 20), strict=True)
    ]
    sem = float(np.std(parts, ddof=1) / np.sqrt(len(parts)))
    exact = exact_mean_energy(T)
    # ~0.1 kJ/mol; at 300 K the answer is 3 kJ/mol lower
    assert sem < 0.3, sem
    assert abs(mean - exact) < 4 * sem + 0.05, (mean, sem, exact)


def test_boltzmann_generator_reweighting_matches_the_closed_form(chain):
    # the user's path end to end at 400 K: MD data -> NLL-trained flow -> weighted samples ->
    # bg.free_energy_difference. Importance weights make the answer exact for any proposal,
    # so it must be the 400 K closed form whatever the flow learned; an energy at the wrong
    # temperature gives the 300 K answer, a flipped weight the unweighted one
    import torch

    md = bg.simulate(
        chain, n_steps=200_000, timestep=0.001, report_interval=20, seed=0, friction=10.0
    )
    gen = bg.BoltzmannGenerator.build(
        chain, data=md.xyz, n_layers=4, hidden=(32,), n_components=6, dtype="float64"
    )
    gen.energy = bg.EnergyModel(chain, platform="Reference")
    gen.fit(md.xyz, loss="nll", epochs=15, batch_size=256)
    torch.manual_seed(0)
    s = gen.sample(20_000)
    assert s.ess > 0.5  # a 6-dimensional flow fits this chain well (measured 0.84-0.94)
    phi = bg.cv.Dihedral(TORSION)
    for a, b in (WELLS, BARRIER):
        df, err = bg.free_energy_difference(s, cv=phi, state_a=a, state_b=b)
        exact = exact_df(a, b)
        # bootstrap error ~0.03-0.05 kT; over seeds 0-3 the largest |z| was 1.9
        assert err < 0.1, err
        assert abs(df - exact) < 3 * err, (df, err, exact)
    w = np.exp(s.log_weights - s.log_weights.max())
    mean_u = float(np.sum(w * s.reduced_energy) / np.sum(w)) * chain.kT
    assert mean_u == pytest.approx(exact_mean_energy(T), abs=0.3)  # 300 K: 3 kJ/mol lower
