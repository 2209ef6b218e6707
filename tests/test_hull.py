"""upper_hull: the rising part of the upper convex hull, vertices only, ordered by US accuracy."""
import numpy as np
from scipy.spatial import ConvexHull

from transferscale.analysis import upper_hull


def test_hull_keeps_corners_and_drops_points_below():
    us = [0.1, 0.2, 0.3, 0.4, 0.5]
    ds = [0.1, 0.5, 0.3, 0.7, 0.75]
    assert upper_hull(us, ds).tolist() == [0, 1, 3, 4]


def test_hull_stops_at_the_best_ds_point():
    # past the best DS model the hull falls; the law rises in US accuracy and cannot follow it
    us = [0.1, 0.3, 0.6, 0.8, 0.9]
    ds = [0.2, 0.6, 0.8, 0.7, 0.4]
    assert upper_hull(us, ds).tolist() == [0, 1, 2]


def test_collinear_duplicate_and_tied_points_are_not_vertices():
    us = [0.1, 0.2, 0.3, 0.3, 0.3, 0.1]
    ds = [0.1, 0.2, 0.3, 0.3, 0.1, 0.05]  # (0.2, 0.2) on the chord, (0.3, 0.3) twice, ties in US
    hull = upper_hull(us, ds)
    assert len(hull) == 2 and hull[0] == 0 and hull[1] in (2, 3)


def test_order_is_by_us_accuracy_whatever_the_input_order():
    rng = np.random.default_rng(0)
    us, ds = rng.uniform(size=50), rng.uniform(size=50)
    hull = upper_hull(us, ds)
    assert np.all(np.diff(us[hull]) > 0) and np.all(np.diff(ds[hull]) > 0)
    assert ds[hull[-1]] == ds.max() and us[hull[0]] == us.min()


def test_matches_scipy_convex_hull_on_random_clouds():
    rng = np.random.default_rng(1)
    for _ in range(20):
        pts = rng.uniform(size=(60, 2))
        hull = set(upper_hull(pts[:, 0], pts[:, 1]).tolist())
        ref = set(ConvexHull(pts).vertices.tolist())
        lo, best = np.argmin(pts[:, 0]), np.argmax(pts[:, 1])
        # the reference's vertices between the lowest-US point and the best-DS point, on or above their chord
        rising = {i for i in ref if pts[lo, 0] <= pts[i, 0] <= pts[best, 0] and _above(pts, lo, best, i)}
        assert hull == rising


def _above(pts, a, b, i):
    (xa, ya), (xb, yb), (x, y) = pts[a], pts[b], pts[i]
    return (xb - xa) * (y - ya) - (yb - ya) * (x - xa) >= 0


def test_single_point_and_empty():
    assert upper_hull([0.5], [0.5]).tolist() == [0]
    assert upper_hull([], []).tolist() == []
