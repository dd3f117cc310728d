"""The stochastic shell model: per-degree laws of the SH coefficients, and dependence models.

Models (``ShellModel.kind``)
----------------------------
``independent`` (the paper's)
    The coefficients ``Z_lm`` are independent; for a fixed degree ``l`` the ``2l+1`` orders
    share one law (isotropy).
``scale_mixture``
    A per-particle latent roughness per band of degrees drawn jointly with ``a_00``, the
    pattern of the roughness uniformly at random (:mod:`nmc_dataset.shells._mixture`). The
    per-degree laws below are still fitted and stored (they describe the marginals), but
    sampling uses the mixture.
``ellipsoid_mixture``
    A per-particle base ellipsoid (semi-axes drawn jointly with the roughness, random
    orientation) plus a scale mixture on the residual (:mod:`nmc_dataset.shells._ellipsoid`):
    the harmonics ``l >= 4`` of ellipsoid-like particles stay locked to their ``l = 2`` axes.

Model files of format version 1 have no ``model`` key: they are ``independent``.

Per-degree laws
---------------
Per degree the law is chosen among

* ``normal``     -- ``l = 0``: N(loc, scale²); ``l > 0``: N(0, scale²);
* ``lognormal``  -- ``l = 0``: log Z ~ N(mu, sigma²); ``l > 0`` (signed coefficients, location 0):
  the *sign-symmetric* log-normal, ``|Z|`` log-normal(mu, sigma) and the sign ±1 with
  probability ½ each;
* ``t``          -- Student's t with ``df`` degrees of freedom, ``scale`` and ``loc`` (``loc = 0``
  for ``l > 0``);
* ``gamma``      -- ``l = 0`` only: shape ``k``, ``scale`` (positive support).

``families="constrained"`` (default) only lets laws that fit the coefficient compete: for
``l = 0`` (a positive mean radius times √(4π)) the positive families ``lognormal`` and ``gamma``;
for ``l > 0`` (coefficients symmetric about 0) the symmetric unimodal families ``normal`` and
``t`` with ``df >= 2.1`` (finite variance; the fit is bounded there). The other candidates are
still fitted and tabled with ``"eligible": false`` and the reason. ``families="paper"`` is the
paper's choice among ``normal``, ``lognormal`` and ``t`` for every degree (``t`` df down to 0.2),
kept to reproduce it: on real data it can pick a t with negative radii for ``l = 0`` and the
bimodal sign-symmetric log-normal, or a t without a mean, for ``l = 1``.

Each candidate is fitted by maximum likelihood; the law kept is the one with the smallest
AIC = 2k − 2 log L (``selection="aic"``, default: penalises the t's extra parameter, which
otherwise always wins because it contains the normal as df → ∞) or with the largest log
likelihood (``selection="loglik"``). Every candidate's parameters, log-likelihood and AIC are
stored. The independence of ``Z_00`` from the other coefficients is checked with the empirical
distance correlation coefficient (EDCC, ``dcor.distance_correlation``) between ``a_00`` and
each ``a_lm``; per degree the mean over ``m`` (and each value) is reported. The sample EDCC of
independent variables is biased upwards for few particles (about 0.28 for n = 40, 0.05 for
n = 1600), so compare it with that floor, not with 0.

Sampling and invalid shells
---------------------------
A sampled shell is *invalid* if its radius is not positive at every vertex of an icosphere
with ``check_subdivisions`` subdivisions (default 4: 2562 directions) or if its volume is
below ``min_volume_voxels`` (default 10, docs/method.md#shell-model). Invalid shells are **redrawn** (not
dropped): the result is always exactly ``n`` shells distributed as the model conditioned on
validity, which is what the segmentation could have observed, and the sample size requested
by a dataset recipe is honoured. The share of redrawn shells is reported.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import optimize, special, stats

from nmc_dataset._util import atomic_path, check_format, read_json, write_json_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.shells._ellipsoid import EllipsoidMixture
from nmc_dataset.shells._harmonics import icosphere, n_coeffs, sh_basis, vertex_weights
from nmc_dataset.shells._mixture import ScaleMixture

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DegreeLaw",
    "ShellModel",
    "coefficient_columns",
    "write_coefficients_table",
    "read_coefficients_table",
    "logpdf",
]

FORMAT = "nmc-dataset/shell-model"
FORMAT_VERSION = 2
COEFF_TABLE_FORMAT = "nmc-dataset/shell-coefficients"
SH_CONVENTION = (
    "real orthonormal SH, no Condon-Shortley phase, index l*l+l+m, "
    "theta polar from +z, phi azimuth from +x; coefficients in voxels"
)
FAMILIES = ("normal", "lognormal", "t", "gamma")
MODEL_KINDS = ("independent", "scale_mixture", "ellipsoid_mixture")
FAMILY_SETS = ("constrained", "paper")
_T_MIN_DF = {"constrained": 2.1, "paper": 0.2}


# --------------------------------------------------------------------------- densities
def logpdf(family: str, params: dict, x: np.ndarray, signed: bool) -> np.ndarray:
    """Log density of a per-degree law at ``x``.

    ``signed`` selects the location-0 forms used for ``l > 0`` (sign-symmetric log-normal).
    """
    x = np.asarray(x, dtype=np.float64)
    if family == "normal":
        loc = 0.0 if signed else params["loc"]
        s = params["scale"]
        return -0.5 * ((x - loc) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
    if family == "lognormal":
        mu, sg = params["mu"], params["sigma"]
        ax = np.abs(x) if signed else x
        with np.errstate(divide="ignore", invalid="ignore"):
            lx = np.log(ax)
            out = -0.5 * ((lx - mu) / sg) ** 2 - lx - np.log(sg) - 0.5 * np.log(2 * np.pi)
        if signed:
            out = out - np.log(2.0)
        return np.where(ax > 0, out, -np.inf)
    if family == "t":
        df, s = params["df"], params["scale"]
        loc = 0.0 if signed else params["loc"]
        z = (x - loc) / s
        return (
            special.gammaln((df + 1) / 2)
            - special.gammaln(df / 2)
            - 0.5 * np.log(df * np.pi)
            - np.log(s)
            - (df + 1) / 2 * np.log1p(z * z / df)
        )
    if family == "gamma":
        k, th = params["shape"], params["scale"]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = (k - 1) * np.log(x) - x / th - special.gammaln(k) - k * np.log(th)
        return np.where(x > 0, out, -np.inf)
    raise ValueError(f"unknown family {family!r}")


def _draw(family: str, params: dict, size, signed: bool, rng: np.random.Generator) -> np.ndarray:
    if family == "normal":
        return (0.0 if signed else params["loc"]) + params["scale"] * rng.standard_normal(size)
    if family == "lognormal":
        v = np.exp(params["mu"] + params["sigma"] * rng.standard_normal(size))
        if signed:
            v = np.where(rng.random(size) < 0.5, -v, v)
        return v
    if family == "t":
        return (0.0 if signed else params["loc"]) + params["scale"] * rng.standard_t(params["df"], size)
    if family == "gamma":
        return rng.gamma(params["shape"], params["scale"], size)
    raise ValueError(f"unknown family {family!r}")


def _fit_t(x: np.ndarray, signed: bool, min_df: float = 0.2) -> dict:
    """MLE of Student's t (loc fixed at 0 when ``signed``, ``df >= min_df``) by L-BFGS-B."""
    med = float(np.median(x))
    mad = float(np.median(np.abs(x - (0.0 if signed else med)))) * 1.4826 or float(np.std(x)) or 1.0

    def unpack(th):
        df = float(np.exp(np.clip(th[0], np.log(min_df), np.log(1e4))))
        s = float(np.exp(th[1]))
        loc = 0.0 if signed else float(th[2])
        return df, s, loc

    def nll(th):
        df, s, loc = unpack(th)
        return -float(np.sum(logpdf("t", {"df": df, "scale": s, "loc": loc}, x, signed)))

    best = None
    for df0 in (max(3.0, 1.5 * min_df), 30.0):
        th0 = [np.log(df0), np.log(mad)] + ([] if signed else [med])
        res = optimize.minimize(nll, th0, method="L-BFGS-B")
        if best is None or res.fun < best.fun:
            best = res
    df, s, loc = unpack(best.x)
    out = {"df": df, "scale": s}
    if not signed:
        out["loc"] = loc
    return out


