import numpy as np

from boltzgen import plots


def test_plots_write_png_files(tmp_path):
    rng = np.random.default_rng(0)
    phi, psi = rng.uniform(-np.pi, np.pi, (2, 500))
    log_w = rng.normal(size=500)
    log_w[0] = -np.inf  # an infinite-energy sample must not break the plots
    paths = [
        plots.ramachandran(
            {"MD": (phi, psi, None), "flow": (phi, psi, log_w)}, tmp_path / "rama.png"
        ),
        plots.free_energy_profile(
            {"flow": (np.linspace(-3, 3, 10), np.arange(10.0), np.ones(10))}, tmp_path / "f.png"
        ),
        plots.log_weight_histogram(log_w, tmp_path / "w.png", ess=0.5),
        plots.training_curves({"train": [3, 2, 1], "val": [3.5, 2.5]}, tmp_path / "t.png"),
    ]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
