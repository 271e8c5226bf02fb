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

from .models import PairPosterior, Session, Study

# The grid every stored log posterior lives on (m step 0.01, 16 slopes 1..60).
GRID = make_grid()


# The posterior pool (PairPosterior.Pool) each kind of session adds its answers to:
# only live sessions are research data (reports.counted), so pilots and simulated
# participants keep posteriors of their own and never move the live one, from which
# live participants' trials are chosen and human_fit's labels may be read. Previews
# (the researcher's preview link, Prolific's preview) add to none.
POOL_OF_KIND = {
    Session.Kind.LIVE: PairPosterior.Pool.LIVE,
    Session.Kind.PILOT: PairPosterior.Pool.PILOT,
    Session.Kind.SIMULATED: PairPosterior.Pool.SIMULATED,
    Session.Kind.PREVIEW: None,
}


def pool_of(kind: str) -> str | None:
    """The pool a session of `kind` (Session.Kind) adds its answers to; None: none."""
    return POOL_OF_KIND.get(kind)


def choice_pool(kind: str) -> str:
    """The pool whose posteriors choose the trials of a session of `kind`: its own, or
    for a preview the live one (it shows what a participant would see)."""
    return pool_of(kind) or PairPosterior.Pool.LIVE


def kinds_in_pool(pool: str) -> list[str]:
    """The session kinds whose answers make up `pool`."""
    return [kind for kind, into in POOL_OF_KIND.items() if into == pool]


def log_posterior_from_array_send(data: bytes | memoryview) -> np.ndarray:
    """A stored log posterior read as ``array_send(log_posterior)`` (PostgreSQL's binary
    array format: ndim, has-null flag, element type, then (size, lower bound) per
    dimension, then per element a 4-byte length and the 8-byte big-endian float8):
    (G,) float64. Parsing the text form of 1,616 floats cost more than the query.
    Raises ValueError for a NULL element or more than one dimension."""
    data = bytes(data)
    ndim = int.from_bytes(data[:4], "big")
    if ndim > 1:
        raise ValueError(f"a log posterior has one dimension, not {ndim}")
    elements = np.frombuffer(data, dtype=[("n", ">i4"), ("v", ">f8")], offset=12 + 8 * ndim)
    if (elements["n"] != 8).any():
        raise ValueError("a stored log posterior holds NULL")
    return elements["v"].astype(np.float64)


def posterior_column(vendor: str) -> str:
    """How to select the stored log posterior cheaply: its binary array on PostgreSQL,
    the blob elsewhere (read it with ``read_log_posterior``)."""
    return "array_send(log_posterior)" if vendor == "postgresql" else "log_posterior"


def read_log_posterior(value: bytes | memoryview, vendor: str) -> np.ndarray:
    """A value selected with ``posterior_column(vendor)`` as a (G,) float64 array."""
    if vendor == "postgresql":
        return log_posterior_from_array_send(value)
    return np.frombuffer(bytes(value), dtype="<f8").astype(np.float64)


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


def loglik_sql_text(
    model: InterfaceModel, interface: str, stimulus_lam, response: dict, lam
) -> str:
    """``judgment_loglik`` as a PostgreSQL float8[] literal ('{...}', every float
    written exactly by repr), for the save to add inside its statement; '{}' where the
    posterior cannot read the answer (the save adds nothing then). Cached per model,
    candidate and outcome: the text of 1,616 floats costs more than the save's query."""
    obs = observation(interface, stimulus_lam, response, lam)
    if obs is None:
        return "{}"
    try:
        key = (model.candidate_index(obs[0]), model.outcome_index(obs[1]))
    except ValueError:
        return "{}"
    texts = model.__dict__.setdefault("_sql_texts", {})
    text = texts.get(key)
    if text is None:
        text = "{" + ",".join(map(repr, model.log_table[key].tolist())) + "}"
        texts[key] = text
    return text
