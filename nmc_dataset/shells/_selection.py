"""Choosing the shell model by what users see: descriptors of sampled vs held-out particles.

:func:`select_model` splits the measured particles at random into a training part and a
hold-out part (``holdout`` of them, default 25 %), fits every candidate model on the training
part, samples ``n_sample`` valid shells from each and compares their six descriptors (d_max,
compactness, aspect ratio, sphericity, volume, area) with those of the held-out particles: the
two-sample Kolmogorov-Smirnov statistic and the Wasserstein-1 distance (also divided by the
held-out standard deviation, comparable between descriptors). The held-out mean log-likelihood
of every candidate and the AIC of the parametric one (``independent``) are tabled next to them.

The model kept is the candidate with the smallest *largest* KS over the six descriptors (a
model must reproduce every descriptor), ties broken by the mean KS; it is then refitted on all
particles. The whole table goes into the model file (``model_selection``) and the fit report.
A chosen model with any KS above 0.1 is reported with a warning; with ``h`` held-out and ``n``
sampled shells, KS values below ``1.36 sqrt(1/h + 1/n)`` (95 % critical value) are noise.

Too few particles for a hold-out (fewer than :data:`MIN_HOLDOUT` held out or fewer than
:data:`MIN_TRAIN` left to fit) is not an error: the requested model (``independent`` for
``"auto"``) is fitted on all particles, the table says why no selection was made and how many
particles it needs, and a warning is logged.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import ks_2samp, wasserstein_distance

from nmc_dataset._util import log
from nmc_dataset.errors import InputError
from nmc_dataset.shells._descriptors import DESCRIPTORS, shell_descriptors
from nmc_dataset.shells._model import ShellModel

__all__ = [
    "CANDIDATES",
    "KS_WARN",
    "MIN_HOLDOUT",
    "MIN_TRAIN",
    "fit_candidate",
    "format_table",
    "needed_particles",
    "select_model",
]

#: candidate name -> ShellModel.fit keyword arguments.
CANDIDATES = {
    "independent": {"kind": "independent"},
    "scale_mixture": {"kind": "scale_mixture", "n_bands": 1},
    "scale_mixture_bands": {"kind": "scale_mixture", "n_bands": 3},
    "ellipsoid_mixture": {"kind": "ellipsoid_mixture", "n_bands": 3},
}
MIN_HOLDOUT = 10
MIN_TRAIN = 30
KS_WARN = 0.1


def needed_particles(holdout: float) -> int:
    """Smallest particle count with ``MIN_HOLDOUT`` held out and ``MIN_TRAIN`` left to fit."""
    n = MIN_HOLDOUT + MIN_TRAIN
    while not (round(holdout * n) >= MIN_HOLDOUT and n - round(holdout * n) >= MIN_TRAIN):
        n += 1
    return n


def fit_candidate(name: str, coeffs, voxel_size_um: float, **kw) -> ShellModel:
    """Fit candidate ``name`` of :data:`CANDIDATES` (extra keywords go to :meth:`ShellModel.fit`).

    Parameters
    ----------
    name : str
        A key of :data:`CANDIDATES` (a ``kind``/``families`` combination).
    coeffs : (n, (L+1)**2) float array
        Measured per-particle SH coefficients (voxels).
    voxel_size_um : float
        µm per voxel of the CT the coefficients were measured on.
    **kw
        Passed to :meth:`ShellModel.fit` (e.g. ``selection``, ``source``, ``particle_table``).

    Returns
    -------
    ShellModel
        The fitted model.

    Raises
    ------
    InputError
        If ``name`` is not a known candidate.
    """
    if name not in CANDIDATES:
        raise InputError(f"unknown shell model {name!r} (choose from auto, {', '.join(CANDIDATES)})")
    return ShellModel.fit(coeffs, voxel_size_um, **CANDIDATES[name], **kw)


def _score(desc_hold: dict, desc_sim: dict) -> dict:

    out = {}
    for k in DESCRIPTORS:
        a, b = desc_hold[k][np.isfinite(desc_hold[k])], desc_sim[k][np.isfinite(desc_sim[k])]
        w = float(wasserstein_distance(a, b))
        sd = float(np.std(a))
        out[k] = {"ks": float(ks_2samp(a, b).statistic), "w1": w, "w1_over_std": w / sd if sd > 0 else None}
    return out


def select_model(
    coeffs,
    voxel_size_um: float,
    *,
    rng: np.random.Generator,
    holdout: float = 0.25,
    candidates=tuple(CANDIDATES),
    n_sample: int | None = None,
    subdivisions: int = 3,
    fallback: str = "independent",
    **fit_kw,
) -> tuple[ShellModel, dict]:
    """Fit every candidate on part of the particles, score it on the rest, refit the best on all.

    Parameters
    ----------
    coeffs : ndarray (n, K)
        Measured coefficients (voxels).
    voxel_size_um : float
        µm per voxel of the CT the coefficients were measured on.
    rng : numpy.random.Generator
        Draws the split and the sampled shells.
    holdout : float
        Fraction of particles held out (0 < holdout < 1).
    candidates : sequence of str
        Names from :data:`CANDIDATES`.
    n_sample : int, optional
        Shells sampled per candidate (default ``max(1000, 2.5 h)``).
    subdivisions : int
        Icosphere of the descriptor triangulation (3: 642 vertices).
    fallback : str
        Model fitted on all particles when there are too few for a hold-out.
    **fit_kw
        Passed to :meth:`ShellModel.fit` (``selection``, ``star_volume_fraction``, ...).

    Returns
    -------
    model : ShellModel
        The chosen model fitted on all particles, with ``selection_table`` set.
    table : dict
        ``chosen``, ``criterion``, ``n_train``, ``n_holdout``, ``n_sample``, ``ks_noise_95``,
        ``candidates`` (per name: ``descriptors`` (KS, W1 per descriptor), ``max_ks``, ``mean_ks``,
        ``holdout_loglik_per_particle``, ``aic``, ``redrawn_fraction``), ``warnings``.
    """
    c = np.asarray(coeffs, dtype=np.float64)
    n = c.shape[0]
    if not 0 < holdout < 1:
        raise InputError(f"the hold-out fraction must be in (0, 1), got {holdout}")
    for name in candidates:
        if name not in CANDIDATES:
            raise InputError(f"unknown shell model {name!r} (choose from auto, {', '.join(CANDIDATES)})")
    n_h = round(holdout * n)
    need = needed_particles(holdout)
    if n_h < MIN_HOLDOUT or n - n_h < MIN_TRAIN:
        msg = (
            f"{n} particles are too few for a hold-out model selection (a {holdout:.0%} hold-out needs "
            f"at least {need} particles: {MIN_HOLDOUT} held out and {MIN_TRAIN} to fit); "
            f"fitted the {fallback} model on all particles without a self-check"
        )
        log.warning("warning: %s", msg)
        model = fit_candidate(fallback, c, voxel_size_um, **fit_kw)
        table = {"chosen": fallback, "skipped": msg, "particles_needed": need, "n_particles": n, "warnings": [msg]}
        model.selection_table = table
        return model, table
    perm = rng.permutation(n)
    hold, train = np.sort(perm[:n_h]), np.sort(perm[n_h:])
    # 2.5 h sampled shells: KS noise 1.18x its floor 1.36/sqrt(h) (4 h: 1.12x), 35 % fewer descriptors
    n_sample = int(n_sample or max(1000, round(2.5 * n_h)))
    d_hold = shell_descriptors(c[hold], subdivisions=subdivisions)
    rows = {}
    train_kw = {
        k: v for k, v in fit_kw.items() if k not in ("star_volume_fraction", "particle_table", "source", "edcc")
    }
    laws = None  # the per-degree laws of the training part are the same for every candidate: fit once
    for name in candidates:
        m = fit_candidate(name, c[train], voxel_size_um, edcc=False, laws=laws, **train_kw)
        laws = m.laws
        sim, stats = m.sample_coefficients(n_sample, rng, return_stats=True)
        sc = _score(d_hold, shell_descriptors(sim, subdivisions=subdivisions))
        ks = [v["ks"] for v in sc.values()]
        ll = m.log_density(c[hold])  # NaN where a model has no closed-form density
        aic = None
        if m.kind == "independent":
            k = sum(len(law.params) for law in m.laws)
            aic = float(2 * k - 2 * m.log_density(c[train]).sum())
        rows[name] = {
            "model": m.kind,
            "descriptors": sc,
            "max_ks": float(max(ks)),
            "mean_ks": float(np.mean(ks)),
            "holdout_loglik_per_particle": float(np.mean(ll)) if np.all(np.isfinite(ll)) else None,
            "aic": aic,
            "aic_note": None if aic is not None else "nonparametric (kernel density): no AIC",
            "redrawn_fraction": stats["redrawn"] / (n_sample + stats["redrawn"]),
        }
        if "n_bands" in CANDIDATES[name]:
            rows[name]["bands"] = m.mixture.bands
    chosen = min(rows, key=lambda r: (round(rows[r]["max_ks"], 6), rows[r]["mean_ks"]))
    model = fit_candidate(chosen, c, voxel_size_um, **fit_kw)
    noise = float(1.358 * np.sqrt(1 / n_h + 1 / n_sample))
    warnings = []
    for k, v in rows[chosen]["descriptors"].items():
        if v["ks"] > KS_WARN:
            warnings.append(
                f"the chosen model ({chosen}) misses the held-out {k}: KS {v['ks']:.3f} > {KS_WARN} "
                f"(noise level {noise:.3f} for {n_h} held-out particles)"
            )
    for w in warnings:
        log.warning("warning: %s", w)
    table = {
        "chosen": chosen,
        "criterion": "smallest max KS over the six descriptors (ties: mean KS)",
        "n_particles": n,
        "n_train": int(train.size),
        "n_holdout": int(n_h),
        "n_sample": n_sample,
        "holdout_fraction": float(holdout),
        "descriptor_subdivisions": int(subdivisions),
        "ks_noise_95": noise,
        "candidates": rows,
        "warnings": warnings,
    }
    model.selection_table = table
    return model, table


def format_table(table: dict) -> str:
    """The self-check as text (one line per candidate, KS per descriptor).

    Parameters
    ----------
    table : dict
        The model-selection table (``ShellModel.selection_table``): ``candidates``, ``chosen``, ``criterion``,
        ``n_train``, ``n_holdout``, ``n_sample``, ``ks_noise_95``; or ``skipped`` with the reason.

    Returns
    -------
    str
        Multi-line text.
    """
    if "candidates" not in table:
        return f"model selection skipped: {table.get('skipped', '')}"
    head = (
        f"model self-check: {table['n_train']} particles fitted, {table['n_holdout']} held out, "
        f"{table['n_sample']} shells sampled per model (KS noise ~{table['ks_noise_95']:.3f})"
    )
    short = {
        "d_max": "d_max",
        "compactness": "compact",
        "aspect_ratio": "aspect",
        "sphericity": "spher",
        "volume": "volume",
        "area": "area",
    }
    lines = [
        head,
        f"  {'model':<20}"
        + "".join(f"{short[k]:>9}" for k in DESCRIPTORS)
        + f"{'max KS':>9}{'loglik/p':>10}{'AIC':>11}",
    ]
    for name, r in table["candidates"].items():
        ll = r["holdout_loglik_per_particle"]
        lines.append(
            f"{'*' if name == table['chosen'] else ' '} {name:<20}"
            + "".join(f"{r['descriptors'][k]['ks']:>9.3f}" for k in DESCRIPTORS)
            + f"{r['max_ks']:>9.3f}"
            + (f"{ll:>10.1f}" if ll is not None else f"{'-':>10}")
            + (f"{r['aic']:>11.0f}" if r["aic"] is not None else f"{'-':>11}")
        )
    lines.append(f"  chosen: {table['chosen']} ({table['criterion']})")
    return "\n".join(lines)
