"""The Boltzmann generator: internal coordinates + normalizing flow + OpenMM energy.

Densities live on Cartesian positions modulo rigid-body motion (``rigid="remove"``), so

    log q(x) = log q_flow(u(x)) + log|det du/dx|,     log w(x) = -u_E(x) - log q(x),

with u(x) the flow's unit-box coordinates and u_E = E/kT the reduced energy. The constant
rigid-body volume (see :mod:`boltzgen.coordinates.transform`) is the same for q and the
Boltzmann density, so it cancels from importance weights, ESS and free-energy differences;
log Z estimates are relative to it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from boltzgen.coordinates import ICNormalizer
from boltzgen.errors import InputError
from boltzgen.flows import Flow, build_flow
from boltzgen.generator.config import FlowConfig, make_config
from boltzgen.generator.data import as_training_data

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


class BoltzmannGenerator(nn.Module):
    """A normalizing flow over a molecule's internal coordinates, with its target energy.

    Build with :meth:`build`; train with :meth:`fit`; draw weighted samples with :meth:`sample`;
    persist with :meth:`save` / :meth:`load`. ``config`` holds everything needed to rebuild the
    architecture (JSON-able).
    """

    def __init__(self, system, coords: ICNormalizer, flow: Flow, config: dict[str, Any]):
        super().__init__()
        self.system = system
        self.coords = coords
        self.flow = flow
        self.config = dict(config)
        self._energy = None
        self.history: dict[str, list[float]] = {}

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls,
        system,
        flow: str | None = None,
        data: Any = None,
        *,
        config: FlowConfig | dict[str, Any] | None = None,
        **options: Any,
    ) -> BoltzmannGenerator:
        """Generator for ``system``; the architecture is a :class:`FlowConfig` (``config``, a
        dict of its fields, and/or its fields as keywords, e.g. ``flow="spline", n_layers=8``).

        Bond/angle bounds of the unit box come from ``data`` (min/max plus ``margin`` of the
        range) when ``bounds="data"`` (default when data are given) or from the force field's
        harmonic terms, equilibrium +- ``k_sigma`` sigma (``bounds="forcefield"``, the default
        without data; needed for reverse-KL training from scratch). ``tails="logistic"`` makes
        those bounds soft (:mod:`boltzgen.coordinates.normalize`): the density then decays
        smoothly past them instead of stopping at a wall, which flow-driven MD needs.
        """
        if flow is not None:
            options["flow"] = flow
        cfg = make_config(FlowConfig, config, **options)
        if cfg.bounds is None:
            cfg.bounds = "data" if data is not None else "forcefield"
        torch.manual_seed(cfg.seed)
        coords = ICNormalizer.from_topology(system.topology, rigid=cfg.rigid, tails=cfg.tails)
        if cfg.bounds == "data":
            if data is None:
                raise InputError("bounds='data' needs training data")
            td = as_training_data(data, system.n_atoms)
            coords.fit_bounds(td.positions, margin=cfg.margin)
        else:
            coords.fit_bounds_from_forcefield(system.openmm_system, system.temperature, cfg.k_sigma)
        config_dict = cfg.model_dump(mode="json")
        gen = cls(system, coords, cls._make_flow(coords, config_dict), config_dict)
        return gen.to(_DTYPES[cfg.dtype])

    @staticmethod
    def _make_flow(coords: ICNormalizer, config: dict[str, Any]) -> Flow:
        cfg = FlowConfig.model_validate(config)
        return build_flow(
            coords.dim,
            coords.circular,
            kind=cfg.flow,
            n_layers=cfg.n_layers,
            hidden=cfg.hidden,
            n_components=cfg.n_components,
            n_bins=cfg.n_bins,
            base=cfg.base,
            masks=cfg.masks,
            groups=coords.generation_groups() if cfg.masks == "hierarchical" else None,
        )

    @property
    def flow_config(self) -> FlowConfig:
        """The architecture as a :class:`FlowConfig`."""
        return FlowConfig.model_validate(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return _DTYPES[self.config["dtype"]]

    def with_dtype(self, dtype: str) -> BoltzmannGenerator:
        """A copy in ``dtype`` ("float32" | "float64") sharing the system and energy model."""
        if dtype == self.config["dtype"]:
            return self
        state = self.checkpoint_state()
        state["config"] = {**self.config, "dtype": dtype}
        state["state_dict"] = {
            k: v.to(_DTYPES[dtype]) if v.is_floating_point() else v
            for k, v in state["state_dict"].items()
        }
        other = type(self).from_state(state, self.system)
        other._energy = self._energy
        return other

    @property
    def dim(self) -> int:
        return self.coords.dim

    @property
    def energy(self):
        """The :class:`~boltzgen.energy.EnergyModel` of the system, created on first use on the
        platform measured fastest for it (:func:`~boltzgen.energy.fastest_platform`)."""
        if self._energy is None:
            from boltzgen.energy import EnergyModel, fastest_platform

            self._energy = EnergyModel(self.system, platform=fastest_platform(self.system))
        return self._energy

    @energy.setter
    def energy(self, model) -> None:
        self._energy = model

    # ------------------------------------------------------------------ densities
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log q(x) (B,) of positions x (B, n_atoms, 3) nm (-inf outside the box support)."""
        u, logdet = self.coords(torch.as_tensor(x, dtype=self.dtype))
        finite = torch.isfinite(logdet)
        lq = self.flow.log_prob(u) + torch.where(finite, logdet, torch.zeros_like(logdet))
        return torch.where(finite, lq, torch.full_like(lq, -math.inf))

    def force(
        self, x: torch.Tensor, create_graph: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log q(x) (B,), grad_x log q(x) (B, n_atoms, 3) in 1/nm): the flow's force in kT/nm.

        With ``create_graph`` the force is differentiable w.r.t. the parameters (force matching).
        """
        x = torch.as_tensor(x, dtype=self.dtype).detach().requires_grad_(True)
        with torch.enable_grad():
            lq = self.log_prob(x)
            (g,) = torch.autograd.grad(lq.sum(), x, create_graph=create_graph)
        return lq, g

    def sample_positions(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Differentiable draw: (x (n, n_atoms, 3) nm, log q(x) (n,))."""
        u, log_q_u = self.flow.sample(int(n))
        x, logdet_inv = self.coords.inverse(u)
        return x, log_q_u - logdet_inv

    @torch.no_grad()
    def sample(
        self,
        n: int,
        batch_size: int = 4096,
        energies: bool = True,
        refine: bool | dict[str, Any] | None = None,
    ):
        """Draw ``n`` samples with log q, reduced energies (kT) and log importance weights.

        Args:
            refine: ``True`` or a dict of :func:`boltzgen.refine` options: move the draws
                toward the Boltzmann distribution by annealed SMC with OpenMM forces.

        Returns:
            :class:`boltzgen.samples.Samples`; configurations with non-finite energy get
            log-weight -inf (counted by the energy model, never dropped silently). With
            ``refine``: :class:`boltzgen.refinement.RefinedSamples` (also a ``Samples``) with
            ``log_z``, ``n_energy_evals`` and the SMC ``history``.
        """
        from boltzgen.samples import Samples

        if int(n) < 1:
            raise InputError(f"number of samples must be >= 1, got {n}")
        if refine:
            return refined_draws(self, n, batch_size, refine)
        xs, lqs, us = [], [], []
        for start in range(0, int(n), int(batch_size)):
            m = min(int(batch_size), int(n) - start)
            x, lq = self.sample_positions(m)
            xs.append(x.double())
            lqs.append(lq.double())
            if energies:
                us.append(self.energy(x.double()).detach())
        x = torch.cat(xs).cpu().numpy()
        log_q = torch.cat(lqs).cpu().numpy()
        if energies:
            u = torch.cat(us).cpu().numpy()
            log_w = np.where(np.isfinite(u), -u - log_q, -np.inf)
        else:
            u = np.full(len(x), np.nan)
            log_w = np.full(len(x), np.nan)
        return Samples(
            positions=x.astype(np.float32),
            log_q=log_q,
            reduced_energy=u,
            log_weights=log_w,
            topology=self.system.topology,
        )

    # ------------------------------------------------------------------ training
    def fit(self, data: Any = None, loss: str | None = None, **kwargs):
        """Train; ``loss`` ("nll" | "kl" | "mixed" | "force" | "anneal") and ``**kwargs`` are
        :class:`TrainConfig` fields (or pass ``config=``, ``checkpoint=``, ``state_fn=``); see
        :func:`boltzgen.generator.training.fit`. Energy-based losses report each backbone
        state's flow mass against the data's in ``history["state_guard"]``."""
        from boltzgen.generator.training import fit

        return fit(self, data, loss=loss, **kwargs)

    # ------------------------------------------------------------------ persistence
    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "format": "boltzgen.BoltzmannGenerator/1",
            "config": self.config,
            "system": self.system.to_spec(),
            "state_dict": self.state_dict(),
            "history": self.history,
        }

    def save(self, path: str | Path) -> Path:
        """Write architecture, weights, bounds, system spec and history to ``path`` (torch)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(self.checkpoint_state(), tmp)
        tmp.replace(path)  # atomic: a crash never leaves half a model
        return path

    @classmethod
    def from_state(cls, state: dict[str, Any], system=None) -> BoltzmannGenerator:
        if state.get("format") != "boltzgen.BoltzmannGenerator/1":
            raise InputError("not a boltzgen model file (unknown format tag)")
        if system is None:
            from boltzgen.systems import System

            system = System.from_spec(state["system"])
        config = state["config"]
        coords = ICNormalizer.from_topology(
            system.topology, rigid=config["rigid"], tails=config.get("tails", "none")
        )
        gen = cls(system, coords, cls._make_flow(coords, config), config)
        gen = gen.to(_DTYPES[config["dtype"]])
        try:
            gen.load_state_dict(state["state_dict"])
        except RuntimeError as exc:
            raise InputError(f"model does not fit this system: {exc}") from exc
        gen.history = dict(state.get("history", {}))
        return gen

    @classmethod
    def load(cls, path: str | Path, system=None) -> BoltzmannGenerator:
        """Load a model saved by :meth:`save`; ``system`` defaults to the saved system spec."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"model file {str(path)!r} does not exist")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle, zip and torch errors alike: not a model file
            name = exc.__class__.__name__
            raise InputError(f"{str(path)!r} is not a boltzgen model file ({name})") from exc
        if not isinstance(state, dict):
            raise InputError(f"{str(path)!r} is not a boltzgen model file")
        return cls.from_state(state, system)


def refined_draws(proposal, n: int, batch_size: int, refine: bool | dict[str, Any]):
    """``proposal.sample(n, refine=...)``: its ``n`` draws moved toward the Boltzmann
    distribution by :func:`boltzgen.refine` with the options in ``refine`` (a dict, or
    ``True`` for the defaults); ``proposal`` is a generator or a
    :class:`~boltzgen.generator.mixture.FlowMixture`."""
    from boltzgen.refinement import refine as _refine

    if not isinstance(refine, (bool, dict)):
        raise InputError(f"refine must be a bool or a dict of options, got {refine!r}")
    opts = {} if refine is True else dict(refine)
    return _refine(proposal.sample(n, batch_size, energies=False), proposal, **opts)