def _fit_gamma(x: np.ndarray) -> dict | None:
    """MLE of the gamma law (location 0) of positive values."""
    if not np.all(x > 0) or np.ptp(x) <= 0:
        return None

    k, _, th = stats.gamma.fit(x, floc=0.0)
    return {"shape": float(k), "scale": float(th)}


def _eligible(family: str, signed: bool, families: str) -> tuple[bool, str | None]:
    if families == "paper":
        return (family != "gamma", "not a paper family" if family == "gamma" else None)
    if not signed:
        if family in ("lognormal", "gamma"):
            return True, None
        return False, "support includes negative radii (degree 0 needs a positive family)"
    if family in ("normal", "t"):
        return True, None
    if family == "lognormal":
        return False, "bimodal with no density at 0 (coefficients of l > 0 are symmetric about 0)"
    return False, "positive family (coefficients of l > 0 are signed)"


def _fit_candidates(x: np.ndarray, signed: bool, families: str = "constrained") -> dict:
    n = x.size
    cands: dict = {}
    if signed:
        cands["normal"] = {"scale": float(np.sqrt(np.mean(x * x)))}
    else:
        cands["normal"] = {"loc": float(np.mean(x)), "scale": float(np.std(x))}
    ax = np.abs(x) if signed else x
    if np.all(ax > 0):
        lx = np.log(ax)
        cands["lognormal"] = {"mu": float(lx.mean()), "sigma": float(lx.std())}
    else:
        cands["lognormal"] = None
    cands["t"] = _fit_t(x, signed, _T_MIN_DF[families])
    if not signed:
        cands["gamma"] = _fit_gamma(x)
    out = {}
    for fam, p in cands.items():
        if p is None or any(not np.isfinite(v) or (k in ("scale", "sigma") and v <= 0) for k, v in p.items()):
            out[fam] = {
                "applicable": False,
                "params": None,
                "loglik": None,
                "aic": None,
                "n_params": None,
                "reason": "non-positive values" if fam in ("lognormal", "gamma") else "degenerate data",
                "eligible": False,
            }
            continue
        ll = float(np.sum(logpdf(fam, p, x, signed)))
        k = len(p)
        ok, why = _eligible(fam, signed, families)
        out[fam] = {
            "applicable": bool(np.isfinite(ll)),
            "params": p,
            "loglik": ll if np.isfinite(ll) else None,
            "aic": float(2 * k - 2 * ll) if np.isfinite(ll) else None,
            "n_params": k,
            "n": int(n),
            "eligible": bool(ok and np.isfinite(ll)),
        }
        if why:
            out[fam]["reason"] = why
        if fam == "t" and p["df"] <= _T_MIN_DF[families] * 1.0001:
            out[fam]["note"] = f"df at its lower bound {_T_MIN_DF[families]}"
    return out


