"""Image checks for uploads and the processing behind every stored photo.

There are two entry points, with very different costs:

* :func:`inspect_header` runs while the upload request is still open. It
  identifies the file by its magic bytes and reads only the image header, so a
  hostile file is refused (:class:`ImageRejected`, carrying an HTTP status)
  before a single pixel is decoded.
* :func:`process_image` runs in the media worker. It decodes under the same
  limits, turns the picture upright, converts it to 8-bit sRGB and encodes
  the display sizes without any metadata, so no stored file keeps the
  uploader's GPS position; the largest size is all that is kept of the
  upload. Anything that goes wrong surfaces as :class:`ImageFailed` with a
  sentence the uploader can read.

Nothing here touches the web framework, the database or storage: the caller
hands in a local path and stores the bytes it gets back.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import BinaryIO, Final, cast

import blurhash
import pillow_heif
import structlog
from PIL import ExifTags, Image, ImageCms, ImageMath

# Thumbnails, depth maps and auxiliary images inside a HEIC are never used
# here; skipping them keeps the header read cheap.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

log = structlog.get_logger(__name__)

# Pillow warns of an image between about 89 and 179 megapixels as it opens
# it, and the warning went to the server's log as a bare line (found by a
# trial). Every such image is past our own limit (``ImageLimits``), and is
# refused with a 413 all the same: as an error, it is refused with no line.
warnings.filterwarnings("error", category=Image.DecompressionBombWarning)

# The largest is all we keep of an upload: no full-size copy is stored.
VARIANT_SIZES: Final[dict[str, int]] = {"small": 320, "medium": 1080, "large": 2048}

JPEG_QUALITY: Final = 85
WEBP_QUALITY: Final = 85
# Animations are many frames of usually flat artwork; 80 keeps them small
# without visible banding.
WEBP_ANIMATION_QUALITY: Final = 80
BLURHASH_COMPONENTS: Final = (4, 3)
# The blurhash encoder is pure Python and walks every pixel once per
# component, so it gets a thumbnail no bigger than this.
BLURHASH_SOURCE_SIZE: Final = 32
# Scaling down is done in two steps. The cheap one averages whole blocks of
# pixels: libjpeg's scaled decode (1/2, 1/4, 1/8) or reduce(). It may stop up
# to this fraction short of the size wanted, so that a 4032 px photo still
# halves to 2016 px on its way to 2048. The last step is one pass of
# RESAMPLING, made only if the picture is not already within this fraction
# of the size wanted, either side: the large size of a 4032 px photo is its
# half-size decode, 2016 px, and of a 4160 px one 2080 px. On the 13 MP
# fixture a pass from 2080 to exactly 2048 px cost 30 to 37 ms, a third of
# the photo's CPU, and softened it: 33 dB PSNR from a Lanczos downscale of
# the full photo to 2048 px, against 42 dB for the decode as it comes.
CHEAP_STEP_SHORTFALL: Final = 1 / 32
# Hamming costs what bilinear costs and keeps edges sharper. Measured on the
# 13 MP fixture (benchmarks/image_processing.py): at 1080 px it stays within
# 39 dB PSNR of a Lanczos downscale from the full photo; bicubic (41 dB) would
# add about 25 ms of CPU to the photo, Lanczos (47 dB) about 50 ms.
RESAMPLING: Final = Image.Resampling.HAMMING
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
    variants: list[Variant]  # small, medium, large
    blurhash: str
    width: int  # of the upright upload, which no variant may exceed
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
    gif = _walk_gif(fp, limits) if image_format == "gif" else None
    size = fp.seek(0, os.SEEK_END)
    fp.seek(0)
    counted = _CountedReads(fp, _HEADER_READS + size // _HEADER_BYTES_PER_READ)
    try:
        with Image.open(counted.as_file(), formats=spec.pillow_formats) as im:
            width, height = im.size
            _check_frame_size(width, height, limits)
            frames = gif.frames if gif and gif.frames else _frame_count(im, spec)
            if image_format == "jpeg":
                _check_jpeg_scans(fp)
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
    if gif is not None:
        # Every frame is decoded onto the canvas the furthest one reaches.
        _check_animation_size(gif.width, gif.height, frames, limits)
    else:
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
    """The frames a viewer shows. A GIF's are counted by _walk_gif; the
    other formats say theirs, and an APNG may have a default image besides,
    for viewers that show no animation, which Pillow counts as frame 0."""
    if not spec.can_animate:
        return 1
    return max(1, int(getattr(im, "n_frames", 1)) - _first_frame(im))


def _first_frame(im: Image.Image) -> int:
    # Pillow's PNG reader says whether the default image is one of the
    # animation's frames or an image of its own (found by a trial: an APNG
    # of 300 frames was refused as 301, and its default image was shown as
    # the first frame).
    return 1 if getattr(im, "default_image", False) else 0


# Pillow reads headers in Python, and the blocks between a GIF's frames and
# a PNG's chunks after its pixels too: one read of the file or more for each
# marker, chunk, block or byte that starts none, a few microseconds each,
# and a file can be made of millions of tiny ones. Found by trials: 24 MB of
# empty PNG chunks took 9.4 s of CPU to open, 20 MB of JPEG fill bytes 11 s,
# a GIF of a million empty frames 3.6 s to count, all in the upload request.
# So each file is read through _CountedReads, which refuses it past what an
# honest one needs. A header takes a few reads per marker or chunk, and
# big ones (ICC profiles, EXIF, XMP) come in pieces of up to 64 KB.
_HEADER_READS: Final = 4096
_HEADER_BYTES_PER_READ: Final = 16_384
# Decoding reads the pixels 64 KB at a time, a PNG's in its chunks (8 KB
# from most encoders, three reads each), and seeking to a GIF's next frame
# walks the last one's data again, two reads per block of 255 bytes; each
# frame's own blocks take a dozen reads more.
_DECODE_BYTES_PER_READ: Final = 32
_DECODE_READS_PER_FRAME: Final = 64
_TOO_MANY_PIECES: Final = "the file is cut into far more pieces than an image needs"


class _CountedReads:
    """A file that refuses (:class:`ImageRejected`) its ``most``-th read."""

    def __init__(self, fp: BinaryIO, most: int) -> None:
        self._fp = fp
        self._left = most

    def read(self, size: int = -1) -> bytes:
        self._left -= 1
        if self._left < 0:
            raise ImageRejected(422, "unreadable_image", _TOO_MANY_PIECES)
        return self._fp.read(size)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self._fp.seek(offset, whence)

    def tell(self) -> int:
        return self._fp.tell()

    def as_file(self) -> BinaryIO:
        # What Pillow uses of a file: read, seek and tell.
        return cast(BinaryIO, self)


# A progressive JPEG is decoded a scan at a time, and each scan walks the
# whole picture: honest encoders write about ten (libjpeg's default script)
# and rarely more than a few dozen, but a scan can be a few bytes long
# (found by a trial: a 2 MB file of 76,923 scans of a 12 MP picture took
# 105 s of the photo job's CPU). Decoders guard against it by a limit of
# this kind.
MAX_JPEG_SCANS: Final = 100
_SCAN: Final = 0xDA
_END_OF_IMAGE: Final = 0xD9
# Markers with no length after them: the arithmetic coder's TEM, restarts,
# start of image. (A stuffed 0x00 and fill 0xFF are never taken for one.)
_STANDALONE_MARKERS: Final = frozenset({0x01, *range(0xD0, 0xD9)})
# What a decoder takes for a marker in entropy-coded data.
_MARKER: Final = re.compile(rb"\xff[\x01-\xcf\xd8-\xfe]")


def _check_jpeg_scans(fp: BinaryIO) -> None:
    """Refuse a JPEG of more than ``MAX_JPEG_SCANS`` scans.

    Markers are found as a decoder finds them, from the start of image to
    its end: inside entropy-coded data a 0xFF byte is always followed by 0,
    a restart marker or another 0xFF, so the first byte pair that is none of
    these is a marker, and every segment (tables, a comment, EXIF) is
    skipped by its length, whatever bytes it holds (found by a trial: an
    end-of-image marker inside a comment between scans hid 5,000 scans from
    a count that stopped at the first one, and 8 s of the job). So an EXIF
    thumbnail, a JPEG of its own inside a segment, is not counted, nor an
    MPO's second picture or a phone's video after the end.
    """
    start = fp.tell()
    try:
        fp.seek(0)
        data = fp.read()
    finally:
        fp.seek(start)
    scans = 0
    position = 2  # past the start of image
    while marker := _MARKER.search(data, position):
        code = data[marker.start() + 1]
        position = marker.end()
        if code == _END_OF_IMAGE:
            return
        if code in _STANDALONE_MARKERS:
            continue
        length = int.from_bytes(data[position : position + 2], "big")
        if length < 2:
            return  # the decoder's to refuse
        position += length
        if code == _SCAN:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise ImageRejected(
                    422,
                    "unreadable_image",
                    f"the JPEG is written in more than {MAX_JPEG_SCANS} scans; "
                    "encoders write about ten",
                )


# Our own walk of a GIF, as Pillow would walk it, both to count its frames
# no further than one past the limit and to stop where a GIF of the limit's
# frames and of its size would have ended: a step for every 128 bytes
# (encoders write image data in blocks of 255) and 16 for each frame's own
# blocks (its delay, a comment, its image).
_GIF_BYTES_PER_STEP: Final = 128
_GIF_STEPS_PER_FRAME: Final = 16


@dataclasses.dataclass
class _GifShape:
    frames: int
    # What Pillow decodes every frame onto: the screen, grown to reach the
    # furthest frame (found by a trial: a 9400x9400 frame on a 200x100
    # screen passed a check of the screen alone, and took 1.1 GB).
    width: int
    height: int


def _walk_gif(fp: BinaryIO, limits: ImageLimits) -> _GifShape:
    """Count a GIF's frames and measure the canvas they are decoded onto;
    refuse one of more frames than the limit, a frame reaching past the
    pixel limit, or far more blocks than its frames and bytes need.

    Blocks are walked as Pillow's GIF reader does: an extension's or an
    image's data is skipped by its sub-blocks' lengths, a byte that starts
    no block is passed over, and the trailer or the file's end stops the
    walk, as does a frame cut short (Pillow's to refuse or to decode what it
    can). The file's position is put back.
    """
    start = fp.tell()
    try:
        size = fp.seek(0, os.SEEK_END)
        steps = size // _GIF_BYTES_PER_STEP + _GIF_STEPS_PER_FRAME * (
            limits.max_frames + 1
        )
        fp.seek(6)  # the signature
        screen = fp.read(7)
        shape = _GifShape(0, _u16(screen, 0), _u16(screen, 2))
        if len(screen) == 7 and screen[4] & 0x80:
            fp.seek(3 << ((screen[4] & 7) + 1), os.SEEK_CUR)  # global palette
        while steps > 0:
            steps -= 1
            introducer = fp.read(1)
            if not introducer or introducer == b";":
                return shape
            if introducer == b",":
                shape.frames += 1
                if shape.frames > limits.max_frames:
                    raise ImageRejected(
                        413,
                        "too_many_frames",
                        f"the animation has more than {limits.max_frames} "
                        f"frames; the limit is {limits.max_frames}",
                    )
                descriptor = fp.read(9)
                if len(descriptor) < 9:
                    shape.frames -= 1
                    return shape
                right = _u16(descriptor, 0) + _u16(descriptor, 4)
                bottom = _u16(descriptor, 2) + _u16(descriptor, 6)
                if right * bottom > limits.max_pixels:
                    raise ImageRejected(
                        413,
                        "too_many_pixels",
                        f"a frame of the animation reaches {right}x{bottom} "
                        f"pixels; the limit is {limits.max_pixels} pixels",
                    )
                shape.width = max(shape.width, right)
                shape.height = max(shape.height, bottom)
                if descriptor[8] & 0x80:
                    fp.seek(3 << ((descriptor[8] & 7) + 1), os.SEEK_CUR)
                fp.seek(1, os.SEEK_CUR)  # LZW's minimum code size
            elif introducer == b"!":
                fp.seek(1, os.SEEK_CUR)  # the extension's label
            else:
                continue
            while steps > 0 and (length := fp.read(1)) and length != b"\0":
                steps -= 1
                fp.seek(length[0], os.SEEK_CUR)
        raise ImageRejected(422, "unreadable_image", _TOO_MANY_PIECES)
    finally:
        fp.seek(start)


def _u16(data: bytes, offset: int) -> int:
    """A GIF's little-endian 16-bit number; 0 where the data ends early."""
    return int.from_bytes(data[offset : offset + 2], "little")


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
        size = os.fstat(fp.fileno()).st_size
        counted = _CountedReads(
            fp,
            _HEADER_READS
            + size // _DECODE_BYTES_PER_READ
            + _DECODE_READS_PER_FRAME * header.frames,
        )
        with Image.open(counted.as_file(), formats=spec.pillow_formats) as im:
            first = _first_frame(im)
            if header.frames > 1:
                return _process_animation(im, first, header.frames)
            im.seek(first)
            return _process_still(im)


