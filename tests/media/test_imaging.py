"""The image core against real files: camera photos, phone HEICs and the
corner cases image libraries keep tripping over (see the SOURCES.md files next
to the fixtures for where each file comes from).

Processing a 12 MP photo takes a tenth of a second (a HEIC several times
that), so each file is processed at most once per test session and the tests
share the result.
"""

from __future__ import annotations

import contextlib
import functools
import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import blurhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import ExifTags, Image, ImageChops, ImageCms, ImageStat

import petpal
from petpal.media import imaging
from petpal.media.imaging import (
    CHEAP_STEP_SHORTFALL,
    MAX_JPEG_SCANS,
    VARIANT_SIZES,
    ImageFailed,
    ImageHeader,
    ImageLimits,
    ImageRejected,
    ProcessedImage,
    Variant,
    _read_header,
    inspect_header,
    process_image,
    sniff_format,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "photos"
EDGE_CASES = FIXTURES / "edge-cases"
CAMERA = FIXTURES / "camera-exif"
SEED_PHOTOS = Path(petpal.__file__).parent / "seed" / "photos"
NOT_PHOTOS = {"SOURCES.md"}

LIMITS = ImageLimits()
VARIANT_NAMES = ["small", "medium", "large"]
BLURHASH_LENGTH = 4 + 2 * 4 * 3  # header + 4x3 components

# Mean absolute difference, in 8-bit levels, between two small thumbnails of
# what should be the same picture. JPEG re-encoding of differently stored
# pixels lands under 1; a wrong rotation or mirror lands above 50.
SAME_PICTURE_TOLERANCE = 4.0


@dataclass(frozen=True)
class Rejected:
    """Refused at upload time by inspect_header."""

    status: int
    code: str


@dataclass(frozen=True)
class Failed:
    """Accepted at upload time, then failed in the background job."""

    reason: str


@dataclass(frozen=True)
class Ready:
    """Processed; size of the upright upload and type of the variants."""

    width: int
    height: int
    content_type: str = "image/jpeg"
    animated: bool = False


TRUNCATED = "the image file is truncated or corrupt"

# Every file in fixtures/photos/edge-cases, and what must become of it.
EDGE_CASE_OUTCOMES: dict[str, Rejected | Failed | Ready] = {
    "animated_42frames.gif": Ready(245, 245, "image/webp", animated=True),
    "animated_42frames.webp": Ready(245, 245, "image/webp", animated=True),
    "animated_apng.png": Ready(245, 245, "image/webp", animated=True),
    # Stored 427x640; the irot/imir boxes turn it on its side.
    "avif_irot_imir.avif": Ready(640, 427),
    "bmp_cat_1_2MB.bmp": Rejected(415, "unsupported_media_type"),
    "cmyk_real_photo.jpg": Ready(2048, 1536),
    "decompression_bomb_65535x66601.gif": Rejected(413, "too_many_pixels"),
    "heic_exif_at_end_gps.heic": Ready(3024, 4032),
    "heic_iphone8_gps.heic": Ready(4032, 3024),
    "icc_profile_big_progressive.jpg": Ready(425, 250),
    "jpeg_1x1_with_gps.jpg": Ready(1, 1),
    "malformed_gps_ifd.jpg": Ready(800, 531),
    # The second frame is the other eye of a stereo pair, not an animation.
    "mpo_stereo_2frames.mpo": Ready(640, 480),
    "png_16bit_gray_trns.png": Ready(64, 64, "image/webp"),
    "png_16bit_rgb.png": Ready(32, 32),
    "png_1x1_palette_trns.png": Ready(1, 1, "image/webp"),
    "png_palette_trns.png": Ready(64, 64, "image/webp"),
    "png_text_chunk_bomb.png": Rejected(422, "unreadable_image"),
    "progressive_camera_photo.jpg": Ready(1280, 960),
    "truncated_real_photo.jpg": Failed(TRUNCATED),
    "truncated_small_progressive.jpg": Failed(TRUNCATED),
    # Stored 320x240 with orientation 6.
    "webp_exif_ori6_gps.webp": Ready(240, 320),
    "zero_width.gif": Rejected(422, "unreadable_image"),
}

CAMERA_PHOTOS: dict[str, Ready] = {
    **{f"orientation_{n}_landscape.jpg": Ready(1800, 1200) for n in range(1, 9)},
    "apple_iphone5_ori3_gps.jpg": Ready(3264, 2448),
    "fujifilm_s1pro_gps_small.jpg": Ready(600, 400),
    # Decoded at half size by libjpeg, 1560x2080, which stands for 2048 px.
    "oppo_r7plus_gps_13mp.jpg": Ready(3120, 4160),
    "samsung_sm-j327t1_ori6.jpg": Ready(1932, 2576),
}

SEED_PHOTOS_SIZES: dict[str, Ready] = {
    "cameratrap_domestic_dog.jpg": Ready(2048, 1536),
    "darknet_dog_bicycle.jpg": Ready(768, 576),
    "darknet_dog_horse_person.jpg": Ready(640, 424),
    "mde_cat_canon_eos70d.avif": Ready(5472, 3648),
    "mde_dog_with_stick_fujifilm_mx1200.jpg": Ready(1280, 960),
    "mde_grey_cat_minolta_dimage_ex.jpg": Ready(1344, 1008),
    "skimage_chelsea_cat.png": Ready(451, 300),
    "unsplash_cat_on_chair.jpg": Ready(800, 533),
    "unsplash_cat_under_blanket.jpg": Ready(800, 500),
}

# Files that carry GPS coordinates or other personal metadata going in.
WITH_LOCATION = [
    CAMERA / "apple_iphone5_ori3_gps.jpg",
    CAMERA / "fujifilm_s1pro_gps_small.jpg",
    CAMERA / "oppo_r7plus_gps_13mp.jpg",
    EDGE_CASES / "heic_iphone8_gps.heic",
    EDGE_CASES / "heic_exif_at_end_gps.heic",
    EDGE_CASES / "webp_exif_ori6_gps.webp",
    EDGE_CASES / "jpeg_1x1_with_gps.jpg",
]


def _photos_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in NOT_PHOTOS)


