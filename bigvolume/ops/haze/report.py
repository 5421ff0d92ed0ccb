"""The report of a run: :class:`DehazeReport` (counts, compressed sizes, notes) and, when little or almost everything
was removed or the threshold may cut into the object, the warning that says why."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ...core.memory import format_bytes
from .compression import CompressedSizes
from .options import HazeOptions
from .pipeline import Counts, HazePipeline
from .threshold import OBJECT_NOISE_SIGMAS, HazeThreshold


LITTLE_REMOVED = 0.01      # fewer voxels than this share changed: the report warns and says why
# Fewer object voxels than this share kept while more than half the volume changed: the report warns (no object
# found; noise alone keeps 0.1-0.2 %, a shell whose wall is 0.5 % of the field keeps 0.55 %). A specimen smaller
# than this in its field of view is rare; the warning then only asks to look.
LITTLE_KEPT = 0.004
# Less than this share of the air (the dark voxels joined to the border) removed: the report warns (the grown object
# takes the partial-volume voxels at its edge, a few % of the air; measured: 94-100 % of it stays haze on the shading
# and padding families, 90 % on the real head MRI with Rician noise 10 (a bar there would warn on it), 29-35 % with
# ring artefacts whose bright voxels count as object, 84-89 % with rings brighter than the specimen: not warned).
AIR_KEPT_SHARE = 0.5
# Less than this share of the volume's border darker than the threshold: the report warns (air around an object
# covers most of the border; a specimen cut by the field's sides and ends still leaves most of it air).
BORDER_DARK_SHARE = 0.5
# At least this share of the haze, and ENCLOSED_VOXELS of the volume, enclosed by the object in its slices: a note
# (measured, pipeline.enclosed_in_slices: at most 0.05 % of the haze on the shading and padding families, seeds
# 0-59; 2.5-3.8 % on the real head MRI at noise 6-10 %, its skull base; 7 % on a chest CT phantom whose lungs went
# through the trachea; up to 98 % between ring artefacts, which count as object).
ENCLOSED_SHARE = 0.02
ENCLOSED_VOXELS = 0.005
# Levels 1-5 that took a class of its own above the air as air (HazeThreshold.class_taken_above): the report warns
# when the haze voxels brighter than the air's noise are at least this share of the object kept (and LITTLE_REMOVED of
# the volume). Measured on the real head MRI ch2 (voxels above the air's noise removed / object kept, brain voxels
# of ch2bet removed): level 5 0.03 (526), 4 0.05 (2,510), 3 0.09 (6,760: dim background outside the head, the haze
# itself), 2 0.8 (413,083, a quarter of the brain), 1 6 (all of it); a sphere of dim tissue around a bright core,
# levels 1-3: 1.8 (the dim shell, all of it).
CLASS_TAKEN_SHARE = 0.25
# Level auto: at least this share of the air's edge (the air voxels beside the object before its growth, sampled) on
# a plateau (pipeline.PLATEAU_CONTRAST), and PLATEAU_VOXELS of them: the report warns that the threshold cuts through
# one level. Measured: none on clean volumes; 4-44 % on the 58 shaded micro-CTs (of 536) that lost voxels deeper
# than 2 and had no other warning (a dim blob removed whole leaves no edge: the other blobs' cuts show it, or, in 2
# runs at 8x shading, nothing does).
PLATEAU_SHARE = 0.03
PLATEAU_VOXELS = 8


@dataclass
class DehazeReport:
    threshold: HazeThreshold
    fill_value: float
    voxels: int
    changed: int
    changed_fraction: float
    object_voxels: int
    gzip_before: int | None = None
    gzip_after: int | None = None
    zstd_before: int | None = None
    zstd_after: int | None = None
    notes: list = field(default_factory=list)
    haze_voxels: int = 0
    output_path: Path | None = None
    seconds: float = 0.0
    streamed: str = ""  # how a file was streamed; empty when it ran in memory
    sizes_estimated: str = ""  # how the compressed sizes were estimated; empty when measured on every voxel
    warning: str = ""  # why little or nothing was removed; empty when the run removed haze
    enclosed: int = 0  # haze voxels enclosed by the object in their slice, estimated (pipeline.enclosed_in_slices)
    haze_above_air: int = 0  # haze voxels brighter than the air's noise (Counts.haze_above_air)

    def summary(self) -> str:
        where = f"{self.output_path}: " if self.output_path else ""
        text = (f"{where}{100 * self.changed_fraction:.1f} % of {self.voxels} voxels changed "
                f"(set to {self.fill_value:g}); {self.threshold.describe()}")
        sizes = []
        for name, before, after in (("gzip", self.gzip_before, self.gzip_after),
                                    ("zstd", self.zstd_before, self.zstd_after)):
            if before:
                sizes.append(f"{name} {format_bytes(before)} -> {format_bytes(after)} "
                             f"({100 * (after - before) / before:+.0f} %)")
        if sizes:
            text += "\n" + "; ".join(sizes) + (f" ({self.sizes_estimated})" if self.sizes_estimated else "")
        if self.seconds:
            text += f"; {self.seconds:.2f} s" + (f", {self.streamed}" if self.streamed else "")
        if self.warning:
            text += f"\nwarning: {self.warning}"
        return text


def make_report(pipeline: HazePipeline, threshold: HazeThreshold, fill, sizes: CompressedSizes | None,
                notes: list) -> DehazeReport:
    c = pipeline.counts
    measured = sizes.finish() if sizes is not None else {}
    gzip, zstd = measured.get("gzip", (None, None)), measured.get("zstd", (None, None))
    if threshold.lowered_from is not None:
        notes.append(f"threshold lowered from {threshold.lowered_from:.6g} to {threshold.value:.6g}, a gap in the "
                     f"histogram: the air's noise, measured from its peak's width, reaches {threshold.air_end:.6g}, "
                     "but the counts fall after the air and rise again below that, a second population (the dim side "
                     "of a specimen under flat-field shading?), kept as object; if it is air, choose a fixed --level")
    if c.nan:
        notes.append(f"{c.nan} NaN voxels: {c.nan_filled} in the haze set to the fill value, "
                     f"{c.nan - c.nan_filled} kept as NaN (not taken as haze)")
    warning = (_why_little_was_removed(c, threshold, pipeline.options) or _why_almost_all_was_removed(c, threshold)
               or _why_only_padding_went(c, threshold) or _why_the_object_may_be_cut(threshold)
               or _why_a_class_went(c, threshold) or _why_the_border_stayed(c, threshold)
               or _why_the_air_stayed(c, pipeline.options) or _why_the_cut_runs_through_a_level(c, threshold)
               or _why_the_object_is_near_the_threshold(threshold))
    if not warning and c.changed < LITTLE_REMOVED * c.voxels <= c.haze:
        notes.append(f"{c.haze - c.changed} of the {c.haze} haze voxels already had the fill value")
    if c.enclosed >= ENCLOSED_SHARE * c.haze and c.enclosed >= ENCLOSED_VOXELS * c.voxels:
        notes.append(f"about {c.enclosed} haze voxels ({100 * c.enclosed / c.haze:.2g} % of the haze) lie inside the "
                     "object in their slices, with object on both sides along rows and columns: dark parts of it "
                     "joined to the outside air (lungs through the airways, sinuses, a cavity open at one end), or "
                     "air between bright artefacts; if they are tissue, check the output")
    return DehazeReport(threshold, float(fill), c.voxels, c.changed, c.changed / max(1, c.voxels), c.object_voxels,
                        gzip[0], gzip[1], zstd[0], zstd[1], notes, c.haze,
                        sizes_estimated=sizes.how() if sizes is not None else "", warning=warning,
                        enclosed=c.enclosed, haze_above_air=c.haze_above_air)


def _why_little_was_removed(c: Counts, threshold: HazeThreshold, options: HazeOptions) -> str:
    """Empty when haze was found (at least LITTLE_REMOVED of the voxels, or air that already had one value), else
    one sentence: how little, and the likeliest reason."""
    if c.haze >= LITTLE_REMOVED * c.voxels:
        return ""
    how = (f"nothing was removed" if c.haze == 0 else
           f"little was removed ({100 * c.haze / max(1, c.voxels):.2g} % of the voxels are haze)")
    try_auto = "; the default level auto classifies a denoised copy" if not options.denoise else ""
    if threshold.in_noise:
        return (f"{how}: the threshold {threshold.value:.6g} fell inside the noise of the air (which reaches "
                f"{threshold.air_end:.6g}): noise voxels above it count as object and the dilation grows them over "
                f"the air{try_auto}")
    if options.air == "border" and c.border and c.border_dark < BORDER_DARK_SHARE * c.border:
        share = 100 * c.border_dark / c.border
        return (f"{how}: only {share:.2g} % of the volume's border is darker than the threshold "
                f"{threshold.value:.6g}: the air is not darker than the object, or the object fills the volume "
                "(--air all also takes dark voxels enclosed by the object)")
    if c.air < LITTLE_REMOVED * c.voxels:
        return (f"{how}: few voxels are darker than the threshold {threshold.value:.6g}: the air is not darker "
                "than the object, or there is little air around it")
    return (f"{how}: the object grown by {options.dilate} voxel{'s' * (options.dilate != 1)} covers nearly all of "
            f"the {c.air} air voxels: the air is a thin layer, or noise in it counts as object{try_auto}")


def _why_almost_all_was_removed(c: Counts, threshold: HazeThreshold) -> str:
    """Empty unless nearly nothing was kept as object while most of the volume changed: then one sentence."""
    if c.object_voxels >= LITTLE_KEPT * c.voxels or c.changed <= c.voxels / 2:
        return ""
    return (f"almost everything was removed: {100 * c.changed / max(1, c.voxels):.3g} % of the voxels changed and "
            f"only {c.object_voxels} ({100 * c.object_voxels / max(1, c.voxels):.2g} %) were kept as object above "
            f"the threshold {threshold.value:.6g}; unless the volume is nearly all air, no object was found (a "
            "texture or background filling the volume, or a threshold above the object): check the output")


def _why_the_object_may_be_cut(threshold: HazeThreshold) -> str:
    """Empty unless level auto found no class boundary above the air's noise (see HazeThreshold.no_class_above)."""
    if not threshold.no_class_above:
        return ""
    return (f"no class boundary of the histogram lies above the air's noise (which reaches {threshold.air_end:.6g}): "
            f"the threshold {threshold.value:.6g} is that noise's end, and may cut into the object; check the output, "
            "or choose a fixed --level")