def _process_still(im: Image.Image) -> ProcessedImage:
    """Scale down first, then turn and colour-convert only what is kept.

    Every step after the decode costs in proportion to the pixels it touches,
    so the photo is first brought near the largest display size, cheaply,
    and only then turned upright and converted to sRGB: for a 12 MP photo
    that is a quarter of the pixels.
    """
    stored_width, stored_height = im.size
    largest = _fitted_size(stored_width, stored_height, max(VARIANT_SIZES.values()))
    # JPEG (and MPO) only: libjpeg scales while it decodes, by the largest of
    # 1/2, 1/4 and 1/8 that keeps at least the size asked for. HEIF would
    # decode an embedded thumbnail instead, but we open it without them;
    # other formats ignore the call.
    im.draft(None, _cheap_step_floor(largest))
    # An MPO's first frame is the ordinary photo; the second is the other eye.
    im.load()
    turn = _orientation(im)
    icc_profile = im.info.get("icc_profile")
    pixels = _to_8bit(im)
    pixels = _shrink_cheaply(pixels, largest)
    if pixels.width * pixels.height > 2 * largest[0] * largest[1]:
        # Photos of 2048 to 3968 px cannot be halved on the way to 2048 px.
        # Turning and converting all of it would cost more than the filter
        # pass to the largest size, so that comes first; the smaller sizes
        # are then made from it, one pass softer.
        pixels = _resize(pixels, largest)
    width, height = stored_width, stored_height
    if turn is not None:
        pixels = pixels.transpose(turn)
        if turn in _TURNS_ON_ITS_SIDE:
            width, height = height, width
    upright = _to_srgb(pixels, icc_profile)
    encode = _encode_jpeg if upright.mode == "RGB" else _encode_webp
    return _render(
        [upright],
        lambda name, frames: encode(name, frames[0]),
        width=width,
        height=height,
        animated=False,
    )