def _ready_paths() -> list[Path]:
    edge = [
        EDGE_CASES / name
        for name, outcome in EDGE_CASE_OUTCOMES.items()
        if isinstance(outcome, Ready)
    ]
    return [
        *edge,
        *(CAMERA / name for name in CAMERA_PHOTOS),
        *(SEED_PHOTOS / name for name in SEED_PHOTOS_SIZES),
    ]


def _expected(path: Path) -> Ready:
    for table in (EDGE_CASE_OUTCOMES, CAMERA_PHOTOS, SEED_PHOTOS_SIZES):
        outcome = table.get(path.name)
        if isinstance(outcome, Ready):
            return outcome
    raise LookupError(path)


@functools.cache
def _process(path: Path) -> ProcessedImage | ImageFailed:
    try:
        return process_image(path, LIMITS)
    except ImageFailed as exc:
        return exc


def _ready(path: Path) -> ProcessedImage:
    result = _process(path)
    assert isinstance(result, ProcessedImage), f"{path.name}: {result}"
    return result


def _variant(result: ProcessedImage, name: str) -> Variant:
    return next(v for v in result.variants if v.name == name)


def _decode(variant: Variant) -> Image.Image:
    im = Image.open(io.BytesIO(variant.data))
    im.load()
    return im


def _thumb(im: Image.Image) -> Image.Image:
    return im.convert("RGB").resize((48, 32), Image.Resampling.BOX)


def _difference(a: Image.Image, b: Image.Image) -> float:
    diff = ImageStat.Stat(ImageChops.difference(_thumb(a), _thumb(b)))
    return sum(diff.mean) / len(diff.mean)


def _frame_count(im: Image.Image) -> int:
    return int(getattr(im, "n_frames", 1))


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# -- the edge-case table ------------------------------------------------------


def test_edge_case_table_names_only_files_that_exist() -> None:
    stale = set(EDGE_CASE_OUTCOMES) - set(_photos_in(EDGE_CASES))
    assert not stale, f"outcomes listed for files that are gone: {sorted(stale)}"


@pytest.mark.parametrize("name", _photos_in(EDGE_CASES))
def test_edge_case_outcome(name: str) -> None:
    expected = EDGE_CASE_OUTCOMES.get(name)
    if expected is None:
        pytest.fail(f"{name} has no expected outcome in EDGE_CASE_OUTCOMES")
    path = EDGE_CASES / name

    if isinstance(expected, Rejected):
        with pytest.raises(ImageRejected) as rejected:
            inspect_header(path, LIMITS)
        assert (rejected.value.status, rejected.value.code) == (
            expected.status,
            expected.code,
        )
        assert rejected.value.detail
        # The worker re-checks, so a file that slipped past upload still fails.
        assert isinstance(_process(path), ImageFailed)
        return

    assert isinstance(inspect_header(path, LIMITS), ImageHeader)
    result = _process(path)
    if isinstance(expected, Failed):
        assert isinstance(result, ImageFailed)
        assert result.reason == expected.reason
        return
    assert isinstance(result, ProcessedImage), result
    assert (result.width, result.height) == (expected.width, expected.height)
    assert result.animated is expected.animated
    assert {v.content_type for v in result.variants} == {expected.content_type}


# -- orientation --------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_comes_out_upright(orientation: int) -> None:
    result = _ready(CAMERA / f"orientation_{orientation}_landscape.jpg")
    reference = _ready(CAMERA / "orientation_1_landscape.jpg")

    assert (result.width, result.height) == (1800, 1200)
    assert (
        _difference(
            _decode(_variant(result, "small")), _decode(_variant(reference, "small"))
        )
        < SAME_PICTURE_TOLERANCE
    )


@pytest.mark.parametrize("method", list(Image.Transpose))
def test_orientation_check_notices_any_wrong_turn(method: Image.Transpose) -> None:
    reference = _decode(
        _variant(_ready(CAMERA / "orientation_1_landscape.jpg"), "small")
    )
    turned = reference.transpose(method)
    assert _difference(reference, turned) > 10 * SAME_PICTURE_TOLERANCE


@pytest.mark.parametrize(
    ("name", "turn"),
    [
        ("camera-exif/apple_iphone5_ori3_gps.jpg", Image.Transpose.ROTATE_180),
        ("camera-exif/samsung_sm-j327t1_ori6.jpg", Image.Transpose.ROTATE_270),
        ("edge-cases/webp_exif_ori6_gps.webp", Image.Transpose.ROTATE_270),
    ],
)
def test_phone_photos_are_turned_the_way_their_tag_says(
    name: str, turn: Image.Transpose
) -> None:
    path = FIXTURES / name
    small = _decode(_variant(_ready(path), "small"))
    with Image.open(path) as stored:
        stored.draft("RGB", (small.width * 2, small.height * 2))
        as_stored = stored.convert("RGB")

    assert _difference(small, as_stored.transpose(turn)) < SAME_PICTURE_TOLERANCE


def test_avif_orientation_boxes_are_applied() -> None:
    result = _ready(EDGE_CASES / "avif_irot_imir.avif")
    with Image.open(EDGE_CASES / "avif_irot_imir.avif") as stored:
        # Pillow maps irot/imir to EXIF orientation 5 (transpose).
        as_stored = stored.convert("RGB").transpose(Image.Transpose.TRANSPOSE)

    large = _decode(_variant(result, "large"))
    assert large.size == as_stored.size == (640, 427)
    assert _difference(large, as_stored) < SAME_PICTURE_TOLERANCE


# -- metadata -----------------------------------------------------------------

JPEG_SOS = 0xDA
JPEG_FORBIDDEN = {*range(0xE1, 0xF0), 0xFE}  # APP1..APP15 and COM
WEBP_PIXEL_CHUNKS = {b"VP8 ", b"VP8L", b"ALPH", b"ANMF"}
WEBP_ALLOWED_CHUNKS = {*WEBP_PIXEL_CHUNKS, b"VP8X", b"ANIM"}
WEBP_VP8X_METADATA_FLAGS = 0x20 | 0x08 | 0x04  # ICC, EXIF, XMP


