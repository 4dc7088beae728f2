"""The parquet reader: the MicroVQA++ release schema and BIOMEDICA-style tables."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from microvqa_pp.errors import SourceError
from microvqa_pp.sources.parquet import read_file, read_row_group, row_group_sizes


def test_microvqa_pp_release_schema(demo_parquet):
    table = pq.read_table(demo_parquet)
    samples = list(read_file(demo_parquet, str(demo_parquet)))

    assert len(samples) == 15
    first = samples[0]
    assert first.key == table["image_name"][0].as_py().removesuffix(".jpg")
    assert first.caption == table["image_caption"][0].as_py().encode("utf-8")
    assert first.image == table["image"][0].as_py()["bytes"]
    assert first.has_metadata is False
    assert first.metadata is None
    assert first.source_kind == "parquet"
    assert all(sample.error == "" for sample in samples)


def test_biomedica_columns_with_json(tmp_path, sample_members):
    rows = [{"__key__": key, "jpg": members["jpg"], "txt": members["txt"], "json": members["json"].decode()} for key, members in sample_members[:4]]
    path = tmp_path / "biomedica.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=3)

    assert row_group_sizes(path) == [3, 1]
    samples = list(read_row_group(path, 1, str(path)))

    assert [sample.key for sample in samples] == [sample_members[3][0]]
    assert samples[0].metadata == json.loads(sample_members[3][1]["json"])
    assert samples[0].has_metadata is True
    assert samples[0].caption == sample_members[3][1]["txt"]


def test_metadata_as_columns_and_damaged_rows(tmp_path, sample_members):
    _, members = sample_members[0]
    table = pa.table(
        {
            "image": [{"bytes": members["jpg"], "path": "a.jpg"}, {"bytes": None, "path": "b.jpg"}],
            "caption": pa.array([b"caption \xff\xfe", b"fine caption"], pa.binary()),
            "image_primary_label": [["Microscopy"], ["Plots and Charts"]],
            "article_license": ["CC BY", None],
        }
    )
    path = tmp_path / "columns.parquet"
    pq.write_table(table, path)

    samples = list(read_file(path, str(path)))

    assert [sample.key for sample in samples] == ["columns-row-0", "columns-row-1"]
    assert samples[0].metadata == {"image_primary_label": ["Microscopy"], "article_license": "CC BY"}
    assert samples[0].caption == b"caption \xff\xfe"
    assert samples[1].error == "missing_image"
    assert "row 1" in samples[1].error_detail


def test_invalid_json_column(tmp_path, sample_members):
    key, members = sample_members[0]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist([{"__key__": key, "jpg": members["jpg"], "txt": "caption", "json": "{oops"}]), path)

    samples = list(read_file(path, str(path)))

    assert samples[0].error == "invalid_metadata"


def test_unreadable_parquet_and_missing_image_column(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    no_image = tmp_path / "noimage.parquet"
    pq.write_table(pa.table({"caption": ["a"]}), no_image)

    with pytest.raises(SourceError, match="not a readable parquet file"):
        row_group_sizes(broken)
    with pytest.raises(SourceError, match="has no image column"):
        list(read_file(no_image, str(no_image)))
