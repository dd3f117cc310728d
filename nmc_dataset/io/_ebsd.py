"""Readers and writers of EBSD maps: TSL/EDAX OIM ``.ang`` and Oxford (HKL Channel 5 / AZtec) ``.ctf``.

Only square grids are supported (``# GRID: SqrGrid`` in ``.ang``, ``JobMode Grid`` in ``.ctf``);
hexagonal grids raise a clear error. Every error names the file and, where there is one, the line.

What a reader returns (:class:`EbsdScan`), whatever the format:

* ``euler_rad`` (ny, nx, 3) Bunge Euler angles in **radians** (``.ctf`` stores degrees, ``.ang``
  radians);
* ``phase`` (ny, nx) int: the phase id of the header's phase list, 0 = not indexed;
* ``ci`` (ny, nx) float: ``.ang`` confidence index; ``.ctf`` has none, so it is 1 where the point
  is indexed (phase > 0 and Error = 0) and -1 elsewhere;
* ``iq`` (ny, nx) float: ``.ang`` image quality, ``.ctf`` band contrast (BC);
* ``indexed`` (ny, nx) bool: phase id in the header, CI >= 0 (``.ang``) / Error = 0 (``.ctf``);
* ``extra``: the remaining columns by name (``SEM``, ``Fit``; ``Bands``, ``Error``, ``MAD``, ``BS``);
* ``step_um`` (x, y), ``phases`` ({id: :class:`EbsdPhase`}), ``header`` (raw lines).

Rows are stored x fastest, then y (both formats); the reader checks that the x/y columns match
the grid. The ``.ang`` reader also handles old single-phase files whose phase column is 0
everywhere (the phase is then the header's only phase).

The writers produce what an instrument would: an OIM 7/8-style header (``TEM_PIXperUM``,
pattern centre, phase block with ``Symmetry``, ``LatticeConstants``, ``hklFamilies``, grid block,
``COLUMN_COUNT``/``COLUMN_HEADERS``), and an HKL Channel 5 header (``Channel Text File``, ``Prj``,
``JobMode Grid``, ``XCells``, ``Phases``, tab-separated rows).
"""

from __future__ import annotations

import dataclasses
import io
import re
import warnings
from pathlib import Path

import numpy as np

from nmc_dataset._util import atomic_path
from nmc_dataset.errors import InputError

#: TSL/EDAX ``# Symmetry`` codes → Laue group.
TSL_SYMMETRY = {
    1: "-1",
    2: "2/m",
    20: "2/m",
    21: "2/m",
    22: "mmm",
    4: "4/m",
    42: "4/mmm",
    3: "-3",
    32: "-3m",
    6: "6/m",
    62: "6/mmm",
    23: "m-3",
    43: "m-3m",
}
#: Oxford ``.ctf`` Laue group numbers → Laue group.
CTF_LAUE = {
    1: "-1",
    2: "2/m",
    3: "mmm",
    4: "4/m",
    5: "4/mmm",
    6: "-3",
    7: "-3m",
    8: "6/m",
    9: "6/mmm",
    10: "m-3",
    11: "m-3m",
}
_TSL_CODE = {
    "-1": 1,
    "2/m": 2,
    "mmm": 22,
    "4/m": 4,
    "4/mmm": 42,
    "-3": 3,
    "-3m": 32,
    "6/m": 6,
    "6/mmm": 62,
    "m-3": 23,
    "m-3m": 43,
}
_CTF_CODE = {v: k for k, v in CTF_LAUE.items()}

ANG_REQUIRED = ("phi1", "PHI", "phi2", "x", "y", "IQ", "CI", "Phase index")
ANG_DEFAULT_EXTRA = ("SEM", "Fit")
CTF_COLUMNS = ("Phase", "X", "Y", "Bands", "Error", "Euler1", "Euler2", "Euler3", "MAD", "BC", "BS")
#: Euler angles OIM writes for points it could not index (4π).
ANG_UNINDEXED_EULER = 4.0 * np.pi


@dataclasses.dataclass(frozen=True)
class EbsdPhase:
    """One crystal phase of a scan header.

    Parameters
    ----------
    id : int
        Phase id used in the data column (1-based).
    name : str
        Material name.
    laue_group : str
        Laue group (``"-3m"`` for NMC811, space group R-3m).
    lattice : tuple of 6 floats
        ``a, b, c`` (Å) and ``α, β, γ`` (degrees).
    """

    id: int
    name: str
    laue_group: str
    lattice: tuple = (0.0, 0.0, 0.0, 90.0, 90.0, 90.0)


