"""``nmc-dataset import-ebsd``: EBSD scans → grain label images, morphology tables, central selection.

::

    nmc-dataset import-ebsd SCAN.ang [SCAN2.ctf ...] --out sections/ [--min-ci 0.1]
        [--max-misorientation-deg 5] [--min-grain-px 5] [--fill shape|none] [--center X,Y]
        [--central auto|all|LIST]

Every scan is parsed, reconstructed and checked before anything is written; the output folder
is built in a temporary folder and renamed into place (an existing ``--out`` is replaced only if
it is an earlier ``import-ebsd`` output).
"""

from __future__ import annotations

import glob
from pathlib import Path

import numpy as np

from nmc_dataset._util import log, progress, write_json_atomic
from nmc_dataset.ebsd._morphology import (
    CENTRALITY_CALIBRATION,
    CENTRALITY_THRESHOLD,
    centrality_score,
    chord_arrow_table,
    grain_table,
    is_central,
)
from nmc_dataset.ebsd._reconstruct import reconstruct_grains
from nmc_dataset.errors import InputError, RecipeError
from nmc_dataset.io._ebsd import read_ebsd
from nmc_dataset.io._sections import Section, write_section
from nmc_dataset.outputs import check_out_name, claim_folder, output_folder

SELECTION_FORMAT = "nmc-dataset/section-selection"
#: Grain-dilation reach of import-ebsd (pixels; reconstruct.dilate_grains).
DEFAULT_DILATE_PX = 0.0
#: How import-ebsd completes the map across unassigned pixels (reconstruct_grains(fill=...)).
DEFAULT_FILL = "shape"
#: Fewest confident pixels (indexed, CI >= min_ci) a particle section must have, as a fraction.
MIN_CONFIDENT_FRACTION = 0.5
#: Plausible median equal-area grain diameter (µm) of a section of NMC secondary particles: primary
#: grains are ~0.1–1 µm; outside this range the scan's step size is wrong (a unit slip, a binned map).
GRAIN_DIAMETER_RANGE_UM = (0.02, 5.0)
#: Plausible equal-area diameter (µm) of the particle section itself (secondary particles: ~2–20 µm).
SECTION_DIAMETER_RANGE_UM = (0.5, 100.0)
#: Fewest grains a section of a polycrystalline secondary particle has (central ones: hundreds).
MIN_SECTION_GRAINS = 5


def check_plausible_sizes(n_grains: int, areas_px, section_area_px: float, step_um: float, path=None) -> None:
    """Refuse a section whose grains are implausibly few or sized for its pixel size.

    A wrong step size in a scan's header (a unit slip, a map binned after indexing) leaves the
    grain map intact and every physical size wrong; too few grains mean a single-crystal particle,
    which the grain model does not describe, or a misorientation threshold that merged the grains.

    Parameters
    ----------
    n_grains : int
        Grains reconstructed in the section.
    areas_px : array-like
        Their areas in pixels.
    section_area_px : float
        The particle section's area in pixels.
    step_um : float
        The scan's step size.
    path : path-like, optional
        The scan, for the message.

    Raises
    ------
    InputError
        Sizes out of :data:`GRAIN_DIAMETER_RANGE_UM` / :data:`SECTION_DIAMETER_RANGE_UM`, or fewer
        than :data:`MIN_SECTION_GRAINS` grains.
    """
    hint = "(import-ebsd --no-size-check, recipe sections.import.check_sizes: false, skips this test)"
    if n_grains < MIN_SECTION_GRAINS:
        raise InputError(
            f"only {n_grains} grain(s) in the particle section: a polycrystalline secondary particle's "
            "section holds dozens to hundreds; lower --max-misorientation-deg if grains merged, check "
            f"the phase and CI, or the scan is of a single-crystal particle {hint}",
            path,
        )
    d_grain = 2.0 * np.sqrt(float(np.median(areas_px)) / np.pi) * step_um
    d_section = 2.0 * np.sqrt(float(section_area_px) / np.pi) * step_um
    lo, hi = GRAIN_DIAMETER_RANGE_UM
    slo, shi = SECTION_DIAMETER_RANGE_UM
    if not (lo <= d_grain <= hi and slo <= d_section <= shi):
        raise InputError(
            f"grains of median diameter {d_grain:.3g} µm in a particle section {d_section:.3g} µm across "
            f"at a step of {step_um:g} µm: implausible for NMC secondary particles (grains "
            f"{lo:g}–{hi:g} µm, sections {slo:g}–{shi:g} µm); check the step size in the scan's header "
            f"(a unit slip, or a map binned after indexing) {hint}",
            path,
        )


