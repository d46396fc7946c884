"""Whole-slide images: every nucleus of a slide, in bounded memory, resumable, scattered over jobs.

A slide (any format OpenSlide reads, or a plain or OME tiled TIFF) goes through four steps, each a module:

* `reader`: open the slide, its pyramid levels and microns per pixel, read a region of any level;
* `tissue`: the tissue mask of a low-resolution level (saturation threshold, morphological clean-up);
* `chunks`: the plan (run resolution, source level, the square region chunks over tissue) and the
  segmentation of one chunk (overlapping tiles batched through the model, nuclei found on the chunk and
  its halo, each nucleus kept by the one chunk that holds its centroid), each chunk written atomically so
  that a killed job resumes from the chunks it finished;
* `outputs`: the gather of every chunk into the slide's QuPath GeoJSON, per-nucleus table, pyramidal
  OME-TIFF label image, summary table and overview figure.
"""
