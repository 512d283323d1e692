"""Image checks for uploads and the processing behind every stored photo.

There are two entry points, with very different costs:

* :func:`inspect_header` runs while the upload request is still open. It
  identifies the file by its magic bytes and reads only the image header, so a
  hostile file is refused (:class:`ImageRejected`, carrying an HTTP status)
  before a single pixel is decoded.
* :func:`process_image` runs in the media worker. It decodes under the same
  limits, turns the picture upright, converts it to 8-bit sRGB and re-encodes
  the display sizes and a full-size "original" without any metadata, so no
  stored file keeps the uploader's GPS position. Anything that goes wrong
  surfaces as :class:`ImageFailed` with a sentence the uploader can read.

Nothing here touches the web framework, the database or storage: the caller
hands in a local path and stores the bytes it gets back.
"""

from __future__ import annotations

import dataclasses
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Final

import blurhash
import pillow_heif
import structlog
from PIL import Image, ImageCms, ImageMath, ImageOps

# Thumbnails, depth maps and auxiliary images inside a HEIC are never used
# here; skipping them keeps the header read cheap.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

log = structlog.get_logger(__name__)

VARIANT_SIZES: Final[dict[str, int]] = {"small": 320, "medium": 720, "large": 1440}

JPEG_QUALITY: Final = 85
WEBP_QUALITY: Final = 85
# Animations are many frames of usually flat artwork; 80 keeps them small
# without visible banding.
WEBP_ANIMATION_QUALITY: Final = 80
BLURHASH_COMPONENTS: Final = (4, 3)
# The blurhash encoder is pure Python and walks every pixel once per
# component, so it gets a thumbnail no bigger than this.
BLURHASH_SOURCE_SIZE: Final = 32
# Measured on an 8 MP phone photo: reduce() then Lanczos differs from a plain
# Lanczos downscale by 0.6/255 on average and takes half the time.
REDUCING_GAP: Final = 1.0
# Browsers show frames of 10 ms or less for 100 ms (GIFs in the wild rely on
# it); the WebP we write must play at the same speed as the upload did.
MIN_FRAME_MS: Final = 11
DEFAULT_FRAME_MS: Final = 100

SNIFF_BYTES: Final = 32


@dataclasses.dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 25 * 1024 * 1024
    # Per frame, width * height. Pillow refuses about 179 MP on its own
    # (DecompressionBombError, reported here as too_many_pixels), so raising
    # this past that changes nothing.
    max_pixels: int = 50_000_000
    max_frames: int = 300
    max_total_pixels: int = 200_000_000  # summed over the frames of an animation


class ImageRejected(Exception):
    """The upload is refused outright; ``status`` is the HTTP status to answer.

    ``code`` is machine-readable (``unsupported_media_type``, ``file_too_large``,
    ``too_many_pixels``, ``too_many_frames``, ``animation_too_large``,
    ``unreadable_image``); ``detail`` is a sentence a person can read.
    """

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


