"""Open a whole-slide image and read regions of its pyramid levels as RGB uint8.

Two readers behind one interface (`Slide`):

* OpenSlide (`openslide-python` with the `openslide-bin` library from PyPI) for every vendor format it
  recognises (Aperio SVS with JPEG or JPEG 2000 tiles, Hamamatsu NDPI, MIRAX, ...);
* tifffile for plain and OME TIFF (tiled or striped, pyramid levels as sub-IFDs or series levels), read
  tile by tile from the file so that a region read costs only the tiles it touches.

Coordinates follow OpenSlide: a region is placed in level-0 pixels (x, y) and sized in pixels of the
level read. Pixels outside the slide, and transparent ones, read as white glass. The microns per pixel
come from the slide's metadata (`openslide.mpp-x`, OME `PhysicalSizeX`, TIFF resolution tags) and are
None when it records none; `open_slide(path, mpp=...)` supplies it then.

Every failure is one `DataFormatError` line naming the file: not a slide, truncated, a tile codec that
cannot be decoded, a region or level outside the slide.
"""

from __future__ import annotations

import math
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nucleiflow.errors import DataFormatError

WHITE = 255
TIFF_SUFFIXES = (".tif", ".tiff")
# OME length units -> micrometres (the ones a slide scanner writes).
OME_UNITS_UM = {"µm": 1.0, "um": 1.0, "nm": 1e-3, "mm": 1e3, "cm": 1e4, "m": 1e6}


@dataclass(frozen=True)
class Region:
    """A rectangle in level-0 pixels: x, y (top-left), width, height."""

    x: int
    y: int
    width: int
    height: int

    @property
    def x1(self) -> int:
        return self.x + self.width

    @property
    def y1(self) -> int:
        return self.y + self.height


