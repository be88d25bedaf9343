"""Fuzz the text transcription parser (`transcribe.parse_all`) and the command
line's ref parser (`cli.refs.parse_ref`, which takes `x-vt:` forms and paths
after a ref), seeded with the text of every block kind and every dirent type.
The harness adds text-shaped mutations: digit runs of 20 to 5,000 digits and a
value nested inside itself 50 or 2,000 times."""

from __future__ import annotations

from vtstore.cli.refs import parse_ref
from vtstore.transcribe import parse_all

from .test_fuzz_blockref import blocks
from .test_fuzz_dirent import dirents


def _seeds() -> list[str]:
    out = [str(b) for b in blocks()] + [str(d) for d in dirents()]
    out += ["x-vt:/" + str(d) + "/sub/path" for d in dirents()[:4]]
    out += ["x-vt:" + str(b) for b in blocks()[:4]]
    out += ['[1,-2,"s",{a:null,b:true,c:false},[]]', "{}"]
    return out


def _parse(text: str):
    if text.startswith(("x-vt:", "D{", "F{")):
        return parse_ref(text)
    return parse_all(text)


def test_fuzz_parse_transcription(fuzz):
    res = fuzz(_parse, _seeds())
    assert res.failures == [], res.summary()
    assert res.accepted > 0 and res.rejected > 0, res.summary()


def test_transcriptions_of_the_seeds_round_trip():
    for v in blocks() + dirents():
        assert parse_all(str(v)) == v