def _jpeg_header_segments(data: bytes) -> list[tuple[int, bytes]]:
    assert data[:2] == b"\xff\xd8"
    segments: list[tuple[int, bytes]] = []
    pos = 2
    while True:
        assert data[pos] == 0xFF, "malformed JPEG marker"
        marker = data[pos + 1]
        if marker == JPEG_SOS:
            return segments
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        segments.append((marker, data[pos + 4 : pos + 2 + length]))
        pos += 2 + length


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    assert data[:4] == b"RIFF"
    assert data[8:12] == b"WEBP"
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= len(data):
        fourcc = data[pos : pos + 4]
        size = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks.append((fourcc, data[pos + 8 : pos + 8 + size]))
        pos += 8 + size + (size & 1)
    return chunks


def _metadata_bytes(variant: Variant) -> bytes:
    """Every byte of the container that is not compressed pixel data."""
    if variant.content_type == "image/jpeg":
        segments = _jpeg_header_segments(variant.data)
        assert not {marker for marker, _ in segments} & JPEG_FORBIDDEN
        return b"".join(payload for _, payload in segments)
    chunks = _webp_chunks(variant.data)
    assert {fourcc for fourcc, _ in chunks} <= WEBP_ALLOWED_CHUNKS
    for fourcc, payload in chunks:
        if fourcc == b"VP8X":
            assert not payload[0] & WEBP_VP8X_METADATA_FLAGS
    return b"".join(p for fourcc, p in chunks if fourcc not in WEBP_PIXEL_CHUNKS)


def _assert_no_metadata(variant: Variant) -> None:
    im = _decode(variant)
    assert len(im.getexif()) == 0
    kept = {"exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"}
    assert not kept & set(im.info)
    assert b"Exif\x00\x00" not in variant.data
    # Only the container's own bytes are searched for "GPS": three bytes turn
    # up by chance in about one megabyte of compressed pixels in sixteen.
    assert b"GPS" not in _metadata_bytes(variant)


@pytest.mark.parametrize("path", WITH_LOCATION, ids=_ids(WITH_LOCATION))
def test_no_variant_of_a_located_photo_keeps_metadata(path: Path) -> None:
    result = _ready(path)
    for variant in result.variants:
        _assert_no_metadata(variant)
    expected = _expected(path)
    assert (result.width, result.height) == (expected.width, expected.height)


@pytest.mark.parametrize("path", _ready_paths(), ids=_ids(_ready_paths()))
def test_no_variant_keeps_metadata(path: Path) -> None:
    for variant in _ready(path).variants:
        _assert_no_metadata(variant)


# -- variants -----------------------------------------------------------------


@pytest.mark.parametrize("path", _ready_paths(), ids=_ids(_ready_paths()))
def test_variants_are_the_display_sizes_and_never_upscaled(path: Path) -> None:
    result = _ready(path)
    expected = _expected(path)
    assert (result.width, result.height) == (expected.width, expected.height)
    assert [v.name for v in result.variants] == VARIANT_NAMES

    upload_longest = max(result.width, result.height)
    for variant in result.variants:
        wanted = min(VARIANT_SIZES[variant.name], upload_longest)
        longest = max(variant.width, variant.height)
        # What the cheap step leaves stands for a size within its shortfall.
        assert abs(longest - wanted) <= wanted * CHEAP_STEP_SHORTFALL
        assert longest <= upload_longest
        # Same shape as the upload, give or take rounding of one pixel.
        assert abs(variant.width * result.height - variant.height * result.width) <= (
            max(result.width, result.height)
        )
        decoded = _decode(variant)
        assert decoded.size == (variant.width, variant.height)
        assert Image.MIME[decoded.format or ""] == variant.content_type
        assert (
            variant.extension
            == {"image/jpeg": "jpg", "image/webp": "webp"}[variant.content_type]
        )
        assert bool(getattr(decoded, "is_animated", False)) is result.animated


@pytest.mark.parametrize("path", _ready_paths(), ids=_ids(_ready_paths()))
def test_blurhash_is_a_valid_4x3_hash(path: Path) -> None:
    value = _ready(path).blurhash
    assert len(value) == BLURHASH_LENGTH
    assert blurhash.components(value) == (4, 3)
    assert len(blurhash.decode(value, 8, 6)) == 6


@pytest.mark.parametrize(
    "name", ["animated_42frames.gif", "animated_42frames.webp", "animated_apng.png"]
)
def test_animations_keep_their_frames_timing_and_loop(name: str) -> None:
    with Image.open(EDGE_CASES / name) as source:
        source_frames = _frame_count(source)
        source_loop = source.info.get("loop")
        source_durations = []
        for index in range(source_frames):
            source.seek(index)
            source.load()
            source_durations.append(source.info.get("duration") or 0)
    # Browsers play frames of 10 ms or less for 100 ms, and so must we.
    played = [d if d > 10 else 100 for d in source_durations]

    output = _decode(_variant(_ready(EDGE_CASES / name), "large"))
    assert output.format == "WEBP"
    assert _frame_count(output) == source_frames
    durations = []
    for index in range(source_frames):
        output.seek(index)
        output.load()
        durations.append(output.info["duration"])
    assert durations == pytest.approx(played, abs=1)
    assert output.info["loop"] == source_loop


@pytest.mark.parametrize(
    ("container", "expected_loop"),
    [("AVIF", 0), ("GIF", 1)],
)
def test_an_animation_without_a_loop_count_plays_as_browsers_play_it(
    tmp_path: Path, container: str, expected_loop: int
) -> None:
    """Found by a trial: an animated AVIF, which Pillow reads no loop count
    from and browsers play for ever, came out playing once. A GIF without
    the NETSCAPE extension plays once, as browsers play it."""
    frames = [Image.new("RGB", (64, 48), (40 * i, 90, 200 - 40 * i)) for i in range(5)]
    path = tmp_path / f"animation.{container.lower()}"
    frames[0].save(
        path, container, save_all=True, append_images=frames[1:], duration=200
    )
    with Image.open(path) as source:
        assert "loop" not in source.info
    output = _decode(_variant(_ready(path), "large"))
    assert _frame_count(output) == 5
    assert output.info["loop"] == expected_loop


