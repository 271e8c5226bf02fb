"""What an adaptive study's posteriors are made of (issue 18, DESIGN section 8): the
grid they live on, the study's noise levels and prior, the chooser's candidates, and
how a stored answer reads as an observation of its pair's curve. Shared by the writes
(services.adaptive) and the reads (selectors); no queries."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
from django.conf import settings

from adaptive.model import DEFAULT_NOISE, InterfaceModel, build_model, make_grid

from .models import Session, Study

# The grid every stored log posterior lives on (m step 0.01, 16 slopes 1..60).
GRID = make_grid()


# Sessions whose answers an adaptive study's posteriors leave out: previews (the
# researcher's preview link, Prolific's preview) are no participants. Pilots and
# simulated people count (pilot or simulate in a copy).
NOT_IN_POSTERIOR = (Session.Kind.PREVIEW,)


def counts_in_posterior(kind: str) -> bool:
    """Whether a session of `kind` (Session.Kind) adds its answers to the posteriors."""
    return kind not in NOT_IN_POSTERIOR


def study_noise(study: Study) -> dict:
    """The study's stored noise levels (adaptive.hmix_fit.fit_noise's dict), with the
    defaults (adaptive.model.DEFAULT_NOISE) for whatever it leaves out."""
    noise = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEFAULT_NOISE.items()}
    for key, value in (study.adaptive_noise or {}).items():
        if isinstance(value, dict) and isinstance(noise.get(key), dict):
            noise[key].update(value)
        else:
            noise[key] = value
    return noise


@functools.lru_cache(maxsize=1)
def hmix_noise() -> dict | None:
    """Noise levels fitted to the published H-Mix data (adaptive.hmix_fit.fit_noise on
    SHARED_DATA_DIR/hmix; a few seconds, once per process); None without the data."""
    from adaptive.hmix_fit import fit_noise, load_hmix

    try:
        return fit_noise(load_hmix(Path(settings.SHARED_DATA_DIR) / "hmix"))
    except (FileNotFoundError, ValueError):
        return None


def fill_noise(study: Study) -> None:
    """Give an adaptive study without noise levels H-Mix's fitted ones (the defaults
    where the H-Mix data is absent); the caller saves the study."""
    if study.is_adaptive and not study.adaptive_noise:
        study.adaptive_noise = copy.deepcopy(hmix_noise() or DEFAULT_NOISE)


def prior_log_posterior(study: Study) -> np.ndarray:
    """The log prior (G,) every pair starts from: Gaussian on m (the noise's prior),
    flat on log k unless the prior gives log_k_mean and log_k_sd
    (adaptive.simulate.fit_prior)."""
    prior = study_noise(study)["prior"]
    return np.log(
        GRID.prior(prior["m_mean"], prior["m_sd"], prior.get("log_k_mean"), prior.get("log_k_sd"))
    )


def candidates(study: Study, grid_lams: list[float]) -> np.ndarray:
    """The chooser's candidate values: the set's lams (2AFC, Infer), start values on the
    set's grid strictly inside 0..1 (Construct), one placeholder (Select-Shuffled)."""
    if study.interface == "construct":
        return np.array([lam for lam in grid_lams if 0.0 < lam < 1.0])
    if study.interface == "select_shuffled":
        return np.array([np.nan])
    return np.array(sorted({round(float(x), 4) for x in study.stimulus_set.lams}))


def observation(
    interface: str, stimulus_lam: float | None, response: dict, lam: float | None
) -> tuple[float | None, float] | None:
    """A stored answer as the posterior reads it: (candidate value, answer) with lam the
    share of the pair's first class. 2AFC: (stimulus lam, 1 when class 1 was judged
    dominant); Infer: (stimulus lam, perceived share); Construct: (start lam, final
    lam); Select-Shuffled: (None, chosen lam). None for an answer without a lam."""
    if interface == "afc":
        return stimulus_lam, 1.0 if response.get("choice") == 1 else 0.0
    if lam is None:
        return None
    if interface == "infer":
        return stimulus_lam, float(lam)
    if interface == "construct":
        return float(response["start_lam"]), float(lam)
    return None, float(lam)


def judgment_loglik(
    model: InterfaceModel, interface: str, stimulus_lam, response: dict, lam
) -> np.ndarray | None:
    """log P(answer | grid cell) (G,) of one stored answer, or None where the posterior
    cannot read it (no lam, or a value that is not a candidate: never served adaptively)."""
    obs = observation(interface, stimulus_lam, response, lam)
    if obs is None:
        return None
    try:
        return model.loglik(*obs)
    except ValueError:
        return None


def interface_model(study: Study, grid_lams: list[float]) -> InterfaceModel:
    """The likelihood table of the study's interface over its candidates, under its noise."""
    return build_model(study.interface, GRID, study_noise(study), candidates(study, grid_lams))
