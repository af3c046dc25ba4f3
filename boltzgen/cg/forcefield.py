r"""The student: a CG neural force field trained by force matching.

Energy (kJ/mol) of bead positions x (B, n_beads, 3) nm:

    E(x) = E_prior(x) + kT * MLP(standardised features(x)),

* features (invariant under rotation, translation and permutation-free by construction): all
  bead-pair distances, the bond angles of ``angles`` (default consecutive beads) and cos/sin of
  the dihedrals of ``dihedrals`` (default consecutive beads), standardised by their mean and
  standard deviation on the training positions;
* priors fitted to the training positions (Boltzmann inversion of Gaussians): harmonic bonds
  ``k_b / 2 (r - r0)^2`` and angles ``k_a / 2 (theta - theta0)^2`` with the mean as r0,
  theta0 and ``k = kT / variance``; optionally a short-range repulsion
  ``kT (sigma_ij / r_ij)^6`` between beads not joined by a bond or angle, with sigma_ij the
  ``repulsion_quantile`` (default 0.1 %) quantile of r_ij in the data minus ``repulsion_margin``.
* the MLP (tanh) starts at zero output (last layer zero-initialised), so an untrained force field
  is the prior.

Forces are -grad E by autograd. :func:`fit_forces` trains by force matching (MSE between
-grad E and target forces) and is the same for flow matching (targets: teacher forces on
teacher samples) and classical force matching (targets: mapped all-atom forces on mapped MD
frames). :meth:`CGForceField.save` writes a ``weights_only``-loadable dict with the config.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from boltzgen.errors import InputError, ShapeError, TrainingError
from boltzgen.generator.data import check_frame_weights

__all__ = ["CGForceField", "fit_forces"]

_FORMAT = "boltzgen.cg.CGForceField/1"
_ACTIVATIONS = {"tanh": nn.Tanh, "silu": nn.SiLU, "softplus": nn.Softplus}
_EPS = 1e-12


def _norm(v: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((v * v).sum(-1) + _EPS)


def _angles(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    a = x[:, idx[:, 0]] - x[:, idx[:, 1]]
    b = x[:, idx[:, 2]] - x[:, idx[:, 1]]
    return torch.atan2(_norm(torch.linalg.cross(a, b)), (a * b).sum(-1))


def _cos_sin_dihedrals(x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p0, p1, p2, p3 = (x[:, idx[:, i]] for i in range(4))
    b0, b1, b2 = p1 - p0, p2 - p1, p3 - p2
    n1, n2 = torch.linalg.cross(b0, b1), torch.linalg.cross(b1, b2)
    denom = _norm(n1) * _norm(n2)
    cos = (n1 * n2).sum(-1) / denom
    sin = _norm(b1) * (b0 * n2).sum(-1) / denom
    return cos, sin


class CGForceField(nn.Module):
    """Neural CG force field with harmonic priors; see the module docstring.

    Build with :meth:`from_data` (fits the priors and feature scales); ``energy(x)`` kJ/mol,
    ``forces(x)`` kJ/mol/nm, ``save`` / ``load``.

    Args:
        n_beads: number of beads. kT: kJ/mol (the MLP's energy unit).
        bonds (n_b, 2), angles (n_a, 3), dihedrals (n_d, 4): bead index tuples; default a chain
            of consecutive beads.
        hidden: MLP widths. activation: "tanh" (default), "silu" or "softplus".
        repulsion: add the repulsive prior between beads not in a common bond or angle.
    """

    def __init__(
        self,
        n_beads: int,
        kT: float,
        *,
        bonds: Sequence[Sequence[int]] | None = None,
        angles: Sequence[Sequence[int]] | None = None,
        dihedrals: Sequence[Sequence[int]] | None = None,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "tanh",
        repulsion: bool = False,
    ) -> None:
        super().__init__()
        n = int(n_beads)
        if n < 2:
            raise InputError(f"a CG force field needs at least 2 beads, got {n}")
        if activation not in _ACTIVATIONS:
            raise InputError(f"activation must be one of {tuple(_ACTIVATIONS)}, got {activation!r}")
        chain = list(range(n))

        def idx(v, k):
            default = [chain[i : i + k] for i in range(n - k + 1)]
            t = torch.as_tensor(default if v is None else [list(r) for r in v], dtype=torch.long)
            t = t.reshape(-1, k)
            if t.numel() and (t.min() < 0 or t.max() >= n):
                raise InputError(f"bead indices out of range for {n} beads")
            return t

        self.n_beads = n
        self.kT = float(kT)
        self.config = {
            "n_beads": n,
            "kT": self.kT,
            "bonds": idx(bonds, 2).tolist(),
            "angles": idx(angles, 3).tolist(),
            "dihedrals": idx(dihedrals, 4).tolist(),
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "repulsion": bool(repulsion),
        }
        self.register_buffer("bond_idx", idx(bonds, 2))
        self.register_buffer("angle_idx", idx(angles, 3))
        self.register_buffer("dihedral_idx", idx(dihedrals, 4))
        pairs = torch.triu_indices(n, n, 1).T.contiguous()
        self.register_buffer("pair_idx", pairs)
        close = set()
        for b in self.bond_idx.tolist():
            close.add(tuple(sorted(b)))
        for a in self.angle_idx.tolist():
            close.update({tuple(sorted((a[0], a[1]))), tuple(sorted((a[1], a[2])))})
            close.add(tuple(sorted((a[0], a[2]))))
        rep = [k for k, (i, j) in enumerate(pairs.tolist()) if (i, j) not in close]
        self.register_buffer("rep_pairs", torch.as_tensor(rep, dtype=torch.long))
        n_feat = len(pairs) + len(self.angle_idx) + 2 * len(self.dihedral_idx)
        self.n_features = n_feat
        f64 = torch.float64
        self.register_buffer("feat_mean", torch.zeros(n_feat, dtype=f64))
        self.register_buffer("feat_std", torch.ones(n_feat, dtype=f64))
        self.register_buffer("bond_r0", torch.zeros(len(self.bond_idx), dtype=f64))
        self.register_buffer("bond_k", torch.zeros(len(self.bond_idx), dtype=f64))
        self.register_buffer("angle_t0", torch.zeros(len(self.angle_idx), dtype=f64))
        self.register_buffer("angle_k", torch.zeros(len(self.angle_idx), dtype=f64))
        self.register_buffer("rep_sigma", torch.zeros(len(rep), dtype=f64))
        layers: list[nn.Module] = []
        width = n_feat
        for h in self.config["hidden"]:
            layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
            width = h
        last = nn.Linear(width, 1)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.net = nn.Sequential(*layers, last)
        self.to(f64)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_data(
        cls,
        positions: Any,
        kT: float,
        *,
        repulsion_quantile: float = 1e-3,
        repulsion_margin: float = 0.02,
        **kwargs,
    ) -> CGForceField:
        """Force field whose priors and feature scales are fitted to bead ``positions``
        (N, n_beads, 3) nm; ``kwargs`` go to the constructor."""
        x = torch.as_tensor(_as_array(positions), dtype=torch.float64)
        if x.ndim != 3 or x.shape[2] != 3 or x.shape[0] < 2:
            raise ShapeError(f"positions must be (N >= 2, n_beads, 3) nm, got {tuple(x.shape)}")
        ff = cls(x.shape[1], kT, **kwargs)
        ff.fit_priors(x, repulsion_quantile, repulsion_margin)
        return ff

    @torch.no_grad()
    def fit_priors(
        self, positions: Any, repulsion_quantile: float = 1e-3, repulsion_margin: float = 0.02
    ) -> None:
        """Fit harmonic priors (mean, k = kT / variance), repulsion radii and feature scales."""
        x = torch.as_tensor(_as_array(positions), dtype=torch.float64)
        self._check(x)
        feats = self._features_raw(x)
        self.feat_mean.copy_(feats.mean(0))
        self.feat_std.copy_(feats.std(0).clamp_min(1e-6))
        r = _norm(x[:, self.bond_idx[:, 0]] - x[:, self.bond_idx[:, 1]])
        self.bond_r0.copy_(r.mean(0))
        self.bond_k.copy_(self.kT / r.var(0).clamp_min(1e-12))
        if len(self.angle_idx):
            th = _angles(x, self.angle_idx)
            self.angle_t0.copy_(th.mean(0))
            self.angle_k.copy_(self.kT / th.var(0).clamp_min(1e-12))
        if len(self.rep_pairs):
            p = self.pair_idx[self.rep_pairs]
            d = _norm(x[:, p[:, 0]] - x[:, p[:, 1]])
            q = torch.quantile(d, float(repulsion_quantile), dim=0)
            self.rep_sigma.copy_((q - repulsion_margin).clamp_min(0.05))

    # ------------------------------------------------------------------ energy
    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 3 or x.shape[1] != self.n_beads or x.shape[2] != 3:
            raise ShapeError(f"positions must be (B, {self.n_beads}, 3) nm, got {tuple(x.shape)}")

    def _features_raw(self, x: torch.Tensor) -> torch.Tensor:
        p = self.pair_idx
        parts = [_norm(x[:, p[:, 0]] - x[:, p[:, 1]])]
        if len(self.angle_idx):
            parts.append(_angles(x, self.angle_idx))
        if len(self.dihedral_idx):
            parts.extend(_cos_sin_dihedrals(x, self.dihedral_idx))
        return torch.cat(parts, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Standardised invariant features (B, n_features)."""
        f = self._features_raw(x)
        return (f - self.feat_mean.to(f.dtype)) / self.feat_std.to(f.dtype)

    def prior_energy(self, x: torch.Tensor) -> torch.Tensor:
        """Harmonic bond + angle (+ repulsion) energy (B,) in kJ/mol."""
        dt = x.dtype
        b = self.bond_idx
        r = _norm(x[:, b[:, 0]] - x[:, b[:, 1]])
        e = (0.5 * self.bond_k.to(dt) * (r - self.bond_r0.to(dt)) ** 2).sum(-1)
        if len(self.angle_idx):
            th = _angles(x, self.angle_idx)
            e = e + (0.5 * self.angle_k.to(dt) * (th - self.angle_t0.to(dt)) ** 2).sum(-1)
        if self.config["repulsion"] and len(self.rep_pairs):
            p = self.pair_idx[self.rep_pairs]
            d = _norm(x[:, p[:, 0]] - x[:, p[:, 1]])
            e = e + self.kT * ((self.rep_sigma.to(dt) / d) ** 6).sum(-1)
        return e

    def net_energy(self, x: torch.Tensor) -> torch.Tensor:
        """The MLP's energy (B,) in kJ/mol."""
        f = self.features(x).to(self.net[-1].weight.dtype)
        return self.kT * self.net(f).squeeze(-1).to(x.dtype)

    def energy(self, x: Any) -> torch.Tensor:
        """E(x) (B,) in kJ/mol of bead positions (B, n_beads, 3) nm (torch, differentiable)."""
        x = torch.as_tensor(x)
        if not x.is_floating_point():
            x = x.double()
        self._check(x)
        return self.prior_energy(x) + self.net_energy(x)

    def forward(self, x: Any) -> torch.Tensor:
        return self.energy(x)

    def forces(self, x: Any, create_graph: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(E (B,) kJ/mol, F = -grad E (B, n_beads, 3) kJ/mol/nm); ``create_graph`` keeps the
        graph for training."""
        x = torch.as_tensor(x)
        x = (x.double() if not x.is_floating_point() else x).detach().requires_grad_(True)
        with torch.enable_grad():
            e = self.energy(x)
            (g,) = torch.autograd.grad(e.sum(), x, create_graph=create_graph)
        return e, -g

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path, extra: dict | None = None) -> Path:
        """Write ``{"format", "config", "state_dict", "extra"}`` (``torch.load(...,
        weights_only=True)`` reads it)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(
            {
                "format": _FORMAT,
                "config": self.config,
                "state_dict": self.state_dict(),
                "extra": extra or {},
            },
            tmp,
        )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path) -> CGForceField:
        path = Path(path)
        if not path.is_file():
            raise InputError(f"force-field file {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # not a torch file / unsafe pickle
            raise InputError(f"{str(path)!r} is not a CG force-field file") from exc
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise InputError(f"{str(path)!r} is not a CG force-field file")
        c = dict(state["config"])
        ff = cls(
            c["n_beads"],
            c["kT"],
            bonds=c["bonds"],
            angles=c["angles"],
            dihedrals=c["dihedrals"],
            hidden=c["hidden"],
            activation=c["activation"],
            repulsion=c["repulsion"],
        )
        ff.load_state_dict(state["state_dict"])
        return ff


def _as_array(x: Any) -> np.ndarray:
    if hasattr(x, "xyz"):
        x = x.xyz
    if torch.is_tensor(x):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _fit_inputs(
    ff: CGForceField, positions: Any, forces: Any, energies: Any, weights: Any, dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """:func:`fit_forces`' checked inputs: positions and forces in ``dtype``, the energies
    (float64) and the weights (mean 1) or None."""
    x = torch.as_tensor(_as_array(positions), dtype=dtype)
    f = torch.as_tensor(_as_array(forces), dtype=dtype)
    ff._check(x)
    if f.shape != x.shape:
        raise ShapeError(f"forces must have the shape of positions {tuple(x.shape)}")
    ok = torch.isfinite(x).all(-1).all(-1) & torch.isfinite(f).all(-1).all(-1)
    if not bool(ok.all()):
        raise InputError(f"{int((~ok).sum())} frame(s) have non-finite positions or forces")
    e_t = None
    if energies is not None:
        e_t = torch.as_tensor(np.asarray(energies, dtype=np.float64).reshape(-1))
        if e_t.shape != (len(x),) or not bool(torch.isfinite(e_t).all()):
            raise ShapeError(f"energies must be ({len(x)},) finite kJ/mol")
    w_t = None
    if weights is not None:
        w = check_frame_weights(np.asarray(weights).reshape(-1), len(x))
        w_t = torch.as_tensor(w / w.mean(), dtype=dtype)
    return x, f, e_t, w_t


def fit_forces(
    ff: CGForceField,
    positions: Any,
    forces: Any,
    *,
    epochs: int = 50,
    batch_size: int = 256,
    lr: float = 3e-3,
    lr_final: float = 1e-5,
    weight_decay: float = 0.0,
    val_fraction: float = 0.1,
    clip_grad: float | None = 10.0,
    dtype: torch.dtype = torch.float32,
    time_limit: float | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    energies: Any = None,
    energy_weight: float = 0.0,
    weights: Any = None,
) -> dict[str, Any]:
    """Force matching: minimise mean((-grad E(x) - F)^2) over (positions, forces) in place,
    optionally plus energy matching.

    Args:
        positions: (N, n_beads, 3) nm; forces: (N, n_beads, 3) kJ/mol/nm (mapped all-atom
            forces or teacher forces).
        epochs, batch_size, lr: Adam with a cosine-in-log decay from ``lr`` to ``lr_final``.
        val_fraction: held-out share (random, seeded); the best-validation weights are kept.
        dtype: training precision (the model is returned in float64).
        progress: ``progress(fraction, message)`` after each epoch.
        energies: (N,) target energies kJ/mol up to one constant (e.g. -kT log q of a teacher
            flow); with ``energy_weight`` > 0 (nm^-2) the loss adds ``energy_weight`` x the
            minibatch variance of E(x) - energies. Forces fix only gradients, so the free-energy
            offset between basins rests on the few samples between them; energy differences
            pin it in every sample pair. The minimiser of an exact model is unchanged.
        weights: (N,) relative sample weights >= 0 (e.g. importance weights of all-atom
            frames): the force MSE becomes the weighted mean, the mean force under the
            weighted distribution.

    Returns:
        history: ``train_mse``, ``val_mse`` per epoch in (kJ/mol/nm)^2 (the loss: with energy
        matching, force MSE + ``energy_weight`` x energy variance), ``val_energy_mse``
        ((kJ/mol)^2, with energies), ``best_val_mse``, ``epochs_run``, ``time`` (s),
        ``stop_reason``.
    """
    if epochs < 1 or batch_size < 1:
        raise InputError("epochs and batch_size must be >= 1")
    x, f, e_t, w_t = _fit_inputs(
        ff, positions, forces, energies if energy_weight > 0 else None, weights, dtype
    )
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    n = len(x)
    perm = torch.randperm(n, generator=gen)
    n_val = round(val_fraction * n) if n > 10 else 0
    val, train = perm[:n_val], perm[n_val:]
    buffers = {k: v.detach().clone() for k, v in ff.named_buffers()}  # keep float64 priors
    ff.to(dtype)
    opt = torch.optim.Adam(ff.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = max(1, math.ceil(len(train) / batch_size))
    total = epochs * steps_per_epoch
    ratio = lr_final / lr if lr > 0 else 1.0
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: ratio ** (0.5 * (1 - math.cos(math.pi * min(s, total) / total)))
    )

    last_e: list[float] = [math.nan]

    def mse(idx: torch.Tensor, graph: bool) -> torch.Tensor:
        e, pred = ff.forces(x[idx], create_graph=graph)
        err = ((pred - f[idx]) ** 2).mean((-2, -1))
        loss = (
            err.mean() if w_t is None else (w_t[idx] * err).sum() / w_t[idx].sum().clamp_min(1e-12)
        )
        if e_t is not None:
            d = e.double() - e_t[idx]
            e_mse = ((d - d.mean()) ** 2).mean()
            last_e[0] = float(e_mse.detach())
            loss = loss + float(energy_weight) * e_mse.to(loss.dtype)
        return loss

    history: dict[str, Any] = {"train_mse": [], "val_mse": [], "lr": [], "val_energy_mse": []}
    best, best_state = math.inf, None
    t0 = time.perf_counter()
    stop = "epochs"
    for epoch in range(epochs):
        ff.train()
        order = train[torch.randperm(len(train), generator=gen)]
        s, m = 0.0, 0
        for b in range(steps_per_epoch):
            idx = order[b * batch_size : (b + 1) * batch_size]
            loss = mse(idx, True)
            if not torch.isfinite(loss):
                raise TrainingError(f"non-finite force-matching loss at epoch {epoch + 1}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad:
                torch.nn.utils.clip_grad_norm_(ff.parameters(), clip_grad)
            opt.step()
            sched.step()
            s += float(loss.detach()) * len(idx)
            m += len(idx)
            if time_limit is not None and time.perf_counter() - t0 > time_limit:
                stop = "time_limit"
                break
        ff.eval()
        history["train_mse"].append(s / max(m, 1))
        history["lr"].append(opt.param_groups[0]["lr"])
        if n_val:
            v, ve = 0.0, 0.0
            for i in range(0, n_val, 4096):
                v += float(mse(val[i : i + 4096], False).detach()) * len(val[i : i + 4096])
                ve += last_e[0] * len(val[i : i + 4096])
            metric = v / n_val
            history["val_energy_mse"].append(ve / n_val)
        else:
            metric = history["train_mse"][-1]
        history["val_mse"].append(metric if n_val else math.nan)
        if metric < best:
            best = metric
            best_state = {k: v.detach().clone() for k, v in ff.state_dict().items()}
        if progress is not None:
            progress((epoch + 1) / epochs, f"force matching epoch {epoch + 1}/{epochs}")
        if stop != "epochs":
            break
    if best_state is not None:
        ff.load_state_dict(best_state)
    ff.to(torch.float64)
    for k, v in buffers.items():
        ff.get_buffer(k).copy_(v)
    history.update(
        best_val_mse=best,
        epochs_run=len(history["train_mse"]),
        time=time.perf_counter() - t0,
        stop_reason=stop,
    )
    return history
