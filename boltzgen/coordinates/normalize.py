"""Map internal coordinates to the unit box [0, 1]^d (a torus x box for the flows).

* circular columns (torsions; alpha, gamma in keep mode): u = (z + pi) / (2 pi), wrapped into
  [0, 1) (a torsion is an angle, so wrapping is exact); log-det -log(2 pi) per column.
* other columns (bonds, angles, beta, translation): u = (z - low) / (high - low) with bounds
  from :meth:`BoxNormalizer.fit_bounds` (data min/max with a margin, or mean +- k sigma,
  clipped to the natural range: bonds > 0, angles in [0, pi]) or from the force field's
  equilibrium values +- k sigma (:meth:`ICNormalizer.fit_bounds_from_forcefield`);
  log-det -log(high - low).

With ``tails="logistic"`` the bounds are soft: the affine value t = (z - low) / (high - low)
is passed through u = sigmoid(KAPPA (2 t - 1)), so [low, high] fills u in [0.047, 0.953] and
every real z has a u in (0, 1). The density of a flow on u then decays smoothly (log-det
~ -2 KAPPA |t| in kT) instead of dropping to zero at a wall, which keeps flow-driven MD finite
when a bond strays past the data range. Columns whose tails would reach a natural limit
within ``TAIL_REACH`` widths (a bond near 0, an angle near pi) keep the hard wall.

Out-of-bounds values of non-circular columns are never wrapped. With ``out_of_bounds="clamp"``
(default) u is clamped into [0, 1] and that sample's log-det is -inf, i.e. the configuration is
outside the support of the model (log-probability -inf); ``in_bounds(z)`` reports which
samples are inside. With ``out_of_bounds="error"`` an ``InputError`` names the columns. In the
inverse direction, u within 1e-6 outside [0, 1] (rounding of a flow) is clamped silently.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from boltzgen.constants import GAS_CONSTANT
from boltzgen.coordinates.transform import InternalCoordinates
from boltzgen.errors import InputError, ShapeError, TopologyError

_TOL = 1e-6
KAPPA = 3.0
"""Logistic tails: u = sigmoid(KAPPA (2 t - 1)); the bounds t = 0, 1 sit at u = 0.047, 0.953."""
TAIL_REACH = 1.0
"""Logistic tails only where [low - w, high + w] stays inside the natural limits (w = high -
low). The flow puts mass ~1e-4 or less past one width (u beyond 0.9999); float32 u reaches at
most 2.8 widths past a bound (u within 6e-8 of 0 or 1). An angle sampled past pi is still a
valid geometry (the mirror image of 2 pi - theta), only counted twice by the density: a
negligible error, against a hard wall that makes flow-driven MD fail."""
TAILS = ("none", "logistic")


class BoxNormalizer(nn.Module):
    """Affine map z (B, d) <-> u (B, d) in [0, 1]^d, periodic on ``circular`` columns.

    Args:
        circular: (d,) bool, True for periodic columns (values in radians, period 2 pi).
        low, high: (d,) bounds of the non-circular columns (ignored on circular ones);
            default [0, 1] until :meth:`fit_bounds` or :meth:`set_bounds` is called.
        lower_limits, upper_limits: (d,) natural limits the fitted bounds are clipped to
            (e.g. 0 for bonds, pi for angles); +-inf where unlimited.
        out_of_bounds: "clamp" (log-det -inf) or "error" (hard bounds only).
        tails: "none" (hard bounds, affine) or "logistic" (soft bounds, see the module doc).
    """

    def __init__(
        self,
        circular,
        low=None,
        high=None,
        lower_limits=None,
        upper_limits=None,
        out_of_bounds: str = "clamp",
        tails: str = "none",
    ) -> None:
        super().__init__()
        if out_of_bounds not in ("clamp", "error"):
            raise InputError(f"out_of_bounds must be 'clamp' or 'error', got {out_of_bounds!r}")
        if tails not in TAILS:
            raise InputError(f"tails must be one of {TAILS}, got {tails!r}")
        self.tails = tails
        circ = torch.as_tensor(circular, dtype=torch.bool)
        d = circ.numel()
        self.dim = d
        self.out_of_bounds = out_of_bounds
        f64 = torch.float64

        def vec(v, default):
            t = torch.full((d,), default, dtype=f64) if v is None else torch.as_tensor(v, dtype=f64)
            if t.shape != (d,):
                raise ShapeError(f"bounds must have shape ({d},), got {tuple(t.shape)}")
            return t.clone()

        self.register_buffer("circular", circ.clone())
        self.register_buffer("lower_limits", vec(lower_limits, -math.inf))
        self.register_buffer("upper_limits", vec(upper_limits, math.inf))
        self.register_buffer("low", vec(low, 0.0))
        self.register_buffer("high", vec(high, 1.0))
        # derived from the bounds (not saved): recomputed after loading a state dict
        self.register_buffer("soft", torch.zeros(d, dtype=torch.bool), persistent=False)
        self._apply_circular()
        self.register_load_state_dict_post_hook(lambda module, _keys: module._apply_circular())

    def _apply_circular(self) -> None:
        self.low[self.circular] = -math.pi
        self.high[self.circular] = math.pi
        # which columns get logistic tails: bounded ones whose tails stay in the natural range
        w = self.high - self.low
        room = (self.low - TAIL_REACH * w > self.lower_limits) & (
            self.high + TAIL_REACH * w < self.upper_limits
        )
        self.soft.copy_(room & ~self.circular & (self.tails == "logistic"))

    def set_bounds(self, low, high) -> None:
        """Set bounds (d,) by hand (circular columns keep [-pi, pi])."""
        low = torch.as_tensor(low, dtype=self.low.dtype, device=self.low.device)
        high = torch.as_tensor(high, dtype=self.high.dtype, device=self.high.device)
        if low.shape != (self.dim,) or high.shape != (self.dim,):
            raise ShapeError(f"bounds must have shape ({self.dim},)")
        if not bool((high[~self.circular] > low[~self.circular]).all()):
            raise InputError("every upper bound must exceed its lower bound")
        self.low.copy_(low)
        self.high.copy_(high)
        self._apply_circular()

    @torch.no_grad()
    def fit_bounds(
        self, z, margin: float = 0.1, k_sigma: float | None = None, min_width: float = 1e-3
    ) -> None:
        """Fit bounds of the non-circular columns to data z (N, d).

        Default: [min - margin * w, max + margin * w] with w = max(max - min, min_width).
        With ``k_sigma``: [mean - k_sigma * std, mean + k_sigma * std] widened to contain
        the data. Always clipped to the natural limits.
        """
        z = torch.as_tensor(z).to(torch.float64)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ShapeError(f"z must be (N, {self.dim}), got {tuple(z.shape)}")
        if z.shape[0] < 1 or not bool(torch.isfinite(z).all()):
            raise InputError("fit_bounds needs at least one finite sample")
        lo, hi = z.min(0).values, z.max(0).values
        if k_sigma is not None:
            mu, sd = z.mean(0), z.std(0, unbiased=False) if z.shape[0] > 1 else torch.zeros_like(lo)
            lo = torch.minimum(lo, mu - k_sigma * sd)
            hi = torch.maximum(hi, mu + k_sigma * sd)
        w = (hi - lo).clamp_min(min_width)
        if k_sigma is None:
            lo, hi = lo - margin * w, hi + margin * w
        else:
            mid = 0.5 * (lo + hi)
            lo, hi = torch.minimum(lo, mid - 0.5 * w), torch.maximum(hi, mid + 0.5 * w)
        lo = torch.maximum(lo, self.lower_limits.cpu())
        hi = torch.minimum(hi, self.upper_limits.cpu())
        self.low.copy_(lo)
        self.high.copy_(hi)
        self._apply_circular()

    def in_bounds(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) bool: all hard-bounded columns of z inside [low, high] (soft columns: always)."""
        lo, hi = self.low.to(z.dtype), self.high.to(z.dtype)
        ok = (z >= lo) & (z <= hi) | self.circular | self.soft
        return ok.all(-1)

    def _logdet(self, dtype) -> torch.Tensor:
        return torch.log(self.high - self.low).sum().to(dtype)

    def _soft_logdet(self, y: torch.Tensor) -> torch.Tensor:
        """Sum over soft columns of log d sigmoid(y)/dy + log(2 KAPPA) (y = KAPPA (2 t - 1))."""
        ld = F.logsigmoid(y) + F.logsigmoid(-y) + math.log(2 * KAPPA)
        return torch.where(self.soft, ld, torch.zeros_like(ld)).sum(-1)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z (B, d) -> u (B, d) in [0, 1]^d, logdet (B,) = log|det du/dz|."""
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ShapeError(f"z must be (B, {self.dim}), got {tuple(z.shape)}")
        lo, hi = self.low.to(z.dtype), self.high.to(z.dtype)
        u = (z - lo) / (hi - lo)
        u = torch.where(self.circular, torch.remainder(u, 1.0), u)
        logdet = (-self._logdet(z.dtype)).expand(z.shape[0]).clone()
        if self.tails == "logistic":
            # the double-where trick: soft columns only ever see finite y
            y = torch.where(self.soft, KAPPA * (2 * u - 1), torch.zeros_like(u))
            u = torch.where(self.soft, torch.sigmoid(y), u)
            logdet = logdet + self._soft_logdet(y)
        bad = ((u < 0) | (u > 1)) & ~self.circular
        if bool(bad.any()):
            if self.out_of_bounds == "error":
                cols = torch.nonzero(bad.any(0)).flatten().tolist()
                raise InputError(
                    f"internal coordinates outside the fitted bounds in columns {cols[:10]}"
                    f"{' ...' if len(cols) > 10 else ''}; refit the bounds or use clamping"
                )
            u = u.clamp(0.0, 1.0)
            logdet = torch.where(bad.any(-1), torch.full_like(logdet, -math.inf), logdet)
        return u, logdet

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """u (B, d) -> z (B, d), logdet (B,) = log|det dz/du| (-inf outside [0, 1] + 1e-6)."""
        if u.ndim != 2 or u.shape[1] != self.dim:
            raise ShapeError(f"u must be (B, {self.dim}), got {tuple(u.shape)}")
        lo, hi = self.low.to(u.dtype), self.high.to(u.dtype)
        bad = ((u < -_TOL) | (u > 1 + _TOL)) & ~self.circular
        logdet = self._logdet(u.dtype).expand(u.shape[0]).clone()
        if bool(bad.any()):
            if self.out_of_bounds == "error":
                raise InputError("u outside [0, 1] in non-circular columns")
            logdet = torch.where(bad.any(-1), torch.full_like(logdet, -math.inf), logdet)
        u = torch.where(self.circular, torch.remainder(u, 1.0), u.clamp(0.0, 1.0))
        if self.tails == "logistic":
            # t = (1 + logit(u) / KAPPA) / 2; u is kept off 0 and 1 by the dtype's resolution
            tiny = torch.finfo(u.dtype).tiny
            us = torch.where(self.soft, u.clamp(tiny, 1.0 - torch.finfo(u.dtype).eps / 2), 0.5)
            y = torch.log(us) - torch.log1p(-us)
            u = torch.where(self.soft, 0.5 * (1.0 + y / KAPPA), u)
            logdet = logdet - self._soft_logdet(y)
        return lo + u * (hi - lo), logdet


class ICNormalizer(nn.Module):
    """Composed transform x (B, n, 3) nm <-> u (B, d) in [0, 1]^d with total log-det.

    ``forward(x) -> (u, logdet)`` with logdet = log|det du/dx| (in the sense of
    ``InternalCoordinates`` for rigid="remove"), ``inverse(u) -> (x, logdet_inv)``.
    Attributes ``dim``, ``circular`` (d,) bool, ``ic``, ``box``.
    """

    def __init__(
        self, ic: InternalCoordinates, out_of_bounds: str = "clamp", tails: str = "none"
    ) -> None:
        super().__init__()
        self.ic = ic
        d = ic.dim
        lower = torch.full((d,), -math.inf, dtype=torch.float64)
        upper = torch.full((d,), math.inf, dtype=torch.float64)
        lower[ic.bond_columns] = 0.0
        lower[ic.angle_columns] = 0.0
        upper[ic.angle_columns] = math.pi
        low = torch.zeros(d, dtype=torch.float64)
        high = torch.ones(d, dtype=torch.float64)
        high[ic.angle_columns] = math.pi
        if ic.rigid == "keep":
            beta = ic.orientation_columns[1]
            lower[beta], upper[beta], high[beta] = 0.0, math.pi, math.pi
            low[ic.translation_columns] = -10.0
            high[ic.translation_columns] = 10.0
        self.box = BoxNormalizer(
            ic.circular, low, high, lower, upper, out_of_bounds=out_of_bounds, tails=tails
        )

    @classmethod
    def from_topology(cls, topology, rigid: str = "remove", **kwargs) -> ICNormalizer:
        """``InternalCoordinates.from_topology(topology, rigid, **kwargs)`` + unit box
        (``out_of_bounds`` and ``tails`` go to :class:`BoxNormalizer`)."""
        oob = kwargs.pop("out_of_bounds", "clamp")
        tails = kwargs.pop("tails", "none")
        return cls(InternalCoordinates.from_topology(topology, rigid, **kwargs), oob, tails)

    @property
    def dim(self) -> int:
        return self.ic.dim

    @property
    def circular(self) -> torch.Tensor:
        return self.ic.circular

    def generation_groups(self) -> torch.Tensor:
        """(d,) int64 generation order of the columns for a hierarchical flow: torsions 0,
        angles 1, bonds 2, rigid-body columns (keep mode) 3."""
        g = torch.full((self.dim,), 3, dtype=torch.long)
        g[self.ic.torsion_columns] = 0
        g[self.ic.angle_columns] = 1
        g[self.ic.bond_columns] = 2
        return g

    @torch.no_grad()
    def fit_bounds(self, x, **kwargs) -> None:
        """Fit the box bounds to positions x (N, n, 3) nm (kwargs of BoxNormalizer.fit_bounds)."""
        x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x)
        z, _ = self.ic(x.to(torch.float64))
        self.box.fit_bounds(z, **kwargs)

    @torch.no_grad()
    def fit_bounds_from_forcefield(
        self, openmm_system, temperature: float = 300.0, k_sigma: float = 6.0
    ) -> None:
        """Bond and angle bounds from harmonic force-field terms: equilibrium +- k_sigma * sigma
        with sigma = sqrt(kT / k) (k from ``HarmonicBondForce`` / ``HarmonicAngleForce`` of the
        ``openmm.System``; temperature in K). Constrained bonds get r0 +- 1e-3 nm. Other
        non-circular columns (keep-mode translation) keep their current bounds.

        Raises:
            TopologyError: a Z-matrix bond or angle has no harmonic term in the system.
        """
        import openmm

        kt = GAS_CONSTANT * temperature  # kJ/mol
        bonds: dict[frozenset, tuple[float, float]] = {}
        angles: dict[tuple[int, int, int], tuple[float, float]] = {}
        for force in openmm_system.getForces():
            if isinstance(force, openmm.HarmonicBondForce):
                for i in range(force.getNumBonds()):
                    a, b, r0, k = force.getBondParameters(i)
                    r0 = r0.value_in_unit(openmm.unit.nanometer)
                    k = k.value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.nanometer**2)
                    bonds[frozenset((a, b))] = (r0, math.sqrt(kt / k) if k > 0 else math.inf)
            elif isinstance(force, openmm.HarmonicAngleForce):
                for i in range(force.getNumAngles()):
                    a, b, c, t0, k = force.getAngleParameters(i)
                    t0 = t0.value_in_unit(openmm.unit.radian)
                    k = k.value_in_unit(openmm.unit.kilojoule_per_mole / openmm.unit.radian**2)
                    sig = math.sqrt(kt / k) if k > 0 else math.inf
                    angles[(a, b, c)] = angles[(c, b, a)] = (t0, sig)
        for i in range(openmm_system.getNumConstraints()):
            a, b, d = openmm_system.getConstraintParameters(i)
            bonds[frozenset((a, b))] = (d.value_in_unit(openmm.unit.nanometer), 1e-3 / k_sigma)
        rows = self.ic.zmatrix.cpu().numpy()
        low, high = self.box.low.clone(), self.box.high.clone()
        for k in range(1, rows.shape[0]):
            a, p, q, _ = (int(v) for v in rows[k])
            key = frozenset((a, p))
            if key not in bonds:
                raise TopologyError(f"no harmonic bond term for Z-matrix bond {a}-{p}")
            r0, sig = bonds[key]
            col = int(self.ic.bond_columns[k - 1])
            low[col], high[col] = r0 - k_sigma * sig, r0 + k_sigma * sig
            if k >= 2:
                if (a, p, q) not in angles:
                    raise TopologyError(f"no harmonic angle term for Z-matrix angle {a}-{p}-{q}")
                t0, sig = angles[(a, p, q)]
                col = int(self.ic.angle_columns[k - 2])
                low[col], high[col] = t0 - k_sigma * sig, t0 + k_sigma * sig
        low = torch.maximum(low, self.box.lower_limits)
        high = torch.minimum(high, self.box.upper_limits)
        self.box.set_bounds(low, high)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, ld1 = self.ic(x)
        u, ld2 = self.box(z)
        return u, ld1 + ld2

    def inverse(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z, ld2 = self.box.inverse(u)
        x, ld1 = self.ic.inverse(z)
        return x, ld1 + ld2