#: The NMC811 phase (LiNi0.8Mn0.1Co0.1O2, R-3m, docs/method.md#ebsd-grains).
NMC811 = EbsdPhase(1, "NMC811", "-3m", (2.875, 2.875, 14.248, 90.0, 90.0, 120.0))


@dataclasses.dataclass
class EbsdScan:
    """An EBSD map on a square grid (see the module docstring for the meaning of each field).

    Parameters
    ----------
    path : Path
        The file the scan was read from.
    format : str
        ``"ang"`` or ``"ctf"``.
    euler_rad : (ny, nx, 3) float array
        Bunge Euler angles ``(phi1, PHI, phi2)`` in radians.
    phase : (ny, nx) int array
        Phase id of the header's phase list, 0 = not indexed.
    ci : (ny, nx) float array
        ``.ang`` confidence index; for ``.ctf`` 1 where indexed and -1 elsewhere.
    iq : (ny, nx) float array
        ``.ang`` image quality, ``.ctf`` band contrast.
    indexed : (ny, nx) bool array
        Points with a known phase and a valid solution (CI >= 0 / Error = 0).
    step_um : tuple of 2 floats
        ``(x, y)`` step size in µm.
    phases : dict of int to EbsdPhase
        The header's phases by id.
    extra : dict of str to (ny, nx) array
        The remaining data columns by name (``SEM``, ``Fit``; ``Bands``, ``Error``, ``MAD``, ``BS``).
    header : list of str
        The raw header lines.
    """

    path: Path
    format: str
    euler_rad: np.ndarray
    phase: np.ndarray
    ci: np.ndarray
    iq: np.ndarray
    indexed: np.ndarray
    step_um: tuple
    phases: dict
    extra: dict = dataclasses.field(default_factory=dict)
    header: list = dataclasses.field(default_factory=list)

    @property
    def shape(self) -> tuple:
        """``(ny, nx)``."""
        return self.phase.shape


# --------------------------------------------------------------------------- helpers
def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("file not found", path) from None
    except IsADirectoryError:
        raise InputError("is a folder, expected an EBSD scan file", path) from None
    except OSError as e:
        raise InputError(f"cannot read: {e}", path) from None
    if b"\x00" in data[:4096]:
        raise InputError("binary file, expected a text EBSD scan (.ang / .ctf)", path)
    return data


def _split_header(data: bytes, is_data_line) -> tuple[list[str], bytes]:
    """Header lines (decoded) up to the first line for which ``is_data_line(line, previous)`` holds,
    and the raw bytes from there on (parsed without decoding line by line)."""
    header: list[str] = []
    pos = 0
    n = len(data)
    while pos < n:
        end = data.find(b"\n", pos)
        end = n if end < 0 else end
        line = data[pos:end].decode("latin-1").rstrip("\r")
        if is_data_line(line, header[-1] if header else None):
            break
        header.append(line)
        pos = end + 1
    return header, data[pos:]


def _numeric_block(path: Path, body: bytes, first: int, ncols: int | None, sep_desc: str) -> np.ndarray:
    """Parse the data rows (``first`` = 0-based line index of the first row); on any problem,
    name the first bad line."""
    body = body.rstrip()
    if not body:
        raise InputError("no data rows after the header (truncated file?)", f"{path}:{first + 1}")
    n_lines = body.count(b"\n") + 1
    arr = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            arr = np.loadtxt(io.BytesIO(body), dtype=np.float64, comments=None, ndmin=2)
    except ValueError:
        arr = None
    expected = (
        ncols if ncols is not None else (arr.shape[1] if arr is not None else len(body[: body.find(b"\n")].split()))
    )
    if arr is None or arr.shape != (n_lines, expected) or not np.isfinite(arr).all():
        _diagnose(path, body.decode("latin-1").splitlines(), first, expected, sep_desc)
        raise InputError("could not parse the data rows", path)  # pragma: no cover - _diagnose raises
    return arr


