"""Header sniffing: what a file is, from its first bytes, before any decoder sees it.

    head = check_file(Path("x.png"))        # first 16 bytes, or a one-line ImageryError (missing, empty, a dir)
    kind = sniff(head)                      # "png" | "jpeg" | "tiff" | None
    w, h, count, dtype = cv2_header(Path("x.png"), kind)   # from the header bytes alone, no decode

A decoder is only handed a file whose first bytes match what its suffix promises; PNG chunks are walked (lengths
and CRCs) before libpng sees them, so a truncated or corrupt PNG is our one-line error, not libpng's.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np

from edgecc.errors import ImageryError

TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
TIFF_SUFFIXES = {".tif", ".tiff"}
CV2_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def check_file(p: Path) -> bytes:
    """Return the first 16 bytes of `p`, or raise a one-line ImageryError saying why the file is unusable."""
    if not p.exists():
        raise ImageryError(f"{p}: no such file")
    if p.is_dir():
        raise ImageryError(f"{p}: is a directory, not an image file")
    if not p.is_file():
        raise ImageryError(f"{p}: not a regular file")
    try:
        size = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(16)
    except OSError as e:
        raise ImageryError(f"{p}: cannot be read ({e.strerror or e})") from e
    if size == 0:
        raise ImageryError(f"{p}: empty file (0 bytes)")
    return head


def sniff(head: bytes) -> str | None:
    """"png", "jpeg" or "tiff" from a file's first bytes; None for anything else."""
    if head.startswith(PNG_MAGIC):
        return "png"
    if head.startswith(JPEG_MAGIC):
        return "jpeg"
    if head.startswith(TIFF_MAGIC):
        return "tiff"
    return None


def describe_bytes(head: bytes) -> str:
    """A few words on what a file that is not the expected image starts with (text, or its first bytes in hex)."""
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return f"starts with bytes {head[:8].hex(' ')}"
    if text.isprintable() or all(c.isprintable() or c.isspace() for c in text):
        return f"looks like text: {text.strip()[:16]!r}"
    return f"starts with bytes {head[:8].hex(' ')}"


def cv2_header(p: Path, kind: str) -> tuple[int, int, int, str]:
    """A PNG's or JPEG's (width, height, bands, dtype) from its header bytes alone (no decode); alpha is a mask,
    not a band."""
    if kind == "png":
        with open(p, "rb") as f:
            ihdr = f.read(33)
        if len(ihdr) < 29 or ihdr[12:16] != b"IHDR":
            raise ImageryError(f"{p}: corrupt PNG (no IHDR header)")
        w, h, depth, color = struct.unpack(">IIBB", ihdr[16:26])
        count = {0: 1, 2: 3, 3: 3, 4: 1, 6: 3}.get(color, 3)
        return w, h, count, "uint16" if depth == 16 else "uint8"
    w, h, count = _jpeg_size(p)
    return w, h, count, "uint8"


def _jpeg_size(p: Path) -> tuple[int, int, int]:
    with open(p, "rb") as f:
        f.seek(2)
        while True:
            marker = f.read(2)
            if len(marker) < 2 or marker[0] != 0xFF:
                break
            while marker[1] == 0xFF:  # fill bytes before a marker code are allowed (ITU T.81 B.1.1.2)
                nxt = f.read(1)
                if not nxt:
                    raise ImageryError(f"{p}: corrupt JPEG (no frame header found)")
                marker = marker[:1] + nxt
            if marker[1] in (0xD8, 0x01) or 0xD0 <= marker[1] <= 0xD7:
                continue
            seg = f.read(2)
            if len(seg) < 2:
                break
            n = struct.unpack(">H", seg)[0]
            if marker[1] in _JPEG_SOF:
                body = f.read(6)
                if len(body) < 6:
                    break
                _, h, w, comps = struct.unpack(">BHHB", body)
                return w, h, (1 if comps == 1 else 3)
            if n < 2:  # a segment length counts its own two bytes: less is corrupt
                break
            f.seek(n - 2, os.SEEK_CUR)
    raise ImageryError(f"{p}: corrupt JPEG (no frame header found)")


