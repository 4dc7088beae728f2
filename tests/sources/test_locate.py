"""Expanding SOURCE arguments: brace ranges, globs, folders, URLs and Hub listings."""

from __future__ import annotations

import shutil

import pytest

from microvqa_pp.errors import SourceError
from microvqa_pp.sources import SourceLocation, detect_kind, expand_braces, locate_sources


def test_expand_brace_range_keeps_padding():
    assert expand_braces("shards/{000000..000002}.tar") == [
        "shards/000000.tar",
        "shards/000001.tar",
        "shards/000002.tar",
    ]
    assert expand_braces("s/{8..11}.tar") == ["s/8.tar", "s/9.tar", "s/10.tar", "s/11.tar"]
    assert expand_braces("s/{08..10}.tar") == ["s/08.tar", "s/09.tar", "s/10.tar"]


def test_expand_brace_lists_and_products():
    assert expand_braces("{commercial,other}/{0..1}.tar") == [
        "commercial/0.tar",
        "commercial/1.tar",
        "other/0.tar",
        "other/1.tar",
    ]
    assert expand_braces("plain.tar") == ["plain.tar"]


def test_reversed_brace_range_is_an_error():
    with pytest.raises(SourceError, match="end is before the start"):
        expand_braces("s/{5..2}.tar")


def test_detect_kind():
    assert detect_kind("https://host/a/000001.tar") == "biomedica"
    assert detect_kind("hf://datasets/o/n/x.tar.gz") == "biomedica"
    assert detect_kind("https://host/a/train.parquet?download=1") == "parquet"
    with pytest.raises(SourceError, match="--source-kind"):
        detect_kind("https://host/a/file.zip")


def test_locate_local_sources(tmp_path, biomedica_shard, elife_folder, demo_parquet):
    shards = tmp_path / "shards"
    shards.mkdir()
    for index in range(3):
        shutil.copy(biomedica_shard, shards / f"{index:06d}.tar")

    located = locate_sources(
        [str(shards / "{000000..000001}.tar"), str(shards / "*.tar"), str(elife_folder), str(demo_parquet)]
    )

    assert located == [
        SourceLocation("biomedica", str(shards / "000000.tar")),
        SourceLocation("biomedica", str(shards / "000001.tar")),
        SourceLocation("biomedica", str(shards / "000002.tar")),
        SourceLocation("folder", str(elife_folder)),
        SourceLocation("parquet", str(demo_parquet)),
    ]


def test_folder_of_shards_expands_to_its_files(tmp_path, biomedica_shard, demo_parquet):
    shutil.copy(biomedica_shard, tmp_path / "b.tar")
    shutil.copy(demo_parquet, tmp_path / "a.parquet")
    (tmp_path / "notes.txt").write_text("not a source")

    located = locate_sources([str(tmp_path)])

    assert located == [
        SourceLocation("parquet", str(tmp_path / "a.parquet")),
        SourceLocation("biomedica", str(tmp_path / "b.tar")),
    ]


def test_forced_kind(tmp_path, biomedica_shard):
    shard = tmp_path / "shard.bin"
    shutil.copy(biomedica_shard, shard)

    assert locate_sources([str(shard)], "biomedica") == [SourceLocation("biomedica", str(shard))]
    with pytest.raises(SourceError, match="cannot tell what kind of source"):
        locate_sources([str(shard)])
    with pytest.raises(SourceError, match="unknown source kind 'zip'"):
        locate_sources([str(shard)], "zip")


def test_missing_sources_are_errors(tmp_path):
    with pytest.raises(SourceError, match="source not found: .*missing.tar"):
        locate_sources([str(tmp_path / "missing.tar")])
    with pytest.raises(SourceError, match="no files match"):
        locate_sources([str(tmp_path / "*.tar")])
    with pytest.raises(SourceError, match="no SOURCE given"):
        locate_sources([])
    with pytest.raises(SourceError, match="contains no .tar shards"):
        locate_sources([str(tmp_path)])


def test_http_brace_range_is_not_listed(http_server):
    located = locate_sources([f"{http_server.url}/shards/{{000..002}}.tar"])

    assert [source.location for source in located] == [f"{http_server.url}/shards/{index:03d}.tar" for index in range(3)]
    assert http_server.requests == []


@pytest.fixture
def hub_repo(http_server, monkeypatch, demo_parquet, biomedica_shard):
    """A data-set repository `lab/pp` with parquet files, and `lab/shards` with tar shards only."""
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    parquet_repo = http_server.root / "datasets" / "lab" / "pp"
    (parquet_repo / "data").mkdir(parents=True)
    for name in ("data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet", "data/test-00000-of-00001.parquet"):
        shutil.copy(demo_parquet, parquet_repo / name)
    (parquet_repo / "README.md").write_text("card")
    shard_repo = http_server.root / "datasets" / "lab" / "shards" / "commercial"
    shard_repo.mkdir(parents=True)
    for index in range(2):
        shutil.copy(biomedica_shard, shard_repo / f"{index:06d}.tar")
    return http_server


def test_hub_dataset_lists_parquet_files(hub_repo):
    located = locate_sources(["hf://datasets/lab/pp"])

    assert located == [
        SourceLocation("parquet", "hf://datasets/lab/pp/data/test-00000-of-00001.parquet"),
        SourceLocation("parquet", "hf://datasets/lab/pp/data/train-00000-of-00002.parquet"),
        SourceLocation("parquet", "hf://datasets/lab/pp/data/train-00001-of-00002.parquet"),
    ]


def test_hub_glob_selects_files(hub_repo):
    located = locate_sources(["hf://datasets/lab/pp/data/train-*.parquet"])

    assert [source.location for source in located] == [
        "hf://datasets/lab/pp/data/train-00000-of-00002.parquet",
        "hf://datasets/lab/pp/data/train-00001-of-00002.parquet",
    ]
    assert hub_repo.requests[0]["path"] == "/api/datasets/lab/pp/tree/main/data"
    with pytest.raises(SourceError, match="no files in datasets/lab/pp@main match 'data/valid-\\*.parquet'"):
        locate_sources(["hf://datasets/lab/pp/data/valid-*.parquet"])


def test_hub_repository_of_shards(hub_repo):
    located = locate_sources(["hf://datasets/lab/shards@v1"])

    assert located == [
        SourceLocation("biomedica", "hf://datasets/lab/shards@v1/commercial/000000.tar"),
        SourceLocation("biomedica", "hf://datasets/lab/shards@v1/commercial/000001.tar"),
    ]


def test_hub_file_and_brace_range_need_no_listing(hub_repo):
    located = locate_sources(["hf://datasets/lab/shards/commercial/{000000..000001}.tar"])

    assert [source.kind for source in located] == ["biomedica", "biomedica"]
    assert hub_repo.requests == []


def test_hub_repository_without_data_files(hub_repo):
    (hub_repo.root / "datasets" / "lab" / "empty").mkdir(parents=True)
    (hub_repo.root / "datasets" / "lab" / "empty" / "README.md").write_text("card")

    with pytest.raises(SourceError, match="contains no .parquet files or .tar shards"):
        locate_sources(["hf://datasets/lab/empty"])