def test_transparency_survives() -> None:
    output = _decode(_variant(_ready(EDGE_CASES / "png_palette_trns.png"), "large"))
    assert output.mode == "RGBA"
    assert output.getchannel("A").histogram()[0] > 0


def test_sixteen_bit_grey_is_scaled_not_clipped() -> None:
    # The file's 16-bit values stay below 256, i.e. near black. Clipping to
    # 8 bits instead of scaling would paint them in every shade up to white.
    output = _decode(_variant(_ready(EDGE_CASES / "png_16bit_gray_trns.png"), "large"))
    assert output.mode == "RGBA"
    assert not any(output.getchannel("R").histogram()[9:])
    assert output.getchannel("A").histogram()[0] > 0


# -- big photos are scaled down first ------------------------------------------
#
# A big photo is shrunk while it is decoded (JPEG) or right after, and only
# the shrunk copy is turned upright and converted to sRGB. These tests make
# JPEGs in the shapes that take each path out of the real 13 MP photo.

OPPO = CAMERA / "oppo_r7plus_gps_13mp.jpg"


def _save_jpeg(im: Image.Image, path: Path, **params: object) -> Path:
    im.save(path, "JPEG", quality=92, **params)
    return path


def _stored_on_its_side(tmp_path: Path) -> tuple[Path, Image.Image]:
    """The 3120x4160 photo as a phone held upright stores it: 4160x3120 with
    EXIF orientation 6, GPS and all."""
    with Image.open(OPPO) as upright:
        upright.load()
        exif = upright.getexif()
        exif[ExifTags.Base.Orientation] = 6
        stored = upright.transpose(Image.Transpose.ROTATE_90)
        path = _save_jpeg(stored, tmp_path / "on_its_side.jpg", exif=exif.tobytes())
        return path, upright.convert("RGB")


def test_a_photo_decoded_at_half_size_is_turned_and_stripped(tmp_path: Path) -> None:
    path, upright = _stored_on_its_side(tmp_path)
    with Image.open(path) as stored:
        assert stored.size == (4160, 3120)

    result = process_image(path, LIMITS)

    assert (result.width, result.height) == (3120, 4160)
    sizes = {v.name: (v.width, v.height) for v in result.variants}
    # The half-size decode stands for the large size: within 1/32 of 2048 px,
    # and a filter pass to exactly 2048 would cost a third of the CPU.
    assert sizes == {"small": (240, 320), "medium": (810, 1080), "large": (1560, 2080)}
    for variant in result.variants:
        _assert_no_metadata(variant)
        assert _difference(_decode(variant), upright) < SAME_PICTURE_TOLERANCE


def test_a_photo_just_short_of_halving_keeps_its_half_size_decode_as_large(
    tmp_path: Path,
) -> None:
    # 4000 px halves to 2000, 2.3% short of 2048: the decode stops there,
    # rather than decoding all 12 MP, and stands for the large size as it is.
    with Image.open(OPPO) as photo:
        landscape = photo.transpose(Image.Transpose.ROTATE_90).crop(
            (80, 60, 4080, 3060)
        )
    path = _save_jpeg(landscape, tmp_path / "4000x3000.jpg")

    result = process_image(path, LIMITS)

    large = _decode(_variant(result, "large"))
    assert large.size == (2000, 1500)
    reference = landscape.resize(large.size, Image.Resampling.LANCZOS)
    assert _difference(large, reference) < SAME_PICTURE_TOLERANCE


# Flat patches of colour, as a P3 camera stores them; sRGB needs other
# numbers for the same colours, up to 30 levels apart.
P3_PATCHES = [(200, 100, 50), (60, 160, 90), (90, 80, 200), (128, 128, 128)]


