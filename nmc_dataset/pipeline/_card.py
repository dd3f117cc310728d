"""The dataset card (``README.md``) of a build folder, rendered from ``cards/dataset_card.md.jinja``.

The card has the Hugging Face YAML header (license, pretty_name, tags, task_categories,
size_categories and one ``configs`` entry per parquet config, so ``datasets.load_dataset(folder,
config)`` works), then: the method, the models, the generation parameters (from the build's
``recipe.yaml``), units and voxel sizes, descriptor statistics of every parquet config (mean, SD,
quantiles), measured-vs-generated tables from every ``comparison.json`` in the folder, the
figures, the file layout, ``load_dataset`` examples, how to open HDF5 volumes and meshes, BibTeX of
the method paper and of the dataset, the license and the version history.

Rendering is deterministic (no dates or times unless the release metadata gives them), so the
manifest of a rebuilt folder is byte-identical.

Release metadata (the ``dataset`` section of a recipe, stored in the manifest's ``dataset`` block):
``name``, ``pretty_name``, ``version``, ``license``, ``authors`` (``[{name, affiliation, orcid}]``),
``description``, ``tags``, ``task_categories``, ``citation`` (extra BibTeX), ``history``
(``[{version, date, changes}]``), ``hub_id`` (``ORG/NAME``, used in examples and the BibTeX URL).
"""

from __future__ import annotations

import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from nmc_dataset import __version__
from nmc_dataset._util import human_bytes, write_text_atomic
from nmc_dataset.errors import InputError
from nmc_dataset.pipeline._manifest import content_files

CARD = "README.md"
TEMPLATE = "dataset_card.md.jinja"

METHOD_BIBTEX = """@misc{fuchs2024multiscale,
  title         = {Generating multi-scale {Li}-ion battery cathode particles with radial grain architectures
                   using stereological generative adversarial networks},
  author        = {Fuchs, L. and Furat, O. and Finegan, D. P. and Allen, J. and Usseglio-Viretta, F. L. E. and
                   Ozdogru, B. and Weddle, P. J. and Smith, K. and Schmidt, V.},
  year          = {2024},
  eprint        = {2407.05333},
  archivePrefix = {arXiv},
  url           = {https://arxiv.org/abs/2407.05333}
}"""

