"""Converters from each dataset's release layout to the common store.

`CONVERTERS` maps the config's `format` key to a converter, one per
`catalog.SEGMENTATION_FORMATS`; adding a dataset means adding one module, its
format name in the catalog and one entry here.
"""

from nucleiflow.datasets.dsb2018 import convert_dsb2018
from nucleiflow.datasets.geojson_folders import convert_geojson
from nucleiflow.datasets.hovernet_mat import convert_hovernet_mat
from nucleiflow.datasets.image_folders import convert_image_folders
from nucleiflow.datasets.monuseg import convert_monuseg
from nucleiflow.datasets.pannuke import convert_pannuke

CONVERTERS = {
    "pannuke": convert_pannuke,
    "dsb2018": convert_dsb2018,
    "image_folders": convert_image_folders,
    "hovernet_mat": convert_hovernet_mat,
    "monuseg": convert_monuseg,
    "geojson": convert_geojson,
}
