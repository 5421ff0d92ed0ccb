"""Haze removal: set the noise in the air around an object to one value, so that the volume compresses, without
touching the object.

1. **Threshold** (:mod:`.threshold`). ``level="auto"`` (the default) also classifies a *denoised copy*: each voxel's
   [1 2 1] weighted mean over its 3x3x3 neighbourhood (:func:`.denoise.smooth_121`; noise sigma / 4.4, edges kept
   within a voxel). The threshold is the lowest multi-level Otsu cut (2, 3 or 4 classes) on that copy's histogram
   that lies above the noise of the air: the air is the darkest prominent histogram peak, and its noise ends
   :data:`.threshold.AIR_NOISE_WIDTHS` right half-widths at half maximum above its mode (:func:`air_peak`; a
   plateau, air shaded across the field, ends beyond its falling edge, and a clipped spike followed by more dense
   air ends where that air does). So the number of classes that are air follows the histogram (CT has three
   populations, air, soft tissue and bone; MRI two), and the cut cannot fall inside the noise (it did with a fixed
   level on CT at -1000 HU with 30 HU noise, and on half-normal air noise). Levels 1-5 keep MRIcroGL's meaning (:data:`LEVELS`, :mod:`.options`) on the raw
   voxels. Both use a 256-bin histogram of a subsample over a robust intensity range
   (:data:`.threshold.ROBUST_PERCENTILES`). Voxels below the threshold (auto: in the denoised copy) are
   *dark* (:mod:`.denoise`). NaN voxels: levels 1-5 count them as dark (in the air they become the fill value,
   enclosed ones are kept); auto never does (no intensity is not air: they are kept, and where a NaN reaches the
   denoised copy, its 26 neighbours, the voxel is not dark there; step 3's peeling may give it to the air).
2. **Air**: by default the dark voxels 6-connected to the volume's border, so dark structures enclosed by the object
   (ventricles, sinuses, marrow, air inside a specimen) stay; ``air="all"``: every dark voxel.
3. **Object** = not air (auto: less its voxels below the threshold themselves within the kernel's reach of the
   air, the layer the copy's blur adds; :func:`.denoise.peel_beside_air`); ``largest_only`` keeps its largest 6-connected component; ``close`` N closes it with a
   radius-N 6-neighbour (city-block) ball, bridging gaps up to 2N voxels wide (sulci opening to the outside);
   then it is dilated by ``dilate`` 6-neighbour steps so partial-volume edges survive (:mod:`.morphology`). Levels
   1-5 take every voxel the steps reach (as MRIcroGL), which keeps a ``dilate``-voxel rim of pure air round the
   object and inside its cavities (half of a cavity of radius 8). Auto's steps only take voxels whose [1 2 1]^3 mean
   over their non-object neighbours (:func:`.morphology.air_neighbourhood_passes`) is
   :data:`.threshold.BAND_WIDTHS` half-widths above the air's mode: partial volume and dim tissue next to the object
   stay, the pure air next to it goes.
4. **Haze** = everything outside that object: set to the image minimum (``fill="min"``) or to a given value.
5. **Report** (:mod:`.report`): when little or nothing was removed, :attr:`DehazeReport.warning` says why (the
   threshold fell inside the air's noise, no dark voxel touches the border, the border is not darker than the
   object, ...); so it does when auto may have cut into the object: no class boundary above the air's noise, the
   air's edge running through a plateau (equally bright on both sides, :func:`.morphology.sided_means`: a shaded
   object whose dim side fell below the threshold), or the object's median voxel within the air's noise reach of
   the threshold (low signal to noise); gzip and zstd sizes before and after (:mod:`.compression`).

Any size: all of this runs slab by slab in z (:class:`.pipeline.HazePipeline`). Border connectivity and the largest
component are global properties (:mod:`.components`): each slab's dark (or object) voxels are labelled on their own,
the labels that meet across slab boundaries or touch the volume border are joined in a union-find, and a second pass
rewrites each slab from the joined labels: from the first pass's labels kept in 1-2 bytes a voxel
(:func:`.components.compact`) when memory allows, else labelling again (SimpleITK's labelling is deterministic). The
denoised copy of a slab is computed from the slab plus one slice each side (:class:`bigvolume.engine.HaloReader`,
reading forward only); the morphology (and auto's partial-volume test, from the window's own voxels) runs on a
window of the slab plus a halo of ``2 * close + dilate`` slices (auto: one more, and at least 2). In-memory volumes
run through the same pipeline, so the streamed result equals the in-memory one exactly. The entry points,
:func:`haze_mask`, :func:`dehaze` and :func:`dehaze_file`, plan the slabs within the memory limit (:mod:`.api`).

Refused with one clear message: constant volumes (all-zero included) and all-NaN ones (nothing to separate),
integer volumes with at most 16 distinct values (label maps and masks have no haze), vector/RGB volumes. A volume
2 voxels thin has every voxel on its border: border air is then all dark voxels (said in the report's notes).

The modules, in layers (pyproject.toml's contract): at the bottom options, denoise, components and compression,
none importing another; threshold and morphology on them; then pipeline, report, api. This package re-exports the
public API; the tunables (``SLAB_VOXELS`` in :mod:`.api`, ``SMOOTH_THREADS`` in :mod:`.denoise`,
``COMPRESSION_SAMPLE_BYTES`` in :mod:`.compression`, ...) stay in the module that reads them.
"""
from .options import AIR_MODES, AUTO, DEFAULT_DILATE, LEVEL_NAMES, LEVELS, MAX_RADIUS, HazeOptions
from .threshold import HazeThreshold, air_peak, find_threshold, multi_otsu
from .report import LITTLE_KEPT, LITTLE_REMOVED, DehazeReport
from .api import dehaze, dehaze_file, haze_mask

__all__ = ["AIR_MODES", "AUTO", "DEFAULT_DILATE", "LEVEL_NAMES", "LEVELS", "MAX_RADIUS", "HazeOptions",
           "HazeThreshold", "air_peak", "find_threshold", "multi_otsu", "LITTLE_KEPT", "LITTLE_REMOVED",
           "DehazeReport", "dehaze", "dehaze_file", "haze_mask"]
