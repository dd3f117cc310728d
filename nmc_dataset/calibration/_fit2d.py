"""2D restricted GBPD fits to measured sections: the training "ground truth".

A section's label image is fitted by a 2D GBPD with the radial marker restriction
(``M_i = Q_i^T D_i Q_i``, ``Q_i`` with first row ``s_i / |s_i|``) by gradient descent (Adam) on
the soft form with an annealed temperature: the loss is the cross-entropy of each assigned
pixel's grain under :func:`~nmc_dataset.tessellation._labels.soft_assign`, over a per-grain candidate
set (the grain, its neighbours in the label image and any cell that took its pixels at the
last check). Unassigned pixels (label 0) and pixels outside the particle mask are ignored.

Initialisation: seeds at grain centroids, ``M_i`` from the inverse covariance of the grain's
pixels (expressed in the radial frame: only its diagonal is kept), offsets 0. The overall scale
of the markers is free (scaling every ``D_i`` and ``r_i`` by one factor leaves the tessellation
unchanged); fits are in this "Mahalanobis" scale: a round grain's boundary sits near
``|x - s|^2_M ~ 4``.

Coordinates: pixels relative to the section centre, ``(x, y) = (col - center_x, row - center_y)``.

On disk (:func:`write_tessellations`), a folder::

    cells.parquet    one row per cell: section_id, cell, seed_x_px, seed_y_px, d_radial,
                     d_tangential, r, label (the section's grain label the cell was fitted to);
                     schema metadata format = "nmc-dataset/tessellations", format_version = 1
    sections.json    format, format_version and per section: id, pixel_size_um, center_px,
                     shape, agreement, n_cells, mask (relative path)
    masks/<id>.npz   the section's particle mask (``mask``: bool array, axes (y, x)) and, when
                     the import recorded one, its confident pixels (``confident``, same form)
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from scipy import ndimage

from nmc_dataset._util import check_format, log, progress, read_json
from nmc_dataset.errors import InputError
from nmc_dataset.io._sections import Section, read_sections
from nmc_dataset.outputs import check_out_name, claim_folder, output_folder
from nmc_dataset.tessellation._gbpd import DIAG_MIN, GBPD, radial_frames
from nmc_dataset.tessellation._labels import hard_labels, hard_labels_grid
from nmc_dataset.tessellation._soft import soft_power_distances, torch_frames

TESSELLATIONS_FORMAT = "nmc-dataset/tessellations"
TESSELLATIONS_FORMAT_VERSION = 1


@dataclasses.dataclass
class SectionFit:
    """A 2D GBPD fitted to one section.

    Parameters
    ----------
    section_id : str
        Id of the section (its folder name).
    gbpd : GBPD
        2D, in pixels relative to the section centre.
    pixel_size_um : float
        Pixel (step) size in µm.
    agreement : float
        Fraction of assigned pixels (label > 0, inside the mask) whose hard fitted cell is the
        cell of their grain.
    mask : (ny, nx) bool array
        The particle section.
    center_px : (2,) float array
        ``(x, y)`` of the section centre in pixels.
    label_ids : (N,) int64 array
        The section's grain label each cell was fitted to.
    confident : (ny, nx) bool array, optional
        The section's confident pixels (None: all of the mask), carried over from the import for
        the detection limit (:mod:`nmc_dataset.ebsd._detection`).
    """

    section_id: str
    gbpd: GBPD
    pixel_size_um: float
    agreement: float
    mask: np.ndarray
    center_px: np.ndarray
    label_ids: np.ndarray
    confident: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(ny, nx)``."""
        return tuple(self.mask.shape)

    @property
    def radius_px(self) -> float:
        """Equal-area radius of the section (pixels): ``sqrt(mask area / pi)``."""
        return float(np.sqrt(np.asarray(self.mask, bool).sum() / np.pi))

    def origin(self) -> np.ndarray:
        """Coordinates ``(x, y)`` of pixel ``[0, 0]`` relative to the centre."""
        return -np.asarray(self.center_px, dtype=np.float64)

    def cell_image(self) -> np.ndarray:
        """Hard cell index per pixel inside the mask, -1 outside."""
        return hard_labels_grid(self.gbpd, self.shape, origin=self.origin(), spacing=1.0, mask=self.mask)

    def label_image(self) -> np.ndarray:
        """The fitted tessellation as a grain label image (the section's label ids; 0 outside the mask)."""
        cells = self.cell_image()
        out = np.zeros(self.shape, dtype=np.int64)
        inside = cells >= 0
        out[inside] = self.label_ids[cells[inside]]
        return out