class Slide:
    """A whole-slide image: levels (width, height) with their downsamples, microns per pixel, region reads."""

    path: Path
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    backend: str

    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0."""
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float | None:
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise DataFormatError(
                f"{self.path}: level {level} is outside the slide; it has levels 0-{self.level_count - 1}"
            )

    def check_region(self, region: Region) -> None:
        """A region (level-0 pixels) must lie within level 0 and not be empty."""
        width, height = self.dimensions
        if region.width <= 0 or region.height <= 0:
            raise DataFormatError(f"{self.path}: region {region} is empty")
        if region.x < 0 or region.y < 0 or region.x1 > width or region.y1 > height:
            raise DataFormatError(
                f"{self.path}: region x={region.x} y={region.y} width={region.width} height={region.height} "
                f"is outside the slide (level 0 is {width} x {height} pixels)"
            )

    def read_region(self, x: int, y: int, level: int, width: int, height: int) -> np.ndarray:
        """(height, width, 3) uint8 of `level`, its top-left at level-0 pixel (x, y); outside: white."""
        raise NotImplementedError

    def read_level(self, level: int) -> np.ndarray:
        """A whole (small) level as (height, width, 3) uint8: the tissue detection reads one."""
        width, height = self.level_dimensions[level]
        return self.read_region(0, 0, level, width, height)

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---------------------------------------------------------------- OpenSlide


class OpenSlideSlide(Slide):
    backend = "openslide"

    def __init__(self, path: Path, mpp: float | None):
        import openslide

        self.path = path
        try:
            self._slide = openslide.OpenSlide(str(path))
        except openslide.OpenSlideError as err:
            raise DataFormatError(f"{path}: OpenSlide cannot open this slide ({err})") from None
        self.level_dimensions = tuple(self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        found = self._slide.properties.get("openslide.mpp-x")
        self.mpp = float(found) if found else mpp
        self._error = openslide.OpenSlideError
        self._lock = threading.Lock()

    def read_region(self, x, y, level, width, height):
        self.check_level(level)
        try:
            with self._lock:
                rgba = np.asarray(self._slide.read_region((int(x), int(y)), level, (int(width), int(height))))
        except self._error as err:
            raise DataFormatError(f"{self.path}: OpenSlide cannot decode this region ({err})") from None
        return _over_white(rgba)

    def close(self):
        self._slide.close()


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """RGB of premultiplied RGBA (OpenSlide's) over white: transparent pixels (outside the scan) are glass."""
    rgb = rgba[..., :3].astype(np.uint16)
    alpha = rgba[..., 3:4].astype(np.uint16)
    return (rgb + (WHITE - alpha)).clip(0, WHITE).astype(np.uint8)


# ---------------------------------------------------------------- tifffile


class TiffSlide(Slide):
    """A plain or OME TIFF read tile by tile (or strip by strip) with tifffile's own decoders."""

    backend = "tifffile"

    def __init__(self, path: Path, mpp: float | None):
        import tifffile

        self.path = path
        try:
            self._tif = tifffile.TiffFile(path)
            series = self._tif.series[0]
            levels = list(series.levels) if series.levels else [series]
            self._pages = [level.keyframe for level in levels]
        except (tifffile.TiffFileError, IndexError, ValueError, OSError) as err:
            raise DataFormatError(f"{path}: not a slide (neither OpenSlide nor tifffile can read it: {err})") from None
        for page in self._pages:
            if page.samplesperpixel not in (1, 3, 4) or page.dtype != np.uint8:
                raise DataFormatError(
                    f"{path}: {page.samplesperpixel} samples of {page.dtype} per pixel; a slide is RGB(A) uint8"
                )
        self.level_dimensions = tuple((int(p.imagewidth), int(p.imagelength)) for p in self._pages)
        full = self.level_dimensions[0][0]
        self.level_downsamples = tuple(full / w for w, _ in self.level_dimensions)
        self.mpp = _tiff_mpp(self._tif, self._pages[0]) or mpp
        self._lock = threading.Lock()
        self._size = path.stat().st_size

    def _segment(self, page, index: int) -> np.ndarray:
        """One decoded tile or strip of `page` as (rows, columns, samples) uint8."""
        offset, count = page.dataoffsets[index], page.databytecounts[index]
        if count == 0:  # a sparse tile: nothing scanned there
            return None
        if offset + count > self._size:
            raise DataFormatError(f"{self.path}: truncated (tile {index} of level {page.index} ends past the file)")
        with self._lock:
            fh = self._tif.filehandle
            fh.seek(offset)
            data = fh.read(count)
        try:
            segment, _, shape = page.decode(data, index, jpegtables=page.jpegtables)
        except Exception as err:  # a codec tifffile cannot run (JPEG, JPEG 2000 need imagecodecs)
            raise DataFormatError(
                f"{self.path}: cannot decode its {page.compression.name} tiles ({err}); "
                "a TIFF slide needs uncompressed, deflate or LZW tiles, or a format OpenSlide reads"
            ) from None
        if segment is None:
            raise DataFormatError(f"{self.path}: truncated or corrupt tile {index} of level {page.index}")
        return np.asarray(segment).reshape(shape[-3:])

    def read_region(self, x, y, level, width, height):
        self.check_level(level)
        page = self._pages[level]
        scale = self.level_downsamples[level]
        left, top = int(math.floor(x / scale)), int(math.floor(y / scale))
        out = np.full((int(height), int(width), 3), WHITE, np.uint8)
        level_w, level_h = self.level_dimensions[level]
        if page.is_tiled:
            seg_h, seg_w = page.tilelength, page.tilewidth
        else:
            seg_h, seg_w = page.rowsperstrip, level_w
        across = math.ceil(level_w / seg_w)
        y0, y1 = max(top, 0), min(top + int(height), level_h)
        x0, x1 = max(left, 0), min(left + int(width), level_w)
        for row in range(y0 // seg_h, (y1 - 1) // seg_h + 1 if y1 > y0 else 0):
            for col in range(x0 // seg_w, (x1 - 1) // seg_w + 1 if x1 > x0 else 0):
                segment = self._segment(page, row * across + col)
                if segment is None:
                    continue
                sy, sx = row * seg_h, col * seg_w
                ya, yb = max(y0, sy), min(y1, sy + segment.shape[0], level_h)
                xa, xb = max(x0, sx), min(x1, sx + segment.shape[1], level_w)
                piece = segment[ya - sy : yb - sy, xa - sx : xb - sx]
                out[ya - top : yb - top, xa - left : xb - left] = _rgb(piece)
        return out

    def close(self):
        self._tif.close()


def _rgb(piece: np.ndarray) -> np.ndarray:
    if piece.shape[-1] == 1:
        return np.repeat(piece, 3, axis=-1)
    if piece.shape[-1] == 4:
        return _over_white(piece)
    return piece


def _tiff_mpp(tif, page) -> float | None:
    """Microns per pixel from OME-XML PhysicalSizeX, else the X resolution tag (inch or centimetre units)."""
    if tif.is_ome and tif.ome_metadata:
        try:
            pixels = next(e for e in ET.fromstring(tif.ome_metadata).iter() if e.tag.endswith("Pixels"))
        except (ET.ParseError, StopIteration):
            pixels = None
        if pixels is not None and pixels.get("PhysicalSizeX"):
            unit = pixels.get("PhysicalSizeXUnit", "µm")
            return float(pixels.get("PhysicalSizeX")) * OME_UNITS_UM.get(unit, 1.0)
    tags = page.tags
    if "XResolution" not in tags or "ResolutionUnit" not in tags:
        return None
    numerator, denominator = tags["XResolution"].value
    unit = int(tags["ResolutionUnit"].value)
    if not numerator or not denominator or unit not in (2, 3):  # 1: no absolute unit
        return None
    per_unit = numerator / denominator
    if per_unit <= 1:  # the tag's default of 1 pixel per unit records nothing
        return None
    return (25400.0 if unit == 2 else 10000.0) / per_unit


# ---------------------------------------------------------------- opening


def openslide_format(path: Path) -> str | None:
    """The vendor OpenSlide recognises for `path` (e.g. 'aperio', 'generic-tiff'), or None."""
    import openslide

    try:
        return openslide.OpenSlide.detect_format(str(path))
    except openslide.OpenSlideError:
        return None


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """The slide at `path`: OpenSlide for its vendor formats, tifffile for plain and OME TIFF.

    `mpp` is used when the slide's metadata record no microns per pixel.
    """
    path = Path(path)
    if not path.is_file():
        raise DataFormatError(f"{path}: no such slide file")
    vendor = openslide_format(path)
    if vendor is not None and vendor != "generic-tiff":
        return OpenSlideSlide(path, mpp)
    if vendor is None and not _is_tiff(path):
        raise DataFormatError(
            f"{path}: not a slide (OpenSlide does not recognise it and it is not a TIFF); "
            "give an SVS, NDPI, MRXS, ... slide or a plain or OME tiled TIFF"
        )
    return TiffSlide(path, mpp)


def _is_tiff(path: Path) -> bool:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    return magic[:2] in (b"II", b"MM") and magic[2:4] in (b"*\x00", b"\x00*", b"+\x00", b"\x00+")


def slide_mpp(path: str | Path) -> float | None:
    """The microns per pixel a slide's metadata record (None when they record none)."""
    with open_slide(path) as slide:
        return slide.mpp


def slide_name(path: str | Path) -> str:
    """A slide's name in result paths: its file name without the format suffix(es) (`x.ome.tif` -> `x`)."""
    name = Path(path).name
    for suffix in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def best_level(slide: Slide, target_mpp: float) -> int:
    """The pyramid level whose resolution is closest to `target_mpp` (in log scale), the finer on a tie.

    Reading the closest level and resampling it keeps the read small; a model trained at 40x sees a 20x
    slide upsampled to the scale it learned.
    """
    if slide.mpp is None:
        raise DataFormatError(f"{slide.path}: records no microns per pixel; give slides.<name>.slide_mpp")
    distances = [abs(math.log(slide.level_mpp(level) / target_mpp)) for level in range(slide.level_count)]
    return min(range(slide.level_count), key=lambda level: (round(distances[level], 9), level))
