"""The on-disk form of imported 2D sections (the output of ``import-ebsd``).

One folder per section::

    <root>/<section_id>/labels.tif     uint32 grain labels, axes (y, x); 0 = unassigned
    <root>/<section_id>/mask.tif       uint8, 1 inside the particle section
    <root>/<section_id>/confident.tif  uint8, 1 where the scan indexed the pixel with CI >= the
                                       import's threshold (only written when some pixel of the
                                       particle section is not; absent: every pixel is)
    <root>/<section_id>/section.json   metadata (format, pixel size, centre, centrality, source)
    <root>/<section_id>/grains.parquet per-grain morphology (docs/method.md#section-morphology)
    <root>/<section_id>/chords.parquet chord lengths
    <root>/selection.json              which sections feed calibration, and why

Pixel coordinates: column index = x, row index = y. ``center_px`` is ``(x, y)`` of the
particle section's centre in pixel units (may be fractional); coordinates used by the grain
models are ``(col - center_x, row - center_y)``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import tifffile

from nmc_dataset._util import atomic_path, check_format, read_json, write_json_atomic
from nmc_dataset.errors import InputError

SECTION_FORMAT = "nmc-dataset/section"
SECTION_FORMAT_VERSION = 1


@dataclasses.dataclass
class Section:
    """One imported planar section.

    Parameters
    ----------
    section_id : str
        Folder name, usually the scan's file stem.
    labels : (ny, nx) uint32 array
        Grain labels, 0 = unassigned.
    mask : (ny, nx) bool array
        Pixels inside the particle section.
    pixel_size_um : float
        Pixel (step) size in µm.
    center_px : (2,) float array
        ``(x, y)`` of the particle section's centre, in pixels.
    central : bool
        Whether the section is selected for calibration.
    centrality_score : float
        The automatic centrality criterion's score (higher = more central).
    meta : dict
        Everything else in ``section.json`` (source file, phase, thresholds).
    confident : (ny, nx) bool array, optional
        Pixels the scan indexed with confidence (None: every pixel of the mask): the measured side
        of the detection limit (:mod:`nmc_dataset.ebsd._detection`).
    """

    section_id: str
    labels: np.ndarray
    mask: np.ndarray
    pixel_size_um: float
    center_px: np.ndarray
    central: bool = True
    centrality_score: float = float("nan")
    meta: dict = dataclasses.field(default_factory=dict)
    confident: np.ndarray | None = None

    def pixel_coords(self) -> np.ndarray:
        """(ny, nx, 2) array of ``(x, y)`` pixel coordinates relative to the centre."""
        ny, nx = self.labels.shape
        yy, xx = np.mgrid[0:ny, 0:nx]
        return np.stack([xx - self.center_px[0], yy - self.center_px[1]], axis=-1).astype(np.float64)


def write_section(section: Section, root: str | Path, tables: dict | None = None) -> Path:
    """Write a section's images and metadata into ``<root>/<section_id>/``.

    Parameters
    ----------
    section : Section
        The section to write.
    root : path-like
        Folder of sections; the section goes to ``root/<section_id>/``.
    tables : dict of name -> pyarrow.Table, optional
        Extra parquet tables (``grains``, ``chords``) written beside the images.

    Returns
    -------
    Path
        The section's folder.
    """

    folder = Path(root) / section.section_id
    folder.mkdir(parents=True, exist_ok=True)
    res = 1e4 / section.pixel_size_um  # pixels per cm, the TIFF resolution unit Fiji reads
    imagej = {"unit": "micron", "spacing": section.pixel_size_um}
    images = [("labels", section.labels.astype(np.uint32)), ("mask", section.mask.astype(np.uint8))]
    if section.confident is not None:
        images.append(("confident", np.asarray(section.confident, dtype=np.uint8)))
    for name, arr in images:
        with atomic_path(folder / f"{name}.tif") as tmp:
            tifffile.imwrite(
                tmp,
                arr,
                resolution=(res, res),
                resolutionunit="CENTIMETER",
                metadata={"axes": "YX", **imagej},
                imagej=arr.dtype != np.uint32,
            )
    for name, table in (tables or {}).items():
        with atomic_path(folder / f"{name}.parquet") as tmp:
            pq.write_table(table, tmp)
    meta = dict(section.meta)
    meta.update(
        format=SECTION_FORMAT,
        format_version=SECTION_FORMAT_VERSION,
        section_id=section.section_id,
        pixel_size_um=float(section.pixel_size_um),
        center_px=[float(c) for c in section.center_px],
        shape=list(section.labels.shape),
        central=bool(section.central),
        centrality_score=None if not np.isfinite(section.centrality_score) else float(section.centrality_score),
    )
    write_json_atomic(folder / "section.json", meta)
    return folder


def read_section(folder: str | Path) -> Section:
    """Read one section folder written by :func:`write_section`.

    Parameters
    ----------
    folder : str or Path
        A section folder holding ``section.json``, ``labels.tif`` and ``mask.tif``.

    Returns
    -------
    Section
        The section, labels as uint32 and mask as bool.

    Raises
    ------
    InputError
        If a file is missing, the format version is unknown, or the image shapes disagree with ``section.json``.
    """

    folder = Path(folder)
    meta = read_json(folder / "section.json")
    check_format(meta, SECTION_FORMAT, SECTION_FORMAT_VERSION, folder / "section.json")
    try:
        labels = tifffile.imread(folder / "labels.tif")
        mask = tifffile.imread(folder / "mask.tif").astype(bool)
    except FileNotFoundError as e:
        raise InputError(f"missing {Path(e.filename).name}", folder) from None
    if labels.shape != tuple(meta["shape"]) or mask.shape != labels.shape:
        raise InputError("labels.tif / mask.tif shape disagrees with section.json", folder)
    confident = None
    if (folder / "confident.tif").exists():
        confident = tifffile.imread(folder / "confident.tif").astype(bool)
        if confident.shape != labels.shape:
            raise InputError("confident.tif shape disagrees with section.json", folder)
    score = meta.get("centrality_score")
    return Section(
        section_id=meta["section_id"],
        labels=labels.astype(np.uint32),
        mask=mask,
        pixel_size_um=float(meta["pixel_size_um"]),
        center_px=np.asarray(meta["center_px"], float),
        central=bool(meta.get("central", True)),
        centrality_score=float("nan") if score is None else float(score),
        meta=meta,
        confident=confident,
    )


def read_sections(root: str | Path, selected_only: bool = True) -> list[Section]:
    """Read every section under ``root`` (sorted by id); by default only those selected as central.

    Parameters
    ----------
    root : str or Path
        Folder holding one ``<id>/section.json`` sub-folder per section (written by ``import-ebsd``).
    selected_only : bool, default True
        Return only the sections marked central (selected for calibration).

    Returns
    -------
    list of Section
        Sorted by section folder name.

    Raises
    ------
    InputError
        If ``root`` holds no section, or none is selected.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError("not a folder of sections (run import-ebsd first)", root)
    folders = sorted(p.parent for p in root.glob("*/section.json"))
    if not folders:
        raise InputError("no sections found (expected <id>/section.json from import-ebsd)", root)
    sections = [read_section(f) for f in folders]
    if selected_only:
        sections = [s for s in sections if s.central]
        if not sections:
            raise InputError("no section is selected as central; use import-ebsd --central all or LIST", root)
    return sections
