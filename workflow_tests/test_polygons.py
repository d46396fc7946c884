"""Polygons <-> instance maps: pixel-exact outlines, and the degenerate and overlap rules of rasterising."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from conftest import touching_discs

from nucleiflow.polygons import is_degenerate, label_polygons, rasterise, relabel, to_shapely


def _traced_back(labels: np.ndarray) -> np.ndarray:
    outlines = label_polygons(labels)
    drawn, stats = rasterise([[o.exterior, *o.holes] for o in outlines], labels.shape)
    assert stats.degenerate == stats.empty == stats.overlap_pixels == 0
    lookup = np.zeros(len(outlines) + 1, np.int32)
    lookup[1:] = [o.label for o in outlines]
    return lookup[drawn]


def test_outlines_rasterise_back_to_the_same_pixels():
    labels = touching_discs([(12, 12), (12, 21), (40, 40), (3, 60)], [6, 5, 9, 4])  # touching, and cut by the border
    assert len(np.unique(labels)) == 5
    assert np.array_equal(_traced_back(labels), labels)


def test_a_hole_is_kept_as_an_interior_ring():
    labels = np.zeros((20, 20), np.int32)
    labels[2:12, 2:12] = 1
    labels[5:8, 5:8] = 0  # a hole
    labels[6, 6] = 2  # a nucleus inside the hole
    (ring, inner) = label_polygons(labels)
    assert len(ring.holes) == 1 and to_shapely(ring).is_valid
    assert ring.area == 100 - 9 and inner.area == 1
    assert np.array_equal(_traced_back(labels), labels)


def test_outlines_are_valid_without_collinear_vertices_and_offset():
    labels = np.zeros((10, 10), np.int32)
    labels[2:6, 3:8] = 7
    (outline,) = label_polygons(labels, offset=(100, 50))
    assert outline.label == 7
    assert sorted(map(tuple, outline.exterior)) == [(103, 52), (103, 56), (108, 52), (108, 56)]
    assert shapely.Polygon(outline.exterior).is_valid


def test_a_nucleus_in_two_pieces_keeps_its_largest():
    labels = np.zeros((10, 10), np.int32)
    labels[0:3, 0:3] = 1
    labels[3, 3] = 1  # touches the square only at a corner
    (outline,) = label_polygons(labels)
    assert outline.area == 9 and outline.dropped_pixels == 1


PINCHES = [  # four pixels meeting in a checkerboard, inside a nucleus or at its edge
    [[1, 1, 1, 1], [1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 1]],  # two holes touching at a corner
    [[1, 1, 1], [1, 0, 1], [1, 1, 0]],  # a hole touching the outside at a corner
    [[0, 1, 1], [1, 0, 1], [1, 1, 1]],
    [[1, 1, 0], [1, 0, 1], [0, 1, 1]],
]


def test_traced_outlines_equal_the_union_of_the_pixels():
    # The outlines are walked along pixel edges; the union of the pixel squares (shapely, GEOS) is the
    # reference: the same rings, orientation and area, valid where rings touch at checkerboard corners.
    from skimage.draw import ellipse

    from nucleiflow.polygons import _shapely_outline, _traced_outline

    rng = np.random.default_rng(0)
    masks = [np.array(m, bool) for m in PINCHES]
    for _ in range(300):
        mask = np.zeros((30, 30), bool)
        mask[ellipse(15, 15, rng.uniform(1, 13), rng.uniform(1, 13), mask.shape, rng.uniform(0, np.pi))] = True
        masks.append(mask & (rng.random(mask.shape) > rng.choice([0.0, 0.05, 0.2])))  # holes, pinches
    traced = 0
    for mask in masks:
        outline = _traced_outline(mask)
        if outline is None:  # in pieces: label_polygons asks shapely
            assert shapely.union_all(
                [shapely.box(c, r, c + 1, r + 1) for r, c in zip(*np.nonzero(mask))]
            ).geom_type == ("MultiPolygon")
            continue
        traced += 1
        reference = _shapely_outline(mask)
        ours, theirs = shapely.Polygon(outline[0], outline[1]), shapely.Polygon(reference[0], reference[1])
        assert ours.is_valid and ours.normalize().equals_exact(theirs.normalize(), 0)
        assert outline[2:] == reference[2:] == (0, float(mask.sum()))
        assert shapely.LinearRing(outline[0]).is_ccw == shapely.LinearRing(reference[0]).is_ccw
    assert traced > 200


def test_degenerate_polygons_are_skipped_and_counted():
    square = np.array([[1, 1], [5, 1], [5, 5], [1, 5]], float)
    line = np.array([[1, 1], [5, 5], [3, 3]], float)  # three vertices, no area
    twice = np.array([[2, 2], [6, 2], [2, 2]], float)  # two distinct vertices
    sliver = np.array([[1.1, 1.1], [1.2, 1.1], [1.2, 1.3]], float)  # valid but holds no pixel centre
    assert is_degenerate(line) and is_degenerate(twice) and not is_degenerate(sliver)
    instances, stats = rasterise([line, square, twice, sliver], (8, 8))
    assert (stats.polygons, stats.drawn, stats.degenerate, stats.empty) == (4, 1, 2, 1)
    assert set(np.unique(instances)) == {0, 2}  # ids stay aligned with the input
    assert np.count_nonzero(instances) == 16
    assert np.array_equal(np.unique(relabel(instances)), [0, 1])


def test_overlaps_go_to_the_smaller_polygon_and_are_counted():
    big = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], float)
    small = np.array([[6, 6], [9, 6], [9, 9], [6, 9]], float)
    same = big.copy()  # a duplicate of the big one: one of the two loses every pixel
    for order in ([small, big, same], [big, same, small]):
        instances, stats = rasterise(order, (12, 12))
        small_id = next(i for i, p in enumerate(order) if p is small) + 1
        assert np.count_nonzero(instances == small_id) == 9
        assert stats.overlap_pixels == 100  # every pixel of the big square is claimed twice or more
        assert stats.covered == 1 and stats.overlapped == 1 and stats.drawn == 2
        first_big = next(i for i, p in enumerate(order) if p is not small) + 1  # equal areas: the first listed wins
        assert np.count_nonzero(instances == first_big) == 100 - 9


def test_bad_vertices_are_refused():
    with pytest.raises(ValueError, match="polygon 0: non-finite"):
        rasterise([np.array([[0, 0], [np.nan, 1], [1, 1]])], (4, 4))


def test_a_polygon_crossing_the_border_is_clipped_and_counted():
    corner = np.array([[-2, -2], [3, -2], [3, 3], [-2, 3]], float)
    instances, stats = rasterise([corner], (8, 8))
    assert stats.clipped == 1 and np.count_nonzero(instances) == 9
