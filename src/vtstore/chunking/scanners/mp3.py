"""MPEG audio (MP3): ID3v2 tags, frames, trailing tags.

Proposes the end of a leading ID3v2 tag (where the audio starts, so a tag edit
leaves every audio block intact), frame starts at most one per `2 * avg_size`
bytes (counted from the audio start, so the choice is the same whatever the
tag), and the start of a trailing APE or ID3v1 tag.
"""

from __future__ import annotations

from vtstore.chunking.scanners.base import LOOKAHEAD, ParserScanner

__all__ = ["MP3Scanner", "frame_length"]

# bitrates in kbit/s: [version is MPEG1][layer 1..3][index]
_BITRATES = {
    (True, 1): (0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def frame_length(hdr: bytes) -> int:
    """The length in bytes of the MPEG audio frame whose 4-byte header is `hdr`, or 0."""
    if len(hdr) < 4 or hdr[0] != 0xFF or hdr[1] & 0xE0 != 0xE0:
        return 0
    version = (hdr[1] >> 3) & 3  # 3: MPEG1, 2: MPEG2, 0: MPEG2.5, 1: reserved
    layer = 4 - ((hdr[1] >> 1) & 3)  # 1..3; 4 is reserved
    bri = hdr[2] >> 4
    sri = (hdr[2] >> 2) & 3
    pad = (hdr[2] >> 1) & 1
    if version == 1 or layer == 4 or bri in (0, 15) or sri == 3:
        return 0
    mpeg1 = version == 3
    bitrate = _BITRATES[(mpeg1, layer)][bri] * 1000
    rate = _RATES[version][sri]
    if layer == 1:
        return (12 * bitrate // rate + pad) * 4
    if layer == 3 and not mpeg1:
        return 72 * bitrate // rate + pad
    return 144 * bitrate // rate + pad


#: frame length by header bytes 1-2 (at most 65,536 entries)
_LENGTHS: dict[int, int] = {}
_RESYNC = LOOKAHEAD  # a frame found in this window is proposed in time


def _find_frames(buf: bytes) -> int:
    """Offset in `buf` of a frame header followed by another one, or -1."""
    i = buf.find(b"\xff")
    while 0 <= i < len(buf) - 4:
        n = frame_length(buf[i : i + 4])
        if n and (i + n + 4 > len(buf) or frame_length(buf[i + n : i + n + 4])):
            return i
        i = buf.find(b"\xff", i + 1)
    return -1


def _syncsafe(b: bytes) -> int:
    return (b[0] & 0x7F) << 21 | (b[1] & 0x7F) << 14 | (b[2] & 0x7F) << 7 | (b[3] & 0x7F)


class MP3Scanner(ParserScanner):
    """ID3v2 tag end, spaced frame starts, trailing APE/ID3v1 tags."""

    name = "mp3"

    def parse(self):
        # any number of leading ID3v2 tags, walked a window at a time
        last = 0
        while True:
            win = yield self.peek(LOOKAHEAD)
            base, n, i = self.pos, len(win), 0
            while n - i >= 10 and win[i : i + 3] == b"ID3" and win[i + 3] != 0xFF:
                if base + i > last:  # not already proposed as the previous tag's end
                    self.propose(base + i)
                i += 10 + _syncsafe(win[i + 6 : i + 10]) + (10 if win[i + 5] & 0x10 else 0)
                if i > n:
                    break  # the tag runs past the window
                last = base + i
                self.propose(last)
            if not i:
                break
            yield self.skip(i)
            if self.pos != base + i:
                return  # the stream ended inside the tag
            if last != self.pos:
                last = self.pos
                self.propose(last)
        # the audio may start after some padding: look for two frames in a row
        head = yield self.peek(_RESYNC)
        k = _find_frames(head)
        if k < 0:
            return
        if k:
            yield self.skip(k)
            self.propose(self.pos)
        spacing = 2 * self.params.avg_size
        last = self.pos
        # frames walked a window at a time (a request per window, not per
        # frame: a frame may be 24 bytes); frame lengths depend on header
        # bytes 1-2 only, so they are looked up in a table filled as met
        lengths = _LENGTHS
        while True:
            win = yield self.peek(LOOKAHEAD)
            base, n, i = self.pos, len(win), 0
            while n - i >= 4:
                if win[i] != 0xFF:
                    break
                key = win[i + 1] << 8 | win[i + 2]
                fl = lengths.get(key)
                if fl is None:
                    fl = lengths[key] = frame_length(win[i : i + 4])
                if not fl:
                    break
                if base + i - last >= spacing:
                    last = base + i
                    self.propose(last)
                i += fl
            if not i:
                break
            yield self.skip(i)
            if self.pos != base + i:
                return  # the stream ended inside a frame
        # what follows the last frame: a trailing tag is worth its own block
        tail = yield self.peek(8)
        if tail[:8] == b"APETAGEX" or tail[:3] == b"TAG" or tail[:3] == b"ID3":
            if self.pos > last:
                self.propose(self.pos)