# --------------------------------------------------------------------------- initialisation
def _grain_stats(coords: np.ndarray, cell: np.ndarray, n: int):
    """Centroids (n, 2) and covariances (n, 2, 2) of the pixels of each cell."""
    count = np.bincount(cell, minlength=n).astype(np.float64)
    mean = np.stack([np.bincount(cell, coords[:, k], n) for k in range(2)], 1) / count[:, None]
    d = coords - mean[cell]
    cov = np.empty((n, 2, 2))
    for a in range(2):
        for b in range(2):
            cov[:, a, b] = np.bincount(cell, d[:, a] * d[:, b], n) / count
    cov += np.eye(2) / 12.0  # the pixel's own extent (uniform on a unit square)
    return mean, cov, count


def _adjacency(cells_img: np.ndarray, n: int, reach: int = 2) -> list[set]:
    """Pairs of cells whose pixels lie within ``reach`` pixels (bridges unassigned junction pixels)."""
    ny, nx = cells_img.shape
    nb = [set() for _ in range(n)]
    for dy in range(0, reach + 1):
        for dx in range(-reach, reach + 1):
            if dy == 0 and dx <= 0:
                continue
            a = cells_img[0 : ny - dy, max(0, -dx) : nx - max(0, dx)]
            b = cells_img[dy:ny, max(0, dx) : nx + min(0, dx)]
            sel = (a >= 0) & (b >= 0) & (a != b)
            if not sel.any():
                continue
            pairs = np.unique(np.stack([a[sel], b[sel]], 1), axis=0)
            for i, j in pairs:
                nb[i].add(int(j))
                nb[j].add(int(i))
    return nb


def _candidate_table(neighbours: list[set]) -> np.ndarray:
    """(n, K) table: row i = [i, neighbours of i..., -1 padding]."""
    n = len(neighbours)
    k = 1 + max((len(s) for s in neighbours), default=0)
    table = np.full((n, k), -1, dtype=np.int64)
    for i, s in enumerate(neighbours):
        row = [i] + sorted(s - {i})
        table[i, : len(row)] = row
    return table


# --------------------------------------------------------------------------- the fit
def fit_section(
    section,
    steps: int = 200,
    seed: int = 0,
    beta: tuple[float, float] = (2.0, 0.05),
    lr: float = 0.05,
    check_every: int = 20,
    filled_weight: float = 1.0,
) -> SectionFit:
    """Fit a 2D restricted GBPD to a section's label image.

    Parameters
    ----------
    section : nmc_dataset.io._sections.Section
        Labels (0 = unassigned), mask, centre and pixel size.
    steps : int
        Adam steps.
    seed : int
        Seeds the (tiny) random jitter of coincident initial seeds; the fit is deterministic.
    beta : (float, float)
        Start and end temperature (annealed geometrically), in the Mahalanobis scale above.
    lr : float
        Adam learning rate for seeds (pixels); markers and offsets use scaled rates.
    check_every : int
        Every this many steps the exact hard labels are computed, the agreement recorded (the
        best parameters are kept; the fit stops early at 100 %) and cells that took a grain's
        pixels join its candidates.
    filled_weight : float, default 1.0
        Weight, in the loss and in the choice of the best check, of the pixels the import filled
        (assigned but not confident, ``section.confident``); confident pixels weigh 1. 1: every
        assigned pixel is data; 0: filled pixels are unknown, as unassigned ones are (the fit
        still starts from the completed grains' moments). Sections without confident pixels
        recorded are unaffected.

    Returns
    -------
    SectionFit
        The fitted tessellation and its agreement with the section's labels (all assigned pixels).

    Raises
    ------
    InputError
        If the section has no assigned pixel inside its mask, or ``filled_weight`` is not in [0, 1].
    """
    import torch

    if not (np.isfinite(filled_weight) and 0.0 <= filled_weight <= 1.0):
        raise InputError(f"--filled-weight must be a number in [0, 1], got {filled_weight}")
    saved = torch.get_num_threads()
    torch.set_num_threads(1)  # small tensors: one thread is faster (and robust on busy machines)
    try:
        return _fit_section(section, steps, seed, beta, lr, check_every, filled_weight)
    finally:
        torch.set_num_threads(saved)