# What EXIF orientations 2 to 8 ask for (1 is "as stored"). HEIF and AVIF
# irot/imir boxes reach us as one of these too.
_ORIENTATIONS: Final[dict[int, Image.Transpose]] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_TURNS_ON_ITS_SIDE: Final = frozenset(
    {
        Image.Transpose.TRANSPOSE,
        Image.Transpose.ROTATE_270,
        Image.Transpose.TRANSVERSE,
        Image.Transpose.ROTATE_90,
    }
)


def _orientation(im: Image.Image) -> Image.Transpose | None:
    # The same reading as ImageOps.exif_transpose, which we cannot use here:
    # it turns the decoded image, and we turn the scaled-down copy.
    orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
    return _ORIENTATIONS.get(orientation) if isinstance(orientation, int) else None


def _process_animation(im: Image.Image, first: int, frame_count: int) -> ProcessedImage:
    """Each frame is brought down to the largest display size as it is
    decoded, and only then turned and converted, as a still is: eight
    frames of 25 MP held 1.4 GB of full-size copies, and converting them
    cost most of the job's CPU (found by a trial)."""
    stored_width, stored_height = im.size
    largest = _fitted_size(stored_width, stored_height, max(VARIANT_SIZES.values()))
    frames: list[Image.Image] = []
    durations: list[int] = []
    turn: Image.Transpose | None = None
    for index in range(first, first + frame_count):
        im.seek(index)
        im.load()  # WebP fills in the frame's duration only here
        turn = _orientation(im)
        icc_profile = im.info.get("icc_profile")
        frame = _to_8bit(im, keep_alpha=True)
        if frame.size != (stored_width, stored_height):
            # A GIF's frame reaching past the screen grows Pillow's canvas;
            # what is shown is the first frame's canvas, as browsers show
            # it (found by a trial: the later frames were squashed into it).
            frame = frame.crop((0, 0, stored_width, stored_height))
        frame = _resize(frame, largest)
        if frame is im:
            frame = im.copy()  # the decoder's own, which the next seek overwrites
        if turn is not None:
            frame = frame.transpose(turn)
        frame = _to_srgb(frame, icc_profile)
        frames.append(frame.convert("RGBA") if frame.mode == "RGB" else frame)
        durations.append(_frame_duration(im.info.get("duration")))
    loop = _loop_count(im)
    width, height = stored_width, stored_height
    if turn in _TURNS_ON_ITS_SIDE:
        width, height = height, width
    return _render(
        frames,
        lambda name, scaled: _encode_animated_webp(name, scaled, durations, loop),
        width=width,
        height=height,
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
    if im.format == "GIF":
        # A GIF without the NETSCAPE extension plays once; 0 means forever.
        return 1
    # Pillow reads no count from an animated AVIF, which browsers play
    # for ever unless its edit list says otherwise: it played once here
    # (found by a trial). APNG and WebP always give theirs.
    return 0


def _render(
    source: list[Image.Image],
    encode: Callable[[str, list[Image.Image]], Variant],
    *,
    width: int,
    height: int,
    animated: bool,
) -> ProcessedImage:
    """Encode each display size of ``source``, largest first.

    A still is a list of one frame. ``width`` and ``height`` are those of the
    upright upload, which ``source`` may already be scaled down from (but
    never by more than the cheap step's shortfall below the largest size).
    A size at most half the previous one is made from that; any other from
    ``source``, so no picture goes through two passes of the filter that
    each soften it. A picture within the cheap step's shortfall of a size,
    either side, stands for it as it is (see ``CHEAP_STEP_SHORTFALL``); a
    size the previous one already stands for reuses its encoding: we never
    upscale.
    """
    made: list[Variant] = []
    frames = source
    for name, longest in sorted(VARIANT_SIZES.items(), key=lambda item: -item[1]):
        size = _fitted_size(width, height, longest)
        if made and _stands_for(frames[0].size, size):
            made.append(dataclasses.replace(made[-1], name=name))
            continue
        if not _stands_for(frames[0].size, size):
            base = frames if _is_at_least_twice(frames[0].size, size) else source
            frames = [_resize(frame, size) for frame in base]
        made.append(encode(name, frames))
    made.reverse()
    return ProcessedImage(
        variants=made,
        blurhash=_blurhash(frames[0]),  # the smallest size, already made
        width=width,
        height=height,
        animated=animated,
    )


def _is_at_least_twice(have: tuple[int, int], want: tuple[int, int]) -> bool:
    return have[0] >= 2 * want[0] and have[1] >= 2 * want[1]


def _resize(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    im = _shrink_cheaply(im, size)
    if _stands_for(im.size, size):
        return im
    return im.resize(size, RESAMPLING)


def _stands_for(have: tuple[int, int], want: tuple[int, int]) -> bool:
    """Whether a picture of size ``have`` may be kept as a size ``want``:
    each side within the cheap step's shortfall of the wanted one."""
    return all(
        abs(side - wanted) <= wanted * CHEAP_STEP_SHORTFALL
        for side, wanted in zip(have, want, strict=True)
    )


def _cheap_step_floor(size: tuple[int, int]) -> tuple[int, int]:
    """The smallest size the cheap step may leave on the way to ``size``."""
    keep = 1 - CHEAP_STEP_SHORTFALL
    return math.ceil(size[0] * keep), math.ceil(size[1] * keep)


def _shrink_cheaply(im: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Average blocks of pixels down towards ``size``, if a whole factor fits.

    The same rule as the JPEG draft: the largest factor that keeps at least
    :func:`_cheap_step_floor` of ``size``.
    """
    floor_width, floor_height = _cheap_step_floor(size)
    factor = min(im.width // floor_width, im.height // floor_height)
    # reduce() averages RGBA with premultiplied alpha, as resize() does.
    return im.reduce(factor) if factor >= 2 else im


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
    im = _to_srgb(_to_8bit(im, keep_alpha=keep_alpha), icc_profile)
    if keep_alpha and im.mode == "RGB":
        im = im.convert("RGBA")
    return im


def _to_8bit(im: Image.Image, *, keep_alpha: bool = False) -> Image.Image:
    """Bring any decoded mode to 8-bit L, CMYK, RGB or RGBA, colours untouched.

    These are the modes resizing and the ICC transform work in; alpha that is
    opaque everywhere is dropped here (unless ``keep_alpha``), before any
    resizing has to carry it.
    """
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        im = _wide_gray_to_8bit(im)
    if im.mode not in ("RGB", "RGBA", "L", "CMYK"):
        im = im.convert("RGBA" if _has_alpha(im) else "RGB")
    if im.mode == "RGBA" and not keep_alpha and _is_opaque(im):
        im = im.convert("RGB")
    return im


def _to_srgb(im: Image.Image, icc_profile: object) -> Image.Image:
    """Convert an image from :func:`_to_8bit` to sRGB RGB(A), without metadata.

    ``icc_profile`` is the one the upload carried: resizing and turning may
    have copied it along, but the caller read it before either.
    """
    if isinstance(icc_profile, bytes) and icc_profile:
        im = _apply_icc_profile(im, icc_profile)
    if im.mode in ("L", "CMYK"):
        # CMYK without a usable profile gets Pillow's naive conversion; there
        # is no better guess without knowing the press it was separated for.
        im = im.convert("RGB")
    # convert(), resize(), transpose() and the colour transform all copy
    # info; JPEG would even write a stored comment back out. Nothing leaves
    # with it.
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
    im.save(buffer, "JPEG", quality=JPEG_QUALITY)
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