#: the Hub's ``size_categories`` values, by upper bound of the row count
SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]
LICENSE_URLS = {
    "cc-by-4.0": "https://creativecommons.org/licenses/by/4.0/",
    "cc-by-sa-4.0": "https://creativecommons.org/licenses/by-sa/4.0/",
    "cc0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
    "cc-by-nc-4.0": "https://creativecommons.org/licenses/by-nc/4.0/",
    "odc-by": "https://opendatacommons.org/licenses/by/",
    "mit": "https://opensource.org/licenses/MIT",
    "bsd-3-clause": "https://opensource.org/licenses/BSD-3-Clause",
}
UNIT_SUFFIXES = [
    ("_um3", "µm³"),
    ("_um2", "µm²"),
    ("_um", "µm"),
    ("_nm", "nm"),
    ("_px2", "px²"),
    ("_px", "px"),
    ("_vox3", "voxel³"),
    ("_vox", "voxel"),
    ("_voxels", "voxels"),
    ("_deg", "°"),
    ("_rad", "rad"),
    ("_s", "s"),
    ("_ms", "ms"),
]
DEFAULT_DESCRIPTION = (
    "Virtual NMC811 (LiNi0.8Mn0.1Co0.1O2) cathode particles with radial grain architectures, "
    "generated with the multi-scale stochastic model of Fuchs et al. (arXiv:2407.05333): "
    "spherical-harmonic outer shells fitted on CT volumes and grain architectures (generalized "
    "balanced power diagrams) calibrated on 2D EBSD sections by a stereological GAN."
)


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` label for ``n`` rows."""
    for bound, label in SIZE_CATEGORIES:
        if n < bound:
            return label
    return "n>1T"


def unit_of(column: str) -> str:
    """Unit of a column from its name suffix (``volume_um3`` -> ``µm³``); ``1`` when dimensionless/unknown."""
    for suffix, unit in UNIT_SUFFIXES:
        if column.endswith(suffix):
            return unit
    return "1"


def _fmt(v: float) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.4g}"


#: what each known config holds (the card's "Configs" section); ``voxels_<N>`` matches any N
CONFIG_DOCS = {
    "particles": (
        "one row per particle: `particle_id`, its seed (`seed_entropy`, `seed_spawn_key`), the model "
        "ids, the shell's spherical-harmonic coefficients `sh_coeffs_um` (µm; index l·l+l+m), the "
        "analytic shell descriptors (`shell_volume_um3`, `shell_area_um2`, `shell_d_max_um`, "
        "`shell_compactness`, `shell_aspect_ratio`, `shell_sphericity`), `n_grains` and the "
        "full-resolution voxel grid (`voxel_size_um`, `grid_shape_zyx`, `grid_origin_um_xyz`). With the "
        "`grains` rows of the same `particle_id` it is enough to rebuild the particle exactly "
        "(`nmc_dataset.export._tables.particle_from_rows`)."
    ),
    "grains": (
        "one row per grain: `particle_id`, `label` (its value in the voxel volumes), the GBPD marker "
        "(seed `seed_*_px`, matrix diagonal `d_radial`, `d_tangential_1`, `d_tangential_2`, offset "
        "`r_px2`, roll angle `roll_rad` = γ; grain-model pixels), and from the full-resolution voxels: "
        "`volume_um3`, centroid `centroid_*_um`, `principal_axes` (3 unit rows, largest first), "
        "`principal_sd_um`, `touches_shell`, `elongation` (largest / smallest principal SD) and "
        "`radial_alignment` (|cos| between the major axis and the radial direction; 1 = radial)."
    ),
    "voxels": (
        "one row per particle: a fixed-shape N×N×N `uint16` label volume `labels` (`datasets.Array3D`, "
        "indexed [z, y, x]; 0 = outside, k = grain `label` k) centred on the particle, with the particle's "
        "own `voxel_size_um` (the shell fits with one empty voxel on each side) and `origin_um` "
        "(x, y, z centre of voxel [0, 0, 0])."
    ),
    "shells": ("one row per shell drawn from the shell model: `sh_coefficients_um` and the shell descriptors in µm."),
    "ct": (
        "one row per virtual electrode scan, in train / validation / test splits: the reconstructed CT "
        "volume `ct` (float32 attenuation, 1/µm) and the exact labels it was rendered from, on the same "
        "N×N×N grid (`datasets.Array3D`, indexed [z, y, x]): `phase` (0 pore / electrolyte, 1 NMC, "
        "2 carbon-binder), `particle` (instance id) and `grain` (global grain id); with the CT "
        "`voxel_size_um`, the packing figures reached (`solid_fraction`, `binder_fraction`, "
        "`n_particles`, ...) and every imaging parameter (`imaging`, JSON)."
    ),
    "sequences": (
        "one row per state of a virtual cycling sequence (an electrode evolved through a charge / "
        "discharge protocol, scanned at every state), in train / validation / test splits: `sequence`, "
        "`step`, the CT `ct` and the CT of the sequence's reference state `ct_reference` (float32, 1/µm), "
        "the exact labels `phase`, `particle`, `grain` and `crack` (crack id; N×N×N `datasets.Array3D`, "
        "[z, y, x]) and the exact displacement from the reference state `displacement` "
        "(N×N×N×3 `datasets.Array4D`, CT voxels, components z, y, x, NaN in crack voxels); with the "
        "cycle, state of charge `soc`, lattice strains, crack counts and areas, the full protocol "
        "(`protocol`, JSON) and the state's summary (`summary`, JSON)."
    ),
}


def config_doc(name: str) -> str:
    """The card's description of a config (``""`` when unknown)."""
    if name.startswith("voxels_") and name[7:].isdigit():
        return CONFIG_DOCS["voxels"].replace("N×N×N", "×".join([name[7:]] * 3))
    return CONFIG_DOCS.get(name, "")


#: grain descriptors summarised in the card's "Grain descriptors" table
GRAIN_DESCRIPTORS = (
    ("volume_um3", "grain volume"),
    ("elongation", "elongation (largest / smallest principal SD)"),
    ("radial_alignment", "radial alignment (cosine of major axis to radial direction, absolute)"),
    ("touches_shell", "fraction of grains touching the shell"),
)


def grain_summary(folder: str | os.PathLike) -> dict | None:
    """Statistics of the grain descriptors of ``data/grains`` (``None`` without that config).

    Returns ``{"rows": [...], "n_grains": {...}, "n": grains, "n_particles": particles}``: per
    descriptor mean, SD and quantiles (``touches_shell``: the fraction), and the grains per particle.
    """

    files = sorted((Path(folder) / "data" / "grains").glob("*.parquet"))
    if not files:
        return None
    names = set(pq.read_schema(files[0]).names)
    cols = [c for c, _ in GRAIN_DESCRIPTORS if c in names] + ["particle_id"]
    t = pq.read_table(files, columns=cols)
    rows = []
    for c, label in GRAIN_DESCRIPTORS:
        if c not in names:
            continue
        x = t.column(c).to_numpy(zero_copy_only=False).astype(float)
        x = x[np.isfinite(x)]
        if not x.size:
            continue
        if c == "touches_shell":  # a fraction: no spread or quantiles
            rows.append(
                {
                    "name": c,
                    "label": label,
                    "unit": "1",
                    "mean": _fmt(x.mean()),
                    "sd": "–",
                    "q05": "–",
                    "q50": "–",
                    "q95": "–",
                }
            )
            continue
        q = np.quantile(x, [0.05, 0.5, 0.95])
        rows.append(
            {
                "name": c,
                "label": label,
                "unit": unit_of(c),
                "mean": _fmt(x.mean()),
                "sd": _fmt(x.std(ddof=1) if x.size > 1 else 0.0),
                "q05": _fmt(q[0]),
                "q50": _fmt(q[1]),
                "q95": _fmt(q[2]),
            }
        )
    pid = t.column("particle_id").to_numpy()
    counts = np.unique(pid, return_counts=True)[1] if pid.size else np.zeros(1)
    return {
        "rows": rows,
        "n": int(t.num_rows),
        "n_particles": int(len(counts)),
        "per_particle": {"mean": _fmt(counts.mean()), "min": int(counts.min()), "max": int(counts.max())},
    }


# --------------------------------------------------------------------------- statistics from the parquet configs
def config_summaries(folder: str | os.PathLike) -> list[dict]:
    """Per parquet config under ``data/``: name, rows, files, size, scalar and array columns."""

    folder = Path(folder)
    out = []
    data = folder / "data"
    if not data.is_dir():
        return out
    for cdir in sorted(p for p in data.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(cdir.glob("*.parquet"))
        if not files:
            continue
        schema = pq.read_schema(files[0])
        scalar, arrays = [], []
        for f in schema:
            t = f.type
            if pa.types.is_integer(t) or pa.types.is_floating(t):
                scalar.append(f.name)
            elif not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_boolean(t)):
                arrays.append(f.name)
        rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        out.append(
            {
                "name": cdir.name,
                "rows": int(rows),
                "n_files": len(files),
                "size": human_bytes(sum(f.stat().st_size for f in files)),
                "scalar_columns": scalar,
                "array_columns": arrays,
                "files": files,
            }
        )
    return out


def descriptor_statistics(files: list, columns: list[str]) -> list[dict]:
    """Mean, SD, min, 5/25/50/75/95 % quantiles and max of numeric columns over parquet files."""

    rows = []
    cols = [c for c in columns if not (c.endswith("_id") or c in ("id", "index", "seed", "item"))]
    if not cols:
        return rows
    table = pq.read_table(files, columns=cols) if len(files) > 1 else pq.read_table(files[0], columns=cols)
    for c in cols:
        x = table.column(c).to_numpy(zero_copy_only=False).astype(float)
        x = x[np.isfinite(x)]
        if x.size == 0:
            continue
        q = np.quantile(x, [0.05, 0.25, 0.5, 0.75, 0.95])
        rows.append(
            {
                "name": c,
                "unit": unit_of(c),
                "mean": _fmt(x.mean()),
                "sd": _fmt(x.std(ddof=1) if x.size > 1 else 0.0),
                "min": _fmt(x.min()),
                "q05": _fmt(q[0]),
                "q25": _fmt(q[1]),
                "q50": _fmt(q[2]),
                "q75": _fmt(q[3]),
                "q95": _fmt(q[4]),
                "max": _fmt(x.max()),
            }
        )
    return rows


def read_comparisons(folder: str | os.PathLike, exclude=()) -> list[dict]:
    """Every ``comparison.json`` under the folder as a card table (``{"title", "rows"}``)."""
    folder = Path(folder)
    out = []
    for rel in content_files(folder, exclude):
        if Path(rel).name != "comparison.json":
            continue
        path = folder / rel
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise InputError(f"cannot read comparison table: {e}", path) from None
        if not isinstance(doc, dict):
            raise InputError("a comparison.json must map descriptor names to their statistics", path)
        rows = []
        for name in sorted(doc):
            v = doc[name]
            if name in ("format", "format_version") or not isinstance(v, dict):
                continue
            missing = [k for k in ("wasserstein1", "ks", "n_measured", "n_simulated") if k not in v]
            if missing:
                raise InputError(f"{name}: missing {', '.join(missing)}", path)
            rows.append(
                {
                    "name": name,
                    "w1": _fmt(float(v["wasserstein1"])),
                    "ks": _fmt(float(v["ks"])),
                    "n_measured": int(v["n_measured"]),
                    "n_simulated": int(v["n_simulated"]),
                }
            )
        parent = Path(rel).parent.as_posix()
        fig = Path(rel).parent / "histograms.png"  # written beside it by nmc_dataset.compare
        out.append(
            {
                "title": f"`{parent}`" if parent != "." else "comparison",
                "rows": rows,
                "path": rel,
                "figure": fig.as_posix() if (folder / fig).is_file() else None,
            }
        )
    return out


def _find_sizes(obj: Any, prefix: str = "") -> list[tuple[str, str]]:
    found = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = f"{prefix}.{k}" if prefix else str(k)
            if any(s in str(k) for s in ("voxel_size", "pixel_size", "step_size")) and isinstance(v, (int, float)):
                found.append((key, f"{v:g} {unit_of(str(k))}".replace(" 1", "")))
            else:
                found += _find_sizes(v, key)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += _find_sizes(v, f"{prefix}[{i}]")
    return found


def _layout(folder: Path, files: list[str]) -> str:
    groups: dict[str, list[int]] = {}
    top_files = []
    for rel in files + ["manifest.json"]:
        parts = rel.split("/")
        p = folder / rel
        size = p.stat().st_size if p.is_file() else 0
        if len(parts) == 1:
            top_files.append((rel, size))
        else:
            key = "/".join(parts[:2]) + "/" if parts[0] == "data" and len(parts) > 2 else parts[0] + "/"
            groups.setdefault(key, []).append(size)
    lines = []
    notes = {
        "README.md": "this card",
        "manifest.json": "sizes and SHA-256 of every file",
        "recipe.yaml": "the exact recipe of this build",
    }
    for name, size in sorted(top_files):
        lines.append(f"{name:<34} {notes.get(name, human_bytes(size))}")
    for key in sorted(groups):
        sizes = groups[key]
        lines.append(f"{key:<34} {len(sizes)} file(s), {human_bytes(sum(sizes))}")
    return "\n".join(lines)


def _load_recipe(folder: Path) -> dict | None:
    p = folder / "recipe.yaml"
    if not p.is_file():
        return None

    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError:
        return None
    return doc if isinstance(doc, dict) else None


def _figures(folder: Path, figures: list | None, exclude=()) -> list[dict]:
    if figures is not None:
        return [{"path": Path(f["path"]).as_posix(), "caption": f.get("caption", "")} for f in figures]
    index = folder / "figures" / "index.json"
    if index.is_file():
        try:
            return json.loads(index.read_text())
        except ValueError:
            pass
    return [
        {"path": rel, "caption": Path(rel).stem.replace("_", " ")}
        for rel in content_files(folder, exclude)
        if rel.startswith("figures/") and rel.endswith(".png")
    ]


# --------------------------------------------------------------------------- context, render, validate
def release_defaults(release: dict) -> dict:
    """Release metadata with defaults filled in (pretty_name, description, tags, history, ...)."""
    d = dict(release or {})
    d.setdefault("name", "nmc811-virtual-particles")
    d.setdefault("version", "0.0.0")
    d.setdefault("pretty_name", d["name"].replace("-", " ").replace("_", " "))
    d.setdefault("license", "cc-by-4.0")
    d.setdefault("description", DEFAULT_DESCRIPTION)
    d.setdefault("tags", ["materials-science", "batteries", "microstructure", "nmc811", "3d", "synthetic"])
    d.setdefault("task_categories", ["other"])
    d.setdefault("authors", [])
    d.setdefault("history", [{"version": d["version"], "date": d.get("date", "–"), "changes": "first release"}])
    return d


def dataset_bibtex(d: dict) -> str:
    """BibTeX entry of the dataset release."""
    key = "".join(ch for ch in d["name"] if ch.isalnum()).lower() + d["version"].replace(".", "")
    authors = " and ".join((a if isinstance(a, str) else a["name"]) for a in d.get("authors") or []) or "{nmc-dataset}"
    lines = [
        f"@misc{{{key},",
        f"  title     = {{{{{d['pretty_name']}}}}},",
        f"  author    = {{{authors}}},",
        f"  version   = {{{d['version']}}},",
    ]
    date = d.get("date") or (d.get("history") or [{}])[-1].get("date")
    if date and str(date)[:4].isdigit():
        lines.append(f"  year      = {{{str(date)[:4]}}},")
    if d.get("doi"):
        lines.append(f"  doi       = {{{d['doi']}}},")
    if d.get("hub_id"):
        lines.append(f"  url       = {{https://huggingface.co/datasets/{d['hub_id']}}},")
        lines.append("  publisher = {Hugging Face},")
    lines.append("  note      = {Generated with nmc-dataset; method: arXiv:2407.05333}")
    lines.append("}")
    return "\n".join(lines)


def _split_files(config: dict) -> list[dict]:
    """``data_files`` of a config: one split per shard-name prefix (``train-``, ``validation-``, ``test-``)."""
    name = config["name"]
    splits = {Path(f).name.split("-", 1)[0] for f in config.get("files") or []}
    if splits <= {"train"}:
        return [{"split": "train", "path": f"data/{name}/*.parquet"}]
    order = {"train": 0, "validation": 1, "test": 2}
    splits = sorted(splits, key=lambda s: (order.get(s, 3), s))
    return [{"split": s, "path": f"data/{name}/{s}-*.parquet"} for s in splits]


def card_metadata(d: dict, configs: list[dict]) -> "Any":
    """The ``huggingface_hub.DatasetCardData`` of the card's YAML header."""
    from huggingface_hub import DatasetCardData

    max_rows = max([c["rows"] for c in configs] or [0])
    cfgs = [{"config_name": c["name"], "data_files": _split_files(c)} for c in configs]
    if cfgs:
        first = "particles" if any(c["config_name"] == "particles" for c in cfgs) else cfgs[0]["config_name"]
        for c in cfgs:
            if c["config_name"] == first:
                c["default"] = True
    return DatasetCardData(
        license=d["license"],
        pretty_name=d["pretty_name"],
        tags=list(d["tags"]),
        task_categories=list(d["task_categories"]),
        size_categories=[size_category(max_rows)],
        configs=cfgs,
    )


def card_context(
    folder: str | os.PathLike, release: dict, *, recipe_hash: str | None = None, figures: list | None = None
) -> dict:
    """Everything the template needs, computed from the folder's files and the release metadata."""

    folder = Path(folder)
    d = release_defaults(release)
    configs = config_summaries(folder)
    exclude = list(d.get("exclude") or [])
    files = [f for f in content_files(folder, exclude) if f != CARD]
    stats = []
    for c in configs:
        rows = descriptor_statistics(c["files"], c["scalar_columns"])
        if rows:
            stats.append({"config": c["name"], "n": c["rows"], "rows": rows})
    recipe = _load_recipe(folder)
    parameters = ""
    if recipe:
        params = {k: v for k, v in recipe.items() if k not in ("dataset", "description")}
        parameters = yaml.safe_dump(params, sort_keys=False, allow_unicode=True).strip()
    sizes = _find_sizes(recipe or {})
    models = []
    for rel in files:
        if rel.startswith("models/"):
            desc = ""
            if rel.endswith(".json"):
                try:
                    doc = json.loads((folder / rel).read_text())
                    desc = str(doc.get("format", ""))
                    if "voxel_size_um" in doc:
                        sizes.append((f"{rel}: voxel_size_um", f"{doc['voxel_size_um']:g} µm"))
                    if "pixel_size_um" in doc:
                        sizes.append((f"{rel}: pixel_size_um", f"{doc['pixel_size_um']:g} µm"))
                except (OSError, ValueError, AttributeError, TypeError):
                    pass
            models.append({"path": rel, "size": human_bytes((folder / rel).stat().st_size), "description": desc})
    shell_voxel = next((v for k, v in sizes if "shell" in k or "ct" in k.lower()), "0.128 µm in the paper")
    ebsd_pixel = next((v for k, v in sizes if "pixel" in k or "ebsd" in k.lower()), "0.05 µm in the paper")
    hdf5 = next((f for f in files if f.startswith("voxels/") and f.endswith((".h5", ".hdf5"))), None)
    meshes = next((f for f in files if f.startswith("meshes/")), None)
    meta = card_metadata(d, configs)
    extra_bib = d.get("citation")
    return {
        "d": d,
        "yaml_header": meta.to_yaml().strip(),
        "tool_version": __version__,
        "recipe_hash": recipe_hash,
        "configs": [{**{k: v for k, v in c.items() if k != "files"}, "doc": config_doc(c["name"])} for c in configs],
        "grain_summary": grain_summary(folder),
        "models": models,
        "parameters": parameters,
        "voxel_sizes": sizes,
        "stats": stats,
        "comparisons": read_comparisons(folder, exclude),
        "figures": _figures(folder, figures, exclude),
        "layout": _layout(folder, files + ([CARD] if CARD not in files else [])),
        "load_id": d.get("hub_id") or "path/to/this/folder",
        "has_hdf5": hdf5,
        "has_meshes": meshes,
        "method_bibtex": METHOD_BIBTEX,
        "dataset_bibtex": dataset_bibtex(d) + (f"\n\n{extra_bib.strip()}" if extra_bib else ""),
        "license_url": LICENSE_URLS.get(str(d["license"]).lower()),
        "history": d["history"],
        "shell_voxel": shell_voxel,
        "ebsd_pixel": ebsd_pixel,
        "inputs": d.get("inputs") or {},
        "shell_source": _source_text(d, "shells", "3D nano-CT"),
        "grain_source": _source_text(d, "sections", "the measured particles"),
    }


def _source_text(d: dict, key: str, default: str) -> str:
    info = (d.get("inputs") or {}).get(key)
    if not info:
        return default
    return info["text"]


def render_card(
    folder: str | os.PathLike, release: dict, *, recipe_hash: str | None = None, figures: list | None = None
) -> str:
    """Render the card's Markdown (with YAML header) for a build folder.

    Parameters
    ----------
    folder : path-like
        Build folder (``data/<config>/*.parquet``, ``models/``, ``figures/``, ``recipe.yaml``...).
    release : dict
        Release metadata (see module docs).
    recipe_hash : str, optional
        Shown in the card.
    figures : list of dict, optional
        ``[{"path": "figures/x.png", "caption": ...}]``; default: ``figures/index.json`` or every PNG.

    Returns
    -------
    str
        The card text.
    """

    src = (resources.files("nmc_dataset") / "cards" / TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    text = env.from_string(src).render(**card_context(folder, release, recipe_hash=recipe_hash, figures=figures))
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def validate_card(text: str, where: str | os.PathLike = CARD) -> Any:
    """Offline check of a card with ``huggingface_hub``: YAML header parses into ``DatasetCardData``.

    Checks that the license, pretty_name, size_categories, task_categories and ``configs`` (each
    with ``config_name`` and ``data_files``) are present and well formed. Returns the
    ``DatasetCardData``; raises :class:`InputError` naming the problem.

    Parameters
    ----------
    text : str
        The card (YAML header + Markdown).
    where : str or path-like, default CARD
        Named in error messages.

    Returns
    -------
    huggingface_hub.DatasetCardData
        The card's parsed metadata.
    """
    from huggingface_hub import DatasetCard

    try:
        card = DatasetCard(text, ignore_metadata_errors=False)
    except Exception as e:  # ValueError from the YAML parser
        raise InputError(f"invalid dataset card metadata: {e}", where) from None
    data = card.data
    problems = []
    if not data.license:
        problems.append("license is missing")
    if not data.pretty_name:
        problems.append("pretty_name is missing")
    valid_sizes = {label for _, label in SIZE_CATEGORIES} | {"n>1T"}
    for s in data.size_categories or ["(none)"]:
        if s not in valid_sizes:
            problems.append(f"size_categories {s!r} is not one of the Hub's values")
    if not data.task_categories:
        problems.append("task_categories is missing")
    configs = getattr(data, "configs", None) or []
    for c in configs:
        if not isinstance(c, dict) or not c.get("config_name") or not c.get("data_files"):
            problems.append(f"config entry {c!r} needs config_name and data_files")
    if problems:
        raise InputError("dataset card: " + "; ".join(problems), where)
    return data


def write_card(
    folder: str | os.PathLike, release: dict, *, recipe_hash: str | None = None, figures: list | None = None
) -> Path:
    """Render, validate and atomically write ``folder/README.md``; returns its path.

    Parameters
    ----------
    folder : str or path-like
        Build folder.
    release : dict
        Release metadata.
    recipe_hash : str, optional
        Shown in the card.
    figures : list of dict, optional
        ``[{"path": "figures/x.png", "caption": ...}]``; default: ``figures/index.json`` or every PNG.

    Returns
    -------
    Path
        ``folder/README.md``.
    """
    folder = Path(folder)
    text = render_card(folder, release, recipe_hash=recipe_hash, figures=figures)
    validate_card(text, folder / CARD)
    write_text_atomic(folder / CARD, text)
    return folder / CARD