def _fit_section(section, steps, seed, beta, lr, check_every, filled_weight=1.0) -> SectionFit:
    import torch

    labels = np.asarray(section.labels)
    mask = np.asarray(section.mask, dtype=bool)
    use = mask & (labels > 0)
    if not use.any():
        raise InputError(
            "section has no assigned pixel inside its particle mask (nothing to fit)",
            getattr(section, "section_id", None),
        )
    label_ids = np.unique(labels[use]).astype(np.int64)
    n = len(label_ids)
    cells_img = np.full(labels.shape, -1, dtype=np.int64)
    cells_img[use] = np.searchsorted(label_ids, labels[use])
    coords_img = section.pixel_coords()
    coords = coords_img[use]
    target = cells_img[use]

    weight = None  # per assigned pixel; None: all 1 (the plain mean, unchanged arithmetic)
    confident = getattr(section, "confident", None)
    if confident is not None and filled_weight != 1.0:
        weight = np.where(np.asarray(confident, bool)[use], 1.0, float(filled_weight))
        if not weight.sum() > 0:
            raise InputError("section has no confident assigned pixel to fit", getattr(section, "section_id", None))
    t_weight = None if weight is None else torch.tensor(weight / weight.sum(), dtype=torch.float64)

    mean, cov, _count = _grain_stats(coords, target, n)
    rng = np.random.default_rng(seed)
    mean = mean + rng.normal(scale=1e-3, size=mean.shape)

    q = radial_frames(mean)
    local_var = np.einsum("nij,njk,nik->ni", q, cov, q)  # variance along radial / tangential
    diag0 = 1.0 / np.maximum(local_var, 0.05)

    table = _candidate_table(_adjacency(cells_img, n))
    t_seeds = torch.tensor(mean, dtype=torch.float64, requires_grad=True)
    t_logd = torch.tensor(np.log(diag0), dtype=torch.float64, requires_grad=True)
    t_r = torch.zeros(n, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam(
        [{"params": [t_seeds], "lr": lr}, {"params": [t_logd], "lr": lr * 0.4}, {"params": [t_r], "lr": lr * 2.0}]
    )
    t_points = torch.tensor(coords, dtype=torch.float64)

    def current() -> GBPD:
        with torch.no_grad():
            return GBPD(t_seeds.numpy().copy(), np.maximum(np.exp(t_logd.numpy()), DIAG_MIN), t_r.numpy().copy())

    def check(g: GBPD):
        nonlocal table
        got = hard_labels(g, coords)
        wrong = got != target
        if wrong.any():  # cells that took pixels of grain t become t's candidates
            nb = [set(row[row >= 0].tolist()) for row in table]
            for t, c in np.unique(np.stack([target[wrong], got[wrong]], 1), axis=0):
                nb[t].add(int(c))
            table = _candidate_table(nb)
        score = 1.0 - wrong.mean() if weight is None else 1.0 - float(weight[wrong].sum() / weight.sum())
        return score, 1.0 - wrong.mean()

    b0, b1 = beta
    best_g = current()
    best, best_agree = check(best_g)
    cand = torch.tensor(table[target])
    for step in range(steps):
        frac = step / max(steps - 1, 1)
        b = b0 * (b1 / b0) ** frac
        frames = torch_frames(t_seeds)
        dist = soft_power_distances(t_points, t_seeds, torch.exp(t_logd), t_r, frames, cand)
        logp = torch.log_softmax(-dist / b, dim=1)[:, 0]
        loss = -logp.mean() if t_weight is None else -(logp * t_weight).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            t_logd.clamp_(min=np.log(DIAG_MIN))
        if (step + 1) % check_every == 0 or step == steps - 1:
            g = current()
            score, agree = check(g)
            cand = torch.tensor(table[target])
            if score >= best:
                best, best_g, best_agree = score, g, agree
            if best >= 1.0:  # every (weighted) assigned pixel is right: nothing left to improve
                break
    return SectionFit(
        section_id=str(section.section_id),
        gbpd=best_g,
        pixel_size_um=float(section.pixel_size_um),
        agreement=float(best_agree),
        mask=mask.copy(),
        center_px=np.asarray(section.center_px, float).copy(),
        label_ids=label_ids,
        confident=None if getattr(section, "confident", None) is None else np.asarray(section.confident, bool).copy(),
    )


def augment(g: GBPD, rng: np.random.Generator, max_rel: float = 0.2) -> GBPD:
    """Perturb every offset ``r_i`` and every diagonal marker entry by an independent uniform
    relative factor in ``[1 - max_rel, 1 + max_rel]`` (the training augmentation).

    Parameters
    ----------
    g : GBPD
        The fitted tessellation.
    rng : numpy.random.Generator
        Source of the factors.
    max_rel : float
        Largest relative change, in ``[0, 1)``.

    Returns
    -------
    GBPD
        Same seeds and roll angles.
    """
    if not 0 <= max_rel < 1:
        raise ValueError("max_rel must be in [0, 1)")
    fr = 1.0 + rng.uniform(-max_rel, max_rel, size=g.offsets.shape)
    fd = 1.0 + rng.uniform(-max_rel, max_rel, size=g.diag.shape)
    return GBPD(g.seeds.copy(), np.maximum(g.diag * fd, DIAG_MIN), g.offsets * fr, g.roll.copy())


# --------------------------------------------------------------------------- files
def write_tessellations(fits: list[SectionFit], folder: str | Path, *, force: bool = False) -> Path:
    """Write fitted tessellations atomically into ``folder`` (layout in the module docstring).

    Parameters
    ----------
    fits : list of SectionFit
        The fitted sections (distinct ids).
    folder : str or Path
        Output folder.
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).

    Returns
    -------
    Path
        ``folder``.
    """

    folder = Path(folder)
    ids = [f.section_id for f in fits]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate section ids")
    cols = {k: [] for k in ("section_id", "cell", "seed_x_px", "seed_y_px", "d_radial", "d_tangential", "r", "label")}
    sections = []
    for f in fits:
        g = f.gbpd
        cols["section_id"] += [f.section_id] * g.n
        cols["cell"].append(np.arange(g.n, dtype=np.int64))
        cols["seed_x_px"].append(g.seeds[:, 0])
        cols["seed_y_px"].append(g.seeds[:, 1])
        cols["d_radial"].append(g.diag[:, 0])
        cols["d_tangential"].append(g.diag[:, 1])
        cols["r"].append(g.offsets)
        cols["label"].append(np.asarray(f.label_ids, dtype=np.int64))
        sections.append(
            {
                "id": f.section_id,
                "pixel_size_um": float(f.pixel_size_um),
                "center_px": [float(c) for c in f.center_px],
                "shape": [int(s) for s in f.shape],
                "agreement": float(f.agreement),
                "n_cells": int(g.n),
                "mask": f"masks/{f.section_id}.npz",
            }
        )
    arrays = {"section_id": pa.array(cols["section_id"], pa.string())}
    for k in ("cell", "seed_x_px", "seed_y_px", "d_radial", "d_tangential", "r", "label"):
        kind = pa.int64() if k in ("cell", "label") else pa.float64()
        arrays[k] = pa.array(np.concatenate(cols[k]) if fits else np.zeros(0), kind)
    meta = {
        "format": TESSELLATIONS_FORMAT,
        "format_version": str(TESSELLATIONS_FORMAT_VERSION),
        "units": "pixels relative to the section centre (x = col - center_x, y = row - center_y)",
    }
    table = pa.table(arrays).replace_schema_metadata(meta)
    doc = {"format": TESSELLATIONS_FORMAT, "format_version": TESSELLATIONS_FORMAT_VERSION, "sections": sections}
    with output_folder(folder, "fit-sections", force=force, legacy=("sections.json",)) as tmp:
        pq.write_table(table, tmp / "cells.parquet")
        (tmp / "masks").mkdir()
        for f in fits:
            extra = {} if f.confident is None else {"confident": np.asarray(f.confident, dtype=bool)}
            np.savez_compressed(tmp / "masks" / f"{f.section_id}.npz", mask=np.asarray(f.mask, dtype=bool), **extra)
        (tmp / "sections.json").write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return folder


def read_tessellations(folder: str | Path) -> list[SectionFit]:
    """Read a folder written by :func:`write_tessellations` (in the order of ``sections.json``).

    Parameters
    ----------
    folder : str or Path
        A tessellations folder (``sections.json``, ``cells.parquet``, ``masks/``).

    Returns
    -------
    list of SectionFit
        One per section.

    Raises
    ------
    InputError, FormatVersionError
        Missing or malformed files, or a newer format version.
    """

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("not a tessellations folder (run fit-sections first)", folder)
    doc = read_json(folder / "sections.json")
    check_format(doc, TESSELLATIONS_FORMAT, TESSELLATIONS_FORMAT_VERSION, folder / "sections.json")
    path = folder / "cells.parquet"
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read: {e}", path) from None
    raw = table.schema.metadata or {}
    meta = {k.decode(): v.decode() for k, v in raw.items()}
    try:
        meta["format_version"] = int(meta.get("format_version", ""))
    except ValueError:
        raise InputError("missing or invalid 'format_version' in parquet metadata", path) from None
    check_format(meta, TESSELLATIONS_FORMAT, TESSELLATIONS_FORMAT_VERSION, path)
    need = ("section_id", "cell", "seed_x_px", "seed_y_px", "d_radial", "d_tangential", "r", "label")
    missing = [c for c in need if c not in table.column_names]
    if missing:
        raise InputError(f"missing columns {missing}", path)
    df = {c: table.column(c).to_numpy(zero_copy_only=False) for c in need}
    fits = []
    for s in doc.get("sections", []):
        try:
            sid = s["id"]
            sel = df["section_id"] == sid
            order = np.argsort(df["cell"][sel])
            col = {c: df[c][sel][order] for c in need}
            if len(col["cell"]) == 0:
                raise InputError(f"section {sid!r} has no cells in cells.parquet", path)
            g = GBPD(
                np.stack([col["seed_x_px"], col["seed_y_px"]], 1),
                np.stack([col["d_radial"], col["d_tangential"]], 1),
                col["r"],
            )
            mpath = folder / s.get("mask", f"masks/{sid}.npz")
            try:
                with np.load(mpath) as z:
                    mask = z["mask"].astype(bool)
                    confident = z["confident"].astype(bool) if "confident" in z.files else None
            except (OSError, KeyError, ValueError) as e:
                raise InputError(f"cannot read mask: {e}", mpath) from None
            if list(mask.shape) != list(s["shape"]) or (confident is not None and confident.shape != mask.shape):
                raise InputError(f"mask shape {mask.shape} disagrees with sections.json", mpath)
            fits.append(
                SectionFit(
                    section_id=sid,
                    gbpd=g,
                    pixel_size_um=float(s["pixel_size_um"]),
                    agreement=float(s["agreement"]),
                    mask=mask,
                    center_px=np.asarray(s["center_px"], dtype=np.float64),
                    label_ids=col["label"].astype(np.int64),
                    confident=confident,
                )
            )
        except (KeyError, TypeError) as e:
            raise InputError(f"malformed section entry ({e})", folder / "sections.json") from None
        except ValueError as e:
            raise InputError(f"invalid cell parameters for section {s.get('id')!r}: {e}", path) from None
    return fits


def fit_sections(
    root: str | Path,
    out: str | Path,
    steps: int = 200,
    seed: int = 0,
    *,
    force: bool = False,
    filled_weight: float = 1.0,
) -> list[SectionFit]:
    """Fit every selected (central) section under ``root`` and write the tessellations to ``out``.

    Parameters
    ----------
    root : path-like
        A folder of sections written by ``import-ebsd`` (:mod:`nmc_dataset.io._sections`).
    out : path-like
        The tessellations folder to write (replaced atomically).
    steps : int
        Adam steps per section.
    seed : int
        Seed of the first section's fit (section ``i`` uses ``seed + i``).
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).
    filled_weight : float, default 1.0
        Weight of the pixels the import filled (:func:`fit_section`).

    Returns
    -------
    list of SectionFit
        One per selected section, in section order.
    """

    if not (np.isfinite(filled_weight) and 0.0 <= filled_weight <= 1.0):
        raise InputError(f"--filled-weight must be a number in [0, 1], got {filled_weight}")
    claim_folder(check_out_name(out), "fit-sections", force=force, legacy=("sections.json",))
    sections = read_sections(root, selected_only=True)  # validates before anything is written
    for s in sections:
        if not (np.asarray(s.mask, bool) & (np.asarray(s.labels) > 0)).any():
            raise InputError(
                "section has no assigned pixel inside its particle mask (nothing to fit)", Path(root) / s.section_id
            )
    fits = []
    for i, s in enumerate(progress(sections, total=len(sections), desc="fit-sections", unit="section")):
        t0 = time.perf_counter()
        fit = fit_section(s, steps=steps, seed=seed + i, filled_weight=filled_weight)
        log.info(
            "%s: %d cells, agreement %.2f %% (%.1f s)",
            s.section_id,
            fit.gbpd.n,
            100 * fit.agreement,
            time.perf_counter() - t0,
        )
        fits.append(fit)
    write_tessellations(fits, out, force=force)
    return fits


# --------------------------------------------------------------------------- known truth
def section_from_gbpd(
    g: GBPD,
    size: int,
    radius_px: float,
    z: float = 0.0,
    junction_fraction: float = 0.5,
    rng: np.random.Generator | None = None,
    section_id: str = "synthetic",
    pixel_size_um: float = 0.05,
):
    """A known-truth section: the hard labels of a 2D GBPD, or of a 3D GBPD's plane ``z``, inside
    a disc of radius ``radius_px`` (for tests and benchmarks).

    Cells are split into connected components (as grain reconstruction would) and numbered from
    1; a ``junction_fraction`` of the pixels touching three or more grains (3 x 3 neighbourhood)
    are set to 0 (unassigned), as EBSD leaves them.

    Parameters
    ----------
    g : GBPD
        2D or 3D tessellation in pixels, centred on the image centre.
    size : int
        Edge length of the square image (pixels).
    radius_px : float
        Radius of the particle disc (pixels).
    z : float, default 0.0
        Height of the cutting plane for a 3D ``g`` (pixels).
    junction_fraction : float, default 0.5
        Fraction of triple-junction pixels set to 0.
    rng : numpy.random.Generator, optional
        Draws the unassigned junction pixels (default seed 0).
    section_id : str, default "synthetic"
        Id of the section.
    pixel_size_um : float, default 0.05
        Pixel size recorded in the section (µm).

    Returns
    -------
    nmc_dataset.io._sections.Section
        Centre at the middle of the ``size x size`` image.
    """

    rng = np.random.default_rng(0) if rng is None else rng
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]
    mask = (xx - c) ** 2 + (yy - c) ** 2 <= radius_px**2
    origin = np.array([-c, -c] if g.dim == 2 else [-c, -c, z])
    if g.dim == 2:
        cells = hard_labels_grid(g, (size, size), origin=origin, mask=mask)
    else:
        pts = np.stack([xx - c, yy - c, np.full(xx.shape, float(z))], -1)[mask]
        cells = np.full((size, size), -1, np.int64)
        cells[mask] = hard_labels(g, pts)
    labels = np.zeros((size, size), dtype=np.uint32)
    nxt = 1
    for cell in np.unique(cells[mask]):
        comp, k = ndimage.label(cells == cell)
        labels[comp > 0] = comp[comp > 0] + nxt - 1
        nxt += k
    padded = np.pad(labels.astype(np.int64), 1, constant_values=0)
    distinct = np.zeros(labels.shape, dtype=np.int64)
    windows = np.stack(
        [padded[1 + dy : 1 + dy + size, 1 + dx : 1 + dx + size] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], 0
    )
    windows = np.sort(windows, axis=0)
    distinct = (np.diff(windows, axis=0) != 0).sum(0) + 1 - (windows[0] == 0)
    junction = (distinct >= 3) & mask & (rng.random(labels.shape) < junction_fraction)
    labels[junction] = 0
    labels[~mask] = 0
    return Section(
        section_id=section_id,
        labels=labels,
        mask=mask,
        pixel_size_um=pixel_size_um,
        center_px=np.array([c, c]),
        central=True,
        centrality_score=1.0,
        meta={"source": "synthetic"},
    )
