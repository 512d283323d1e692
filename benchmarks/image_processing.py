"""CPU time of photo processing, against decoding the same file, in one run.

For every photo among the test fixtures (and a 12 MP iPhone-shaped JPEG made
in the run from the HEIC fixture) it measures, interleaved round by round:

* the baseline: opening the file and decoding every frame we process at
  full size, nothing else: the floor any pipeline built on a full decode
  would start from;
* the pipeline: ``process_image``, every display size, blurhash and all;
* with ``--against REV``, the ``process_image`` of an earlier revision of
  ``src/petpal/media/imaging.py``, read from git, on the same files.

Times are CPU seconds of this process (``time.process_time``, so the threads
libheif decodes with count too), the least of ``--rounds`` runs: on a shared
machine other work only ever adds to a measurement. It prints milliseconds
per photo, the ratio to the baseline, and the bytes stored per photo.

    .venv/bin/python benchmarks/image_processing.py [--rounds 5] [--against REV]
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import importlib.util
import io
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from PIL import Image, ImageCms, features

from petpal.media import imaging

ROOT = Path(__file__).resolve().parent.parent
PHOTOS = ROOT / "tests" / "fixtures" / "photos"
IMAGING = "src/petpal/media/imaging.py"
TWELVE_MP = PHOTOS / "camera-exif" / "oppo_r7plus_gps_13mp.jpg"
TARGET_MS = 100.0  # issue 4: a 12-megapixel photo, three sizes


@dataclasses.dataclass
class Row:
    path: Path
    label: str
    frames: int  # that the pipeline processes: an MPO or a HEIC burst is one
    megapixels: float  # in those frames
    times: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    stored: dict[str, int] = dataclasses.field(default_factory=dict)


Pipeline = Callable[[Row], int]  # processes a photo, returns the bytes stored


def decode_only(row: Row) -> int:
    with Image.open(row.path) as im:
        for index in range(row.frames):
            im.seek(index)
            im.load()
    return 0


def pipeline_of(module: ModuleType) -> Pipeline:
    def process(row: Row) -> int:
        result = module.process_image(row.path, module.ImageLimits())
        return sum(len(variant.data) for variant in result.variants)

    return process


def imaging_at(revision: str) -> ModuleType:
    """Load imaging.py as it was at ``revision``, beside the current one."""
    # The revision names an object of this repository for git to print; it
    # is never run.
    source = subprocess.run(
        ["git", "show", f"{revision}:{IMAGING}"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=True,
        text=True,
    ).stdout
    with tempfile.TemporaryDirectory(prefix="petpal-imaging-") as folder:
        file = Path(folder) / "imaging_before.py"
        file.write_text(source)
        spec = importlib.util.spec_from_file_location("imaging_before", file)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        # dataclasses look their module up while the class body runs.
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


def iphone_shaped_jpeg(folder: Path) -> Path:
    """A 4032x3024 Display P3 JPEG, as iPhones write them, from the HEIC."""
    path = folder / "iphone_4032x3024_p3.jpg"
    with Image.open(PHOTOS / "edge-cases" / "heic_iphone8_gps.heic") as heic:
        heic.load()
        heic.save(path, "JPEG", quality=92, icc_profile=heic.info["icc_profile"])
    return path


def photos(folder: Path) -> list[Row]:
    rows: list[Row] = []
    made = iphone_shaped_jpeg(folder)
    candidates = [
        (TWELVE_MP, "camera-exif/" + TWELVE_MP.name),
        (made, "made in the run: " + made.name),
    ]
    for sub in ("camera-exif", "edge-cases"):
        candidates += [
            (p, f"{sub}/{p.name}")
            for p in sorted((PHOTOS / sub).iterdir())
            if p.name != "SOURCES.md" and p != TWELVE_MP
        ]
    for path, label in candidates:
        try:
            header = imaging.inspect_header(path, imaging.ImageLimits())
            imaging.process_image(path, imaging.ImageLimits())
        except (imaging.ImageRejected, imaging.ImageFailed):
            continue  # refused or failing on purpose: nothing to time
        megapixels = header.width * header.height * header.frames / 1e6
        rows.append(Row(path, label, header.frames, megapixels))
    return rows


def cpu_ms(run: Pipeline, row: Row) -> tuple[float, int]:
    start = time.process_time()
    stored = run(row)
    return (time.process_time() - start) * 1000, stored


def measure(rows: list[Row], runs: dict[str, Pipeline], rounds: int) -> None:
    for _ in range(rounds):
        for row in rows:
            for name, run in runs.items():
                elapsed, stored = cpu_ms(run, row)
                row.times.setdefault(name, []).append(elapsed)
                row.stored[name] = stored


def least(row: Row, run: str) -> float:
    return min(row.times[run])


def ratio(row: Row, run: str, to: str) -> float:
    """The median over the rounds of ``run`` / ``to``, timed back to back."""
    pairs = zip(row.times[run], row.times[to], strict=True)
    return statistics.median(mine / theirs for mine, theirs in pairs)


def report(rows: list[Row], runs: list[str]) -> None:
    has_before = "before" in runs
    head = f"{'photo':52} {'MP':>5} {'decode':>7} {'pipeline':>8} {'ratio':>6}"
    if has_before:
        head += f" {'before':>7} {'ratio':>6} {'speed-up':>8}"
    head += f" {'KB stored':>9}"
    if has_before:
        head += f" {'before':>7}"
    print(head)
    for row in rows:
        line = (
            f"{row.label[:52]:52} {row.megapixels:5.1f} {least(row, 'decode'):7.1f}"
            f" {least(row, 'pipeline'):8.1f} {ratio(row, 'pipeline', 'decode'):6.2f}"
        )
        if has_before:
            line += (
                f" {least(row, 'before'):7.1f} {ratio(row, 'before', 'decode'):6.2f}"
                f" {ratio(row, 'before', 'pipeline'):7.1f}x"
            )
        line += f" {row.stored['pipeline'] / 1000:9.0f}"
        if has_before:
            line += f" {row.stored['before'] / 1000:7.0f}"
        print(line)
    print(
        "(ms of CPU per photo, the least of the rounds; ratios and speed-ups are"
        " medians\nof each round's own ratio, its runs timed back to back)"
    )


def best_ms(step: Callable[[], object], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.process_time()
        step()
        best = min(best, time.process_time() - start)
    return best * 1000


def decoded(path: Path, draft: tuple[int, int] | None = None) -> Image.Image:
    im = Image.open(path)  # load() closes the file of a single frame
    if draft:
        im.draft(None, draft)
    im.load()
    return im


def encoded_kb(im: Image.Image, format: str, **params: object) -> float:
    buffer = io.BytesIO()
    im.save(buffer, format, **params)
    return len(buffer.getvalue()) / 1000


def steps(iphone_jpeg: Path, rounds: int) -> None:
    """What each step of the pipeline costs on its own, on 12 MP photos."""
    twelve = TWELVE_MP.name
    large = imaging._fitted_size(*decoded(TWELVE_MP).size, 2048)
    medium = imaging._fitted_size(*large, 1080)
    half = decoded(TWELVE_MP, large)
    p3_full = decoded(iphone_jpeg)
    p3_kept = decoded(iphone_jpeg, imaging._cheap_step_floor((2048, 1536)))
    profile = p3_full.info["icc_profile"]
    to_srgb = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
    )
    sized = {"2048": half.resize(large, imaging.RESAMPLING)}
    sized["1080"] = half.resize(medium, imaging.RESAMPLING)
    heic = PHOTOS / "edge-cases" / "heic_iphone8_gps.heic"

    timed: list[tuple[str, Callable[[], object]]] = [
        (f"decode {twelve}, full size", lambda: decoded(TWELVE_MP)),
        (f"decode {twelve} at 1/2 in libjpeg", lambda: decoded(TWELVE_MP, large)),
        (f"decode {heic.name} (no smaller decode)", lambda: decoded(heic)),
    ]
    filters = ("BILINEAR", "HAMMING", "BICUBIC", "LANCZOS")
    for resampling in (Image.Resampling[name] for name in filters):
        for size in (large, medium):
            timed.append(
                (
                    f"resize {half.size} to {size}, {resampling.name.lower()}",
                    functools.partial(half.resize, size, resampling),
                )
            )
    timed += [
        (
            f"Display P3 to sRGB, {p3_full.size} (decoded size)",
            lambda: ImageCms.applyTransform(p3_full, to_srgb),
        ),
        (
            f"Display P3 to sRGB, {p3_kept.size} (what we keep)",
            lambda: ImageCms.applyTransform(p3_kept, to_srgb),
        ),
    ]
    encodings: list[tuple[str, str, dict[str, object]]] = [
        ("JPEG 85 baseline (ours)", "JPEG", {"quality": 85}),
        ("JPEG 85 optimised", "JPEG", {"quality": 85, "optimize": True}),
        ("JPEG 85 progressive", "JPEG", {"quality": 85, "progressive": True}),
        ("WebP 85 method 4", "WEBP", {"quality": 85, "method": 4}),
        ("WebP 85 method 0", "WEBP", {"quality": 85, "method": 0}),
    ]
    for name, im in sized.items():
        for label, format, params in encodings:
            kb = encoded_kb(im, format, **params)
            timed.append(
                (
                    f"encode {name} px, {label}: {kb:.0f} KB",
                    functools.partial(encoded_kb, im, format, **params),
                )
            )
    small = sized["1080"].resize(imaging._fitted_size(*medium, 320))
    timed.append(("blurhash of the 320 px size", lambda: imaging._blurhash(small)))

    print(f"\n{'step, on its own':68} {'ms CPU':>7}")
    for label, step in timed:
        print(f"{label:68} {best_ms(step, rounds):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--against", metavar="REV", help="also time imaging.py as of this revision"
    )
    args = parser.parse_args()

    print("$", shlex.join([".venv/bin/python", *sys.argv]))
    print(
        f"Pillow {features.version('pil')}, libjpeg-turbo "
        f"{features.version('libjpeg_turbo')}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    runs: dict[str, Pipeline] = {
        "decode": decode_only,
        "pipeline": pipeline_of(imaging),
    }
    if args.against:
        runs["before"] = pipeline_of(imaging_at(args.against))
    with tempfile.TemporaryDirectory(prefix="petpal-bench-") as folder:
        rows = photos(Path(folder))
        for run in runs.values():  # first calls import plugins and warm caches
            run(rows[0])
        measure(rows, runs, args.rounds)
        report(rows, list(runs))
        steps(rows[1].path, args.rounds)

    twelve = rows[0]
    print(
        f"\n12 MP target: {twelve.label} ({twelve.megapixels:.1f} MP) takes "
        f"{least(twelve, 'pipeline'):.0f} ms of CPU at least and "
        f"{statistics.median(twelve.times['pipeline']):.0f} ms in the median "
        f"round, {TARGET_MS:.0f} ms allowed; "
        f"{ratio(twelve, 'pipeline', 'decode'):.2f} times its full-size decode."
    )


if __name__ == "__main__":
    main()
