"""QuPath GeoJSON: a label image written as Features and read back gives the same instances and types."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from conftest import touching_discs

from nucleiflow.errors import DataFormatError
from nucleiflow.geojson import (
    features_to_instances,
    label_features,
    measurements,
    polygon_geometry,
    read_features,
    write_feature_collection,
)

CLASSES = ["background", "other", "inflammatory", "epithelial"]


@pytest.fixture
def labels() -> np.ndarray:
    labels = touching_discs([(10, 10), (10, 19), (30, 40), (2, 60), (50, 12)], [6, 5, 8, 4, 3])
    labels[28:32, 38:42] = 0  # a hole in nucleus 3
    return labels


def test_round_trip_gives_the_same_instances_and_types(tmp_path, labels):
    types = {1: 1, 2: 3, 3: 2, 4: 3, 5: 0}  # nucleus 5 unclassified
    path = write_feature_collection(
        tmp_path / "nuclei.geojson", label_features(labels, types=types, class_names=CLASSES)
    )
    features = read_features(path)
    assert len(features) == 5
    back = features_to_instances(features, labels.shape, {name: i for i, name in enumerate(CLASSES) if i})
    assert np.array_equal(back.instances, labels)
    assert back.types == types
    assert np.array_equal(back.classes, np.vectorize(lambda i: types.get(i, 0))(labels))
    assert back.stats.overlap_pixels == 0 and back.not_areas == 0


def test_features_follow_qupaths_layout(tmp_path, labels):
    features = label_features(
        labels, types={1: 2}, class_names=CLASSES, object_type="annotation", measurements={1: {"Solidity": 0.9}}
    )
    first = features[0]
    assert first["geometry"]["type"] == "Polygon"
    props = first["properties"]
    assert props["objectType"] == "annotation"
    assert props["classification"]["name"] == "inflammatory" and len(props["classification"]["color"]) == 3
    assert props["measurements"]["Area px^2"] == np.count_nonzero(labels == 1)
    assert props["measurements"]["Solidity"] == 0.9 and props["label"] == 1
    assert "classification" not in features[1]["properties"]  # no type: unclassified
    ring = first["geometry"]["coordinates"][0]
    assert ring[0] == ring[-1]  # closed rings, as GeoJSON requires
    assert all(shapely.geometry.shape(f["geometry"]).is_valid for f in features)
    path = write_feature_collection(tmp_path / "a.geojson", features)
    assert json.loads(path.read_text())["type"] == "FeatureCollection"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".a.")]  # written atomically: no temporary left


def test_vertices_are_written_as_integers_when_whole_and_rounded_otherwise():
    whole = polygon_geometry(np.array([[3.0, 4.0], [5.0, 4.0], [5.0, 7.0]]))
    assert json.dumps(whole["coordinates"]) == "[[[3, 4], [5, 4], [5, 7], [3, 4]]]"  # closed, ints
    assert all(type(v) is int for point in whole["coordinates"][0] for v in point)
    mixed = polygon_geometry(np.array([[3.0, 4.5], [5.123456, 4.0], [5.0, 7.0]]), [np.array([[1, 1], [2, 1], [2, 2]])])
    assert mixed["coordinates"][0] == [[3, 4.5], [5.1235, 4], [5, 7], [3, 4.5]]
    assert mixed["coordinates"][1] == [[1, 1], [2, 1], [2, 2], [1, 1]]


def test_offset_places_outlines_in_slide_coordinates(labels):
    shifted = label_features(labels, offset=(1000, 2000))
    x, y = np.asarray(shifted[0]["geometry"]["coordinates"][0]).min(axis=0)
    assert x >= 1000 and y >= 2000
    back = features_to_instances(shifted, labels.shape, offset=(1000, 2000))
    assert np.array_equal(back.instances, labels)


def test_older_qupath_exports_cells_and_multipolygons_are_read(tmp_path):
    square = [[[1, 1], [5, 1], [5, 5], [1, 5], [1, 1]]]
    other = [[[10, 10], [12, 10], [12, 12], [10, 12], [10, 10]]]
    exported = [  # QuPath 0.2/0.3: a plain list, measurements as a list, colour as a packed int
        {
            "type": "Feature",
            "id": "PathCellObject",
            "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [16, 0], [16, 16], [0, 16], [0, 0]]]},
            "properties": {
                "objectType": "cell",
                "nucleusGeometry": {"type": "Polygon", "coordinates": square},
                "classification": {"name": "epithelial", "colorRGB": -3670016},
                "measurements": [{"name": "Nucleus: Area", "value": 16.0}],
            },
        },
        {
            "type": "Feature",
            "geometry": {"type": "MultiPolygon", "coordinates": [other, [[[14, 1], [15, 1], [15, 2], [14, 2]]]]},
            "properties": {"objectType": "detection"},
        },
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [3, 3]}, "properties": {}},
    ]
    (tmp_path / "old.json").write_text(json.dumps(exported))
    features = read_features(tmp_path / "old.json")
    assert measurements(features[0]) == {"Nucleus: Area": 16.0}
    nuclei = features_to_instances(features, (16, 16), {"epithelial": 3})
    assert np.count_nonzero(nuclei.instances == 1) == 16  # the cell's nucleus, not the cell
    assert np.count_nonzero(nuclei.instances == 2) == 4 + 1  # both parts of the MultiPolygon are one nucleus
    assert nuclei.types == {1: 3, 2: 0} and nuclei.not_areas == 1


def test_bad_files_name_the_file_and_the_feature(tmp_path, labels):
    features = label_features(labels, types={1: 1}, class_names=CLASSES)
    with pytest.raises(DataFormatError, match=r"a\.geojson: features\[0\] .*'other' is not a class .*tumour"):
        features_to_instances(features, labels.shape, {"tumour": 1}, where="a.geojson")
    with pytest.raises(
        DataFormatError, match=r"b\.geojson: features\[\d\] .*polygon outside the image .*image 32 x 32"
    ):
        features_to_instances(features, (32, 32), where="b.geojson")
    (tmp_path / "cut.geojson").write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(DataFormatError, match="cut.geojson: not a readable GeoJSON file"):
        read_features(tmp_path / "cut.geojson")
    (tmp_path / "bad.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [{"type": "Polygon"}]}))
    with pytest.raises(DataFormatError, match=r"bad.geojson: features\[0\] is not a GeoJSON Feature"):
        read_features(tmp_path / "bad.geojson")