def _why_only_padding_went(c: Counts, threshold: HazeThreshold) -> str:
    """Empty unless the haze found was a padding value and little of the dark class of its own above it (less than
    half of it; see HazeThreshold.padding): then what to do."""
    padding = threshold.padding
    if padding is None:
        return ""
    others_removed = max(0.0, c.haze / max(1, c.voxels) - padding.share)  # of all voxels
    if others_removed >= 0.5 * padding.air_share * (1 - padding.share):
        return ""
    advice = "no fixed level puts the threshold above it"
    if padding.level is not None:
        advice = (f"level {padding.level} (--level {padding.level}) puts the threshold at "
                  f"{padding.level_threshold:.6g}, above it")
    went = ("and nothing else" if others_removed < LITTLE_REMOVED else
            f"and only {100 * others_removed / (1 - padding.share):.2g} % of the other voxels")
    return (f"nothing but a padding value was found as haze, or little more: {100 * padding.share:.3g} % of the "
            f"voxels hold {padding.value:g}, below all others' noise (outside a scanner's field of view?), {went}; "
            f"{c.changed} voxels changed. Above it, {100 * padding.air_share:.3g} % of the other voxels form a dark "
            f"class up to {padding.air_end:.6g}: if that is the air inside the field of view, {advice}")


def _why_a_class_went(c: Counts, threshold: HazeThreshold) -> str:
    """Empty unless a fixed level took a class of its own above the air as air (HazeThreshold.class_taken_above) and
    the haze voxels brighter than the air's noise are many beside the object kept (CLASS_TAKEN_SHARE): then one
    sentence."""
    above = c.haze_above_air
    if (threshold.class_taken_above is None or above < LITTLE_REMOVED * c.voxels
            or above < CLASS_TAKEN_SHARE * c.object_voxels):
        return ""
    return (f"level {threshold.level} took the darkest {threshold.air_classes} of {threshold.classes} classes as "
            f"air, and below its threshold {threshold.value:.6g} lies a class of its own above the air: {above} "
            f"voxels brighter than the valley above the air ({threshold.class_taken_above:.6g}) were removed, "
            f"{100 * above / max(1, c.object_voxels):.3g} % as many as the {c.object_voxels} kept as object (dim "
            "tissue beside bright: soft tissue beside bone, grey matter beside white?); check the output, or choose "
            "a level nearer 5 (lower thresholds) or auto")


