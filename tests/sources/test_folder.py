"""The figure-folder reader (images plus a JSONL of captions) on the bundled eLife figures."""

from __future__ import annotations

import json
import shutil

import pytest

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.folder import chunk_captions_file, find_captions_file, read_folder


def test_reads_elife_folder(elife_folder):
    rows = [json.loads(line) for line in (elife_folder / "figures.jsonl").read_text().splitlines()]
    samples = list(read_folder(str(elife_folder)))

    assert [sample.key for sample in samples] == [row["id"] for row in rows]
    first = samples[0]
    assert first.caption == rows[0]["caption"].encode("utf-8")
    assert first.image == (elife_folder / rows[0]["image"]).read_bytes()
    assert first.extra["license"] == rows[0]["license"]
    assert first.extra["doi"] == rows[0]["doi"]
    assert first.has_metadata is False


@pytest.mark.parametrize("chunk_size", [1, 4, 15, 100])
def test_chunks_cover_every_line_once(tmp_path, elife_folder, chunk_size):
    copy = tmp_path / "figures"
    shutil.copytree(elife_folder, copy)
    lines = (copy / "figures.jsonl").read_text().splitlines()
    # Blank lines in between do not count as figures.
    (copy / "figures.jsonl").write_text("\n".join(lines[:3]) + "\n\n  \n" + "\n".join(lines[3:]) + "\n")

    chunks = chunk_captions_file(copy / "figures.jsonl", chunk_size)
    keys = [sample.key for chunk in chunks for sample in read_folder(str(copy), chunk)]

    assert keys == [json.loads(line)["id"] for line in lines]
    assert [chunk.count for chunk in chunks] == [min(chunk_size, 15 - start) for start in range(0, 15, chunk_size)]
    assert chunks[-1].stop == (copy / "figures.jsonl").stat().st_size


def test_damaged_lines_become_errors(tmp_path, elife_folder):
    folder = tmp_path / "figures"
    folder.mkdir()
    shutil.copy(elife_folder / "images" / "elife-01222-fig1.jpg", folder / "fig1.jpg")
    lines = [
        b'{"id": "ok", "image": "fig1.jpg", "caption": "A fine caption of a microscopy figure."}',
        b"{not json",
        b'{"id": "latin1", "image": "fig1.jpg", "caption": "caf\xe9 caption"}',
        b'{"id": "escape", "image": "../outside.jpg", "caption": "caption"}',
        b'{"id": "gone", "image": "missing.jpg", "caption": "caption"}',
        b'{"id": "noimage", "caption": "caption"}',
        b"[1, 2]",
    ]
    (folder / "figures.jsonl").write_bytes(b"\n".join(lines) + b"\n")

    samples = {sample.key: sample for sample in read_folder(str(folder))}

    assert samples["ok"].error == ""
    assert samples["figures/figures.jsonl:2"].error == "invalid_metadata"
    assert "line 2" in samples["figures/figures.jsonl:2"].error_detail
    assert samples["latin1"].error == ""
    assert samples["latin1"].caption == b"caf\xe9 caption"
    assert samples["escape"].error == "missing_image"
    assert "points outside" in samples["escape"].error_detail
    assert samples["gone"].error == "missing_image"
    assert samples["noimage"].error == "missing_image"
    assert samples["figures/figures.jsonl:7"].error == "invalid_metadata"


def test_captions_file_choice(tmp_path):
    with pytest.raises(SourceError, match="holds no \\*.jsonl file"):
        find_captions_file(tmp_path)
    (tmp_path / "a.jsonl").write_text("")
    (tmp_path / "b.jsonl").write_text("")
    with pytest.raises(SourceError, match="several JSONL files"):
        find_captions_file(tmp_path)
    (tmp_path / "figures.jsonl").write_text("")
    assert find_captions_file(tmp_path).name == "figures.jsonl"
