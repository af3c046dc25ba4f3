r"""The teacher of flow matching: a smooth flow over the CG chain's internal coordinates.

Density on bead positions modulo rigid motion, as in :mod:`boltzgen.generator.model`:

    log q(x) = log q_flow(u(x)) + log|det du/dx|,

u(x) the unit-box coordinates of :class:`~boltzgen.coordinates.ICNormalizer` (bonds, angles,
torsions of the bead Z-matrix). The flow is trained by maximum likelihood on mapped frames with
the library's :func:`boltzgen.generator.training.fit` (no forces are needed). Teacher forces
are ``F(x) = kT grad_x log q(x)`` in kJ/mol/nm: the Cartesian gradient of the *full* log q(x),
log-Jacobian of the coordinate transform included, on flow samples x ~ q. Because q(x) is
invariant under rotations and translations, these forces have zero net force and torque.

Outlier filter (:func:`teacher_forces`): a flow sample whose mean-square force
``msf = mean over beads and components of F^2`` exceeds the threshold (or is not finite) is
dropped; the threshold is ``max_msf`` ((kJ/mol/nm)^2) if given, else
``filter_factor * median(msf)`` (default 50 x the median). Such samples
sit where the learned density is poorly determined (thin tails near the box bounds), and one of
them can dominate a force-matching minibatch. The median scale makes the rule independent of
units and molecule; flowm (Koehler et al. 2023) uses a fixed threshold of 1.5e5 on ala2 instead.
The fraction dropped is reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from boltzgen.cg.system import CGSystem
from boltzgen.coordinates import ICNormalizer
from boltzgen.errors import InputError, ShapeError
from boltzgen.flows import Flow, build_flow

__all__ = ["CGFlow", "TeacherForces", "teacher_forces"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
_FORMAT = "boltzgen.cg.CGFlow/1"


class CGFlow(nn.Module):
    """Smooth normalizing flow over the internal coordinates of a CG system.

    Build with :meth:`build`, train with :meth:`fit` (maximum likelihood on bead positions),
    then :meth:`forces` / :func:`teacher_forces`. ``system`` is a :class:`CGSystem`.
    """

    def __init__(self, system: CGSystem, coords: ICNormalizer, flow: Flow, config: dict) -> None:
        super().__init__()
        self.system = system
        self.coords = coords
        self.flow = flow
        self.config = dict(config)
        self.history: dict[str, list] = {}
        self.torsion_force_scale: torch.Tensor | None = None  # set while fit matches torsions

    @classmethod
    def build(
        cls,
        system: CGSystem,
        positions: Any,
        *,
        n_layers: int = 4,
        hidden: tuple[int, ...] = (64, 64),
        n_components: int = 8,
        base: str = "truncnormal",
        tails: str = "none",
        margin: float = 0.1,
        dtype: str = "float32",
        seed: int = 0,
    ) -> CGFlow:
        """Teacher for ``system`` with box bounds fitted to bead ``positions`` (N, n_beads, 3)
        nm (min/max plus ``margin`` of the range); a smooth (C-infinity) flow of ``n_layers``
        coupling layers with ``n_components`` bump mixtures per coordinate."""
        if dtype not in _DTYPES:
            raise InputError(f"dtype must be one of {tuple(_DTYPES)}, got {dtype!r}")
        x = _positions(positions, system.n_beads)
        config = {
            "n_layers": int(n_layers),
            "hidden": [int(h) for h in hidden],
            "n_components": int(n_components),
            "base": base,
            "tails": tails,
            "dtype": dtype,
            "seed": int(seed),
        }
        torch.manual_seed(seed)
        coords = ICNormalizer.from_topology(system.topology, rigid="remove", tails=tails)
        coords.fit_bounds(x, margin=margin)
        return cls(system, coords, cls._make_flow(coords, config), config).to(_DTYPES[dtype])

    @staticmethod
    def _make_flow(coords: ICNormalizer, config: dict) -> Flow:
        return build_flow(
            coords.dim,
            coords.circular,
            kind="smooth",
            n_layers=config["n_layers"],
            hidden=tuple(config["hidden"]),
            n_components=config["n_components"],
            base=config["base"],
        )

    @property
    def dtype(self) -> torch.dtype:
        return next(self.flow.parameters()).dtype

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: Any) -> torch.Tensor:
        """log q(x) (B,) of bead positions (B, n_beads, 3) nm (-inf outside the box)."""
        u, logdet = self.coords(torch.as_tensor(x, dtype=self.dtype))
        finite = torch.isfinite(logdet)
        lq = self.flow.log_prob(u) + torch.where(finite, logdet, torch.zeros_like(logdet))
        return torch.where(finite, lq, torch.full_like(lq, -math.inf))

    def force(self, x: Any, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(log q(x) (B,), grad_x log q(x) (B, n_beads, 3) in 1/nm)."""
        x = torch.as_tensor(x, dtype=self.dtype).detach().requires_grad_(True)
        with torch.enable_grad():
            lq = self.log_prob(x)
            (g,) = torch.autograd.grad(lq.sum(), x, create_graph=create_graph)
        return lq, g

    def torsion_log_prob_grad(self, x: Any, create_graph: bool = False) -> torch.Tensor:
        """d log q / d t (B, n_torsions) in 1/rad at bead positions (B, n_beads, 3) nm: the
        flow's own gradient along its Z-matrix torsions (the coordinate transform's log-det
        does not depend on torsions, and u = (t + pi) / (2 pi) on them)."""
        u, _ = self.coords(torch.as_tensor(x, dtype=self.dtype))
        u = u.detach().requires_grad_(True)
        with torch.enable_grad():
            lq = self.flow.log_prob(u)
            (g,) = torch.autograd.grad(lq.sum(), u, create_graph=create_graph)
        return g[:, self.coords.ic.torsion_columns] / (2.0 * math.pi)

    def torsion_force_targets(self, x: Any, forces: Any) -> torch.Tensor:
        """Generalised forces on the Z-matrix torsions (B, n_torsions) in kT/rad: (dx/dt)^T F /
        kT for frames x (B, n_beads, 3) nm with forces F (B, n_beads, 3) kJ/mol/nm, F first
        rotated into the Z-matrix's canonical frame (Kabsch). For F = kT grad_x log q this is
        :meth:`torsion_log_prob_grad`."""
        ic = self.coords.ic
        x64 = torch.as_tensor(x, dtype=torch.float64)
        f64 = torch.as_tensor(forces, dtype=torch.float64)
        z, _ = ic(x64)
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            xc, _ = ic.inverse(z)
            rot = _rotation_onto(x64, xc.detach())
            (gz,) = torch.autograd.grad(xc, z, grad_outputs=f64 @ rot.transpose(1, 2))
        return (gz[:, ic.torsion_columns] / self.system.kT).to(self.dtype)

    def force_residual(self, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
        """What force matching squares (:func:`boltzgen.generator.losses.force_loss`):
        grad_x log q - F/kT per Cartesian component, or while :meth:`fit` runs with
        ``force_components="torsions"`` the same along the Z-matrix torsions only, divided by
        ``torsion_force_scale`` (B, n_torsions)."""
        scale = self.torsion_force_scale
        if scale is not None:
            r = self.torsion_log_prob_grad(x, create_graph=True) - self.torsion_force_targets(x, f)
            return r / scale
        _, g = self.force(x, create_graph=True)
        return g - f / self.system.kT

    def forces(self, x: Any) -> torch.Tensor:
        """Teacher forces kT grad_x log q(x) (B, n_beads, 3) in kJ/mol/nm (no graph)."""
        _, g = self.force(x)
        return self.system.kT * g.detach()

    @torch.no_grad()
    def sample_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(x (n, n_beads, 3) nm in the canonical frame, log q(x) (n,))."""
        u, log_q_u = self.flow.sample(int(n))
        x, logdet_inv = self.coords.inverse(u)
        return x, log_q_u - logdet_inv

    # ------------------------------------------------------------------ training
    def fit(
        self,
        positions: Any,
        weights: Any = None,
        forces: Any = None,
        force_weight: float = 0.0,
        force_components: str = "cartesian",
        **options,
    ) -> dict:
        """Maximum likelihood on bead positions (N, n_beads, 3) nm with
        :func:`boltzgen.generator.training.fit` (options: epochs, batch_size, lr, val_fraction,
        patience, lr_schedule, callbacks, time_limit, seed, ...). ``weights`` (N,) >= 0:
        relative frame weights (e.g. exp(V/kT) of frames sampled under a bias V), so the flow
        learns the unbiased density; minibatches are drawn in proportion to them.

        ``forces`` (N, n_beads, 3) kJ/mol/nm with ``force_weight`` > 0: the loss becomes
        nll + force_weight * mean((grad_x log q - F/kT)^2) (kT/nm per component). Noisy
        mapped forces are fine: the square's minimiser is their conditional mean, the mean
        force kT grad log p_CG. ``force_components="torsions"``: match the forces along the
        Z-matrix torsions only, each torsion's residual over its forces' rms (so weight 1 is
        their Gaussian log-likelihood; :meth:`force_residual`). Early stopping still watches
        the validation NLL."""
        from boltzgen.generator.data import TrainingData
        from boltzgen.generator.training import fit

        x = _positions(positions, self.system.n_beads)
        w = None if weights is None else np.asarray(weights)
        if force_weight > 0:
            if forces is None:
                raise InputError("force_weight > 0 needs the frames' forces")
            f = forces.detach().cpu().numpy() if torch.is_tensor(forces) else forces
            data = TrainingData(x, forces=f, weights=w)  # checks the forces' shape
            if force_components not in ("cartesian", "torsions"):
                raise InputError(
                    f"force_components must be 'cartesian' or 'torsions', got {force_components!r}"
                )
            weights_ = {"nll": 1.0, "force": float(force_weight)}
            if force_components == "torsions":
                # whitened: residual_k / sigma_k * sqrt(n_t / 2), sigma_k the rms of the
                # frames' torsion forces (noise dominates it), so the term is a Gaussian
                # log-likelihood sum_k r_k^2 / (2 sigma_k^2) of the forces at weight 1
                t = self.torsion_force_targets(x, f).detach()
                n_t = t.shape[1]
                rms = t.pow(2).mean(0).sqrt().clamp_min(1e-12)
                self.torsion_force_scale = rms / math.sqrt(n_t / 2.0)
            try:
                return fit(self, data, loss="mixed", weights=weights_, state_fn=None, **options)
            finally:
                self.torsion_force_scale = None
        data = x if w is None else TrainingData(x, weights=w)
        return fit(self, data, loss="nll", **options)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "format": _FORMAT,
            "config": self.config,
            "system": self.system.to_spec(),
            "state_dict": self.state_dict(),
        }
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CGFlow:
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise InputError(f"{str(path)!r} is not a CG teacher file")
        system = CGSystem.from_spec(state["system"])
        config = state["config"]
        coords = ICNormalizer.from_topology(system.topology, rigid="remove", tails=config["tails"])
        model = cls(system, coords, cls._make_flow(coords, config), config)
        model = model.to(_DTYPES[config["dtype"]])
        model.load_state_dict(state["state_dict"])
        return model


def _rotation_onto(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Rotations R (B, 3, 3) that best map centred a (B, n, 3) onto centred b (Kabsch):
    b - mean(b) ~ (a - mean(a)) @ R^T."""
    a0 = a - a.mean(dim=1, keepdim=True)
    b0 = b - b.mean(dim=1, keepdim=True)
    u, _, vt = torch.linalg.svd(a0.transpose(1, 2) @ b0)
    d = torch.sign(torch.linalg.det(vt.transpose(1, 2) @ u.transpose(1, 2)))
    diag = torch.ones(len(a), 3, dtype=a.dtype)
    diag[:, 2] = d
    return vt.transpose(1, 2) @ torch.diag_embed(diag) @ u.transpose(1, 2)


def _positions(positions: Any, n_beads: int) -> np.ndarray:
    if hasattr(positions, "xyz"):
        positions = positions.xyz
    if torch.is_tensor(positions):
        positions = positions.detach().cpu().numpy()
    x = np.asarray(positions)
    if x.ndim != 3 or x.shape[1:] != (n_beads, 3):
        raise ShapeError(f"bead positions must be (N, {n_beads}, 3) nm, got {x.shape}")
    return x


@dataclass
class TeacherForces:
    """Flow samples and their teacher forces after the outlier filter.

    positions, forces: (N_kept, n_beads, 3) nm and kJ/mol/nm (float32). msf: (n_drawn,)
    mean-square force of every drawn sample ((kJ/mol/nm)^2, inf if not finite).
    threshold: the msf cut used. n_drawn, n_dropped (including non-finite), n_nonfinite.
    log_q: (N_kept,) the teacher's log-density of the kept samples (float64), the target of
    energy matching up to a constant. n_proposed: samples drawn before ``select``.
    """

    positions: np.ndarray
    forces: np.ndarray
    msf: np.ndarray
    threshold: float
    n_drawn: int
    n_dropped: int
    n_nonfinite: int
    log_q: np.ndarray | None = None
    n_proposed: int = 0

    @property
    def fraction_dropped(self) -> float:
        return self.n_dropped / max(self.n_drawn, 1)

    def summary(self) -> dict[str, float]:
        finite = self.msf[np.isfinite(self.msf)]
        return {
            "n_drawn": int(self.n_drawn),
            "n_kept": int(len(self.positions)),
            "n_dropped": int(self.n_dropped),
            "n_nonfinite": int(self.n_nonfinite),
            "n_proposed": int(max(self.n_proposed, self.n_drawn)),
            "fraction_dropped": float(self.fraction_dropped),
            "msf_threshold": float(self.threshold),
            "msf_median": float(np.median(finite)) if finite.size else math.nan,
        }


def teacher_forces(
    teacher: CGFlow,
    n_samples: int,
    *,
    batch_size: int = 4096,
    filter_factor: float | None = 50.0,
    max_msf: float | None = None,
    seed: int | None = None,
    n_proposed: int | None = None,
    select: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TeacherForces:
    """Draw ``n_samples`` from the teacher and compute kT grad log q on them, then filter.

    With ``select``: ``n_proposed`` (>= n_samples) samples are drawn and ``select(positions)``
    returns the indices of the ``n_samples`` to keep (e.g. a pick balanced over basins,
    :func:`boltzgen.cg.basins.balanced_indices`); forces are computed for those only.
    A sample is dropped when its force is not finite or its mean-square force exceeds
    the threshold: ``max_msf`` ((kJ/mol/nm)^2) if given, else ``filter_factor * median(msf)``
    (``filter_factor=None, max_msf=None`` keeps every finite sample). See the module docstring.
    """
    if int(n_samples) < 1:
        raise InputError(f"n_samples must be >= 1, got {n_samples}")
    if seed is not None:
        torch.manual_seed(seed)
    n_draw = int(n_samples) if select is None else max(int(n_proposed or 0), int(n_samples))
    was_training = teacher.training
    teacher.eval()
    drawn = [
        teacher.sample_positions(min(int(batch_size), n_draw - s))
        for s in range(0, n_draw, int(batch_size))
    ]
    xs = torch.cat([d[0] for d in drawn]).detach()
    lq = torch.cat([d[1] for d in drawn]).detach()
    if select is not None:
        idx = torch.as_tensor(np.asarray(select(xs.double().numpy()), dtype=np.int64))
        if idx.ndim != 1 or len(idx) != int(n_samples):
            raise ShapeError(f"select must return {int(n_samples)} indices, got {tuple(idx.shape)}")
        xs, lq = xs[idx], lq[idx]
    fs = [teacher.forces(xs[s : s + int(batch_size)]) for s in range(0, len(xs), int(batch_size))]
    teacher.train(was_training)
    x = xs.double().numpy()
    f = torch.cat(fs).double().numpy()
    msf = (f**2).mean(axis=(1, 2))
    msf = np.where(np.isfinite(msf), msf, np.inf)
    finite = np.isfinite(msf)
    if max_msf is not None:
        threshold = float(max_msf)
    elif filter_factor is not None and finite.any():
        threshold = float(filter_factor) * float(np.median(msf[finite]))
    else:
        threshold = math.inf
    keep = finite & (msf <= threshold)
    return TeacherForces(
        positions=x[keep].astype(np.float32),
        forces=f[keep].astype(np.float32),
        msf=msf,
        threshold=threshold,
        n_drawn=len(msf),
        n_dropped=int((~keep).sum()),
        n_nonfinite=int((~finite).sum()),
        log_q=lq.double().numpy()[keep],
        n_proposed=n_draw,
    )
