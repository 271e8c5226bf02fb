"""H-Mix judgments in pair-canonical form, and the noise levels fitted to them. No Django.

An unordered class pair is written (class_a, class_b) with the names sorted; lam is
always the share of class_a, so a stimulus recorded the other way round has its lam,
answer and start value mirrored (x -> 1 - x). The fitted noise is a plain dict that can
be stored as JSON with a study and fed to ``adaptive.model.build_model``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from elicitation.hmix import READERS

from .model import DEFAULT_NOISE, INFER_BINS, MIDPOINT_LAMS, _bin_probs


@dataclass(frozen=True)
class Observation:
    """One H-Mix judgment: ``value`` is the stimulus lam (Infer) or start value (Construct)."""

    interface: str
    subject: str
    pair: tuple[str, str]
    value: float | None
    answer: float
    is_repeat: bool
    stimulus: str
    confidence: float | None


def _canonical(class1: str, class2: str) -> tuple[tuple[str, str], bool]:
    return (class1, class2) if class1 <= class2 else (class2, class1), class1 > class2


def load_hmix(
    folder: Path, interfaces=("infer", "construct", "select_shuffled")
) -> list[Observation]:
    """The H-Mix judgments of ``interfaces`` in pair-canonical form, in file order.

    ``folder`` is ../shared/data/hmix; FileNotFoundError when a CSV is missing.
    """
    out: list[Observation] = []
    for interface in interfaces:
        for t in READERS[interface](Path(folder)):
            pair, flip = _canonical(t.pair.class1, t.pair.class2)

            def f(x, flip=flip):
                return None if x is None else (1.0 - x if flip else x)

            if interface == "infer":
                value = f(t.stimulus_lam)
            elif interface == "construct":
                value = f(t.response["start_lam"])
            else:
                value = None
            out.append(
                Observation(
                    interface,
                    t.subject,
                    pair,
                    None if value is None else round(value, 4),
                    round(f(t.lam), 4),
                    t.is_repeat,
                    t.pair.name + ("" if value is None else f"@{t.stimulus_lam}"),
                    t.confidence,
                )
            )
    return out


def _fit_binned(answers, means, edges, n_bins, sds, lapses) -> tuple[float, float]:
    """Grid maximum likelihood of (sd, lapse) for binned, clipped Gaussian answers."""
    outcome = np.clip(np.rint(np.asarray(answers) * (n_bins - 1)), 0, n_bins - 1).astype(int)
    best, best_ll = (sds[0], lapses[0]), -np.inf
    rows = np.arange(len(outcome))
    for sd in sds:
        p = _bin_probs(np.asarray(means), sd, edges)[rows, outcome]
        for lapse in lapses:
            ll = np.log(np.maximum((1 - lapse) * p + lapse / n_bins, 1e-300)).sum()
            if ll > best_ll:
                best, best_ll = (float(sd), float(lapse)), ll
    return best


def _person_sd(subjects, residuals, sd) -> float:
    """Spread of per-person mean offsets beyond what response noise explains."""
    by_subject = defaultdict(list)
    for s, r in zip(subjects, residuals, strict=True):
        by_subject[s].append(r)
    means = np.array([np.mean(v) for v in by_subject.values()])
    sampling = np.mean([sd**2 / len(v) for v in by_subject.values()])
    return float(np.sqrt(max(means.var() - sampling, 0.0)))


def fit_noise(observations: list[Observation]) -> dict:
    """Noise levels per interface fitted to H-Mix observations; a JSON-storable dict.

    Each interface's answers are compared with their group mean (Infer: per pair and
    stimulus lam; Construct / Select-Shuffled: per pair); the sd and lapse rate are the
    grid maximum-likelihood values of the same binned, clipped Gaussian-plus-lapse model
    the posterior uses, so they include person-to-person spread (``person_sd`` reports
    that part alone). Construct's ``start_bias`` is the least-squares slope of the
    answer on (start - 0.5) (anchoring). 2AFC has no H-Mix data: its lapse is the
    default. The prior on m is the spread of the pair means of the midpoint interfaces.
    ValueError when an interface has no observations.
    """
    noise: dict = {"version": 1, "afc": dict(DEFAULT_NOISE["afc"]), "n": {}}
    sds, lapses = np.round(np.arange(0.04, 0.41, 0.01), 2), np.round(np.arange(0, 0.31, 0.01), 2)
    groups: dict[str, dict] = {}
    for interface in ("infer", "construct", "select_shuffled"):
        obs = [o for o in observations if o.interface == interface]
        if not obs:
            raise ValueError(f"no {interface} observations to fit")
        noise["n"][interface] = len(obs)
        key = (lambda o: (o.pair, o.value)) if interface == "infer" else (lambda o: o.pair)
        by_group = defaultdict(list)
        for o in obs:
            by_group[key(o)].append(o.answer)
        group_mean = {g: float(np.mean(v)) for g, v in by_group.items()}
        groups[interface] = group_mean
        answers = np.array([o.answer for o in obs])
        means = np.array([group_mean[key(o)] for o in obs])
        entry: dict = {}
        if interface == "construct":
            starts = np.array([o.value for o in obs]) - 0.5
            bias = float(starts @ (answers - means) / (starts @ starts))
            entry["start_bias"] = round(bias, 4)
            means = means + bias * starts
        if interface == "infer":
            inner = (np.arange(INFER_BINS - 1) + 0.5) / (INFER_BINS - 1)
            edges, n_bins = np.concatenate([[-np.inf], inner, [np.inf]]), INFER_BINS
        else:
            edges = np.concatenate([[-np.inf], MIDPOINT_LAMS[:-1] + 0.05, [np.inf]])
            n_bins = len(MIDPOINT_LAMS)
        sd, lapse = _fit_binned(answers, means, edges, n_bins, sds, lapses)
        entry.update(sd=sd, lapse=lapse)
        entry["person_sd"] = round(_person_sd([o.subject for o in obs], answers - means, sd), 4)
        noise[interface] = entry
    pair_means = np.array(
        list(groups["construct"].values()) + list(groups["select_shuffled"].values())
    )
    noise["prior"] = {
        "m_mean": round(float(pair_means.mean()), 4),
        "m_sd": round(float(max(pair_means.std(), 0.05) * 2), 4),  # widened: a weak prior
    }
    conf = [(o.answer, o.confidence) for o in observations if o.confidence is not None]
    if conf:
        a = np.array(conf)
        x = np.abs(a[:, 0] - 0.5) * 2
        slope, intercept = np.polyfit(x, a[:, 1], 1)
        resid = a[:, 1] - (intercept + slope * x)
        noise["confidence"] = {
            "intercept": round(float(intercept), 4),
            "slope": round(float(slope), 4),
            "sd": round(float(resid.std()), 4),
        }
    return noise