def _diagnose(path: Path, body: list[str], first: int, expected: int, sep_desc: str) -> None:
    for k, line in enumerate(body):
        lineno = first + k + 1
        tokens = line.split()
        if not tokens:
            raise InputError("blank line inside the data rows", f"{path}:{lineno}")
        if len(tokens) != expected:
            last = k == len(body) - 1
            hint = " (truncated file?)" if last and len(tokens) < expected else ""
            raise InputError(f"expected {expected} {sep_desc} columns, found {len(tokens)}{hint}", f"{path}:{lineno}")
        for t in tokens:
            try:
                v = float(t)
            except ValueError:
                raise InputError(f"non-numeric value {t!r}", f"{path}:{lineno}") from None
            if not np.isfinite(v):
                raise InputError(f"non-finite value {t!r}", f"{path}:{lineno}")


def _check_grid(path, xs, ys, nx, ny, sx, sy, first_line):
    """x/y columns must run x fastest on the declared grid; the steps are finite and positive."""
    for name, step in (("x", sx), ("y", sy)):
        if not (np.isfinite(step) and step > 0):
            raise InputError(f"the {name} step {step:g} µm is not a positive length", path)
    col = np.tile(np.arange(nx), ny)
    row = np.repeat(np.arange(ny), nx)
    bad = (np.abs(xs - xs[0] - col * sx) > 0.25 * sx) | (np.abs(ys - ys[0] - row * sy) > 0.25 * sy)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"x, y = {xs[k]:g}, {ys[k]:g} does not match the {nx}×{ny} grid with steps {sx:g}, {sy:g} "
            f"(expected {xs[0] + col[k] * sx:g}, {ys[0] + row[k] * sy:g}; rows must run x fastest)",
            f"{path}:{first_line + k + 1}",
        )


# --------------------------------------------------------------------------- .ang
_ANG_KEY = re.compile(r"^#\s*([A-Za-z_\-]+)\s*:?\s*(.*)$")


def _positive_header_number(keys: dict, name: str, path, kind, spelled: str):
    """Header value ``keys[name] = (text, line)`` as a positive number; errors name file:line."""
    if name not in keys:
        raise InputError(f"missing {spelled} in the header", path)
    value, ln = keys[name]
    try:
        v = kind(value.split()[0])
    except (ValueError, IndexError):
        raise InputError(f"{name} must be a number, got {value!r}", f"{path}:{ln}") from None
    if v <= 0:
        raise InputError(f"{name} must be > 0, got {value!r}", f"{path}:{ln}")
    return v


