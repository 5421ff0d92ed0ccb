"""`bigvolume demo`: the embedded default job. Scores every method against the ideal on two generated volumes,
writes the volumes, a table and a PNG of central slices (decimated / anti-aliased / ideal)."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..io import files as io
from ..testing import quality
from ..ops.resample import DEFAULT_METHOD, METHODS, downsample_array
from ..core.errors import BigVolumeError
from ..core.geometry import validate_factors
from ..core.volume import Volume


def _score(array, factor, ideal, limited):
    rows = {}
    for method in METHODS:
        started = time.perf_counter()
        output = downsample_array(array, factor, method)
        seconds = time.perf_counter() - started
        share = quality.aliasing_share(lambda x, m=method: downsample_array(x, factor, m), array, factor, limited)
        rows[method] = dict(output=output, seconds=seconds, psnr=quality.psnr(output, ideal), alias=share)
    return rows


def run_demo(out_dir="demo-output", size: int = 256, factor: float = 4.0, echo=print) -> dict:
    started = time.perf_counter()
    # checked before anything is written (a bad factor left the first volumes behind, "math domain error")
    factor = validate_factors(factor)[0]
    if not 16 <= int(size) or factor > size / 4:
        raise BigVolumeError(f"demo: size {size} and factor {factor:g}: give a size of at least 16 and a factor of "
                             "at most a quarter of it (the scores need an output of 4 voxels a side)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spacing = (0.5, 0.5, 0.5)
    cases = {"zoneplate": quality.zone_plate(size), "phantom": quality.microct_phantom(size)}
    results = {}
    for name, array in cases.items():
        echo(f"{name}: {size}^3 {array.dtype}, factor {factor:g}")
        io.write_volume(Volume.from_array(array, spacing), out / f"{name}.nhdr")
        ideal = quality.ideal_downsample(array, factor)
        limited = quality.band_limited_input(array, factor)
        rows = _score(array, factor, ideal, limited)
        geometry = Volume.from_array(array, spacing).geometry.downsampled(factor)
        for method, row in rows.items():
            path = io.write_volume(Volume(row["output"], geometry), out / f"{name}_{method}.nrrd", compress=True)
            row["bytes"] = io.file_size(path)
        results[name] = dict(input=array, ideal=ideal, rows=rows)

    header = f"{'method':9s} {'zoneplate PSNR':>14s} {'aliasing':>9s} {'phantom PSNR':>13s} {'time':>8s} {'.nrrd.gz':>10s}"
    echo("")
    echo(header)
    echo("-" * len(header))
    for method in METHODS:
        zone, phantom = results["zoneplate"]["rows"][method], results["phantom"]["rows"][method]
        echo(f"{method:9s} {zone['psnr']:11.1f} dB {100 * zone['alias']:8.1f}% {phantom['psnr']:10.1f} dB "
             f"{phantom['seconds']:7.3f}s {phantom['bytes'] / 1024:7.0f} KiB")
    echo("(PSNR against the ideal band limit; aliasing share on the zone plate; time and size for the phantom)")
    figure = write_figure(results, out / "demo.png", factor)
    previews = write_previews(out, list(cases), factor)
    echo(f"\nwrote {figure}, {', '.join(str(p) for p in previews)} and the volumes in {out}/ in "
         f"{time.perf_counter() - started:.1f} s")
    return results


def write_previews(out: Path, names, factor: float) -> list[Path]:
    """Before/after pictures (bigvolume.render.preview): each input beside its anti-aliased and its decimated output, volume
    rendering and mid-slices, one transfer function. Needs no matplotlib."""
    from ..render.preview import write_preview
    from ..slicer import offscreen_render  # noqa: F401  (registers the "slicer" engine, preferred where it runs)
    paths = []
    for name in names:
        report = write_preview(out / f"{name}.nhdr", out / f"preview_{name}.png", size=(384, 384),
                               compare=[out / f"{name}_{DEFAULT_METHOD}.nrrd", out / f"{name}_nearest.nrrd"],
                               names=[f"{name}: input", f"{DEFAULT_METHOD} x{factor:g} (anti-aliased)",
                                      f"nearest x{factor:g} (decimation)"])
        paths.append(report.path)
    return paths


def write_figure(results, path: Path, factor: float) -> Path:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("the demo figure needs matplotlib: pip install matplotlib (or pip install -e '.[demo]' in "
                           "the checkout)") from None
    columns = [("input (full resolution)", None), ("decimated (nearest)", "nearest"),
               (f"anti-aliased ({DEFAULT_METHOD})", DEFAULT_METHOD), ("ideal (FFT band limit)", "ideal")]
    fig, axes = plt.subplots(len(results), len(columns), figsize=(4 * len(columns), 4 * len(results)))
    for row, (name, result) in enumerate(results.items()):
        low, high = np.percentile(result["input"][result["input"].shape[0] // 2], [0.5, 99.5])
        for col, (title, key) in enumerate(columns):
            if key is None:
                image = result["input"]
            elif key == "ideal":
                image = result["ideal"]
            else:
                image = result["rows"][key]["output"]
            ax = axes[row, col]
            ax.imshow(image[image.shape[0] // 2], cmap="gray", vmin=low, vmax=high, interpolation="nearest")
            label = title if key in (None, "ideal") else f"{title}\nPSNR {result['rows'][key]['psnr']:.1f} dB"
            ax.set_title(f"{name}: {label}", fontsize=9)
            ax.axis("off")
    fig.suptitle(f"Downsampling by {factor:g}: central slices", fontsize=12)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
