"""``nmc-dataset fit-orientations``: the radial orientation texture from imported EBSD sections.

::

    nmc-dataset fit-orientations sections/ --out grain_model/orientation_model.json
        [--min-radius-frac 0.4] [--sample-frame image|y-up] [--frame-rotation-deg 0]

Reads every central section written by ``import-ebsd`` (``grains.parquet``: mean orientation
and centroid of each 2D grain; ``mask.tif``: the section's radius), computes each grain's radial
direction in crystal coordinates and fits :class:`~nmc_dataset.ebsd._orientation_model.OrientationModel`
by maximum likelihood. Its own stage (not part of ``fit-grains``): the texture is independent of
the GAN's morphology, takes a second to fit, and can be added to an existing grain model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nmc_dataset.errors import InputError, RecipeError

#: Sample frames the EBSD Euler angles may refer to (relative to the image: x = column index,
#: y = row index, both increasing).
SAMPLE_FRAMES = ("image", "y-up")


def section_radial_vectors(
    grains_table,
    radius_px: float,
    min_radius_frac: float = 0.4,
    sample_frame: str = "image",
    frame_rotation_deg: float = 0.0,
):
    """Radial directions in crystal coordinates of one section's grains.

    Parameters
    ----------
    grains_table : pyarrow.Table
        ``grains.parquet`` of ``import-ebsd`` (``centroid_x_px``, ``centroid_y_px`` relative to
        the section centre, ``q_w..q_z``).
    radius_px : float
        The section's radius; grains closer to the centre than ``min_radius_frac * radius_px``
        are skipped (their radial direction is ill-defined).
    sample_frame : {"image", "y-up"}
        Frame of the Euler angles: ``image`` = x along columns, y along rows (downwards),
        z = x × y (into the image); ``y-up`` = x along columns, y up, z out of the image.
    frame_rotation_deg : float
        Angle of the Euler frame's x axis from the image's x axis, counter-clockwise about z
        of ``sample_frame``.

    Returns
    -------
    v : (n, 3) array
        ``g e_r`` per used grain.
    c_sample : (n, 3) array
        The c-axis of those grains in the sample frame (for the fibre-symmetry check).
    e_r : (n, 3) array
        Their radial directions in the sample frame.
    rho : (n,) array
        Their distance from the section centre (pixels).
    """
    from scipy.spatial.transform import Rotation

    cols = set(grains_table.column_names)
    need = {"centroid_x_px", "centroid_y_px", "q_w", "q_x", "q_y", "q_z"}
    if not need <= cols:
        raise InputError(f"grains.parquet lacks {sorted(need - cols)} (re-run import-ebsd)")
    cx = grains_table.column("centroid_x_px").to_numpy().astype(np.float64)
    cy = grains_table.column("centroid_y_px").to_numpy().astype(np.float64)
    q = np.stack([grains_table.column(f"q_{k}").to_numpy().astype(np.float64) for k in "wxyz"], axis=1)
    if sample_frame == "y-up":
        cy = -cy
    elif sample_frame != "image":
        raise RecipeError(f"--sample-frame must be one of {SAMPLE_FRAMES}, got {sample_frame!r}")
    a = np.radians(float(frame_rotation_deg))
    ex = cx * np.cos(a) + cy * np.sin(a)
    ey = -cx * np.sin(a) + cy * np.cos(a)
    rho = np.hypot(ex, ey)
    ok = np.isfinite(q).all(axis=1) & np.isfinite(rho) & (rho >= float(min_radius_frac) * float(radius_px)) & (rho > 0)
    e_r = np.stack([ex[ok] / rho[ok], ey[ok] / rho[ok], np.zeros(int(ok.sum()))], axis=1)
    if not ok.any():
        return np.zeros((0, 3)), np.zeros((0, 3)), e_r, np.zeros(0)
    rot = Rotation.from_quat(q[ok], scalar_first=True)  # matrix = g (frame -> crystal)
    v = rot.apply(e_r)
    c_sample = rot.inv().apply(np.array([0.0, 0.0, 1.0]))
    return v, c_sample, e_r, rho[ok]


def fibre_symmetry_check(c_sample: np.ndarray, e_r: np.ndarray) -> dict:
    """Test the model's fibre symmetry on sections: the c-axis azimuth about ``e_r`` is uniform.

    In a section with normal ``n`` and in-plane tangent ``t = n × e_r``, fibre symmetry means
    ``E[(c·t)² − (c·n)²] = 0``. Returns that mean, its standard error and the z-score.
    """
    n = np.array([0.0, 0.0, 1.0])
    t = np.cross(n, e_r)
    d = np.sum(c_sample * t, axis=1) ** 2 - (c_sample @ n) ** 2
    if len(d) < 2:
        return {"mean_ct2_minus_cn2": float("nan"), "se": float("nan"), "z": float("nan")}
    m, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))
    return {"mean_ct2_minus_cn2": m, "se": se, "z": m / se if se > 0 else float("nan")}


def fit_orientations(
    sections,
    out=None,
    *,
    min_radius_frac: float = 0.4,
    sample_frame: str = "image",
    frame_rotation_deg: float = 0.0,
    all_sections: bool = False,
    blur_correction: bool = True,
):
    """Fit the radial orientation texture on imported sections (the API behind ``fit-orientations``).

    Parameters
    ----------
    sections : path-like
        Folder written by ``import-ebsd``.
    out : path-like, optional
        Where to write the model (a ``.json`` path, or a folder that receives
        ``orientation_model.json``); an existing file is replaced only if it is an orientation
        model.
    min_radius_frac, sample_frame, frame_rotation_deg :
        See :func:`section_radial_vectors`.
    all_sections : bool
        Use off-centre sections too (their in-plane radial directions are biased; default:
        only the central ones).
    blur_correction : bool
        Correct for the angular error of the in-plane radial directions
        (:func:`~nmc_dataset.ebsd._orientation_model.fit_texture_deblurred`); the uncorrected
        fit is kept in the model's ``fit.raw``.

    Returns
    -------
    OrientationModel
    """
    import pyarrow.parquet as pq

    from nmc_dataset._util import log, read_json
    from nmc_dataset.ebsd._orientation_model import (
        ORIENTATION_MODEL_FILE,
        ORIENTATION_MODEL_FORMAT,
        OrientationModel,
        fit_texture,
        fit_texture_deblurred,
    )
    from nmc_dataset.io._sections import read_sections

    if not (0.0 <= float(min_radius_frac) < 1.0):
        raise RecipeError(f"--min-radius-frac must be in [0, 1), got {min_radius_frac}")
    if not np.isfinite(frame_rotation_deg):
        raise RecipeError(f"--frame-rotation-deg must be finite, got {frame_rotation_deg}")
    if sample_frame not in SAMPLE_FRAMES:
        raise RecipeError(f"--sample-frame must be one of {SAMPLE_FRAMES}, got {sample_frame!r}")
    root = Path(sections)
    out_path = None
    if out is not None:
        out_path = Path(out)
        if out_path.is_dir() or out_path.suffix.lower() != ".json":
            out_path = out_path / ORIENTATION_MODEL_FILE
        if out_path.exists():
            try:
                meta = read_json(out_path)
            except InputError:
                meta = None
            if not (isinstance(meta, dict) and meta.get("format") == ORIENTATION_MODEL_FORMAT):
                raise InputError("exists and is not an orientation model; choose another --out", out_path)
    secs = read_sections(root, selected_only=not all_sections)
    vs, cs, ers, rhos, used = [], [], [], [], []
    phases = set()
    for s in secs:
        path = root / s.section_id / "grains.parquet"
        try:
            table = pq.read_table(path)
        except FileNotFoundError:
            raise InputError("missing grains.parquet (re-run import-ebsd)", path.parent) from None
        phase = (s.meta.get("phase") or {}).get("laue_group")
        if phase is not None:
            phases.add(phase)
        radius = float(np.sqrt(s.mask.sum() / np.pi))
        try:
            v, c, e, rho = section_radial_vectors(table, radius, min_radius_frac, sample_frame, frame_rotation_deg)
        except InputError as err:
            raise InputError(err.message, path) from None
        vs.append(v)
        cs.append(c)
        ers.append(e)
        rhos.append(rho)
        used.append({"id": s.section_id, "grains_used": len(v), "grains": int(table.num_rows), "radius_px": radius})
    bad = sorted(p for p in phases if p not in ("-3m", "-3m1", "3m", "32"))
    if bad:
        raise InputError(
            f"the sections' phase has Laue group {bad[0]}; the radial texture model is for -3m (NMC811)", root
        )
    v, c, e, rho = np.concatenate(vs), np.concatenate(cs), np.concatenate(ers), np.concatenate(rhos)
    if len(v) < 10:
        raise InputError(
            f"only {len(v)} grains lie outside --min-radius-frac {min_radius_frac} of the central "
            "sections: too few to fit a texture (import more sections, or lower it)",
            root,
        )
    fit = fit_texture_deblurred(v, rho) if blur_correction else fit_texture(v)
    fit.update(
        {
            "sections": used,
            "n_sections": len(used),
            "fibre_symmetry_check": fibre_symmetry_check(c, e),
            "options": {
                "min_radius_frac": float(min_radius_frac),
                "sample_frame": sample_frame,
                "frame_rotation_deg": float(frame_rotation_deg),
                "all_sections": bool(all_sections),
                "blur_correction": bool(blur_correction),
            },
            "source": str(root),
        }
    )
    model = OrientationModel(kappa=fit["kappa"], lam=fit["lambda"], fit=fit)
    fz = fit["fibre_symmetry_check"]["z"]
    if np.isfinite(fz) and abs(fz) > 4:
        log.warning(
            "the c-axes are not symmetric about the radial direction in these sections (z = %.1f): the "
            "fibre-symmetric model averages over it; check --sample-frame / --frame-rotation-deg",
            fz,
        )
    log.info(
        "orientation texture from %d grains in %d sections: kappa = %.2f ± %.2f, lambda = %.2f ± %.2f; %s",
        fit["n"],
        len(used),
        fit["kappa"],
        fit["kappa_se"],
        fit["lambda"],
        fit["lambda_se"],
        f"textured (p = {fit['p_value_no_texture']:.2g})"
        if fit["textured"]
        else f"no texture detected (p = {fit['p_value_no_texture']:.2g})",
    )
    if out_path is not None:
        model.save(out_path)
    return model


__all__ = ["SAMPLE_FRAMES", "fibre_symmetry_check", "fit_orientations", "section_radial_vectors"]