def read_ang(path) -> EbsdScan:
    """Read a TSL/EDAX OIM ``.ang`` file (square grid).

    Parameters
    ----------
    path : path-like
        The ``.ang`` file.

    Returns
    -------
    EbsdScan
        The map, Euler angles in radians.

    Raises
    ------
    InputError
        Naming the file and line: hexagonal grid, missing/invalid grid keys, no phase, a row
        with the wrong number of columns, non-numeric values, a phase id not in the header, a
        row count that disagrees with ``NCOLS_ODD × NROWS`` (truncated files), x/y off the grid.
    """
    path = Path(path)
    header, body = _split_header(_read_bytes(path), lambda line, prev: bool(line.strip()) and not line.startswith("#"))
    first = len(header)
    keys: dict[str, tuple[str, int]] = {}
    phases: dict[int, dict] = {}
    current = None
    for i, line in enumerate(header):
        m = _ANG_KEY.match(line.strip())
        if not m:
            continue
        key, value = m.group(1), m.group(2).strip()
        ukey = key.upper()
        if ukey == "PHASE":
            try:
                pid = int(value.split()[0])
            except (ValueError, IndexError):
                raise InputError(f"invalid phase id {value!r}", f"{path}:{i + 1}") from None
            current = phases.setdefault(pid, {"line": i + 1})
            continue
        if ukey in ("MATERIALNAME", "SYMMETRY", "LATTICECONSTANTS", "FORMULA"):
            if current is None:  # ASTAR/EMsoft-style headers: one phase without a '# Phase' line
                current = phases.setdefault(1, {"line": i + 1})
            current[ukey] = (value, i + 1)
            continue
        keys[ukey] = (value, i + 1)
    if "GRID" not in keys:
        raise InputError("no '# GRID:' line in the header (not an OIM .ang file?)", path)
    grid, gline = keys["GRID"]
    if grid.strip().lower().startswith("hex"):
        raise InputError(
            "hexagonal grid (HexGrid) is not supported: re-export the scan on a square grid "
            "(OIM: 'Convert scan data' to SqrGrid)",
            f"{path}:{gline}",
        )
    if not grid.strip().lower().startswith("sqrgrid"):  # ASTAR writes 'SqrGrid#
        raise InputError(f"unknown grid type {grid!r} (expected SqrGrid)", f"{path}:{gline}")

    def num(name, kind=float):
        return _positive_header_number(keys, name, path, kind, f"'# {name}:'")

    sx, sy = num("XSTEP"), num("YSTEP")
    nx_odd, nx_even, ny = num("NCOLS_ODD", int), num("NCOLS_EVEN", int), num("NROWS", int)
    if nx_odd != nx_even:
        raise InputError(
            f"NCOLS_ODD ({nx_odd}) != NCOLS_EVEN ({nx_even}) on a square grid", f"{path}:{keys['NCOLS_EVEN'][1]}"
        )
    nx = nx_odd
    if not phases:
        raise InputError(
            "no phase in the header ('# Phase' / '# MaterialName' / '# Symmetry' lines): "
            "the crystal symmetry of the data is unknown",
            path,
        )
    phase_objs = {}
    for pid, p in sorted(phases.items()):
        if "SYMMETRY" not in p:
            raise InputError(f"phase {pid} has no '# Symmetry' line", f"{path}:{p['line']}")
        sym, ln = p["SYMMETRY"]
        try:
            code = int(sym.split()[0])
        except (ValueError, IndexError):
            raise InputError(f"invalid Symmetry {sym!r}", f"{path}:{ln}") from None
        if code not in TSL_SYMMETRY:
            raise InputError(f"unknown TSL symmetry code {code} (known: {sorted(TSL_SYMMETRY)})", f"{path}:{ln}")
        lat = (0.0, 0.0, 0.0, 90.0, 90.0, 90.0)
        if "LATTICECONSTANTS" in p:
            lv, lln = p["LATTICECONSTANTS"]
            try:
                vals = tuple(float(v) for v in lv.split()[:6])
            except ValueError:
                raise InputError(f"invalid LatticeConstants {lv!r}", f"{path}:{lln}") from None
            if len(vals) == 6:
                lat = vals
        name = p.get("MATERIALNAME", (f"phase{pid}", 0))[0] or f"phase{pid}"
        phase_objs[pid] = EbsdPhase(pid, name, TSL_SYMMETRY[code], lat)

    # columns
    names = list(ANG_REQUIRED)
    ncols = None
    if "COLUMN_COUNT" in keys:
        ncols = num("COLUMN_COUNT", int)
    if "COLUMN_HEADERS" in keys:
        hv, hln = keys["COLUMN_HEADERS"]
        names = [h.strip() for h in hv.split(",") if h.strip()]
        lower = [n.lower() for n in names]
        for req in ANG_REQUIRED:
            if req.lower() not in lower:
                raise InputError(f"COLUMN_HEADERS lacks the required column {req!r}", f"{path}:{hln}")
        if ncols is not None and ncols != len(names):
            raise InputError(f"COLUMN_COUNT is {ncols} but COLUMN_HEADERS names {len(names)} columns", f"{path}:{hln}")
        ncols = len(names)
    data = _numeric_block(path, body, first, ncols, ".ang")
    ncols = data.shape[1]
    if ncols < 8:
        raise InputError(
            f"{ncols} data columns; an .ang row needs at least 8 (phi1 PHI phi2 x y IQ CI phase)", f"{path}:{first + 1}"
        )
    if len(names) < ncols:  # no COLUMN_HEADERS: the usual OIM extra columns, then numbered ones
        names = names + list(ANG_DEFAULT_EXTRA) + [f"col{k + 1}" for k in range(10, ncols)]
        names = names[:ncols]
    col = {n.lower(): k for k, n in enumerate(names)}
    npts = nx * ny
    if len(data) != npts:
        where = f"{path}:{first + len(data)}"
        if len(data) < npts:
            raise InputError(
                f"header says {nx}×{ny} = {npts} points but the file has {len(data)} data rows (truncated file?)", where
            )
        raise InputError(f"header says {nx}×{ny} = {npts} points but the file has {len(data)} data rows", where)
    xs, ys = data[:, col["x"]], data[:, col["y"]]
    _check_grid(path, xs, ys, nx, ny, sx, sy, first)
    euler = data[:, [col["phi1"], col["phi"], col["phi2"]]]
    ci = data[:, col["ci"]]
    iq = data[:, col["iq"]]
    ph_raw = data[:, col["phase index"]]
    if np.any(ph_raw != np.round(ph_raw)):
        k = int(np.flatnonzero(ph_raw != np.round(ph_raw))[0])
        raise InputError(f"phase id {ph_raw[k]:g} is not an integer", f"{path}:{first + k + 1}")
    ph = ph_raw.astype(np.int64)
    if len(phase_objs) == 1 and not np.any(ph > 0):  # old single-phase files: phase column all 0
        ph = np.where(ci >= 0, next(iter(phase_objs)), 0)
    known = np.isin(ph, list(phase_objs)) | (ph == 0)
    if not known.all():
        k = int(np.flatnonzero(~known)[0])
        raise InputError(
            f"phase id {ph[k]} is not declared in the header (declared: {sorted(phase_objs)})",
            f"{path}:{first + k + 1}",
        )
    sentinel = np.all(np.abs(euler - ANG_UNINDEXED_EULER) < 1e-3, axis=1)
    indexed = (ph > 0) & (ci >= 0) & ~sentinel
    ph = np.where(indexed, ph, 0)
    extra = {
        n: data[:, k].reshape(ny, nx) for k, n in enumerate(names) if n.lower() not in {r.lower() for r in ANG_REQUIRED}
    }
    return EbsdScan(
        path=path,
        format="ang",
        euler_rad=euler.reshape(ny, nx, 3),
        phase=ph.reshape(ny, nx),
        ci=ci.reshape(ny, nx),
        iq=iq.reshape(ny, nx),
        indexed=indexed.reshape(ny, nx),
        step_um=(sx, sy),
        phases=phase_objs,
        extra=extra,
        header=header,
    )


