"""Fast ASCII lines of integer tables (element connectivity of ``.inp`` and ``.msh`` files).

Python's per-number formatting (``str`` / ``np.savetxt``) cost ~10 s of CPU per million
tetrahedra in the mesh writers; :func:`int_rows` writes the decimal digits with a compiled loop
into one byte buffer. :func:`int_rows_reference` is its slow twin (Python ``str.join``), the tests
compare both on random tables.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True)
def _fill(rows, sep, out):
    n = 0
    digits = np.empty(24, dtype=np.uint8)
    for r in range(rows.shape[0]):
        for c in range(rows.shape[1]):
            if c:
                for s in sep:
                    out[n] = s
                    n += 1
            v = rows[r, c]
            if v < 0:
                out[n] = 45  # '-'
                n += 1
                v = -v
            k = 0
            while True:
                digits[k] = 48 + v % 10
                v //= 10
                k += 1
                if v == 0:
                    break
            for i in range(k - 1, -1, -1):
                out[n] = digits[i]
                n += 1
        out[n] = 10  # '\n'
        n += 1
    return n


def int_rows(rows, sep: str = " ") -> str:
    """``rows`` (2D integer array) as text: one line per row, entries joined by ``sep``, each line
    ending in a newline (the empty string for no rows)."""
    a = np.ascontiguousarray(rows, dtype=np.int64)
    if a.ndim != 2:
        raise ValueError(f"expected a 2D array, got shape {a.shape}")
    if a.size == 0:
        return "" if a.shape[0] == 0 else "\n" * a.shape[0]
    s = np.frombuffer(sep.encode("ascii"), dtype=np.uint8)
    width = 20 + len(s)  # int64: at most 19 digits and a sign
    out = np.empty(a.shape[0] * (a.shape[1] * width + 1), dtype=np.uint8)
    n = _fill(a, s, out)
    return out[:n].tobytes().decode("ascii")


__all__ = ["int_rows"]


# --------------------------------------------------------------------------- floats as "%.{p}e"
# exact powers of ten (10**s is a double exactly for s <= 22)
_POW10 = np.array([10.0**s for s in range(23)])


@numba.njit(cache=True, inline="always")
def _two_prod(a, b):
    """``a * b = p + err`` exactly (Dekker's product with Veltkamp splitting; no FMA needed)."""
    p = a * b
    c = 134217729.0 * a
    ahi = c - (c - a)
    alo = a - ahi
    c = 134217729.0 * b
    bhi = c - (c - b)
    blo = b - bhi
    return p, ((ahi * bhi - p) + ahi * blo + alo * bhi) + alo * blo


@numba.njit(cache=True)
def _sci_digits(x, prec, mant, expo, ok):
    """Decimal mantissa ``mant`` (``prec + 1`` digits) and exponent of ``|x|``, correctly rounded
    (half to even, as C's and Python's ``%.{prec}e``). The product ``|x| 10^s`` is held exactly as
    a double-double, so the rounding decision is exact; values that need ``10^s`` beyond 1e22 (or
    non-finite ones) are flagged ``ok = False`` for the caller to format."""
    lo_t = _POW10[prec]
    hi_t = lo_t * 10.0
    for i in range(x.size):
        v = abs(x[i])
        if v == 0.0:
            mant[i] = 0
            expo[i] = 0
            ok[i] = True
            continue
        if not (v < 1e300):  # inf, nan
            ok[i] = False
            continue
        e = int(np.floor(np.log10(v)))
        good = False
        for _ in range(3):  # log10 may be off by one near powers of ten
            s = prec - e
            if s < 0 or s > 22:
                break
            hi, lo = _two_prod(v, _POW10[s])
            if hi < lo_t or (hi == lo_t and lo < 0):
                e -= 1
                continue
            if hi > hi_t or (hi == hi_t and lo >= 0):
                e += 1
                continue
            good = True
            break
        if not good:
            ok[i] = False
            continue
        if hi < 9007199254740992.0:  # 2**53: hi - floor(hi) is exact
            n = np.floor(hi)
            r = ((hi - n) - 0.5) + lo  # the sign is exact
            m = np.int64(n)
        else:  # hi is an integer
            fl = np.floor(lo)
            h = fl + 0.5
            r = 1.0 if lo > h else (-1.0 if lo < h else 0.0)
            m = np.int64(hi) + np.int64(fl)
        if r > 0 or (r == 0 and m % 2 == 1):
            m += 1
        if m == np.int64(hi_t):
            m = np.int64(lo_t)
            e += 1
        mant[i] = m
        expo[i] = e
        ok[i] = True


def sci_parts(values, precision: int = 12):
    """Sign, mantissa digits and exponent of ``f"{v:.{precision}e}"`` for every value.

    Parameters
    ----------
    values : float array
        Finite values.
    precision : int
        Digits after the point (at most 17).

    Returns
    -------
    neg : bool array
        Sign bit (``-0.0`` included, as Python writes it).
    mant : int64 array
        The ``precision + 1`` significant digits as an integer.
    expo : int64 array
        Decimal exponent.
    """
    if not 0 <= precision <= 17:
        raise ValueError("precision must be 0..17")
    x = np.ascontiguousarray(values, dtype=np.float64).ravel()
    mant = np.empty(x.size, np.int64)
    expo = np.empty(x.size, np.int64)
    ok = np.empty(x.size, np.bool_)
    _sci_digits(x, precision, mant, expo, ok)
    for i in np.flatnonzero(~ok).tolist():  # outside [1e-10, 1e13) for 12 digits: Python's own formatting
        if not np.isfinite(x[i]):
            raise ValueError(f"cannot write the non-finite value {x[i]} as a decimal number")
        m, _, ex = f"{abs(x[i]):.{precision}e}".partition("e")
        mant[i] = int(m.replace(".", ""))
        expo[i] = int(ex)
    return np.signbit(x), mant, expo


@numba.njit(cache=True, inline="always")
def _put_int(out, n, v, digits):
    """Decimal digits of ``v`` into ``out[n:]``; returns the new end (``digits``: unused scratch,
    kept for the callers' signature)."""
    if v < 0:
        out[n] = 45
        n += 1
        v = -v
    k = 1
    t = v
    while t >= 10:
        t //= 10
        k += 1
    for i in range(n + k - 1, n - 1, -1):
        out[i] = 48 + v % 10
        v //= 10
    return n + k


@numba.njit(cache=True)
def _fill_ids(rows, first, add, sep, out):
    """Lines ``first + r, rows[r, 0] + add, ...`` (the element lines of the mesh files)."""
    n = 0
    digits = np.empty(24, dtype=np.uint8)
    for r in range(rows.shape[0]):
        n = _put_int(out, n, first + r, digits)
        for c in range(rows.shape[1]):
            for s in sep:
                out[n] = s
                n += 1
            n = _put_int(out, n, rows[r, c] + add, digits)
        out[n] = 10
        n += 1
    return n


def numbered_rows_bytes(rows, first: int = 1, add: int = 0, sep: str = ", ") -> np.ndarray:
    """ASCII bytes (a uint8 array) of the lines ``first + r<sep>rows[r, 0] + add<sep>...``, as
    ``int_rows(np.column_stack([first + arange, rows + add]), sep)`` without building that table.

    Parameters
    ----------
    rows : (n, m) int array
        Table.
    first : int
        Number of the first line.
    add : int
        Added to every entry of ``rows`` (1 for 1-based node numbers).
    sep : str
        Separator.

    Returns
    -------
    (bytes,) uint8 array
    """
    a = np.ascontiguousarray(rows, dtype=np.int64)
    s = np.frombuffer(sep.encode("ascii"), dtype=np.uint8)
    out = np.empty(a.shape[0] * ((a.shape[1] + 1) * (20 + len(s)) + 1), dtype=np.uint8)
    return out[: _fill_ids(a, int(first), int(add), s, out)]


@numba.njit(cache=True, inline="always")
def _put_sci(out, n, neg, m, e, prec, digits):
    if neg:
        out[n] = 45
        n += 1
    for k in range(prec, -1, -1):
        digits[k] = 48 + m % 10
        m //= 10
    out[n] = digits[0]
    n += 1
    if prec:
        out[n] = 46  # '.'
        n += 1
        for k in range(1, prec + 1):
            out[n] = digits[k]
            n += 1
    out[n] = 101  # 'e'
    out[n + 1] = 45 if e < 0 else 43
    n += 2
    e = -e if e < 0 else e
    if e < 10:
        out[n] = 48
        n += 1
    return _put_int(out, n, e, digits)


@numba.njit(cache=True)
def _fill_sci(ids, neg, mant, expo, ncol, prec, sep, out):
    n = 0
    digits = np.empty(24, dtype=np.uint8)
    for r in range(ids.size):
        n = _put_int(out, n, ids[r], digits)
        for c in range(ncol):
            for s in sep:
                out[n] = s
                n += 1
            j = r * ncol + c
            n = _put_sci(out, n, neg[j], mant[j], expo[j], prec, digits)
        out[n] = 10
        n += 1
    return n


def id_sci_rows(ids, values, precision: int = 12, sep: str = ", ") -> str:
    """Lines ``id<sep>v_1<sep>...<sep>v_m`` with the values written ``%.{precision}e``.

    Parameters
    ----------
    ids : (n,) int array
        First entry of each line.
    values : (n, m) float array
        Finite values.
    precision : int
        Digits after the decimal point.
    sep : str
        Separator.

    Returns
    -------
    str
        One line per row, each ending in a newline; byte for byte
        ``"".join(f"{i}{sep}" + sep.join(f"{v:.{precision}e}" for v in row) + "\\n" ...)``.
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 2 or len(v) != len(ids):
        raise ValueError(f"expected ({len(ids)}, m) values, got shape {v.shape}")
    return id_sci_rows_bytes(ids, v, precision, sep).tobytes().decode("ascii")


def id_sci_rows_bytes(ids, values, precision: int = 12, sep: str = ", ") -> np.ndarray:
    """:func:`id_sci_rows` as ASCII bytes (a uint8 array, for writing without decoding).

    Parameters
    ----------
    ids : (n,) int array
        First entry of each line.
    values : (n, m) float array
        Finite values.
    precision : int
        Digits after the decimal point.
    sep : str
        Separator.

    Returns
    -------
    (bytes,) uint8 array
    """
    ids = np.ascontiguousarray(ids, dtype=np.int64).ravel()
    v = np.asarray(values, dtype=np.float64)
    neg, mant, expo = sci_parts(v, precision)
    s = np.frombuffer(sep.encode("ascii"), dtype=np.uint8)
    width = 8 + precision + len(s)  # sign, digit, point, "e", exponent sign and up to 3 digits
    out = np.empty(len(ids) * (21 + v.shape[1] * width), dtype=np.uint8)
    return out[: _fill_sci(ids, neg, mant, expo, v.shape[1], precision, s, out)]


__all__ += ["id_sci_rows", "id_sci_rows_bytes", "numbered_rows_bytes", "sci_parts"]