def _why_the_border_stayed(c: Counts, threshold: HazeThreshold) -> str:
    """Empty unless most of the volume's border is brighter than the threshold (counted with air="border"): then
    the air found is not the air around the object, or not all of it: a darker part of the air (a volume stitched
    from two scans, the padding of a field of view, dark ring artefacts) was taken as the air peak and the rest kept
    as object; or the object fills most of the border (a volume cropped inside the specimen)."""
    if not c.border or c.border_dark >= BORDER_DARK_SHARE * c.border:
        return ""
    return (f"only {100 * c.border_dark / c.border:.2g} % of the volume's border is darker than the threshold "
            f"{threshold.value:.6g}: unless the object fills the border, the air there is brighter than the air "
            "found (a second level of air, artefacts) and was kept; check the output, or choose a fixed --level")


def _why_the_air_stayed(c: Counts, options: HazeOptions) -> str:
    """Empty unless less than AIR_KEPT_SHARE of the air (dark voxels joined to the border, or all dark voxels with
    air="all") became haze: the object, grown, covers the rest. Then one sentence."""
    if c.air < LITTLE_REMOVED * c.voxels or c.haze >= AIR_KEPT_SHARE * c.air:
        return ""
    return (f"only {100 * c.haze / c.air:.2g} % of the {c.air} air voxels were removed: the object grown by "
            f"{options.dilate} voxel{'s' * (options.dilate != 1)} covers the rest (noise or artefacts in the air, "
            "rings, streaks, count as object, or the air is a thin layer); check the output, or choose a fixed "
            "--level")