# --------------------------------------------------------------------------- .ctf
def read_ctf(path) -> EbsdScan:
    """Read an Oxford ``.ctf`` file (``JobMode Grid``; Euler angles in degrees).

    Parameters
    ----------
    path : path-like
        The ``.ctf`` file.

    Returns
    -------
    EbsdScan
        The map, Euler angles converted to radians.

    Raises
    ------
    InputError
        Naming the file and line, as :func:`read_ang`.
    """
    path = Path(path)

    def after_column_row(line, prev):
        if prev is None:
            return False
        parts = prev.split("\t")
        return parts[0].strip() == "Phase" and len(parts) > 2

    lines, body = _split_header(_read_bytes(path), after_column_row)
    if not lines or not lines[0].strip().lower().startswith("channel text file"):
        raise InputError("not an Oxford .ctf file (first line is not 'Channel Text File')", f"{path}:1")
    keys: dict[str, tuple[str, int]] = {}
    phases = {}
    i = 1
    header_row = None
    while i < len(lines):
        parts = lines[i].split("\t")
        head = parts[0].strip()
        if head == "Phase" and len(parts) > 2:  # the column header row
            header_row = i
            break
        if head == "Phases":
            try:
                nph = int(parts[1].strip())
            except (IndexError, ValueError):
                raise InputError(f"invalid 'Phases' line {lines[i]!r}", f"{path}:{i + 1}") from None
            for k in range(nph):
                ln = i + 1 + k
                if ln >= len(lines):
                    raise InputError(f"'Phases {nph}' but the file ends after {k} phase lines", f"{path}:{ln}")
                f = lines[ln].split("\t")
                try:
                    lat = tuple(float(v) for v in f[0].split(";")) + tuple(float(v) for v in f[1].split(";"))
                    laue = int(f[3])
                except (IndexError, ValueError):
                    raise InputError(
                        f"cannot parse phase line {lines[ln]!r} (expected "
                        "'a;b;c<TAB>alpha;beta;gamma<TAB>name<TAB>laue group...')",
                        f"{path}:{ln + 1}",
                    ) from None
                if laue not in CTF_LAUE:
                    raise InputError(f"unknown Laue group number {laue} (1..11)", f"{path}:{ln + 1}")
                phases[k + 1] = EbsdPhase(k + 1, f[2].strip() or f"phase{k + 1}", CTF_LAUE[laue], lat)
            i += 1 + nph
            continue
        if head:
            keys[head] = ("\t".join(parts[1:]).strip(), i + 1)
        i += 1
    if header_row is None:
        raise InputError("no column header row ('Phase<TAB>X<TAB>Y...'): truncated file?", path)
    job, job_line = keys.get("JobMode", ("Grid", 0))
    if not job or job.split()[0].lower() != "grid":
        raise InputError(f"JobMode {job!r} is not supported (square grids only: 'JobMode Grid')", f"{path}:{job_line}")

    def num(name, kind=float):
        return _positive_header_number(keys, name, path, kind, f"'{name}'")

    nx, ny = num("XCells", int), num("YCells", int)
    sx, sy = num("XStep"), num("YStep")
    if not phases:
        raise InputError("no 'Phases' block in the header (the phases of the data are unknown)", path)
    names = [c.strip() for c in lines[header_row].split("\t") if c.strip()]
    for req in CTF_COLUMNS[:8]:
        if req not in names:
            raise InputError(f"column {req!r} missing from the column header row", f"{path}:{header_row + 1}")
    data = _numeric_block(path, body, header_row + 1, len(names), ".ctf")
    first = header_row + 1
    npts = nx * ny
    if len(data) != npts:
        more = " (truncated file?)" if len(data) < npts else ""
        raise InputError(
            f"header says {nx}×{ny} = {npts} points but the file has {len(data)} data rows{more}",
            f"{path}:{first + len(data)}",
        )
    col = {n: k for k, n in enumerate(names)}
    _check_grid(path, data[:, col["X"]], data[:, col["Y"]], nx, ny, sx, sy, first)
    ph_raw = data[:, col["Phase"]]
    ph = ph_raw.astype(np.int64)
    known = np.isin(ph, list(phases)) | (ph == 0)
    if not known.all() or np.any(ph_raw != ph):
        k = int(np.flatnonzero(~known | (ph_raw != ph))[0])
        raise InputError(
            f"phase id {ph_raw[k]:g} is not declared in the header (declared: {sorted(phases)})",
            f"{path}:{first + k + 1}",
        )
    err = data[:, col["Error"]]
    indexed = (ph > 0) & (err == 0)
    ph = np.where(indexed, ph, 0)
    euler = np.radians(data[:, [col["Euler1"], col["Euler2"], col["Euler3"]]])
    ci = np.where(indexed, 1.0, -1.0)
    iq = data[:, col["BC"]] if "BC" in col else np.zeros(len(data))
    extra = {
        n: data[:, k].reshape(ny, nx)
        for n, k in col.items()
        if n not in ("Phase", "X", "Y", "Euler1", "Euler2", "Euler3")
    }
    return EbsdScan(
        path=path,
        format="ctf",
        euler_rad=euler.reshape(ny, nx, 3),
        phase=ph.reshape(ny, nx),
        ci=ci.reshape(ny, nx),
        iq=iq.reshape(ny, nx),
        indexed=indexed.reshape(ny, nx),
        step_um=(sx, sy),
        phases=phases,
        extra=extra,
        header=lines[:first],
    )


