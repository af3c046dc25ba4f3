"""The thresholds the verdict applies, one place, each with why."""

from __future__ import annotations

# Vehtari et al. (2024), "Pareto smoothed importance sampling", JMLR 25(72): above k = 0.7 the
# importance-sampling estimate's error converges too slowly to be usable whatever the number of
# draws, and below ~2200 draws the usable limit is 1 - 1/log10(S) (see k_hat_threshold).
K_HAT_MAX = 0.7
# A stratum with fewer draws has a k-hat threshold of at most 0.5 (S = 100), and its bootstrap
# error is itself uncertain by more than 1/sqrt(2 S) = 7 %.
MIN_PARTICLES_PER_STRATUM = 100
# Kish ESS (a count) per stratum: with n_eff draws the relative error of the stratum's mass is
# about 1/sqrt(n_eff) (> 0.2 kT below 25) and the error bar itself is uncertain by
# 1/sqrt(2 n_eff) (> 15 % below 20): too few to state either.
MIN_ESS_PER_STRATUM = 20.0
# Only states holding at least 1 % of the data's (or the samples') mass are judged: a state
# with less shifts dF between states holding >= 10 % each by under 0.1 kT even when missed.
MIN_STATE_MASS = 0.01
# A state the flow gives less than a tenth of the data's mass is missed: reweighting cannot
# restore a factor of ten from the handful of draws the flow puts there.
MISSING_STATE_MASS_RATIO = 0.1
# Data vs samples, |dF_data - dF_samples| / combined sigma: 3 sigma is a 0.27 % false alarm
# for honest Gaussian errors, and the coverage benchmark asks that every miss beyond 3 combined
# sigma is flagged.
AGREEMENT_Z_MAX = 3.0
# Independent flows: chi^2 p-value of their estimates about the weighted mean; 0.0027 is the
# two-sided 3 sigma tail (K = 2 reduces to |z| > 3), the same false-alarm rate as above.
# Milder spread is not a verdict but widens the combined error (combine_estimates).
CONSISTENCY_P_MIN = 0.0027
# Clashing draws get weight 0 and do not bias the estimate; only when almost all draws clash
# is the flow so far from the target that its few valid draws cannot be trusted to cover it.
CLASH_FRACTION_MAX = 0.9
# A refinement cut at its time limit reweights its particles to the target in one jump. The
# jump is an importance-sampling step like any other: judged by the k-hat of its weights
# (before they are resampled) and by their Kish ESS, which must reach the per-stratum particle
# floor: at 100 effective particles a stratum's log Z from the jump is good to about 0.1 kT.
CUT_MIN_ESS = 100.0
