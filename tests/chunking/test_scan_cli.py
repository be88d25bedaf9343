"""`vt scan`: the report, --json, and one-line errors for bad input."""

from __future__ import annotations

import json

from vtstore.cli.main import main


def test_scan_text_report(tmp_path, formats, capsys):
    path = tmp_path / "box.mbox"
    formats.build_mbox(path, 30)
    assert main(["scan", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: {path.stat().st_size:,} bytes" in out
    assert "scanner mbox" in out
    assert "% format" in out and "% hash" in out and "median" in out and "p90" in out
    assert "|" in out and "#" in out  # the histogram


def test_scan_json(tmp_path, formats, capsys, randbytes):
    a = tmp_path / "a.tar"
    formats.build_tar(a)
    b = tmp_path / "b.bin"
    b.write_bytes(randbytes(1 << 20, 1))
    assert main(["scan", "--json", str(a), str(b)]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert [r["scanner"] for r in reports] == ["tar", None]
    ra, rb = reports
    assert ra["bytes"] == a.stat().st_size
    assert sum(h["count"] for h in ra["histogram"]) == ra["blocks"]
    assert ra["cuts"]["format"] > 0 and rb["cuts"]["format"] == 0
    assert abs(sum(rb["cut_percent"].values()) - 100) < 1e-6
    assert rb["p10"] <= rb["median"] <= rb["p90"]
    assert 8000 < rb["mean"] < 11000


def test_scan_options(tmp_path, capsys, randbytes):
    p = tmp_path / "x.py"
    p.write_bytes(b"def f():\n    pass\n" * 5000)
    assert main(["scan", "--json", "--scanner", "none", "--avg", "4k", "--min", "1k", str(p)]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["scanner"] is None and r["params"]["avg_size"] == 4096


def test_scan_errors_are_one_line(tmp_path, capsys):
    for argv in (
        ["scan", str(tmp_path / "missing")],
        ["scan", str(tmp_path)],
        ["scan", "--avg", "1000", str(tmp_path)],
        ["scan", "--scanner", "nope", str(tmp_path)],
    ):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.startswith("vt scan: ") and err.count("\n") == 1, err
        assert "Traceback" not in err