@functools.lru_cache(maxsize=8)
def _check_basis(degree: int, subdivisions: int):
    """float32 (SH basis)ᵀ on the check icosphere and its quadrature weights / 3 (for volumes)."""
    u, _ = icosphere(subdivisions)
    BT = np.ascontiguousarray(sh_basis(degree, u).T.astype(np.float32))
    w3 = (vertex_weights(subdivisions) / 3.0).astype(np.float32)
    BT.setflags(write=False)
    w3.setflags(write=False)
    return BT, w3


# --------------------------------------------------------------------------- the model
@dataclasses.dataclass
class DegreeLaw:
    """The law of the coefficients of one degree.

    Parameters
    ----------
    degree : int
        Degree ``l`` the law describes.
    family : str
        ``"normal"``, ``"lognormal"`` or ``"t"`` (see the module docstring for ``l > 0`` forms).
    params : dict
        Parameters of ``family`` (voxels).
    candidates : dict
        Per family: ``params``, ``loglik``, ``aic``, ``n_params``, ``applicable``.
    edcc : float or None
        Mean EDCC between ``a_00`` and the ``a_lm`` of this degree (None for l = 0).
    edcc_per_order : list of float or None
        EDCC per ``m = -l..l``.
    """

    degree: int
    family: str
    params: dict
    candidates: dict = dataclasses.field(default_factory=dict)
    edcc: float | None = None
    edcc_per_order: list | None = None

    @property
    def signed(self) -> bool:
        return self.degree > 0

    def std(self) -> float:
        """Standard deviation implied by the law (inf for t with df <= 2)."""
        p = self.params
        if self.family == "normal":
            return float(p["scale"])
        if self.family == "lognormal":
            mu, s = p["mu"], p["sigma"]
            m2 = np.exp(2 * mu + 2 * s * s)
            if self.signed:
                return float(np.sqrt(m2))
            return float(np.sqrt(m2 - np.exp(2 * mu + s * s)))
        if self.family == "gamma":
            return float(np.sqrt(p["shape"]) * p["scale"])
        df = p["df"]
        return float(p["scale"] * np.sqrt(df / (df - 2))) if df > 2 else float("inf")

    def mean(self) -> float:
        """Mean implied by the law (0 for l > 0)."""
        if self.signed:
            return 0.0
        p = self.params
        if self.family == "lognormal":
            return float(np.exp(p["mu"] + p["sigma"] ** 2 / 2))
        if self.family == "gamma":
            return float(p["shape"] * p["scale"])
        return float(p["loc"])

    def to_json(self) -> dict:
        """The law as a JSON-able dict (the model file's ``degrees`` entry)."""
        return {
            "degree": self.degree,
            "family": self.family,
            "params": self.params,
            "edcc": self.edcc,
            "edcc_per_order": self.edcc_per_order,
            "candidates": self.candidates,
        }

    @classmethod
    def from_json(cls, d: dict) -> "DegreeLaw":
        """Rebuild a law from :meth:`to_json`'s dict.

        Parameters
        ----------
        d : dict
            ``degree``, ``family``, ``params`` and optionally ``candidates``, ``edcc``, ``edcc_per_order``.

        Returns
        -------
        DegreeLaw
            The law.
        """
        return cls(
            degree=int(d["degree"]),
            family=d["family"],
            params=dict(d["params"]),
            candidates=d.get("candidates", {}),
            edcc=d.get("edcc"),
            edcc_per_order=d.get("edcc_per_order"),
        )


