"""The upper hull of a (US accuracy, DS accuracy) scatter: the frontier the saturation law is fitted on.

Any point on a segment between two models is reachable by mixing them (pick one model with probability
t), so the upper convex hull is the best DS accuracy attainable at each US accuracy (Abnar et al. 2021).
"""
from __future__ import annotations

import numpy as np


def upper_hull(us_acc, ds_acc) -> np.ndarray:
    """Indices of the points on the rising part of the upper convex hull, ordered by US accuracy.

    The hull runs from the lowest-US point (the best DS among ties) to the best DS point. The part of the
    hull past the best DS point (more US accuracy, less DS accuracy) is dropped: the law
    e_DS = k * e_US^alpha + e_IR with k, alpha > 0 rises monotonically in US accuracy and cannot describe
    it. Only vertices are returned: points on a hull edge but not at a corner (collinear) and exact
    duplicates are left out, so every index is a distinct observed model. Where several points tie for
    the best DS accuracy, the one with the lowest US accuracy ends the hull.
    """
    x = np.asarray(us_acc, dtype=float)
    y = np.asarray(ds_acc, dtype=float)
    order = np.lexsort((-y, x))  # by US ascending, best DS first among equal US
    rec = _records(y[order])
    kept = _chain(x[order][rec], y[order][rec])
    return order[rec][kept]


def upper_hulls(us_acc, ds_sets, block: int = 64) -> list[np.ndarray]:
    """`[upper_hull(us_acc, ds) for ds in ds_sets]` for many DS vectors over one US vector (a bootstrap's
    resamples), the same indices, without a sort per vector.

    With US fixed, sorting by (US, -DS) only reorders models of equal US, and of those only the one with the
    best DS (the first such model among ties) can be a record. So per distinct US value: its best DS and the
    first model reaching it, for all vectors at once (numpy's reduceat along the US order), then the records
    and the hull chain per vector on those few points, as `upper_hull` does.
    """
    x = np.asarray(us_acc, dtype=float)
    ys = np.atleast_2d(np.asarray(ds_sets, dtype=float))
    if x.size == 0:
        return [np.zeros(0, dtype=np.int64) for _ in ys]
    base = np.argsort(x, kind="stable")  # ties keep index order, as lexsort's stable sort does
    xs = x[base]
    starts = np.flatnonzero(np.concatenate(([True], xs[1:] != xs[:-1])))
    sizes = np.diff(np.append(starts, len(xs)))
    x_group = xs[starts]
    out = []
    for lo in range(0, len(ys), block):  # a block of vectors at a time: temporaries stay a few MB
        y = ys[lo:lo + block, base]
        best = np.maximum.reduceat(y, starts, axis=1)  # (vectors, distinct US values)
        position = np.where(y == np.repeat(best, sizes, axis=1), np.arange(len(xs)), len(xs))
        first = np.minimum.reduceat(position, starts, axis=1)  # the first model reaching each best DS
        prev = np.concatenate((np.full((len(y), 1), -np.inf), np.maximum.accumulate(best, axis=1)[:, :-1]), axis=1)
        is_record = best > prev
        for v in range(len(y)):
            rec = np.flatnonzero(is_record[v])
            kept = _chain(x_group[rec], best[v, rec])
            out.append(base[first[v, rec[kept]]])
    return out


def records(us_acc, ds_acc) -> np.ndarray:
    """Indices of the models whose DS accuracy beats every model with lower US accuracy, by US accuracy.

    They trace the frontier whatever its curvature, where the convex hull keeps only the corners of a
    frontier that is convex in accuracy space (alpha < 1).
    """
    x = np.asarray(us_acc, dtype=float)
    y = np.asarray(ds_acc, dtype=float)
    order = np.lexsort((-y, x))
    return order[_records(y[order])]


def _records(y_sorted: np.ndarray) -> np.ndarray:
    """Positions whose DS beats every point to their left (lower US).

    Every vertex of the rising hull is such a record: the hull left of a vertex lies below it and every
    point lies below the hull. Filtering to records first leaves few points for the chain below, which
    keeps 1,000 bootstrap hulls cheap.
    """
    prev_max = np.concatenate(([-np.inf], np.maximum.accumulate(y_sorted)[:-1]))
    return np.flatnonzero(y_sorted > prev_max)


def _chain(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Andrew's monotone chain, upper half, on points with strictly increasing x.

    Drop the middle point b of (a, b, c) while it is on or below the chord a-c, i.e. while the cross
    product (b - a) x (c - a) >= 0 (a left turn or a straight line). The loop runs on Python floats (the
    same IEEE doubles and operations as numpy's scalars, so the same hull), about 4x faster than indexing
    the arrays, which matters for a bootstrap's thousands of hulls.
    """
    xs, ys = x.tolist(), y.tolist()
    hull: list[int] = []
    for i, (xi, yi) in enumerate(zip(xs, ys)):
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            xa, ya = xs[a], ys[a]
            if (xs[b] - xa) * (yi - ya) - (ys[b] - ya) * (xi - xa) < 0:
                break
            hull.pop()
        hull.append(i)
    return hull