def read_ebsd(path) -> EbsdScan:
    """Read an ``.ang`` or ``.ctf`` scan, chosen by the file suffix.

    Parameters
    ----------
    path : path-like
        A ``.ang`` or ``.ctf`` file (suffix case-insensitive).

    Returns
    -------
    EbsdScan
        As :func:`read_ang` / :func:`read_ctf`.

    Raises
    ------
    InputError
        If the suffix is neither, or the file is invalid.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".ang":
        return read_ang(path)
    if suffix == ".ctf":
        return read_ctf(path)
    raise InputError(f"unsupported EBSD file type {path.suffix!r} (expected .ang or .ctf)", path)


# --------------------------------------------------------------------------- writers
def _as_grid(euler_rad, *arrays):
    e = np.asarray(euler_rad, dtype=np.float64)
    if e.ndim != 3 or e.shape[2] != 3:
        raise ValueError(f"euler_rad must be (ny, nx, 3), got {e.shape}")
    out = []
    for a in arrays:
        a = np.asarray(a)
        if a.shape != e.shape[:2]:
            raise ValueError(f"array of shape {a.shape} does not match the grid {e.shape[:2]}")
        out.append(a)
    return e, out


def write_ang(
    path,
    euler_rad,
    ci,
    iq,
    phase,
    step_um: float,
    phases=(NMC811,),
    sem=None,
    fit=None,
    pattern_center=(0.5012, 0.6947, 0.6452),
    working_distance_mm: float = 15.0,
    operator: str = "nmc-dataset",
    scan_id: str = "",
) -> Path:
    """Write a TSL/EDAX OIM ``.ang`` file (square grid, OIM 8-style header, 10 columns).

    Parameters
    ----------
    path : path-like
        Output ``.ang`` file (written atomically).
    euler_rad : (ny, nx, 3) array
        Bunge Euler angles in radians (unindexed points: write 4π, as OIM does).
    ci, iq : (ny, nx) arrays
        Confidence index (-1 = not indexed) and image quality.
    phase : (ny, nx) int array
        Phase id (0 = not indexed).
    step_um : float
        Step size in µm (x and y).
    phases : sequence of EbsdPhase
        Phases of the header, ids matching ``phase`` (default: NMC811 as phase 1).
    sem, fit : (ny, nx) arrays, optional
        Detector signal and fit (default 0 and 1.0).
    pattern_center : tuple of 3 floats, default (0.5012, 0.6947, 0.6452)
        Pattern centre ``(x*, y*, z*)`` written to the header.
    working_distance_mm : float, default 15.0
        Working distance in mm written to the header.
    operator : str, default "nmc-dataset"
        ``# OPERATOR:`` header value.
    scan_id : str, default ""
        ``# SCANID:`` header value.

    Returns
    -------
    Path
        The file written.
    """
    e, (ci, iq, phase) = _as_grid(euler_rad, ci, iq, phase)
    ny, nx = phase.shape
    sem = np.zeros((ny, nx)) if sem is None else np.asarray(sem, float)
    fit = np.where(phase > 0, 1.0, 0.0) if fit is None else np.asarray(fit, float)
    h = [
        "# TEM_PIXperUM          1.000000",
        f"# x-star                {pattern_center[0]:.6f}",
        f"# y-star                {pattern_center[1]:.6f}",
        f"# z-star                {pattern_center[2]:.6f}",
        f"# WorkingDistance       {working_distance_mm:.6f}",
        "# SampleTiltAngle       70.000000",
        "# CameraElevationAngle  10.000000",
        "# CameraAzimuthalAngle  0.000000",
        "#",
    ]
    for p in phases:
        lat = p.lattice
        h += [
            f"# Phase {p.id}",
            f"# MaterialName  \t{p.name}",
            f"# Formula     \t{'LiNi0.8Mn0.1Co0.1O2' if p.name.upper().startswith('NMC') else ''}",
            "# Info \t\t",
            f"# Symmetry              {_TSL_CODE[p.laue_group]}",
            "# PointGroupID          0",
            "# LatticeConstants      "
            + " ".join(f"{v:.3f}" for v in lat[:3])
            + "  "
            + " ".join(f"{v:.3f}" for v in lat[3:]),
            "# NumberFamilies        4",
            "# hklFamilies   \t 0  0  3 1 0.000000 1",
            "# hklFamilies   \t 1  0  1 1 0.000000 1",
            "# hklFamilies   \t 0  1  2 1 0.000000 1",
            "# hklFamilies   \t 1  0  4 1 0.000000 1",
            "# Categories0 0 0 0 0 ",
            "#",
        ]
    h += [
        "# GRID: SqrGrid",
        f"# XSTEP: {step_um:.6f}",
        f"# YSTEP: {step_um:.6f}",
        f"# NCOLS_ODD: {nx}",
        f"# NCOLS_EVEN: {nx}",
        f"# NROWS: {ny}",
        "#",
        f"# OPERATOR: \t{operator}",
        "#",
        "# SAMPLEID: \t",
        "#",
        f"# SCANID: \t{scan_id}",
        "#",
        "# VERSION 8",
        "# COLUMN_COUNT: 10",
        "# COLUMN_HEADERS: phi1, PHI, phi2, x, y, IQ, CI, Phase index, SEM, Fit",
        "# COLUMN_UNITS: radians, radians, radians, microns, microns, , , , , degrees",
        "#",
    ]
    yy, xx = np.mgrid[0:ny, 0:nx]
    cols = np.column_stack(
        [
            e.reshape(-1, 3),
            (xx * step_um).ravel(),
            (yy * step_um).ravel(),
            iq.ravel(),
            ci.ravel(),
            phase.ravel(),
            sem.ravel(),
            fit.ravel(),
        ]
    )
    fmt = "%9.5f %9.5f %9.5f %12.5f %12.5f %8.1f %6.3f %2d %6d %6.3f"
    return _write_table(path, "\n".join(h) + "\n", cols, fmt)


def write_ctf(
    path,
    euler_rad,
    phase,
    step_um: float,
    phases=(NMC811,),
    bands=None,
    error=None,
    mad=None,
    bc=None,
    bs=None,
    project: str = "nmc-dataset synthetic scan",
) -> Path:
    """Write an Oxford ``.ctf`` file (HKL Channel 5 layout, Euler angles in degrees).

    Parameters
    ----------
    path : path-like
        Output ``.ctf`` file (written atomically).
    euler_rad : (ny, nx, 3) array
        Bunge Euler angles in radians (written in degrees; 0 for unindexed points).
    phase : (ny, nx) int array
        Phase id, 0 = not indexed (written with zero angles, bands and Error 3).
    step_um : float
        Step size in µm (x and y).
    phases : sequence of EbsdPhase
        Phases of the header, ids matching ``phase`` (default: NMC811 as phase 1).
    bands, error, mad, bc, bs : (ny, nx) arrays, optional
        Detected bands, error code, mean angular deviation, band contrast, band slope.
    project : str, default "nmc-dataset synthetic scan"
        ``Prj`` header value.

    Returns
    -------
    Path
        The file written.
    """
    e, (phase,) = _as_grid(euler_rad, phase)
    ny, nx = phase.shape
    ind = phase > 0
    bands = np.where(ind, 9, 0) if bands is None else np.asarray(bands)
    error = np.where(ind, 0, 3) if error is None else np.asarray(error)
    mad = np.where(ind, 0.45, 0.0) if mad is None else np.asarray(mad, float)
    bc = np.where(ind, 150, 0) if bc is None else np.asarray(bc)
    bs = np.where(ind, 160, 0) if bs is None else np.asarray(bs)
    deg = np.where(ind[..., None], np.degrees(e), 0.0)
    h = [
        "Channel Text File",
        f"Prj\t{project}",
        "Author\t[Unknown]",
        "JobMode\tGrid",
        f"XCells\t{nx}",
        f"YCells\t{ny}",
        f"XStep\t{step_um:.4f}",
        f"YStep\t{step_um:.4f}",
        "AcqE1\t0.0000",
        "AcqE2\t0.0000",
        "AcqE3\t0.0000",
        "Euler angles refer to Sample Coordinate system (CS0)!\tMag\t5000.0000\tCoverage\t100\tDevice\t0"
        "\tKV\t20.0000\tTiltAngle\t70.0000\tTiltAxis\t0\tDetectorOrientationE1\t0.0000"
        "\tDetectorOrientationE2\t0.0000\tDetectorOrientationE3\t0.0000",
        f"Phases\t{len(phases)}",
    ]
    for p in phases:
        lat = p.lattice
        h.append(
            ";".join(f"{v:.3f}" for v in lat[:3])
            + "\t"
            + ";".join(f"{v:.3f}" for v in lat[3:])
            + f"\t{p.name}\t{_CTF_CODE[p.laue_group]}\t{166 if p.laue_group == '-3m' else 0}\t\t\t"
        )
    h.append("\t".join(CTF_COLUMNS))
    yy, xx = np.mgrid[0:ny, 0:nx]
    cols = np.column_stack(
        [
            phase.ravel(),
            (xx * step_um).ravel(),
            (yy * step_um).ravel(),
            bands.ravel(),
            error.ravel(),
            deg.reshape(-1, 3),
            mad.ravel(),
            bc.ravel(),
            bs.ravel(),
        ]
    )
    fmt = "\t".join(["%d", "%.4f", "%.4f", "%d", "%d", "%.4f", "%.4f", "%.4f", "%.4f", "%d", "%d"])
    return _write_table(path, "\n".join(h) + "\n", cols, fmt)


def _write_table(path, header: str, cols: np.ndarray, fmt: str) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="latin-1", newline="\n") as f:
            f.write(header)
            np.savetxt(f, cols, fmt=fmt)
    return path