def expand_scans(patterns, base: Path | None = None) -> list[Path]:
    """Expand paths/globs (relative to ``base``) into a sorted, de-duplicated list of scan files.

    Parameters
    ----------
    patterns : iterable of str or path-like
        Scan files or glob patterns (``*``, ``?``, ``[``).
    base : Path, optional
        Folder that relative patterns are resolved against.

    Returns
    -------
    list of Path
        Sorted per pattern, in pattern order, each file once.

    Raises
    ------
    InputError
        If a glob pattern matches no file.
    """
    out = []
    for pat in patterns:
        p = Path(pat).expanduser()
        if base is not None and not p.is_absolute():
            p = base / p
        if any(ch in str(pat) for ch in "*?["):
            hits = sorted(Path(h) for h in glob.glob(str(p)))
            if not hits:
                raise InputError("pattern matches no file", str(p))
            out.extend(hits)
        else:
            out.append(p)
    seen, uniq = set(), []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            uniq.append(p)
    return uniq


def import_ebsd(
    scans,
    out,
    min_ci: float = 0.1,
    max_misorientation_deg: float = 5.0,
    min_grain_px: int = 5,
    center_px=None,
    central="auto",
    threshold: float | None = None,
    dilate_px: float = DEFAULT_DILATE_PX,
    force: bool = False,
    fill: str = DEFAULT_FILL,
    check_sizes: bool = True,
) -> dict:
    """Import EBSD scans into a folder of sections (the API behind ``import-ebsd``).

    Parameters
    ----------
    scans : list of path-like
        ``.ang`` / ``.ctf`` files; section ids are their stems (must be unique).
    out : path-like
        Output folder (built atomically; an existing folder is replaced only if it holds an
        earlier import, i.e. a ``selection.json``).
    min_ci : float, default 0.1
        Pixels with a lower CI stay unassigned (grain reconstruction,
        :func:`nmc_dataset.ebsd._reconstruct.reconstruct_grains`).
    max_misorientation_deg : float, default 5.0
        Misorientation below which neighbouring pixels join one grain.
    min_grain_px : int, default 5
        Grains with fewer pixels become unassigned.
    center_px : (2,) sequence, optional
        ``(x, y)`` centre used for every scan (default: each particle mask's centroid).
    central : 'auto', 'all' or list of ids
        Which sections feed calibration: by the centrality score (``score >= threshold``), all,
        or the listed ones.
    threshold : float, optional
        Centrality threshold (default :data:`nmc_dataset.ebsd._morphology.CENTRALITY_THRESHOLD`).
    dilate_px : float, default DEFAULT_DILATE_PX
        Grain-dilation reach in pixels applied before the ``min_grain_px`` filter (0 = none; only
        with ``fill="none"``).
    force : bool, default False
        Write into a folder that holds files the tool did not write (they are left alone).
    fill : {"shape", "none"}, default "shape"
        ``"shape"``: complete every grain across unindexed and low-CI pixels
        (:mod:`nmc_dataset.ebsd._completion`), so that the morphology is measured on the
        completed map; ``"none"``: labels keep only the confident pixels.
    check_sizes : bool, default True
        Refuse sections whose grains are implausibly few or sized for the step size
        (:func:`check_plausible_sizes`); False for materials outside NMC secondary particles.

    Returns
    -------
    dict
        The content of ``selection.json``.
    """

    if not (min_ci <= 1.0) or not np.isfinite(min_ci):
        raise RecipeError(f"--min-ci must be a number <= 1, got {min_ci}")
    if not (0 < max_misorientation_deg <= 180):
        raise RecipeError(f"--max-misorientation-deg must be in (0, 180], got {max_misorientation_deg}")
    if int(min_grain_px) < 1:
        raise RecipeError(f"--min-grain-px must be >= 1, got {min_grain_px}")
    if not (np.isfinite(dilate_px) and dilate_px >= 0):
        raise RecipeError(f"--dilate-px must be a number >= 0, got {dilate_px}")
    if fill not in ("shape", "none"):
        raise RecipeError(f"--fill must be 'shape' or 'none', got {fill!r}")
    if fill == "shape" and dilate_px > 0:
        raise RecipeError("--dilate-px needs --fill none (--fill shape already assigns every unindexed pixel)")
    threshold = CENTRALITY_THRESHOLD if threshold is None else float(threshold)
    scans = [Path(s) for s in scans]
    if not scans:
        raise RecipeError("no scan given")
    out = Path(out)
    ids = [s.stem for s in scans]
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise InputError(
            f"two scans share the file stem {dup[0]!r} (section ids must be unique)",
            [s for s in scans if s.stem == dup[0]][1],
        )
    mode, listed = _parse_central(central, set(ids))
    claim_folder(check_out_name(out), "import-ebsd", force=force, legacy=("selection.json",))
    center = None if center_px is None else np.asarray(center_px, dtype=np.float64).reshape(2)

    # 1. parse, reconstruct and describe everything (nothing written yet)
    prepared = []
    for path in progress(scans, total=len(scans), desc="import-ebsd", unit="scan"):
        scan = read_ebsd(path)
        sx, sy = scan.step_um
        if abs(sx - sy) > 1e-6 * max(sx, sy):
            raise InputError(f"x and y steps differ ({sx:g} vs {sy:g} µm): non-square pixels are not supported", path)
        if not scan.indexed.any():
            raise InputError("no indexed pixel in the scan (nothing to reconstruct)", path)
        gm = reconstruct_grains(
            scan,
            min_ci=min_ci,
            max_misorientation_deg=max_misorientation_deg,
            min_grain_px=int(min_grain_px),
            center_px=center,
            dilate_px=float(dilate_px),
            fill=fill,
        )
        if gm.n_grains == 0:
            raise InputError(
                f"no grain found (no {min_grain_px}+ pixel region with CI >= {min_ci} and "
                f"misorientation < {max_misorientation_deg}°); lower --min-ci / --min-grain-px",
                path,
            )
        confident = (scan.indexed & (scan.ci >= min_ci))[gm.mask].mean() if gm.mask.any() else 0.0
        if confident < MIN_CONFIDENT_FRACTION:
            raise InputError(
                f"only {100 * confident:.0f} % of the particle section's pixels are indexed with CI >= "
                f"{min_ci:g} (need {100 * MIN_CONFIDENT_FRACTION:.0f} %): the grain map would be mostly "
                "guessed; check the step size and the phase, lower --min-ci if the CI scale differs, "
                "or re-index / clean up the scan in the instrument's software",
                path,
            )
        gt = grain_table(gm.labels, gm.center_px, pixel_size_um=sx, mean_orientation=gm.mean_orientation)
        if check_sizes:
            check_plausible_sizes(gm.n_grains, gt.column("area_px").to_numpy(), float(gm.mask.sum()), sx, path)
        chords = chord_arrow_table(gm.labels, pixel_size_um=sx)
        score = centrality_score(
            gt.column("alpha_rad").to_numpy(), gt.column("area_px").to_numpy(), gt.column("elongation").to_numpy()
        )
        conf_map = scan.indexed & (scan.ci >= min_ci)
        # the detection limit's measured side; absent when every pixel of the section is confident
        conf_map = None if bool(conf_map[gm.mask].all()) else conf_map & gm.mask
        prepared.append((path, scan, gm, gt, chords, score, conf_map))
        log.debug("%s: %d grains, centrality %.3f", path.name, gm.n_grains, score)

    # 2. decisions
    sections_meta = []
    for path, scan, gm, gt, chords, score, _conf in prepared:
        if mode == "auto":
            decision = is_central(score, threshold)
        elif mode == "all":
            decision = True
        else:
            decision = path.stem in listed
        sections_meta.append(
            {
                "id": path.stem,
                "source": path.name,
                "score": None if not np.isfinite(score) else score,
                "central": bool(decision),
                "n_grains": gm.n_grains,
            }
        )
    selection = {
        "format": SELECTION_FORMAT,
        "format_version": 1,
        "mode": mode,
        "criterion": "centrality_score: area*elongation-weighted mean of cos(2 alpha); central if >= threshold",
        "calibration": CENTRALITY_CALIBRATION,
        "threshold": threshold,
        "sections": sections_meta,
        "options": {
            "min_ci": float(min_ci),
            "max_misorientation_deg": float(max_misorientation_deg),
            "min_grain_px": int(min_grain_px),
            "dilate_px": float(dilate_px),
            "fill": fill,
            "center_px": None if center is None else [float(v) for v in center],
        },
    }

    # 3. write atomically
    with output_folder(out, "import-ebsd", force=force, legacy=("selection.json",)) as tmp:
        for (path, scan, gm, gt, chords, score, conf_map), meta in zip(prepared, sections_meta):
            counts = np.bincount(gm.grain_phase[1:], minlength=max(scan.phases) + 1)
            phase = scan.phases.get(int(np.argmax(counts)))  # the phase most grains belong to
            sec = Section(
                section_id=path.stem,
                labels=gm.labels,
                mask=gm.mask,
                pixel_size_um=float(scan.step_um[0]),
                center_px=gm.center_px,
                central=meta["central"],
                centrality_score=float(score) if np.isfinite(score) else float("nan"),
                confident=conf_map,
                meta={
                    "source": path.name,
                    "source_format": scan.format,
                    "phase": None
                    if phase is None
                    else {"name": phase.name, "laue_group": phase.laue_group, "lattice": list(phase.lattice)},
                    "phases": [
                        {"id": p.id, "name": p.name, "laue_group": p.laue_group, "lattice": list(p.lattice)}
                        for p in scan.phases.values()
                    ],
                    "center_source": "given" if center is not None else "mask centroid",
                    "n_grains": gm.n_grains,
                    "indexed_fraction": float(scan.indexed.mean()),
                    "assigned_fraction_of_mask": float((gm.labels[gm.mask] > 0).mean()) if gm.mask.any() else 0.0,
                    "min_ci": float(min_ci),
                    "max_misorientation_deg": float(max_misorientation_deg),
                    "min_grain_px": int(min_grain_px),
                    "dilate_px": float(dilate_px),
                    "fill": fill,
                    "confident_fraction_of_mask": float((scan.indexed & (scan.ci >= min_ci))[gm.mask].mean())
                    if gm.mask.any()
                    else 0.0,
                    "units": {"pixel_size_um": "micrometre"},
                },
            )
            write_section(sec, tmp, tables={"grains": gt, "chords": chords})
        write_json_atomic(Path(tmp) / "selection.json", selection)
    n_central = sum(m["central"] for m in sections_meta)
    log.info("%d section(s) written to %s, %d selected as central", len(prepared), out, n_central)
    return selection


def _parse_central(value, ids):
    """'auto' | 'all' | list of section ids (comma-separated string or list)."""
    if value is None or value == "auto":
        return "auto", None
    if value == "all":
        return "all", None
    items = value if isinstance(value, (list, tuple)) else [v.strip() for v in str(value).split(",") if v.strip()]
    if not items:
        raise RecipeError("--central LIST is empty (use auto, all or comma-separated section ids)")
    unknown = [v for v in items if v not in ids]
    if unknown:
        raise RecipeError(
            f"--central names unknown section(s) {unknown}; section ids are the scan file stems: {sorted(ids)}"
        )
    return "list", set(items)
