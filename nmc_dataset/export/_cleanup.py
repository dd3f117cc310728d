"""Mesh-ready label volumes: one face-connected piece per grain, no edge- or vertex-only contacts.

Surface nets and tet meshers need every grain's boundary to be a closed 2-manifold. In a label
volume that fails in three ways, all of them local:

* a grain in several face-connected pieces (fragments);
* an *edge-only contact*: around a lattice edge (a 2x2 square of voxels) one label holds the
  two diagonal voxels and not the two others (a non-manifold edge of its surface);
* a *vertex-only contact*: around a lattice vertex (a 2x2x2 block) the voxels of one label, or
  the voxels of all other labels together, are not face-connected within the block.

The outside (label 0) is a label like the others here, so the particle surface is manifold too.

:func:`clean_labels` removes all three by descent on a potential: ``Phi`` = number of bad
squares + number of bad blocks. A voxel change only affects the 12 squares and 8 blocks that
contain the voxel, so each candidate change (a voxel of a bad square/block takes the label of
one of its face neighbours) is scored exactly and locally; the best strictly decreasing change
is applied (ties broken by a seeded generator). ``Phi`` is a non-negative integer, so the
descent terminates. Where no single change decreases it (a local minimum), the whole 2x2x2
block takes the label that minimises ``Phi`` around it, and then random equal-``Phi`` moves are
allowed for a bounded number of steps. Fragments are given to their most common neighbouring
grain (to the outside only when they touch no grain) with one union-find labelling of the
volume, and the descent repeats until a full check finds nothing. If ``max_rounds`` rounds leave
something (seen only on random noise volumes), a last resort always terminates: cubes of growing
half-width around the bad positions take their most common label. The kernels are compiled with
numba; ``*.py_func`` runs the same code in Python (the tests compare both on random volumes),
and :func:`defects` is an independent numpy/scipy checker.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from scipy import ndimage


def _connected_table() -> np.ndarray:
    """``table[mask]``: whether the corners in an 8-bit mask of a 2x2x2 cube are face-connected
    (corner ``o = 4 i + 2 j + k`` at offset ``(i, j, k)``; face neighbours ``o ^ 1, o ^ 2, o ^ 4``)."""
    table = np.zeros(256, dtype=np.bool_)
    for mask in range(256):
        if mask == 0:
            table[mask] = True
            continue
        start = (mask & -mask).bit_length() - 1
        seen, stack = {start}, [start]
        while stack:
            v = stack.pop()
            for bit in (1, 2, 4):
                w = v ^ bit
                if mask >> w & 1 and w not in seen:
                    seen.add(w)
                    stack.append(w)
        table[mask] = len(seen) == mask.bit_count()
    return table


CONNECTED = _connected_table()


# --------------------------------------------------------------------------- compiled kernels
@nb.njit(cache=True)
def _block_bad(lab, z, y, x, table):
    """Block with lowest corner (z, y, x) has a vertex-only contact."""
    c = (
        lab[z, y, x],
        lab[z, y, x + 1],
        lab[z, y + 1, x],
        lab[z, y + 1, x + 1],
        lab[z + 1, y, x],
        lab[z + 1, y, x + 1],
        lab[z + 1, y + 1, x],
        lab[z + 1, y + 1, x + 1],
    )
    if (
        c[0] == c[1]
        and c[0] == c[2]
        and c[0] == c[3]
        and c[0] == c[4]
        and c[0] == c[5]
        and c[0] == c[6]
        and c[0] == c[7]
    ):
        return False
    done = 0  # corners whose label was checked already (the same mask)
    for n in range(8):
        if done >> n & 1:
            continue
        mask = 0
        for o in range(n, 8):
            if c[o] == c[n]:
                mask |= 1 << o
        done |= mask
        if not table[mask] or not table[255 ^ mask]:
            return True
    return False


@nb.njit(cache=True)
def _square_bad(a, b, c, d):
    """Square (a b / c d) with diagonals (a, d) and (b, c) has an edge-only contact."""
    return (a == d and b != a and c != a) or (b == c and a != b and d != b)


@nb.njit(cache=True)
def _local_phi(lab, z, y, x, table):
    """Bad squares + bad blocks among those containing voxel (z, y, x)."""
    nz, ny, nx = lab.shape
    phi = 0
    for z0 in range(z - 1, z + 1):
        if z0 < 0 or z0 + 1 >= nz:
            continue
        for y0 in range(y - 1, y + 1):
            if y0 < 0 or y0 + 1 >= ny:
                continue
            for x0 in range(x - 1, x + 1):
                if x0 < 0 or x0 + 1 >= nx:
                    continue
                if _block_bad(lab, z0, y0, x0, table):
                    phi += 1
    # squares in the planes through the voxel: normal z, y, x
    for u in range(y - 1, y + 1):
        for w in range(x - 1, x + 1):
            if (
                u >= 0
                and w >= 0
                and u + 1 < ny
                and w + 1 < nx
                and _square_bad(lab[z, u, w], lab[z, u, w + 1], lab[z, u + 1, w], lab[z, u + 1, w + 1])
            ):
                phi += 1
    for u in range(z - 1, z + 1):
        for w in range(x - 1, x + 1):
            if (
                u >= 0
                and w >= 0
                and u + 1 < nz
                and w + 1 < nx
                and _square_bad(lab[u, y, w], lab[u, y, w + 1], lab[u + 1, y, w], lab[u + 1, y, w + 1])
            ):
                phi += 1
    for u in range(z - 1, z + 1):
        for w in range(y - 1, y + 1):
            if (
                u >= 0
                and w >= 0
                and u + 1 < nz
                and w + 1 < ny
                and _square_bad(lab[u, w, x], lab[u, w + 1, x], lab[u + 1, w, x], lab[u + 1, w + 1, x])
            ):
                phi += 1
    return phi


@nb.njit(cache=True)
def _rand(state):
    """One step of a 31-bit linear congruential generator (int64 arithmetic without overflow, so
    the compiled and the Python code draw the same numbers); returns (new state, the draw)."""
    state = (state * 1103515245 + 12345) % 2147483648
    return state, state >> 8


@nb.njit(cache=True)
def _try_voxel(lab, z, y, x, table, state, allow_equal):
    """Best change of voxel (z, y, x) to a face neighbour's label; applied if it lowers the local
    potential (or keeps it, when ``allow_equal``). Returns (delta, state)."""
    nz, ny, nx = lab.shape
    old = lab[z, y, x]
    before = _local_phi(lab, z, y, x, table)
    best_d, best_l, n_best = 1 << 30, old, 0
    offs = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))
    for t in range(6):
        zz, yy, xx = z + offs[t][0], y + offs[t][1], x + offs[t][2]
        if zz < 0 or yy < 0 or xx < 0 or zz >= nz or yy >= ny or xx >= nx:
            continue
        cand = lab[zz, yy, xx]
        if cand == old:
            continue
        dup = False
        for s in range(t):
            z2, y2, x2 = z + offs[s][0], y + offs[s][1], x + offs[s][2]
            if 0 <= z2 < nz and 0 <= y2 < ny and 0 <= x2 < nx and lab[z2, y2, x2] == cand:
                dup = True
        if dup:
            continue
        lab[z, y, x] = cand
        d = _local_phi(lab, z, y, x, table) - before
        lab[z, y, x] = old
        if d < best_d:
            best_d, best_l, n_best = d, cand, 1
        elif d == best_d:  # reservoir choice among ties
            n_best += 1
            state, r = _rand(state)
            if r % n_best == 0:
                best_l = cand
    if best_d < 0 or (allow_equal and best_d == 0):
        lab[z, y, x] = best_l
        return best_d, state
    return 0, state


@nb.njit(cache=True)
def _region_phi(lab, z, y, x, table):
    p = 0
    for i in range(2):
        for j in range(2):
            for k in range(2):
                p += _local_phi(lab, z + i, y + j, x + k, table)
    return p


@nb.njit(cache=True)
def _fill_block(lab, z, y, x, table):
    """Give the whole block (lowest corner z, y, x) the label of its own that minimises the
    potential of the region it touches; returns the change of that potential."""
    saved = lab[z : z + 2, y : y + 2, x : x + 2].copy()
    before = _region_phi(lab, z, y, x, table)
    best_p, best_l = 1 << 30, saved[0, 0, 0]
    for o in range(8):
        cand = saved[o >> 2, (o >> 1) & 1, o & 1]
        lab[z : z + 2, y : y + 2, x : x + 2] = cand
        p = _region_phi(lab, z, y, x, table)
        if p < best_p:
            best_p, best_l = p, cand
        lab[z : z + 2, y : y + 2, x : x + 2] = saved
    if best_p < before:
        lab[z : z + 2, y : y + 2, x : x + 2] = best_l
    return best_p - before


@nb.njit(cache=True)
def _bad_at(lab, z, y, x, table):
    """The block with lowest corner (z, y, x), or one of the three squares with that lowest
    corner, is bad (parts outside the volume are skipped)."""
    nz, ny, nx = lab.shape
    if z + 1 < nz and y + 1 < ny and x + 1 < nx and _block_bad(lab, z, y, x, table):
        return True
    if (
        y + 1 < ny
        and x + 1 < nx
        and _square_bad(lab[z, y, x], lab[z, y, x + 1], lab[z, y + 1, x], lab[z, y + 1, x + 1])
    ):
        return True
    if (
        z + 1 < nz
        and x + 1 < nx
        and _square_bad(lab[z, y, x], lab[z, y, x + 1], lab[z + 1, y, x], lab[z + 1, y, x + 1])
    ):
        return True
    return (
        z + 1 < nz
        and y + 1 < ny
        and _square_bad(lab[z, y, x], lab[z, y + 1, x], lab[z + 1, y, x], lab[z + 1, y + 1, x])
    )


@nb.njit(cache=True)
def _bad_blocks(lab, table):
    """Lowest corners ``(z, y, x)`` of every bad block or bad square, (N, 3)."""
    nz, ny, nx = lab.shape
    out = []
    for z in range(nz):
        for y in range(ny):
            inner = z + 1 < nz and y + 1 < ny
            # uniform blocks (almost all) hold no bad block or square: a block is uniform when its
            # two columns (the 2x2 voxels at x and x + 1) are, with the same label
            col_next = inner and (lab[z, y, 0] == lab[z, y + 1, 0] == lab[z + 1, y, 0] == lab[z + 1, y + 1, 0])
            for x in range(nx):
                col = col_next
                if inner and x + 1 < nx:
                    a = lab[z, y, x + 1]
                    col_next = a == lab[z, y + 1, x + 1] and a == lab[z + 1, y, x + 1] and a == lab[z + 1, y + 1, x + 1]
                    if col and col_next and lab[z, y, x] == a:
                        continue
                if _bad_at(lab, z, y, x, table):
                    out.append((z, y, x))
    res = np.empty((len(out), 3), dtype=np.int64)
    for i in range(len(out)):
        res[i, 0], res[i, 1], res[i, 2] = out[i]
    return res


@nb.njit(cache=True)
def _bad_near(lab, table, cand):
    """The bad positions among ``cand`` and their neighbours (the positions whose block or squares
    contain a candidate voxel), unique, (N, 3)."""
    nz, ny, nx = lab.shape
    seen = set()
    out = []
    for i in range(len(cand)):
        for z in range(max(cand[i, 0] - 1, 0), min(cand[i, 0] + 2, nz)):
            for y in range(max(cand[i, 1] - 1, 0), min(cand[i, 1] + 2, ny)):
                for x in range(max(cand[i, 2] - 1, 0), min(cand[i, 2] + 2, nx)):
                    key = (z * ny + y) * nx + x
                    if key in seen:
                        continue
                    seen.add(key)
                    if _bad_at(lab, z, y, x, table):
                        out.append((z, y, x))
    res = np.empty((len(out), 3), dtype=np.int64)
    for i in range(len(out)):
        res[i, 0], res[i, 1], res[i, 2] = out[i]
    return res


@nb.njit(cache=True)
def _descend(lab, table, seed, max_sweeps, equal_budget, bad):
    """Potential descent, starting from the bad positions ``bad``; each later sweep looks only
    around the voxels the previous one changed. Returns (number of voxel changes, bad positions
    left)."""
    nz, ny, nx = lab.shape
    state = (seed * 7919 + 1) % 2147483648
    changes = 0
    equal_left = equal_budget
    for _sweep in range(max_sweeps):
        if len(bad) == 0:
            return changes, bad
        touched = []
        for b in range(len(bad)):
            z, y, x = bad[b, 0], bad[b, 1], bad[b, 2]
            touched.append((z, y, x))  # unfixed positions are looked at again
            if not _bad_at(lab, z, y, x, table):
                continue
            # the block's voxels in a random order: the first strictly improving change wins
            state, r = _rand(state)
            done = False
            for t in range(8):
                o = (t + r) & 7
                vz, vy, vx = z + (o >> 2), y + ((o >> 1) & 1), x + (o & 1)
                if vz >= nz or vy >= ny or vx >= nx:
                    continue
                d, state = _try_voxel(lab, vz, vy, vx, table, state, False)
                if d < 0:
                    changes += 1
                    touched.append((vz, vy, vx))
                    done = True
                    break
            if done:
                continue
            if z + 1 < nz and y + 1 < ny and x + 1 < nx and _fill_block(lab, z, y, x, table) < 0:
                changes += 8
                touched.append((z + 1, y + 1, x + 1))
                continue
            if equal_left > 0:  # a random sideways move to leave the local minimum
                equal_left -= 1
                state, r = _rand(state)
                o = r & 7
                vz, vy, vx = min(z + (o >> 2), nz - 1), min(y + ((o >> 1) & 1), ny - 1), min(x + (o & 1), nx - 1)
                d, state = _try_voxel(lab, vz, vy, vx, table, state, True)
                changes += 1
                touched.append((vz, vy, vx))
        cand = np.empty((len(touched), 3), dtype=np.int64)
        for i in range(len(touched)):
            cand[i, 0], cand[i, 1], cand[i, 2] = touched[i]
        bad = _bad_near(lab, table, cand)
    return changes, bad


@nb.njit(cache=True)
def _find(parent, i):
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@nb.njit(cache=True)
def _runs(lab):
    """Runs of equal non-zero labels along x: flat start index, length and label of each, in
    scan order, and the first run of every row ``(z, y)`` (``row_start``, length ``nz ny + 1``)."""
    nz, ny, nx = lab.shape
    flat = lab.ravel()
    n_runs = 0
    for r in range(nz * ny):
        i0 = r * nx
        prev = 0
        for x in range(nx):
            v = flat[i0 + x]
            if v != 0 and (x == 0 or v != prev):
                n_runs += 1
            prev = v
    start = np.empty(n_runs, np.int64)
    length = np.empty(n_runs, np.int64)
    label = np.empty(n_runs, np.int64)
    row_start = np.empty(nz * ny + 1, np.int64)
    k = 0
    for r in range(nz * ny):
        row_start[r] = k
        i0 = r * nx
        x = 0
        while x < nx:
            v = flat[i0 + x]
            if v == 0:
                x += 1
                continue
            x1 = x + 1
            while x1 < nx and flat[i0 + x1] == v:
                x1 += 1
            start[k], length[k], label[k] = i0 + x, x1 - x, v
            k += 1
            x = x1
    row_start[nz * ny] = k
    return start, length, label, row_start


@nb.njit(cache=True)
def _union_rows(parent, start, length, label, row_start, ra, rb, nx):
    """Union the runs of row ``ra`` with the overlapping runs of equal label in row ``rb``."""
    i, j = row_start[ra], row_start[rb]
    ie, je = row_start[ra + 1], row_start[rb + 1]
    while i < ie and j < je:
        a0 = start[i] % nx
        b0 = start[j] % nx
        a1, b1 = a0 + length[i], b0 + length[j]
        if a0 < b1 and b0 < a1 and label[i] == label[j]:
            p, q = _find(parent, i), _find(parent, j)
            if p != q:
                if p < q:
                    parent[q] = p
                else:
                    parent[p] = q
        if a1 <= b1:
            i += 1
        else:
            j += 1


@nb.njit(cache=True)
def _components_runs(lab):
    """Face-connected components of equal non-zero labels, on runs along x (union-find over ~10x
    fewer elements than voxels; ``testing.components_reference`` is the per-voxel slow twin).

    Returns the runs (``start``, ``length``), the component of each run (numbered in scan
    order of their first voxel), and per component ``sizes`` and ``labels``."""
    nz, ny, nx = lab.shape
    start, length, label, row_start = _runs(lab)
    n = start.size
    parent = np.arange(n)
    for z in range(nz):
        for y in range(ny):
            r = z * ny + y
            if y > 0:
                _union_rows(parent, start, length, label, row_start, r, r - 1, nx)
            if z > 0:
                _union_rows(parent, start, length, label, row_start, r, r - ny, nx)
    comp = np.empty(n, np.int64)
    n_comp = 0
    for i in range(n):
        if _find(parent, i) == i:
            n_comp += 1
    sizes = np.zeros(n_comp, np.int64)
    labels = np.empty(n_comp, np.int64)
    c = 0
    for i in range(n):
        root = _find(parent, i)
        if root == i:
            comp[i] = c
            labels[c] = label[i]
            c += 1
        else:
            comp[i] = comp[root]  # root < i: already numbered
        sizes[comp[i]] += length[i]
    return start, length, comp, sizes, labels


@nb.njit(cache=True)
def _fragment_neighbours(lab, start, length, comp, is_small):
    """(fragment, neighbouring grain label) for every face contact of a voxel of a small fragment
    with another grain (one entry per contact)."""
    flat = lab.ravel()
    nz, ny, nx = lab.shape
    out = []
    for r in range(start.size):
        c = comp[r]
        if not is_small[c]:
            continue
        for i in range(start[r], start[r] + length[r]):
            x = i % nx
            y = (i // nx) % ny
            z = i // (nx * ny)
            for j, ok in (
                (i + 1, x + 1 < nx),
                (i - 1, x > 0),
                (i + nx, y + 1 < ny),
                (i - nx, y > 0),
                (i + nx * ny, z + 1 < nz),
                (i - nx * ny, z > 0),
            ):
                if ok and flat[j] != 0 and flat[j] != flat[i]:
                    out.append((c, np.int64(flat[j])))
    res = np.empty((len(out), 2), dtype=np.int64)
    for k in range(len(out)):
        res[k, 0], res[k, 1] = out[k]
    return res


@nb.njit(cache=True)
def _assign(lab, start, length, comp, is_small, target):
    """Voxels of small fragments take their target label; returns their flat indices (ascending)."""
    flat = lab.ravel()
    n = 0
    for r in range(start.size):
        if is_small[comp[r]]:
            n += length[r]
    out = np.empty(n, np.int64)
    k = 0
    for r in range(start.size):
        if is_small[comp[r]]:
            for i in range(start[r], start[r] + length[r]):
                flat[i] = target[comp[r]]
                out[k] = i
                k += 1
    return out


def _fragments(lab: np.ndarray, compiled: bool = True) -> np.ndarray:
    """Give every non-largest face-connected piece of a grain to its most common grain neighbour
    (to the outside if it touches no grain). Returns the flat indices of the changed voxels."""

    def k(f):
        return f if compiled else f.py_func

    start, length, comp, sizes, labels = k(_components_runs)(lab)
    order = np.lexsort((-sizes, labels))  # by label, the largest piece first
    first = np.ones(len(order), dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    is_small = np.zeros(len(sizes), dtype=np.bool_)
    is_small[order[~first]] = True
    if not is_small.any():
        return np.zeros(0, dtype=np.int64)
    pairs = k(_fragment_neighbours)(lab, start, length, comp, is_small)
    target = np.zeros(len(sizes), dtype=lab.dtype)  # fragments touching no grain go to the outside
    if len(pairs):
        key, cnt = np.unique(pairs, axis=0, return_counts=True)
        # most common neighbour per fragment (ties: the smallest label)
        o = np.lexsort((key[:, 1], -cnt, key[:, 0]))
        key = key[o]
        head = np.ones(len(key), dtype=bool)
        head[1:] = key[1:, 0] != key[:-1, 0]
        target[key[head, 0]] = key[head, 1]
    return k(_assign)(lab, start, length, comp, is_small, target)


def clean_labels(
    labels: np.ndarray, max_rounds: int = 12, seed: int = 0, compiled: bool = True
) -> tuple[np.ndarray, int]:
    """A mesh-ready copy of a label volume (see the module notes).

    Parameters
    ----------
    labels : (nz, ny, nx) int array
        0 = outside.
    max_rounds : int
        Rounds of (fragments, descent) before the last resort: cubes of growing size around
        whatever is left take their most common label (not needed by any particle in the tests;
        it guarantees termination on any input, e.g. random noise).
    seed : int
        Seed of the tie-breaking generator (the result is deterministic for a given seed).
    compiled : bool
        Run the numba kernels (False: the same code in pure Python, for tests on small volumes).

    Returns
    -------
    labels : array
        Same dtype and shape; only the meshes use it (the params/HDF5 volumes keep the original).
    changed : int
        Number of voxel changes made.

    Raises
    ------
    RuntimeError
        If the volume is still not clean after ``max_rounds`` rounds (not seen on any particle
        or random volume in the tests).
    """
    lab = np.array(labels, copy=True, order="C")
    if lab.ndim != 3:
        raise ValueError(f"expected a 3D label volume, got shape {lab.shape}")
    if lab.min(initial=0) < 0:
        raise ValueError("labels must be >= 0")
    dtype = lab.dtype
    lab = lab.astype(np.int32) if lab.max(initial=0) < 2**31 else lab  # one compiled signature
    descend = _descend if compiled else _descend.py_func
    scan = _bad_blocks if compiled else _bad_blocks.py_func
    near = _bad_near if compiled else _bad_near.py_func
    total = 0
    bad = scan(lab, CONNECTED)
    r = 0
    changed = _fragments(lab, compiled)
    while True:
        total += len(changed)
        if len(changed):
            cand = np.stack(np.unravel_index(changed, lab.shape), axis=1).astype(np.int64)
            bad = np.unique(np.concatenate([bad, near(lab, CONNECTED, cand)]), axis=0)
        # sideways moves get a budget per round, growing with the rounds (local minima are rare)
        d, bad = descend(lab, CONNECTED, seed + r, 50, 64 * (r + 1), bad)
        total += int(d)
        changed = _fragments(lab, compiled)  # the descent may split a grain
        if len(bad) == 0 and len(changed) == 0:
            bad = scan(lab, CONNECTED)  # final full check
            if len(bad) == 0:
                return lab.astype(dtype, copy=False), total
        r += 1
        if r >= max_rounds:
            # last resort, always terminating: fill growing cubes around what is left with their
            # most common label (at the latest the whole volume is one label)
            h = r - max_rounds + 1
            if h > max(lab.shape):
                raise RuntimeError("label clean-up did not converge")  # pragma: no cover (unreachable)
            if len(bad):
                centres = bad
            elif len(changed):  # fragments that the descent keeps re-creating (no bad block left)
                centres = np.stack(np.unravel_index(changed, lab.shape), axis=1)
            else:
                centres = scan(lab, CONNECTED)
            total += _fill_cubes(lab, centres, h)
            bad = scan(lab, CONNECTED)


def _fill_cubes(lab: np.ndarray, bad: np.ndarray, h: int) -> int:
    """Each cube of half-width ``h`` around a bad position takes its most common label."""
    changed = 0
    for z, y, x in bad.tolist():
        sl = tuple(slice(max(c - h + 1, 0), c + h + 1) for c in (z, y, x))
        vals, counts = np.unique(lab[sl], return_counts=True)
        v = vals[np.argmax(counts)]
        changed += int((lab[sl] != v).sum())
        lab[sl] = v
    return changed


def defects(labels: np.ndarray) -> dict:
    """Independent check (numpy/scipy): counts of fragments, edge-only and vertex-only contacts."""

    lab = np.asarray(labels)
    frag = 0
    for k, sl in enumerate(ndimage.find_objects(lab), start=1):
        if sl is not None:
            frag += ndimage.label(lab[sl] == k)[1] - 1
    edge = 0
    for ax in range(3):
        x = np.moveaxis(lab, ax, 0)
        a, b, c, d = x[:, :-1, :-1], x[:, :-1, 1:], x[:, 1:, :-1], x[:, 1:, 1:]
        edge += int((((a == d) & (b != a) & (c != a)) | ((b == c) & (a != b) & (d != b))).sum())
    corners = [
        lab[i : lab.shape[0] - 1 + i, j : lab.shape[1] - 1 + j, k : lab.shape[2] - 1 + k]
        for i in (0, 1)
        for j in (0, 1)
        for k in (0, 1)
    ]
    bad = np.zeros(corners[0].shape, dtype=bool)
    for n in range(8):
        mask = np.zeros(corners[0].shape, dtype=np.int64)
        for o in range(8):
            mask |= (corners[o] == corners[n]).astype(np.int64) << o
        bad |= ~CONNECTED[mask] | ~CONNECTED[255 ^ mask]
    return {"fragments": int(frag), "edge_contacts": edge, "vertex_contacts": int(bad.sum())}


__all__ = ["CONNECTED", "clean_labels", "defects"]