def check_png(p: Path, data: np.ndarray) -> None:
    """If uint8 `data` is a PNG, walk its chunks: ImageryError on truncation or a CRC error (libpng would print its
    own line on stderr for these, beside ours)."""
    if data[:8].tobytes() != PNG_MAGIC:
        return
    mv, pos = memoryview(data), 8
    while True:
        if pos + 12 > len(mv):
            raise ImageryError(f"{p}: not a readable image (truncated PNG: it ends at byte {len(mv)}, no IEND chunk)")
        n, kind = struct.unpack(">I4s", mv[pos : pos + 8])
        kind, end = _chunk_name(kind), pos + 12 + n
        if end > len(mv):
            raise ImageryError(f"{p}: not a readable image (truncated PNG: the {kind} chunk at byte {pos} runs to "
                               f"byte {end}, the file has {len(mv)})")
        if zlib.crc32(mv[pos + 4 : end - 4]) != struct.unpack(">I", mv[end - 4 : end])[0]:
            raise ImageryError(f"{p}: not a readable image (corrupt PNG: CRC error in the {kind} chunk at byte {pos})")
        if kind == "IEND":
            return
        pos = end


def _chunk_name(kind: bytes) -> str:
    """A PNG chunk type for a message: 'IDAT', or its hex when it is not four letters (never a line break)."""
    return kind.decode("ascii") if kind.isalpha() else f"0x{kind.hex()}"


_TIFF_TYPE_BYTES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8,
                    18: 8}  # TIFF field type -> bytes per value (16-18: BigTIFF's 8-byte integers)


def check_tiff(p: Path, max_ifds: int = 256) -> None:
    """Walk a TIFF's directories (classic or BigTIFF): ImageryError when a directory or a tag's data lies past the
    end of the file, or the directories loop. libtiff would allocate what such a tag claims (up to 4 GB x the
    sample size) before finding out; every honest tag's data is inside the file, so this bounds it by the file."""
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(16)
        if len(head) < 8:
            raise _bad_tiff(p, f"header cut short: {len(head)} bytes")
        e = "<" if head[:2] == b"II" else ">"
        big = head[2:4] in (b"+\x00", b"\x00+")
        if big:
            if len(head) < 16:
                raise _bad_tiff(p, "BigTIFF header cut short")
            off, count_fmt, n_fmt, entry, inline = struct.unpack(e + "Q", head[8:16])[0], "Q", "Q", 20, 8
        else:
            off, count_fmt, n_fmt, entry, inline = struct.unpack(e + "I", head[4:8])[0], "I", "H", 12, 4
        nsize, psize = struct.calcsize(n_fmt), inline
        seen: set[int] = set()
        for k in range(max_ifds):
            if off == 0 and k > 0:
                return
            if off in seen:
                raise _bad_tiff(p, f"directory at byte {off} loops back")
            seen.add(off)
            if off + nsize > size:
                raise _bad_tiff(p, f"directory at byte {off}, the file has {size}")
            f.seek(off)
            n = struct.unpack(e + n_fmt, f.read(nsize))[0]
            if n == 0 or off + nsize + n * entry + psize > size:
                raise _bad_tiff(p, f"directory at byte {off} with {n} entries runs past the end of the file, "
                                   f"{size} bytes")
            table = f.read(n * entry + psize)
            for i in range(n):
                rec = table[i * entry : (i + 1) * entry]
                tag, typ = struct.unpack(e + "HH", rec[:4])
                count = struct.unpack(e + count_fmt, rec[4 : 4 + inline])[0]
                nbytes = count * _TIFF_TYPE_BYTES.get(typ, 0)  # unknown types are skipped by libtiff
                if nbytes > inline:
                    at = struct.unpack(e + count_fmt, rec[4 + inline :])[0]
                    if at + nbytes > size:
                        raise _bad_tiff(p, f"tag {tag} claims {nbytes} bytes at byte {at}, the file has {size}")
            off = struct.unpack(e + count_fmt, table[n * entry :])[0]


def _bad_tiff(p: Path, why: str) -> ImageryError:
    return ImageryError(f"{p}: not a readable image (corrupt TIFF: {why})")