def test_wide_gamut_colours_are_converted_after_scaling(tmp_path: Path) -> None:
    with Image.open(EDGE_CASES / "heic_iphone8_gps.heic") as heic:
        display_p3 = heic.info["icc_profile"]
    patch = 1050
    photo = Image.new("RGB", (patch * len(P3_PATCHES), 3150))
    for index, colour in enumerate(P3_PATCHES):
        photo.paste(colour, (index * patch, 0, (index + 1) * patch, 3150))
    path = _save_jpeg(photo, tmp_path / "p3.jpg", icc_profile=display_p3)

    small = _decode(_variant(process_image(path, LIMITS), "small")).convert("RGB")

    to_srgb = ImageCms.buildTransform(
        ImageCms.ImageCmsProfile(io.BytesIO(display_p3)),
        ImageCms.createProfile("sRGB"),
        "RGB",
        "RGB",
    )
    largest_change = 0
    for index, colour in enumerate(P3_PATCHES):
        expected = ImageCms.applyTransform(Image.new("RGB", (1, 1), colour), to_srgb)
        assert expected is not None
        want = expected.getpixel((0, 0))
        assert isinstance(want, tuple)
        got = small.getpixel(((2 * index + 1) * small.width // 8, small.height // 2))
        assert isinstance(got, tuple)
        assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 3, (
            colour,
            got,
            want,
        )
        largest_change = max(
            largest_change, *(abs(w - c) for w, c in zip(want, colour, strict=True))
        )
    assert largest_change > 10  # the test would notice a missing conversion


def test_transparent_pixels_do_not_tint_the_edges_when_scaled(tmp_path: Path) -> None:
    # Invisible red beside opaque white. Averaged without premultiplying by
    # alpha, the red would show as a pink fringe along the edge.
    image = Image.new("RGBA", (3000, 2000), (255, 0, 0, 0))
    image.paste((255, 255, 255, 255), (1501, 0, 3000, 2000))  # off the blocks
    path = tmp_path / "edge.png"
    image.save(path, compress_level=1)

    for variant in process_image(path, LIMITS).variants:
        decoded = _decode(variant)
        assert decoded.mode == "RGBA"
        alpha = decoded.getchannel("A")
        assert alpha.getextrema() == (0, 255)
        red, green, _, _ = decoded.split()
        tint = ImageChops.subtract(red, green)
        seen = ImageChops.multiply(tint, alpha.point(lambda a: 255 if a > 16 else 0))
        assert seen.getextrema()[1] <= 24, variant.name


# -- limits -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "limits", "status", "code"),
    [
        (
            "camera-exif/orientation_1_landscape.jpg",
            ImageLimits(max_bytes=1000),
            413,
            "file_too_large",
        ),
        (
            "camera-exif/orientation_1_landscape.jpg",
            ImageLimits(max_pixels=1800 * 1200 - 1),
            413,
            "too_many_pixels",
        ),
        (
            "edge-cases/animated_42frames.gif",
            ImageLimits(max_frames=41),
            413,
            "too_many_frames",
        ),
        (
            "edge-cases/animated_42frames.gif",
            ImageLimits(max_total_pixels=42 * 245 * 245 - 1),
            413,
            "animation_too_large",
        ),
    ],
)
def test_limits_are_enforced_before_and_after_upload(
    name: str, limits: ImageLimits, status: int, code: str
) -> None:
    path = FIXTURES / name
    with pytest.raises(ImageRejected) as rejected:
        inspect_header(path, limits)
    assert (rejected.value.status, rejected.value.code) == (status, code)
    with pytest.raises(ImageFailed):
        process_image(path, limits)


def test_limits_at_the_exact_size_accept() -> None:
    limits = ImageLimits(max_frames=42, max_total_pixels=42 * 245 * 245)
    header = inspect_header(EDGE_CASES / "animated_42frames.gif", limits)
    assert (header.format, header.frames, header.content_type) == (
        "gif",
        42,
        "image/gif",
    )


# A GIF built block by block: the screen (1x1, two-colour palette), then
# whatever blocks a test gives, then the trailer.
_GIF_SCREEN = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\xff\xff\xff\x00\x00\x00"
_GIF_DELAY = b"!\xf9\x04\x00\x0a\x00\x00\x00"  # 100 ms, no transparency
# One 1x1 frame: its descriptor, LZW's code size, one data sub-block, the end.
_GIF_FRAME = b",\x00\x00\x00\x00\x01\x00\x01\x00\x00" + b"\x02\x02D\x01\x00"
_GIF_LOCAL_PALETTE_FRAME = (
    b",\x00\x00\x00\x00\x01\x00\x01\x00\x80" + b"\x00\x00\x00\xff\x00\x00"
) + b"\x02\x02D\x01\x00"
_GIF_LOOP = b"!\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"
_GIF_COMMENT = b"!\xfe\x05hello\x03dog\x00"


class _FurthestRead(io.BytesIO):
    """Remembers how far into the file anyone has read or seeked."""

    furthest = 0

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.furthest = max(self.furthest, self.tell())
        return data


def test_a_gif_of_very_many_frames_is_refused_without_walking_them_all(
    tmp_path: Path,
) -> None:
    # 100,000 empty frames: Pillow's own count walks every one, which took
    # 3.6 s of the request for a million (found by a trial).
    gif = _GIF_SCREEN + (_GIF_DELAY + _GIF_FRAME) * 100_000 + b";"
    path = tmp_path / "many.gif"
    path.write_bytes(gif)
    with pytest.raises(ImageRejected) as rejected:
        inspect_header(path, LIMITS)
    assert (rejected.value.status, rejected.value.code) == (413, "too_many_frames")
    assert f"more than {LIMITS.max_frames} frames" in rejected.value.detail

    fp = _FurthestRead(gif)
    with pytest.raises(ImageRejected):
        _read_header(fp, "gif", LIMITS)
    frame = len(_GIF_DELAY + _GIF_FRAME)
    assert fp.furthest < len(_GIF_SCREEN) + (LIMITS.max_frames + 2) * frame
    assert fp.furthest < len(gif) // 100


def _png_chunk(kind: bytes, body: bytes = b"") -> bytes:
    checksum = zlib.crc32(kind + body)
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", checksum)


_PNG_HEADER = b"\x89PNG\r\n\x1a\n" + _png_chunk(
    b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
)
_PNG_PIXELS = _png_chunk(b"IDAT", zlib.compress(bytes(4))) + _png_chunk(b"IEND")
_PNG_EMPTY_CHUNK = _png_chunk(b"quIt")


def _tiny_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 120, 40)).save(out, "JPEG")
    return out.getvalue()


_JPEG = _tiny_jpeg()


# Files made of millions of tiny pieces, each of which costs Pillow's walk a
# step in Python (found by trials: 9.4 s of CPU to open 24 MB of empty PNG
# chunks, 11 s for 20 MB of JPEG fill bytes, 3.6 s to count a million
# empty GIF frames).
TINY_PIECES = {
    "gif: one-byte data blocks": (
        "gif",
        _GIF_SCREEN + _GIF_FRAME[:-5] + b"\x02" + b"\x01D" * 1_000_000 + b"\x00;",
    ),
    "gif: empty comments first": (
        "gif",
        _GIF_SCREEN + b"!\xfe\x00" * 700_000 + _GIF_FRAME + b";",
    ),
    "gif: empty comments after": (
        "gif",
        _GIF_SCREEN + _GIF_FRAME + b"!\xfe\x00" * 700_000 + b";",
    ),
    "gif: stray bytes first": (
        "gif",
        _GIF_SCREEN + bytes(2_000_000) + _GIF_FRAME + b";",
    ),
    "gif: stray bytes after": (
        "gif",
        _GIF_SCREEN + _GIF_FRAME + b"\x07" * 2_000_000 + b";",
    ),
    "png: empty chunks first": (
        "png",
        _PNG_HEADER + _PNG_EMPTY_CHUNK * 200_000 + _PNG_PIXELS,
    ),
    "jpeg: empty comments first": (
        "jpeg",
        _JPEG[:2] + b"\xff\xfe\x00\x02" * 600_000 + _JPEG[2:],
    ),
    "jpeg: fill bytes first": ("jpeg", _JPEG[:2] + b"\xff" * 2_400_000 + _JPEG[2:]),
}