class ImageFailed(Exception):
    """Decoding or processing failed; ``reason`` is shown to the uploader."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ImageHeader:
    """What the header says, before orientation: size as stored in the file.

    ``frames`` is the number of frames we will process: an MPO stereo pair or a
    HEIF image collection counts as one still.
    """

    format: str
    width: int
    height: int
    frames: int
    content_type: str


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    width: int
    height: int
    content_type: str
    extension: str  # without the dot
    data: bytes


@dataclasses.dataclass(frozen=True)
class ProcessedImage:
    variants: list[Variant]  # small, medium, large, original
    blurhash: str
    width: int  # of the upright original
    height: int
    animated: bool


@dataclasses.dataclass(frozen=True)
class _FormatSpec:
    content_type: str
    # Pillow is told to try only the plugin the magic bytes name, so a file
    # cannot reach a decoder we never meant to expose (TIFF, EPS, ...).
    pillow_formats: tuple[str, ...]
    can_animate: bool


_FORMATS: Final[dict[str, _FormatSpec]] = {
    # MPO files start like a JPEG and Pillow's JPEG plugin opens them too.
    "jpeg": _FormatSpec("image/jpeg", ("JPEG",), can_animate=False),
    "png": _FormatSpec("image/png", ("PNG",), can_animate=True),
    "gif": _FormatSpec("image/gif", ("GIF",), can_animate=True),
    "webp": _FormatSpec("image/webp", ("WEBP",), can_animate=True),
    # A HEIF with several top-level images is a collection (burst, stereo),
    # not an animation: the primary image is the photo.
    "heif": _FormatSpec("image/heif", ("HEIF",), can_animate=False),
    "avif": _FormatSpec("image/avif", ("AVIF",), can_animate=True),
}

ACCEPTED_DESCRIPTION: Final = "JPEG, PNG, GIF, WebP, HEIC/HEIF or AVIF"

_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_HEIF_BRANDS: Final = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
)
# Structural brands used by both HEIC and AVIF; the coding brand that tells
# them apart is among the compatible brands.
_GENERIC_HEIF_BRANDS: Final = frozenset({b"mif1", b"msf1", b"miaf"})

# Recognised only to say what the file is when we refuse it.
_REFUSED_MAGIC: Final[tuple[tuple[bytes, str], ...]] = (
    (b"BM", "a BMP image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"%PDF", "a PDF document"),
)


def sniff_format(head: bytes) -> str | None:
    """Name the accepted format the first bytes of a file announce, if any.

    The file name and the client's content type are never consulted: both are
    whatever the client chose to send.
    """
    head = head[:SNIFF_BYTES]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp":
        return _sniff_heif_family(head)
    return None


def _sniff_heif_family(head: bytes) -> str | None:
    box_size = int.from_bytes(head[:4], "big")
    if box_size < 16:
        return None
    major = head[8:12]
    # Compatible brands follow the minor version; those past the bytes we
    # were given are out of reach, which is fine for every real encoder.
    end = min(box_size, len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "avif"
    if major in _HEIF_BRANDS:
        return "heif"
    if major in _GENERIC_HEIF_BRANDS:
        if compatible & _AVIF_BRANDS:
            return "avif"
        return "heif"
    return None


def inspect_header(path: Path, limits: ImageLimits) -> ImageHeader:
    """Check an uploaded file against ``limits`` without decoding its pixels.

    Raises :class:`ImageRejected` for anything we will not process. Errors
    reading ``path`` itself (missing file, I/O error) are the caller's storage
    problem and propagate as ``OSError``.
    """
    with path.open("rb") as fp:
        size = os.fstat(fp.fileno()).st_size
        if size == 0:
            raise ImageRejected(
                415, "unsupported_media_type", "the file is empty, not an image"
            )
        if size > limits.max_bytes:
            raise ImageRejected(
                413,
                "file_too_large",
                f"the file is {size} bytes; the limit is {limits.max_bytes} bytes",
            )
        head = fp.read(SNIFF_BYTES)
        image_format = sniff_format(head)
        if image_format is None:
            raise ImageRejected(415, "unsupported_media_type", _describe_refusal(head))
        fp.seek(0)
        return _read_header(fp, image_format, limits)


def _describe_refusal(head: bytes) -> str:
    for magic, what in _REFUSED_MAGIC:
        if head.startswith(magic):
            return f"the file is {what}; we accept {ACCEPTED_DESCRIPTION} images"
    return f"the file is not a {ACCEPTED_DESCRIPTION} image"


def _read_header(fp: BinaryIO, image_format: str, limits: ImageLimits) -> ImageHeader:
    spec = _FORMATS[image_format]
    try:
        with Image.open(fp, formats=spec.pillow_formats) as im:
            width, height = im.size
            _check_frame_size(width, height, limits)
            frames = _frame_count(im, spec)
    except ImageRejected:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own guard fired while it read the header (the warning only
        # arrives as an exception when warnings are turned into errors).
        raise ImageRejected(
            413, "too_many_pixels", "the image has far too many pixels to process"
        ) from exc
    except Exception as exc:
        # Header parsers raise whatever their format's corner cases produce
        # (SyntaxError, ValueError, struct.error, EOFError, ...); to the
        # uploader they all mean the same thing.
        raise ImageRejected(
            422,
            "unreadable_image",
            f"the file starts like a {image_format.upper()} image but its header "
            "cannot be read",
        ) from exc
    _check_animation_size(width, height, frames, limits)
    return ImageHeader(image_format, width, height, frames, spec.content_type)


def _check_frame_size(width: int, height: int, limits: ImageLimits) -> None:
    if width < 1 or height < 1:
        raise ImageRejected(
            422, "unreadable_image", f"the image claims a size of {width}x{height}"
        )
    if width * height > limits.max_pixels:
        raise ImageRejected(
            413,
            "too_many_pixels",
            f"the image is {width}x{height} pixels; the limit is "
            f"{limits.max_pixels} pixels",
        )


def _frame_count(im: Image.Image, spec: _FormatSpec) -> int:
    if not spec.can_animate:
        return 1
    # For GIF this walks every frame header without decoding any pixels.
    # TODO(gif-frame-walk): a 25 MB GIF of a million empty frames takes ~2 s
    # here; a walk of the GIF blocks that stops at max_frames would retire it.
    return max(1, int(getattr(im, "n_frames", 1)))


def _check_animation_size(
    width: int, height: int, frames: int, limits: ImageLimits
) -> None:
    if frames > limits.max_frames:
        raise ImageRejected(
            413,
            "too_many_frames",
            f"the animation has {frames} frames; the limit is {limits.max_frames}",
        )
    if frames * width * height > limits.max_total_pixels:
        raise ImageRejected(
            413,
            "animation_too_large",
            f"the animation has {frames} frames of {width}x{height} pixels; the "
            f"limit is {limits.max_total_pixels} pixels in all frames together",
        )


def process_image(path: Path, limits: ImageLimits) -> ProcessedImage:
    """Decode, upright, strip and re-encode an accepted upload.

    Raises only :class:`ImageFailed`: the job that calls this marks the media
    ``failed`` with the reason, so every failure has to arrive in that shape.
    """
    try:
        return _process(path, limits)
    except ImageFailed:
        raise
    except ImageRejected as exc:
        raise ImageFailed(exc.detail) from exc
    except MemoryError as exc:
        raise ImageFailed(
            "the image needs more memory to process than we allow"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageFailed("the image has far too many pixels to process") from exc
    except FileNotFoundError as exc:
        raise ImageFailed("the uploaded file is missing from storage") from exc
    except (OSError, SyntaxError, EOFError) as exc:
        # Decoders report truncation and corruption as OSError ("image file
        # is truncated", "broken data stream") or SyntaxError.
        raise ImageFailed("the image file is truncated or corrupt") from exc
    except Exception as exc:
        # A decoder bug must not take the worker down or leave the media stuck
        # in "processing"; it is logged because it is ours to look at.
        log.warning(
            "imaging.unexpected_error", path=str(path), error=repr(exc), exc_info=True
        )
        raise ImageFailed("the image could not be decoded") from exc


def _process(path: Path, limits: ImageLimits) -> ProcessedImage:
    # The header was checked at upload time, but the file has sat in storage
    # since then and the limits may have been tightened.
    header = inspect_header(path, limits)
    with path.open("rb") as fp:
        spec = _FORMATS[header.format]
        with Image.open(fp, formats=spec.pillow_formats) as im:
            if header.frames > 1:
                return _process_animation(im, header.frames)
            return _process_still(im)


def _process_still(im: Image.Image) -> ProcessedImage:
    # An MPO's first frame is the ordinary photo; the second is the other eye.
    im.load()
    # In place: a second full-size copy of a 50 MP photo is 150 MB for nothing.
    ImageOps.exif_transpose(im, in_place=True)
    upright = _to_srgb_8bit(im)
    encode = _encode_jpeg if upright.mode == "RGB" else _encode_webp
    return _render(
        [upright], lambda name, frames: encode(name, frames[0]), animated=False
    )


def _process_animation(im: Image.Image, frame_count: int) -> ProcessedImage:
    frames: list[Image.Image] = []
    durations: list[int] = []
    for index in range(frame_count):
        im.seek(index)
        im.load()  # WebP fills in the frame's duration only here
        frames.append(_to_srgb_8bit(ImageOps.exif_transpose(im), keep_alpha=True))
        durations.append(_frame_duration(im.info.get("duration")))
    loop = _loop_count(im)
    return _render(
        frames,
        lambda name, scaled: _encode_animated_webp(name, scaled, durations, loop),
        animated=True,
    )


def _frame_duration(value: object) -> int:
    if not isinstance(value, int | float) or value < MIN_FRAME_MS:
        return DEFAULT_FRAME_MS
    return int(value)


def _loop_count(im: Image.Image) -> int:
    loop = im.info.get("loop")
    if isinstance(loop, int) and loop >= 0:
        return loop
    # A GIF without the NETSCAPE extension plays once; 0 would mean forever.
    return 1


def _render(
    frames: list[Image.Image],
    encode: Callable[[str, list[Image.Image]], Variant],
    *,
    animated: bool,
) -> ProcessedImage:
    """Encode the original, then each display size from the next larger one.

    A still is a list of one frame. Scaling from the previous step rather
    than from the original keeps each resize to a factor of about two, where
    reduce() does most of the work cheaply. A size that would not shrink
    reuses the previous encoding: we never upscale.
    """
    width, height = frames[0].size
    previous = encode("original", frames)
    made = [previous]
    for name, longest in sorted(VARIANT_SIZES.items(), key=lambda item: -item[1]):
        size = _fitted_size(width, height, longest)
        if size == frames[0].size:
            previous = dataclasses.replace(previous, name=name)
        else:
            frames = [_resize(frame, size) for frame in frames]
            previous = encode(name, frames)
        made.append(previous)
    made.reverse()
    return ProcessedImage(
        variants=made,
        blurhash=_blurhash(frames[0]),  # the smallest size, already made
        width=width,
        height=height,
        animated=animated,
    )


def _resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    return im.resize(size, Image.Resampling.LANCZOS, reducing_gap=REDUCING_GAP)


def _fitted_size(width: int, height: int, longest: int) -> tuple[int, int]:
    if max(width, height) <= longest:
        return width, height
    scale = longest / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_srgb_8bit(im: Image.Image, *, keep_alpha: bool = False) -> Image.Image:
    """Return an 8-bit sRGB image in RGB or RGBA, with no metadata attached.

    Alpha that is opaque everywhere is dropped (unless ``keep_alpha``), so a
    photo saved as RGBA PNG still becomes a JPEG.
    """
    icc_profile = im.info.get("icc_profile")
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = _wide_gray_to_8bit(im)
    if im.mode not in ("RGB", "RGBA", "L", "CMYK"):
        im = im.convert("RGBA" if _has_alpha(im) else "RGB")
    if isinstance(icc_profile, bytes) and icc_profile:
        im = _apply_icc_profile(im, icc_profile)
    if im.mode in ("L", "CMYK"):
        # CMYK without a usable profile gets Pillow's naive conversion; there
        # is no better guess without knowing the press it was separated for.
        im = im.convert("RGB")
    if im.mode == "RGBA" and not keep_alpha and _is_opaque(im):
        im = im.convert("RGB")
    if keep_alpha and im.mode == "RGB":
        im = im.convert("RGBA")
    # convert(), transpose() and the colour transform all copy info; JPEG
    # would even write a stored comment back out. Nothing leaves with it.
    im.info = {}
    return im


def _is_opaque(im: Image.Image) -> bool:
    return im.getchannel("A").getextrema() == (255, 255)


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info


def _wide_gray_to_8bit(im: Image.Image) -> Image.Image:
    """Scale 16-bit grey down to 8 bits, keeping tRNS transparency.

    Pillow's own conversion clips everything above 255 to white instead of
    scaling, which turns most 16-bit images into a blank page.
    """
    wide = im if im.mode == "I" else im.convert("I")
    # point() on a 32-bit image only scales; the values then fit in "L".
    gray = wide.point(lambda value: value * (1 / 257)).convert("L")
    transparent = im.info.get("transparency")
    if not isinstance(transparent, int):
        return gray
    alpha = ImageMath.lambda_eval(
        lambda args: args["convert"](
            args["notequal"](args["im"], transparent) * 255, "L"
        ),
        im=wide,
    )
    return Image.merge("LA", (gray, alpha))


def _apply_icc_profile(im: Image.Image, icc_profile: bytes) -> Image.Image:
    """Convert ``im`` from its embedded profile to sRGB, if it needs it.

    A profile that is broken or does not match the pixel data is ignored
    rather than failing the upload: the colours will be a little off, which is
    what every browser shows for that file too.
    """
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        if "srgb" in ImageCms.getProfileDescription(source).lower():
            # The usual camera and editor profile; converting it to itself
            # costs ~15 ns a pixel for no change.
            return im
        space = source.profile.xcolor_space.strip()
        if im.mode not in _MODES_FOR_COLOR_SPACE.get(space, ()):
            log.info("imaging.icc_profile_ignored", mode=im.mode, color_space=space)
            return im
        out_mode = "RGBA" if im.mode == "RGBA" else "RGB"
        transform = ImageCms.buildTransform(
            source, ImageCms.createProfile("sRGB"), im.mode, out_mode
        )
        converted = ImageCms.applyTransform(im, transform)
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        log.info("imaging.icc_profile_ignored", error=repr(exc))
        return im
    return converted if converted is not None else im


_MODES_FOR_COLOR_SPACE: Final[dict[str, tuple[str, ...]]] = {
    "RGB": ("RGB", "RGBA"),
    "GRAY": ("L",),
    "CMYK": ("CMYK",),
}


def _encode_jpeg(name: str, im: Image.Image) -> Variant:
    buffer = io.BytesIO()
    im.save(
        buffer,
        "JPEG",
        quality=JPEG_QUALITY,
        optimize=True,
        progressive=True,
    )
    return Variant(name, im.width, im.height, "image/jpeg", "jpg", buffer.getvalue())


def _encode_webp(name: str, im: Image.Image) -> Variant:
    buffer = io.BytesIO()
    im.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
    return Variant(name, im.width, im.height, "image/webp", "webp", buffer.getvalue())


def _encode_animated_webp(
    name: str, frames: Sequence[Image.Image], durations: list[int], loop: int
) -> Variant:
    buffer = io.BytesIO()
    first = frames[0]
    first.save(
        buffer,
        "WEBP",
        save_all=True,
        append_images=list(frames[1:]),
        duration=durations,
        loop=loop,
        quality=WEBP_ANIMATION_QUALITY,
        method=4,
    )
    return Variant(
        name, first.width, first.height, "image/webp", "webp", buffer.getvalue()
    )


def _blurhash(im: Image.Image) -> str:
    tiny = im.copy()
    tiny.thumbnail((BLURHASH_SOURCE_SIZE, BLURHASH_SOURCE_SIZE), Image.Resampling.BOX)
    if tiny.mode == "RGBA":
        # Placeholders sit on the app's light background.
        backdrop = Image.new("RGB", tiny.size, (255, 255, 255))
        backdrop.paste(tiny, mask=tiny.getchannel("A"))
        tiny = backdrop
    raw = tiny.convert("RGB").tobytes()
    width, height = tiny.size
    rows = [
        [list(raw[(y * width + x) * 3 : (y * width + x) * 3 + 3]) for x in range(width)]
        for y in range(height)
    ]
    x_components, y_components = BLURHASH_COMPONENTS
    return str(blurhash.encode(rows, x_components, y_components))
