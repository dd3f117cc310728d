"""Closed loops of the shell scale on truths the paper's model does not contain, through the CLI.

:func:`run_truth_loop` draws shells from one of the populations of
:func:`~nmc_dataset.synthetic._ct_phantom.truth_coefficients` (the paper's independent laws,
heterogeneous roughness, roughness growing with size, ellipsoid-like bodies), renders them as a
noisy, blurred grey CT with touching particles, and runs the user's path on it::

    nmc-dataset fit-shells ct.npy --voxel-size-um 0.128 --out model.json
    nmc-dataset sample-shells model.json -n N --seed S --out shells.parquet
    nmc-dataset describe-shells shells.parquet --against model.json --out report/

It returns what the user sees (KS and W1 of the six descriptors, sampled vs measured; the model
chosen and its self-check) and what only the truth can tell: the measured particles matched to
the true ones by centre, their mean radius and per-degree spread (RMS of the ``a_lm`` of each
degree, rotation invariant) against the truth's, for particles of true mean radius >= 10 voxels.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from nmc_dataset.cli import _main as cli
from nmc_dataset.shells._descriptors import DESCRIPTORS
from nmc_dataset.shells._model import ShellModel
from nmc_dataset.synthetic._ct_phantom import TRUTH_KINDS, make_ct_phantom, truth_coefficients

__all__ = ["format_loop_table", "run_truth_loop"]


def _spread(c, l):
    return float(np.sqrt(np.mean(c[:, l * l : (l + 1) ** 2] ** 2)))


def run_truth_loop(
    kind: str,
    workdir,
    *,
    n_particles: int = 1000,
    size: int | None = None,
    degree: int = 9,
    r_median: float = 10.0,
    r_range=(6.0, 40.0),
    seed: int = 0,
    n_sample: int = 3000,
    gap_vox: float = -1.0,
    subdivisions: int = 3,
    extra_args=(),
    partial_volume: bool = True,
) -> dict:
    """Run one closed loop through the CLI in ``workdir`` (must be empty or absent).

    Parameters
    ----------
    kind : str
        One of :data:`~nmc_dataset.synthetic._ct_phantom.TRUTH_KINDS`.
    workdir : path-like
        Empty or absent folder for the phantom, the model and the report.
    n_particles : int
        Shells to place; ``size`` defaults to a cube their bounding spheres fill to about 40 %.
    size : int, optional
        Edge length of the cubic phantom in voxels.
    degree : int, default 9
        SH degree of the truth and of the fit.
    r_median : float, default 10.0
        Median mean radius of the true shells (voxels).
    r_range : tuple of 2 floats, default (6.0, 40.0)
        Range of the true mean radii (voxels).
    seed : int, default 0
        Seed of the truth, the phantom and the fit (``seed + 1`` samples the model).
    n_sample : int, default 3000
        Shells sampled from the fitted model for the comparison.
    gap_vox : float
        Gap between bounding spheres; negative lets particles touch.
    subdivisions : int, default 3
        Icosphere subdivisions of the shell descriptors.
    extra_args : sequence of str
        More ``fit-shells`` options (e.g. ``["--measure", "voxel"]``).
    partial_volume : bool, default True
        Render the grey phantom from partial-volume fractions (as a CT integrates over each voxel);
        ``False`` renders binary voxels, whose half-voxel staircase the blur does not remove.

    Returns
    -------
    dict
        ``kind``, ``n_true``, ``n_measured``, ``n_matched``, ``chosen``, ``selfcheck_max_ks``,
        ``ks`` / ``w1`` per descriptor, ``spread_ratio`` per degree 2..min(L, 6) (measured / true,
        matched particles of true radius >= 10), ``a00_ratio``, ``times`` (s).
    """

    if kind not in TRUTH_KINDS:
        raise ValueError(f"kind must be one of {TRUTH_KINDS}")
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    coeffs = truth_coefficients(
        kind, int(n_particles * 1.15) + 5, rng, degree=degree, r_median=r_median, r_range=r_range
    )
    if size is None:  # bounding spheres fill ~40 %: random sequential placement still finds room quickly
        from nmc_dataset.shells._harmonics import icosphere, sh_basis

        v, _ = icosphere(3)
        rmax = (coeffs @ sh_basis(degree, v).T).max(axis=1) + 0.5
        size = int(np.ceil((n_particles * np.mean(4 / 3 * np.pi * rmax**3) / 0.40) ** (1 / 3)))
    t0 = time.perf_counter()
    ph = make_ct_phantom(
        coefficients=coeffs,
        shape=(size,) * 3,
        n_particles=n_particles,
        rng=rng,
        gap_vox=gap_vox,
        dtype="uint16",
        partial_volume=partial_volume,
    )
    np.save(work / "ct.npy", ph.volume)
    times = {"render": time.perf_counter() - t0}
    model = work / "model.json"
    t0 = time.perf_counter()
    code = cli.main(
        [
            "fit-shells",
            str(work / "ct.npy"),
            "--voxel-size-um",
            "0.128",
            "--out",
            str(model),
            "--degree",
            str(degree),
            "--seed",
            str(seed),
            *extra_args,
        ]
    )
    times["fit_shells"] = time.perf_counter() - t0
    if code != 0:
        raise RuntimeError(f"fit-shells failed with exit code {code}")
    t0 = time.perf_counter()
    assert (
        cli.main(
            [
                "sample-shells",
                str(model),
                "-n",
                str(n_sample),
                "--seed",
                str(seed + 1),
                "--out",
                str(work / "shells.parquet"),
            ]
        )
        == 0
    )
    assert (
        cli.main(
            [
                "describe-shells",
                str(work / "shells.parquet"),
                "--against",
                str(model),
                "--subdivisions",
                str(subdivisions),
                "--out",
                str(work / "report"),
            ]
        )
        == 0
    )
    times["sample_describe"] = time.perf_counter() - t0
    comp = json.loads((work / "report" / "comparison.json").read_text())
    doc = json.loads(model.read_text())

    m = ShellModel.load(model)
    c_meas = m.load_coefficients()

    tab = pq.read_table(work / "model.coefficients.parquet").to_pandas()
    cen = tab[["centroid_x_vox", "centroid_y_vox", "centroid_z_vox"]].to_numpy()

    d, j = cKDTree(ph.centers_xyz).query(cen)
    ok = d < 3.0
    ct, cm = ph.coefficients[j[ok]], c_meas[ok]
    big = ct[:, 0] / np.sqrt(4 * np.pi) >= 10.0
    spread = {
        l: (_spread(cm[big], l) / _spread(ct[big], l)) if big.sum() > 5 else None for l in range(2, min(degree, 6) + 1)
    }
    sel = doc.get("model_selection") or {}
    row = sel.get("candidates", {}).get(sel.get("chosen"), {})
    return {
        "kind": kind,
        "size": size,
        "n_true": ph.n_particles,
        "n_measured": int(c_meas.shape[0]),
        "n_matched": int(ok.sum()),
        "n_matched_r10": int(big.sum()),
        "chosen": sel.get("chosen", doc.get("model")),
        "selfcheck_max_ks": row.get("max_ks"),
        "ks": {k: v["ks"] for k, v in comp.items()},
        "w1": {k: v["wasserstein1"] for k, v in comp.items()},
        "spread_ratio": spread,
        "a00_ratio": float(cm[:, 0].mean() / ct[:, 0].mean()) if ok.any() else None,
        "measurement": doc["source"].get("measurement"),
        "partial_volume": bool(partial_volume),
        "times": times,
    }


def format_loop_table(rows: list[dict]) -> str:
    """One line per loop: KS per descriptor, chosen model, per-degree spread ratios.

    Parameters
    ----------
    rows : list of dict
        Results of :func:`run_truth_loop`.

    Returns
    -------
    str
        A header line plus one line per row.
    """

    short = {
        "d_max": "d_max",
        "compactness": "compact",
        "aspect_ratio": "aspect",
        "sphericity": "spher",
        "volume": "volume",
        "area": "area",
    }
    lines = [
        f"{'truth':<15}{'n meas':>7}"
        + "".join(f"{short[k]:>8}" for k in DESCRIPTORS)
        + f"  {'chosen':<20}  spread ratio l=2..6 (R>=10)      a00"
    ]
    for r in rows:
        sp = " ".join("  -  " if v is None else f"{v:5.2f}" for v in r["spread_ratio"].values())
        lines.append(
            f"{r['kind']:<15}{r['n_measured']:>7}"
            + "".join(f"{r['ks'][k]:>8.3f}" for k in DESCRIPTORS)
            + f"  {r['chosen']!s:<20}  {sp:<32} {r['a00_ratio']:.3f}"
        )
    return "\n".join(lines)
