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