@pytest.mark.parametrize("name", TINY_PIECES)
def test_a_file_of_very_many_tiny_pieces_is_refused_without_walking_them_all(
    name: str, tmp_path: Path
) -> None:
    image_format, data = TINY_PIECES[name]
    fp = _FurthestRead(data)
    with pytest.raises(ImageRejected) as rejected:
        _read_header(fp, image_format, LIMITS)
    assert (rejected.value.status, rejected.value.code) == (422, "unreadable_image")
    assert "pieces" in rejected.value.detail
    assert fp.furthest < len(data) // 10
    path = tmp_path / f"pieces.{image_format}"
    path.write_bytes(data)
    with pytest.raises(ImageFailed, match="pieces"):
        process_image(path, LIMITS)


def test_a_png_of_very_many_tiny_chunks_after_its_pixels_fails_to_process(
    tmp_path: Path,
) -> None:
    # Pillow reads the chunks after the pixels only as it decodes them, in
    # the job: the header is an honest one.
    pixels, end = _PNG_PIXELS[:-12], _PNG_PIXELS[-12:]
    path = tmp_path / "after.png"
    path.write_bytes(_PNG_HEADER + pixels + _PNG_EMPTY_CHUNK * 300_000 + end)
    assert inspect_header(path, LIMITS).frames == 1

    with pytest.raises(ImageFailed, match="pieces"):
        process_image(path, LIMITS)


def _spinner(image_format: str) -> bytes:
    """300 frames of 16x16, a few dozen bytes each, as Pillow writes them."""
    frames = [
        Image.new("RGB", (16, 16), (i % 256, (7 * i) % 256, (13 * i) % 256))
        for i in range(LIMITS.max_frames)
    ]
    out = io.BytesIO()
    frames[0].save(
        out, image_format, save_all=True, append_images=frames[1:], duration=40, loop=0
    )
    return out.getvalue()


SMALL_ANIMATIONS = {
    "gif": lambda: _spinner("GIF"),
    "png": lambda: _spinner("PNG"),
    "webp": lambda: _spinner("WEBP"),
    # A delay and a comment to each 1x1 frame: about 4,000 reads to decode
    # 10 KB, more than its size alone would allow.
    "gif with comments": lambda: (
        _GIF_SCREEN
        + _GIF_LOOP
        + (_GIF_DELAY + _GIF_COMMENT + _GIF_FRAME) * LIMITS.max_frames
        + b";"
    ),
}


@pytest.mark.parametrize("name", SMALL_ANIMATIONS)
def test_a_small_animation_of_the_most_frames_is_processed(
    name: str, tmp_path: Path
) -> None:
    # Its reads are counted against its frames too, not only its size (a
    # first count by size alone refused the last of these).
    path = tmp_path / "animation"
    path.write_bytes(SMALL_ANIMATIONS[name]())

    result = process_image(path, LIMITS)

    assert result.animated
    with Image.open(io.BytesIO(_variant(result, "large").data)) as webp:
        # The WebP encoder merges frames that are alike, as the last's are.
        assert webp.n_frames == (1 if "comments" in name else LIMITS.max_frames)


@pytest.mark.parametrize("animation_frames", [1, 2, LIMITS.max_frames])
def test_an_apng_default_image_is_not_one_of_its_frames(
    animation_frames: int, tmp_path: Path
) -> None:
    # The default image is for viewers that show no animation (found by a
    # trial: 300 frames and a default image were refused as 301 frames).
    default = Image.new("RGB", (24, 24), (255, 0, 0))
    frames = [
        Image.new("RGB", (24, 24), (0, (40 + 7 * i) % 256, 255))
        for i in range(animation_frames)
    ]
    path = tmp_path / "default.png"
    default.save(
        path,
        "PNG",
        save_all=True,
        append_images=frames,
        default_image=True,
        duration=50,
    )

    header = inspect_header(path, LIMITS)
    result = process_image(path, LIMITS)

    assert header.frames == animation_frames
    assert result.animated == (animation_frames > 1)
    with Image.open(io.BytesIO(_variant(result, "large").data)) as shown:
        for index in range(getattr(shown, "n_frames", 1)):
            shown.seek(index)
            red, _, blue = shown.convert("RGB").getpixel((12, 12))
            # Never the red default image.
            assert red < 40, index
            assert blue > 200, index


def _progressive_jpeg() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 130, 140)).save(out, "JPEG", progressive=True)
    return out.getvalue()


def _with_scans(total: int, straddling: bool) -> bytes:
    """A progressive JPEG whose last scan is repeated to ``total`` scans;
    with ``straddling``, the second scan's marker lies across the 1 MB
    boundary at which the count reads the file."""
    honest = _progressive_jpeg()
    first = honest.index(b"\xff\xda")
    first_scan_data = first + 2 + int.from_bytes(honest[first + 2 : first + 4], "big")
    second = honest.index(b"\xff\xda", first_scan_data)
    last = honest.rindex(b"\xff\xda")
    end = honest.rindex(b"\xff\xd9")
    # Zeros in the first scan's data move the later scans along.
    filler = (1 << 20) - (second - first_scan_data) - 1 if straddling else 0
    extra = total - honest[:end].count(b"\xff\xda")
    return (
        honest[:second]
        + bytes(filler)
        + honest[second:end]
        + honest[last:end] * extra
        + honest[end:]
    )


@pytest.mark.parametrize("straddling", [False, True])
def test_a_jpeg_of_very_many_scans_is_refused(straddling: bool) -> None:
    # Each scan walks the whole picture (found by a trial: 76,923 scans in
    # 2 MB took 105 s of the photo job).
    at_the_limit = _with_scans(MAX_JPEG_SCANS, straddling)
    assert _read_header(io.BytesIO(at_the_limit), "jpeg", LIMITS).frames == 1

    with pytest.raises(ImageRejected) as rejected:
        _read_header(
            io.BytesIO(_with_scans(MAX_JPEG_SCANS + 1, straddling)), "jpeg", LIMITS
        )
    assert (rejected.value.status, rejected.value.code) == (422, "unreadable_image")
    assert "scans" in rejected.value.detail