def _why_the_cut_runs_through_a_level(c: Counts, threshold: HazeThreshold) -> str:
    """Empty unless much of the air's edge lies on a plateau (PLATEAU_SHARE of Counts.edge): the threshold cuts a
    region of one level in two (an object shaded across the field, its dim side below the threshold; or shaded air,
    its bright side above it), so one of them was cut."""
    if c.plateau_edge < max(PLATEAU_SHARE * c.edge, PLATEAU_VOXELS):
        return ""
    return (f"{100 * c.plateau_edge / c.edge:.2g} % of the air's edge (sampled) runs through a plateau: the voxels "
            f"on both sides of it are nearly as bright, not air on one side and object on the other, so the threshold "
            f"{threshold.value:.6g} cuts one region in two (an object shaded across the field whose dim side went "
            "with the air, or shaded air whose bright side stayed); check the output (--mask-out writes the haze "
            "mask): one threshold cannot follow the shading, a shading correction first (flat field, bias field) can")


def _why_the_object_is_near_the_threshold(threshold: HazeThreshold) -> str:
    """Empty unless level auto's threshold lies within the object's noise (HazeThreshold.object_sigmas below
    OBJECT_NOISE_SIGMAS: low signal to noise)."""
    if threshold.object_sigmas is None or threshold.object_sigmas >= OBJECT_NOISE_SIGMAS:
        return ""
    return (f"the object's mean lies only {threshold.object_sigmas:.2g} noise sigmas (of the denoised copy, measured "
            f"on the air) above the threshold {threshold.value:.6g}: the object's own noise reaches below it, and its "
            "dark voxels beside the air, with a dim tissue inside it reached through them, may have gone with the air "
            "(low signal to noise); check the output (--mask-out writes the haze mask)")