@dataclasses.dataclass
class ShellModel:
    """Stochastic model of shell radius functions (docs/method.md#shell-model).

    Parameters
    ----------
    degree : int
        SH degree L; ``(L+1)**2`` coefficients.
    voxel_size_um : float
        µm per voxel of the CT the model was fitted on (coefficients are in voxels).
    laws : list of DegreeLaw
        One per degree 0..L.
    n_particles : int
        Particles the model was fitted on.
    star_volume_fraction : dict
        ``mean``, ``std``, ``min``, ``median``, ``max`` of the per-particle star-shaped
        volume fraction (empty if unknown).
    selection : str
        ``"aic"`` or ``"loglik"``.
    min_volume_voxels : float
        Shells with a smaller volume are invalid (redrawn).
    check_subdivisions : int
        Icosphere subdivisions of the positivity / volume check.
    coefficients : ndarray (n, K), optional
        The measured per-particle coefficients (written to a parquet beside the model).
    particle_table : dict of ndarray, optional
        Extra per-particle columns for that parquet (centroids, volumes, star fractions).
    source : dict
        Provenance (input file, segmentation summary, seed).
    path : Path, optional
        Where the model was loaded from / written to.
    format_version : int
        Version of the model file format (the current one by default).
    coefficients_file : str, optional
        File name of the coefficient parquet beside the model JSON (set when the model is written).
    kind : str
        ``"independent"`` (the paper's), ``"scale_mixture"`` or ``"ellipsoid_mixture"`` (see the module
        docstring).
    mixture : ScaleMixture or EllipsoidMixture, optional
        The dependence model of a ``scale_mixture`` / ``ellipsoid_mixture`` model.
    families : str
        ``"constrained"`` or ``"paper"`` (which per-degree families competed).
    selection_table : dict, optional
        The hold-out self-check of every candidate model (written by the model selection).
    """

    degree: int
    voxel_size_um: float
    laws: list
    n_particles: int = 0
    star_volume_fraction: dict = dataclasses.field(default_factory=dict)
    selection: str = "aic"
    min_volume_voxels: float = 10.0
    check_subdivisions: int = 4
    coefficients: np.ndarray | None = None
    particle_table: dict | None = None
    source: dict = dataclasses.field(default_factory=dict)
    path: Path | None = None
    format_version: int = FORMAT_VERSION
    coefficients_file: str | None = None
    kind: str = "independent"
    mixture: ScaleMixture | EllipsoidMixture | None = None
    families: str = "constrained"
    selection_table: dict | None = None

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(
        cls,
        coeffs,
        voxel_size_um: float,
        *,
        selection: str = "aic",
        star_volume_fraction=None,
        particle_table: dict | None = None,
        source: dict | None = None,
        min_volume_voxels: float = 10.0,
        check_subdivisions: int = 4,
        kind: str = "independent",
        n_bands: int = 1,
        families: str = "constrained",
        edcc: bool = True,
        laws: list | None = None,
    ) -> "ShellModel":
        """Fit per-degree laws (and, for the mixtures, the dependence model).

        Parameters
        ----------
        coeffs : array_like, shape (n, (L+1)**2)
            Coefficients of ``n`` particles in voxels (n >= 3).
        voxel_size_um : float
            µm per voxel (> 0).
        selection : {"aic", "loglik"}
            How the family is chosen among the MLE-fitted candidates.
        star_volume_fraction : array_like (n,), optional
            Per-particle star-shaped volume fractions (their statistics are stored).
        particle_table, source : dict, optional
            Stored with the model (see class attributes).
        min_volume_voxels : float, default 10.0
            Shells with a smaller volume (in voxels) are invalid and redrawn when sampling.
        check_subdivisions : int, default 4
            Icosphere subdivisions of the positivity / volume check.
        kind : {"independent", "scale_mixture", "ellipsoid_mixture"}
            The model (see the module docstring).
        n_bands : int
            Bands of the degrees ``3..L`` of a mixture (``l = 1`` and ``l = 2`` are always bands of their own).
        families : {"constrained", "paper"}
            Which per-degree families compete (see the module docstring).
        edcc : bool
            Compute the EDCC of ``a_00`` with every ``a_lm`` (the slow part of a fit).
        laws : list of DegreeLaw, optional
            Per-degree laws already fitted to the same coefficients with the same ``selection``
            and ``families`` (the model selection fits them once for all candidates).

        Returns
        -------
        ShellModel
        """
        if edcc:
            import dcor

        c = np.asarray(coeffs, dtype=np.float64)
        if c.ndim != 2 or c.shape[0] < 3:
            raise InputError(f"need coefficients of at least 3 particles, got shape {c.shape}")
        if not voxel_size_um > 0:
            raise InputError(f"voxel size must be > 0 µm, got {voxel_size_um}")
        if selection not in ("aic", "loglik"):
            raise ValueError("selection must be 'aic' or 'loglik'")
        if kind not in MODEL_KINDS:
            raise InputError(f"unknown shell model {kind!r} (choose from {', '.join(MODEL_KINDS)})")
        if families not in FAMILY_SETS:
            raise InputError(f"unknown family set {families!r} (choose from {', '.join(FAMILY_SETS)})")
        K = c.shape[1]
        L = int(round(np.sqrt(K))) - 1
        if n_coeffs(L) != K:
            raise InputError(f"coefficient count {K} is not (L+1)**2")
        a00 = np.ascontiguousarray(c[:, 0])
        given, laws = laws, []
        if given is not None and [law.degree for law in given] != list(range(L + 1)):
            raise ValueError(f"laws must list degrees 0..{L}")
        for l in range(L + 1) if given is None else ():
            block = c[:, l * l : (l + 1) ** 2]
            cands = _fit_candidates(block.ravel(), signed=l > 0, families=families)
            ok = {f: v for f, v in cands.items() if v.get("eligible", v["applicable"])}
            if not ok:
                why = "; ".join(f"{f}: {v.get('reason', '?')}" for f, v in cands.items())
                raise InputError(f"degree {l}: no eligible law fits the coefficients ({why})")
            fam = min(ok, key=lambda f, ok=ok: ok[f]["aic"] if selection == "aic" else -ok[f]["loglik"])
            e = per = None
            if l > 0 and edcc:
                # the O(n log n) AVL algorithm (same value as the naive O(n²) one to ~1e-13)
                per = [
                    float(dcor.distance_correlation(a00, np.ascontiguousarray(block[:, j]), method="avl"))
                    for j in range(block.shape[1])
                ]
                e = float(np.mean(per))
            laws.append(
                DegreeLaw(
                    degree=l, family=fam, params=dict(ok[fam]["params"]), candidates=cands, edcc=e, edcc_per_order=per
                )
            )
        if given is not None:
            laws = list(given)
        mixture = None
        if kind == "scale_mixture":
            if np.any(c[:, 0] <= 0):
                raise InputError("a scale mixture needs a_00 > 0 for every particle")
            mixture = ScaleMixture.fit(c, n_bands=n_bands)
        elif kind == "ellipsoid_mixture":
            if L < 2 or np.any(c[:, 0] <= 0):
                raise InputError("an ellipsoid mixture needs degree >= 2 and a_00 > 0 for every particle")
            mixture = EllipsoidMixture.fit(c, n_bands=n_bands)
        svf = {}
        if star_volume_fraction is not None:
            s = np.asarray(star_volume_fraction, dtype=np.float64)
            svf = {
                "mean": float(s.mean()),
                "std": float(s.std()),
                "min": float(s.min()),
                "median": float(np.median(s)),
                "max": float(s.max()),
            }
        return cls(
            degree=L,
            voxel_size_um=float(voxel_size_um),
            laws=laws,
            n_particles=int(c.shape[0]),
            star_volume_fraction=svf,
            selection=selection,
            min_volume_voxels=float(min_volume_voxels),
            check_subdivisions=int(check_subdivisions),
            coefficients=c,
            particle_table=particle_table,
            source=dict(source or {}),
            kind=kind,
            mixture=mixture,
            families=families,
        )

    # ------------------------------------------------------------------ sampling
    def _check_basis(self):
        return _check_basis(self.degree, self.check_subdivisions)

    def draw_raw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` coefficient vectors from the model, without the validity check.

        Parameters
        ----------
        n : int
            Number of vectors.
        rng : numpy.random.Generator
            Source of the draws.

        Returns
        -------
        (n, (L+1)**2) float array
            Coefficients in voxels.
        """
        if self.kind in ("scale_mixture", "ellipsoid_mixture"):
            return self.mixture.draw_raw(n, rng)
        out = np.empty((int(n), n_coeffs(self.degree)))
        for law in self.laws:
            l = law.degree
            out[:, l * l : (l + 1) ** 2] = _draw(law.family, law.params, (int(n), 2 * l + 1), l > 0, rng)
        return out

    def log_density(self, coeffs) -> np.ndarray:
        """Log density of whole coefficient vectors under the model (before the validity condition).

        Used to score models on held-out particles: ``independent`` sums the per-coefficient
        laws, ``scale_mixture`` uses :meth:`ScaleMixture.logpdf`; ``ellipsoid_mixture`` has no
        closed-form density (NaN).

        Parameters
        ----------
        coeffs : (n, (L+1)**2) or ((L+1)**2,) float array
            Coefficient vectors (voxels).

        Returns
        -------
        (n,) float array
            Log density of each vector.
        """
        c = np.atleast_2d(np.asarray(coeffs, dtype=np.float64))
        if self.kind == "ellipsoid_mixture":
            return np.full(c.shape[0], np.nan)
        if self.kind == "scale_mixture":
            return self.mixture.logpdf(c)
        out = np.zeros(c.shape[0])
        for law in self.laws:
            l = law.degree
            out += logpdf(law.family, law.params, c[:, l * l : (l + 1) ** 2], l > 0).sum(axis=1)
        return out

    def valid(self, coeffs: np.ndarray, _basis=None) -> np.ndarray:
        """Which shells are valid: radius > 0 on the check icosphere and volume >= min volume.

        A cheap exact bound decides most shells without evaluating the radius: by the addition
        theorem and Cauchy-Schwarz, ``|Σ_m a_lm Y_lm(u)| <= ‖a_l‖ sqrt((2l+1)/(4π))`` for every
        ``u``, so ``r(u) >= a_00/sqrt(4π) − Σ_{l>=1} ‖a_l‖ sqrt((2l+1)/(4π)) =: b``. A shell with
        ``b > 0`` and ``(4π/3) b³ >= min_volume_voxels`` is valid everywhere (not only on the grid);
        the others are checked on the grid (see :meth:`valid_reference`, the plain twin).

        Parameters
        ----------
        coeffs : (n, (L+1)**2) float array
            Coefficient vectors (voxels).
        _basis : tuple, optional
            Precomputed check basis and quadrature weights (internal; computed when None).

        Returns
        -------
        (n,) bool array
            Which shells are valid.
        """
        c = np.asarray(coeffs, dtype=np.float64)
        L = self.degree
        b = c[:, 0] / np.sqrt(4 * np.pi)
        for l in range(1, L + 1):
            b = b - np.linalg.norm(c[:, l * l : (l + 1) ** 2], axis=1) * np.sqrt((2 * l + 1) / (4 * np.pi))
        ok = (b > 0) & (4 * np.pi / 3 * np.maximum(b, 0) ** 3 >= self.min_volume_voxels)
        rest = np.flatnonzero(~ok)
        if rest.size:
            ok[rest] = self.valid_reference(c[rest], _basis)
        return ok

    def valid_reference(self, coeffs: np.ndarray, _basis=None) -> np.ndarray:
        """Grid check only: radius > 0 at every check-icosphere vertex and quadrature volume >= minimum.

        Parameters
        ----------
        coeffs : (n, (L+1)**2) float array
            Coefficient vectors (voxels).
        _basis : tuple, optional
            Precomputed check basis and quadrature weights (internal; computed when None).

        Returns
        -------
        (n,) bool array
            Which shells pass the grid check.
        """
        BT, w3 = self._check_basis() if _basis is None else _basis
        c = np.asarray(coeffs)
        ok = np.empty(c.shape[0], dtype=bool)
        step = 4096
        for a in range(0, c.shape[0], step):
            r = c[a : a + step].astype(np.float32) @ BT
            vol = (np.maximum(r, 0) ** 3) @ w3
            ok[a : a + step] = (r.min(axis=1) > 0) & (vol >= self.min_volume_voxels)
        return ok

    def sample_coefficients(
        self, n: int, rng: np.random.Generator, *, return_stats: bool = False, max_rounds: int = 200
    ):
        """Draw ``n`` valid shells (vectorised; invalid draws are redrawn, see module docs).

        Parameters
        ----------
        n : int
            Number of shells (>= 1).
        rng : numpy.random.Generator
        return_stats : bool
            Also return ``{"redrawn": k, "rounds": r}``.
        max_rounds : int, default 200
            Redraw rounds before giving up with an :class:`InputError` (the model then draws almost
            only invalid shells).

        Returns
        -------
        ndarray, shape (n, (L+1)**2)
            Coefficients in voxels (multiply by :attr:`voxel_size_um` for µm).
        """
        n = int(n)
        if n < 1:
            raise InputError(f"the number of shells must be >= 1, got {n}")
        basis = self._check_basis()
        out = self.draw_raw(n, rng)
        bad = np.flatnonzero(~self.valid(out, basis))
        redrawn = 0
        rounds = 0
        while bad.size:
            rounds += 1
            if rounds > max_rounds:
                raise InputError(
                    f"the model draws almost only invalid shells ({bad.size} of {n} still invalid "
                    f"after {max_rounds} redraws)",
                    self.path,
                )
            redrawn += bad.size
            new = self.draw_raw(bad.size, rng)
            out[bad] = new
            bad = bad[~self.valid(new, basis)]
        if return_stats:
            return out, {"redrawn": int(redrawn), "rounds": int(rounds)}
        return out

    # ------------------------------------------------------------------ IO
    def to_json(self) -> dict:
        """The model file's JSON document."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "units": {"coefficients": "voxel", "voxel_size_um": "micrometre per voxel"},
            "voxel_size_um": self.voxel_size_um,
            "degree": self.degree,
            "n_coeffs": n_coeffs(self.degree),
            "sh_convention": SH_CONVENTION,
            "n_particles": self.n_particles,
            "model": self.kind,
            "families": self.families,
            "dependence": self.mixture.to_json() if self.mixture is not None else None,
            "model_selection": self.selection_table,
            "selection_criterion": self.selection,
            "degrees": [law.to_json() for law in self.laws],
            "edcc": {str(law.degree): law.edcc for law in self.laws if law.degree > 0},
            "star_volume_fraction": self.star_volume_fraction,
            "sampling": {
                "min_volume_voxels": self.min_volume_voxels,
                "positivity_check_subdivisions": self.check_subdivisions,
                "invalid_shells": "redrawn",
            },
            "coefficients_file": self.coefficients_file,
            "source": self.source,
        }

    def write(self, path: str | os.PathLike) -> Path:
        """Write the model JSON and (if known) the per-particle coefficients parquet beside it.

        The parquet is ``<stem>.coefficients.parquet``; both are written atomically.

        Parameters
        ----------
        path : str or path-like
            Model JSON file.

        Returns
        -------
        Path
            ``path``.
        """
        path = Path(path)
        if self.coefficients is not None:
            cpath = path.with_name(path.stem + ".coefficients.parquet")
            write_coefficients_table(
                cpath,
                self.coefficients,
                extra=self.particle_table,
                meta={
                    "format": COEFF_TABLE_FORMAT,
                    "format_version": 1,
                    "voxel_size_um": self.voxel_size_um,
                    "degree": self.degree,
                    "units": "voxel",
                    "model_file": path.name,
                },
            )
            self.coefficients_file = cpath.name
        write_json_atomic(path, self.to_json())
        self.path = path
        return path

    @classmethod
    def from_json(cls, doc: dict, path=None) -> "ShellModel":
        """Build a model from its JSON document (checks format and version).

        Parameters
        ----------
        doc : dict
            The parsed model JSON.
        path : path-like, optional
            Where it was read from (recorded, and named in errors).

        Returns
        -------
        ShellModel
            The model.

        Raises
        ------
        InputError
            For a malformed document or an unknown model kind.
        """
        where = path or "shell model"
        version = check_format(doc, FORMAT, FORMAT_VERSION, where)
        try:
            laws = [DegreeLaw.from_json(d) for d in doc["degrees"]]
            m = cls(
                degree=int(doc["degree"]),
                voxel_size_um=float(doc["voxel_size_um"]),
                laws=laws,
                n_particles=int(doc.get("n_particles", 0)),
                star_volume_fraction=doc.get("star_volume_fraction") or {},
                selection=doc.get("selection_criterion", "aic"),
                min_volume_voxels=float(doc.get("sampling", {}).get("min_volume_voxels", 10.0)),
                check_subdivisions=int(doc.get("sampling", {}).get("positivity_check_subdivisions", 4)),
                source=doc.get("source") or {},
                path=Path(path) if path else None,
                format_version=int(doc["format_version"]),
                coefficients_file=doc.get("coefficients_file"),
                kind=doc.get("model", "independent") if version >= 2 else "independent",
                families=doc.get("families", "paper") if version >= 2 else "paper",
                selection_table=doc.get("model_selection"),
            )
            if m.kind not in MODEL_KINDS:
                raise InputError(
                    f"unknown shell model {m.kind!r} (this nmc-dataset reads {', '.join(MODEL_KINDS)})", where
                )
            if m.kind == "scale_mixture":
                if not isinstance(doc.get("dependence"), dict):
                    raise InputError("a scale_mixture model needs its 'dependence' block", where)
                m.mixture = ScaleMixture.from_json(doc["dependence"], m.degree)
            elif m.kind == "ellipsoid_mixture":
                if not isinstance(doc.get("dependence"), dict):
                    raise InputError("an ellipsoid_mixture model needs its 'dependence' block", where)
                m.mixture = EllipsoidMixture.from_json(doc["dependence"], m.degree)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"malformed shell model ({type(e).__name__}: {e})", where) from None
        if [law.degree for law in laws] != list(range(m.degree + 1)):
            raise InputError(f"'degrees' must list degrees 0..{m.degree} in order", where)
        for law in laws:
            if law.family not in FAMILIES:
                raise InputError(f"degree {law.degree}: unknown family {law.family!r}", where)
        if not m.voxel_size_um > 0:
            raise InputError("voxel_size_um must be > 0", where)
        return m

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ShellModel":
        """Read a model file written by :meth:`write` (refuses newer format versions).

        Parameters
        ----------
        path : str or path-like
            Model JSON file.

        Returns
        -------
        ShellModel
            The model.
        """
        return cls.from_json(read_json(path), path)

    def load_coefficients(self) -> np.ndarray:
        """The measured per-particle coefficients from the parquet beside the model file."""
        if self.coefficients is not None:
            return self.coefficients
        if not self.coefficients_file or self.path is None:
            raise InputError("the model has no measured coefficients file", self.path)
        c, _, _ = read_coefficients_table(self.path.parent / self.coefficients_file, COEFF_TABLE_FORMAT)
        if c.shape[1] != n_coeffs(self.degree):
            raise InputError(
                f"coefficient table has {c.shape[1]} coefficients, model degree {self.degree} "
                f"needs {n_coeffs(self.degree)}",
                self.path.parent / self.coefficients_file,
            )
        self.coefficients = c
        return c

    def summary(self) -> str:
        """A short text table of the laws."""
        head = (
            f"shell model ({self.kind}): L={self.degree}, {self.n_particles} particles, voxel {self.voxel_size_um} µm"
        )
        lines = [head]
        if isinstance(self.mixture, EllipsoidMixture):
            bands = ", ".join(f"{b[0]}" if len(b) == 1 else f"{b[0]}-{b[-1]}" for b in self.mixture.bands)
            lines.append(
                f"  base ellipsoid (semi-axes) and residual roughness per band ({bands}) drawn jointly "
                f"(kernel density of {self.mixture.points.shape[0]} particles), random orientation"
            )
        elif self.mixture is not None:
            bands = ", ".join(f"{b[0]}" if len(b) == 1 else f"{b[0]}-{b[-1]}" for b in self.mixture.bands)
            lines.append(
                f"  latent roughness per band of degrees ({bands}) drawn jointly with a_00 "
                f"(kernel density of {self.mixture.points.shape[0]} particles)"
            )
        for law in self.laws:
            p = ", ".join(f"{k}={v:.4g}" for k, v in law.params.items())
            e = "" if law.edcc is None else f"  EDCC={law.edcc:.3f}"
            lines.append(f"  l={law.degree}: {law.family}({p}){e}" + (" [marginal]" if self.mixture else ""))
        if self.star_volume_fraction:
            lines.append(f"  star-shaped volume fraction: mean {self.star_volume_fraction['mean']:.3f}")
        return "\n".join(lines)


# --------------------------------------------------------------------------- coefficient tables
def coefficient_columns(L: int) -> list[str]:
    """Column names ``a_l{l}_m{m}`` of a coefficient table, in coefficient-index order.

    Parameters
    ----------
    L : int
        SH degree.

    Returns
    -------
    list of str
        ``(L+1)**2`` names.
    """
    return [f"a_l{l}_m{m}" for l in range(L + 1) for m in range(-l, l + 1)]


def write_coefficients_table(path, coeffs: np.ndarray, *, extra: dict | None = None, meta: dict) -> None:
    """Write coefficients (one column per coefficient) plus extra columns to parquet, atomically.

    ``meta`` (must hold ``format`` and ``format_version``) goes into the schema metadata: each
    key as a string, and the whole dict as JSON under ``nmc_dataset``.

    Parameters
    ----------
    path : path-like
        Output parquet file.
    coeffs : (n, (L+1)**2) float array
        Coefficients, written as columns ``a_l<l>_m<m>``.
    extra : dict of str to (n,) array, optional
        Further columns, written before the coefficients.
    meta : dict
        JSON-serialisable metadata with at least ``format`` and ``format_version``.
    """

    c = np.asarray(coeffs, dtype=np.float64)
    L = int(round(np.sqrt(c.shape[1]))) - 1
    cols = {}
    for k, v in (extra or {}).items():
        cols[k] = np.asarray(v)
    for j, name in enumerate(coefficient_columns(L)):
        cols[name] = c[:, j]
    table = pa.table(cols)
    md = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
    md["nmc_dataset"] = json.dumps(meta)
    table = table.replace_schema_metadata(md)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_coefficients_table(path, kind: str) -> tuple[np.ndarray, dict, dict]:
    """Read a coefficient parquet written by :func:`write_coefficients_table`.

    Parameters
    ----------
    path : path-like
        The parquet file.
    kind : str
        Expected ``format`` of its metadata (e.g. the shell-coefficient table format).

    Returns
    -------
    coeffs : ndarray (n, K)
        Coefficients, one column per ``a_l<l>_m<m>`` in coefficient-index order.
    meta : dict
        The schema metadata (``format``, ``format_version``, ...).
    columns : dict of ndarray
        The other columns.

    Raises
    ------
    InputError
        If the file is missing or unreadable, has another format, or lacks a complete set of ``a_l<l>_m<m>`` columns.
    """

    path = Path(path)
    if not path.is_file():
        raise InputError("file not found", path)
    try:
        table = pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for non-parquet files
        raise InputError(f"not a readable parquet file ({e.__class__.__name__})", path) from None
    raw = table.schema.metadata or {}
    try:
        meta = json.loads(raw[b"nmc_dataset"].decode())
    except (KeyError, ValueError):
        raise InputError(f"not a {kind} table (no nmc_dataset metadata)", path) from None
    check_format(meta, kind, 1, path)
    names = [n for n in table.column_names if n.startswith("a_l")]
    if not names:
        raise InputError("no coefficient columns (a_l<l>_m<m>)", path)
    L = int(round(np.sqrt(len(names)))) - 1
    expected = coefficient_columns(L)
    if names != expected:
        raise InputError(f"coefficient columns are not a complete degree-{L} set", path)
    c = np.column_stack([table.column(n).to_numpy() for n in expected]).astype(np.float64)
    other = {n: table.column(n).to_numpy() for n in table.column_names if not n.startswith("a_l")}
    return c, meta, other