def _with_a_segment_before_the_second_scan(jpeg: bytes, segment: bytes) -> bytes:
    second = jpeg.index(b"\xff\xda", jpeg.index(b"\xff\xda") + 2)
    return jpeg[:second] + segment + jpeg[second:]


@pytest.mark.parametrize("marker", [b"\xff\xfe", b"\xff\xe5", b"\xff\xc4"])
def test_a_segment_between_scans_is_skipped_by_its_length(marker: bytes) -> None:
    # Found by a trial: an end of image inside a comment (or an APP5, or a
    # Huffman table) between scans hid the scans after it from a count that
    # stopped at the first one.
    hiding = marker + b"\x00\x06" + b"x\xff\xd9y"
    too_many = _with_scans(MAX_JPEG_SCANS + 1, straddling=False)
    with pytest.raises(ImageRejected, match="scans"):
        _read_header(
            io.BytesIO(_with_a_segment_before_the_second_scan(too_many, hiding)),
            "jpeg",
            LIMITS,
        )
    # Nor is a scan marker inside one a scan.
    holding = marker + b"\x00\x0a" + b"\xff\xda" * 4
    at_the_limit = _with_scans(MAX_JPEG_SCANS, straddling=False)
    header = _read_header(
        io.BytesIO(_with_a_segment_before_the_second_scan(at_the_limit, holding)),
        "jpeg",
        LIMITS,
    )
    assert header.frames == 1


def test_a_jpeg_scan_count_stops_at_the_picture_end() -> None:
    # What follows the end (an MPO's other picture, a phone's video) is not
    # the picture's.
    honest = _progressive_jpeg()
    trailer = (b"\xff\xda" + bytes(10)) * (2 * MAX_JPEG_SCANS)
    assert _read_header(io.BytesIO(honest + trailer), "jpeg", LIMITS).frames == 1


def test_an_animation_of_huge_frames_is_brought_down_frame_by_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Found by a trial: the job kept eight 25 MP frames of a 140 KB GIF at
    # full size, 1.2 GB, and converted each there; brought down first, the
    # frames held 400 MB (measured apart: a peak in a suite shared with
    # other work is no figure to assert). What is asserted is the order:
    # no frame is converted at more than the largest size.
    frames = []
    for i in range(3):
        frame = Image.new("P", (3000, 2500), 0)
        frame.putpalette([0, 0, 0, 255, 255, 255])
        frame.paste(1, (i * 300, i * 300, i * 300 + 1000, i * 300 + 1000))
        frames.append(frame)
    path = tmp_path / "huge.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    converted: list[tuple[int, int]] = []
    convert = imaging._to_srgb

    def recording(im: Image.Image, icc_profile: object) -> Image.Image:
        converted.append(im.size)
        return convert(im, icc_profile)

    monkeypatch.setattr(imaging, "_to_srgb", recording)

    result = process_image(path, LIMITS)

    assert result.animated
    assert [(v.width, v.height) for v in result.variants] == [
        (320, 267),
        (1080, 900),
        (2048, 1707),
    ]
    assert converted == [(2048, 1707)] * 3


def _gif_frame_block(frame: Image.Image, left: int = 0, top: int = 0) -> bytes:
    """``frame`` as one image block of a GIF, its palette its own."""
    out = io.BytesIO()
    frame.save(out, "GIF")
    data = out.getvalue()
    palette_size = 3 << ((data[10] & 7) + 1)
    palette = data[13 : 13 + palette_size]
    image = data.index(b",", 13 + palette_size)
    width, height = frame.size
    return (
        b","
        + struct.pack("<HHHH", left, top, width, height)
        + bytes([0x80 | (data[10] & 7)])
        + palette
        + data[image + 10 : -1]
    )


def test_a_gif_frame_reaching_past_the_pixel_limit_is_refused() -> None:
    # Found by a trial: a 9400x9400 frame on a 200x100 screen passed a check
    # of the screen alone, and the job took 1.1 GB to decode it.
    first = Image.new("P", (200, 100), 0)
    out = io.BytesIO()
    first.save(out, "GIF")
    screen = out.getvalue()[:-1]
    huge = (
        b"," + struct.pack("<HHHH", 0, 0, 9400, 9400) + b"\x00" + b"\x02\x02D\x01\x00"
    )
    with pytest.raises(ImageRejected) as rejected:
        _read_header(io.BytesIO(screen + huge + b";"), "gif", LIMITS)
    assert (rejected.value.status, rejected.value.code) == (413, "too_many_pixels")
    assert "9400x9400" in rejected.value.detail


def test_a_gif_frame_reaching_past_the_screen_is_cropped_not_squashed(
    tmp_path: Path,
) -> None:
    # Found by a trial: a 600x600 frame on a 200x100 screen was squashed to
    # 200x100; what is shown is the screen, as browsers show it.
    first = Image.new("RGB", (200, 100), (255, 0, 0)).quantize(2)
    big = Image.new("RGB", (600, 600), (0, 0, 255))
    big.paste((0, 255, 0), (0, 0, 100, 600))  # green at the left
    out = io.BytesIO()
    first.save(out, "GIF", duration=100, loop=0)
    screen = out.getvalue()[:-1]
    path = tmp_path / "past.gif"
    path.write_bytes(screen + _gif_frame_block(big.quantize(4)) + b";")

    header = inspect_header(path, LIMITS)
    result = process_image(path, LIMITS)

    assert (header.width, header.height, header.frames) == (200, 100, 2)
    assert (result.width, result.height, result.animated) == (200, 100, True)
    with Image.open(io.BytesIO(_variant(result, "large").data)) as shown:
        shown.seek(1)
        frame = shown.convert("RGB")
        assert frame.size == (200, 100)
        # Cropped, the green band keeps its 100 px; squashed, it had 33.
        assert frame.getpixel((80, 50))[1] > 200
        assert frame.getpixel((150, 50))[2] > 200


def test_a_large_gif_of_ordinary_blocks_is_walked_whole() -> None:
    # 300 frames of 60 KB, their data in blocks of 255 bytes as encoders
    # write it, a delay and a comment each: just under the limits.
    data = (b"\xff" + bytes(255)) * 240 + b"\x00"
    frame = _GIF_DELAY + b"!\xfe\x05hello\x00" + _GIF_FRAME[:-5] + b"\x02" + data
    gif = _GIF_SCREEN + _GIF_LOOP + frame * LIMITS.max_frames + b";"
    assert len(gif) > 18_000_000

    header = _read_header(_FurthestRead(gif), "gif", LIMITS)

    assert header.frames == LIMITS.max_frames


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param(_GIF_FRAME, id="one frame"),
        pytest.param(_GIF_LOOP + (_GIF_DELAY + _GIF_FRAME) * 7, id="looping"),
        pytest.param(
            _GIF_COMMENT + _GIF_FRAME + _GIF_COMMENT + _GIF_LOCAL_PALETTE_FRAME,
            id="comments and a local palette",
        ),
        # Pillow passes over a byte that starts no block; so does our walk.
        pytest.param(_GIF_FRAME + b"\x00\x07" + _GIF_FRAME, id="stray bytes"),
        pytest.param(_GIF_DELAY + _GIF_FRAME + _GIF_DELAY, id="a delay and no frame"),
    ],
)
def test_the_gif_walk_counts_frames_as_pillow_does(blocks: bytes) -> None:
    gif = _GIF_SCREEN + blocks + b";"
    with Image.open(io.BytesIO(gif)) as im:
        pillow_count = im.n_frames
    header = _read_header(io.BytesIO(gif), "gif", LIMITS)
    assert header.frames == pillow_count
    at_the_limit = ImageLimits(max_frames=pillow_count)
    assert _read_header(io.BytesIO(gif), "gif", at_the_limit).frames == pillow_count
    if pillow_count > 1:
        with pytest.raises(ImageRejected) as rejected:
            _read_header(
                io.BytesIO(gif), "gif", ImageLimits(max_frames=pillow_count - 1)
            )
        assert rejected.value.code == "too_many_frames"


@pytest.mark.parametrize(
    ("content", "detail_mentions"),
    [
        (b"", "empty"),
        (b"Hello, this is a text file and not a photo of a dog.\n", "not a"),
        (b"BM" + bytes(100), "BMP"),
        (b"%PDF-1.7\n" + bytes(100), "PDF"),
    ],
)
def test_non_images_are_refused_as_unsupported(
    tmp_path: Path, content: bytes, detail_mentions: str
) -> None:
    path = tmp_path / "upload.jpg"  # the name must not matter
    path.write_bytes(content)
    with pytest.raises(ImageRejected) as rejected:
        inspect_header(path, LIMITS)
    assert (rejected.value.status, rejected.value.code) == (
        415,
        "unsupported_media_type",
    )
    assert detail_mentions in rejected.value.detail
    with pytest.raises(ImageFailed):
        process_image(path, LIMITS)


def test_a_missing_file_fails_processing_with_a_reason(tmp_path: Path) -> None:
    with pytest.raises(ImageFailed) as failed:
        process_image(tmp_path / "gone", LIMITS)
    assert "missing" in failed.value.reason


# -- sniffing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("camera-exif/orientation_1_landscape.jpg", "jpeg"),
        ("edge-cases/mpo_stereo_2frames.mpo", "jpeg"),
        ("edge-cases/png_palette_trns.png", "png"),
        ("edge-cases/animated_apng.png", "png"),
        ("edge-cases/animated_42frames.gif", "gif"),
        ("edge-cases/animated_42frames.webp", "webp"),
        ("edge-cases/webp_exif_ori6_gps.webp", "webp"),
        ("edge-cases/heic_iphone8_gps.heic", "heif"),
        ("edge-cases/heic_exif_at_end_gps.heic", "heif"),
        ("edge-cases/avif_irot_imir.avif", "avif"),
        ("edge-cases/bmp_cat_1_2MB.bmp", None),
    ],
)
def test_sniff_format_of_real_files(name: str, expected: str | None) -> None:
    with (FIXTURES / name).open("rb") as fp:
        assert sniff_format(fp.read(32)) == expected


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"", None),
        (b"\xff\xd8", None),
        (b"just some text, maybe a caption\n", None),
        (b"<svg xmlns='http://www.w3.org/2000/svg'>", None),
        (b"RIFF\x00\x00\x00\x00AVI LIST", None),
        # An MP4 video is an ISO box file too, with a video brand.
        (b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom", None),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1avif", "avif"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "heif"),
        (b"\x00\x00\x00\x18ftypavis\x00\x00\x00\x00avismsf1", "avif"),
        (b"GIF87a\x01\x00\x01\x00", "gif"),
    ],
)
def test_sniff_format_of_crafted_heads(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def test_sniff_format_reads_only_the_first_32_bytes() -> None:
    assert sniff_format(bytes(32) + b"\x89PNG\r\n\x1a\n") is None


MAGIC_PREFIXES = [
    b"\xff\xd8\xff",
    b"\x89PNG\r\n\x1a\n",
    b"GIF89a",
    b"RIFF\x00\x01\x00\x00WEBPVP8 ",
    b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic",
    b"\x00\x00\x00\x18ftypavif\x00\x00\x00\x00avifmif1",
]
# Small enough that a header claiming a huge canvas is refused, not decoded.
FUZZ_LIMITS = ImageLimits(max_pixels=250_000, max_total_pixels=1_000_000)


@settings(
    max_examples=300,
    deadline=None,
    # One file in tmp_path, rewritten by every example, is exactly the point.
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    content=st.one_of(
        st.binary(max_size=200),
        st.tuples(st.sampled_from(MAGIC_PREFIXES), st.binary(max_size=200)).map(
            lambda parts: parts[0] + parts[1]
        ),
    )
)
def test_arbitrary_bytes_only_ever_end_in_our_own_errors(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    try:
        inspect_header(path, FUZZ_LIMITS)
    except ImageRejected as exc:
        rejected_with: int | None = exc.status
    else:
        rejected_with = None
    if rejected_with is not None:
        assert rejected_with in {413, 415, 422}
        return
    # The header passed, so the worker must cope with whatever follows it.
    with contextlib.suppress(ImageFailed):
        process_image(path, FUZZ_LIMITS)
