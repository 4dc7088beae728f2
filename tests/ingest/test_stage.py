"""The ingest stage end to end: the real sample, damaged shards, de-duplication, limits, resume."""

from __future__ import annotations

import io
import json
import shutil
import struct
import tarfile
import zlib

import pyarrow.parquet as pq
import pytest
from PIL import Image

from microvqa_pp.config import load_config
from microvqa_pp.errors import MicroVQAError
from microvqa_pp.ingest import stage as ingest_stage
from microvqa_pp.ingest.stage import IngestStage
from microvqa_pp.records import Figure
from microvqa_pp.run import stage as run_stage_module
from microvqa_pp.run.executor import LocalExecutor
from microvqa_pp.run.rundir import RunDir
from microvqa_pp.run.stage import StageIncomplete, read_records, run_stage
from microvqa_pp.sources import SourceLocation, locate_sources
from microvqa_pp.sources import remote


def _ingest(root, sources, executor=None, **settings):
    run = RunDir(root)
    run.create()
    result = run_stage(IngestStage(run, load_config("offline", settings), sources), executor)
    return run, result


def _rejections(run) -> dict[str, str]:
    table = pq.read_table(run.stage_rejected("ingest"))
    return dict(zip(table["item_id"].to_pylist(), table["reason"].to_pylist()))


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def _reencoded(png: bytes) -> bytes:
    """The image shrunk by 2 % and saved as JPEG: a near-duplicate with other bytes and size."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.resize((502, 502), Image.Resampling.LANCZOS)
    output = io.BytesIO()
    image.save(output, format="JPEG", quality=80)
    return output.getvalue()


def test_ingest_bundled_sample(tmp_path, biomedica_shard, elife_folder, elife_small_folder, sample_members):
    sources = locate_sources([str(biomedica_shard), str(elife_folder), str(elife_small_folder)])

    run, result = _ingest(tmp_path / "run", sources)

    figures = read_records(run.stage_output("ingest"), Figure)
    elife_ids = [json.loads(line)["id"] for line in (elife_folder / "figures.jsonl").read_text().splitlines()]
    assert result.count == 35
    assert result.rejected == {}
    assert [figure.figure_id for figure in figures[:15]] == [key for key, _ in sample_members]
    assert [figure.figure_id for figure in figures[15:30]] == elife_ids
    assert result.stats == {"figures_valid": 35, "image_bytes": result.stats["image_bytes"], "samples_read": 35}
    for figure in figures:
        stored = run.root / figure.image_path
        assert stored.is_file()
        assert figure.image_path == f"images/{figure.image_sha256[:2]}/{figure.image_sha256}.{figure.image_format}"
    assert figures[0].image_format == "png"
    assert figures[15].image_format == "jpg"
    assert figures[15].license == "CC BY 3.0"
    assert figures[15].license_group == "commercial"
    assert sum(1 for path in (run.root / "images").rglob("*") if path.is_file()) == 35
    assert not run.stage_parts("ingest").exists()
    entry = run.stage_entry("ingest")
    assert entry["state"] == "done"
    assert entry["output"] == "stages/ingest.parquet"


@pytest.fixture
def damaged_shard(tmp_path, sample_members, write_shard):
    """A shard with one kind of damage per sample, and what ingest must make of each sample."""
    samples = [(key, dict(members)) for key, members in sample_members]
    keys = [key for key, _ in samples]
    first_image = samples[0][1]["jpg"]

    samples[1][1]["jpg"] = samples[1][1]["jpg"][: len(samples[1][1]["jpg"]) // 2]
    samples[2][1]["txt"] = b""
    samples[3][1]["txt"] = "Fluorescence image of cells, scale bar 10 \xb5m".encode("latin-1")
    samples[4][1]["jpg"] = _png_declaring(50000, 50000)
    samples[5][1]["jpg"] = first_image
    samples[6][1]["jpg"] = _reencoded(first_image)
    del samples[7][1]["json"]
    metadata = json.loads(samples[8][1]["json"])
    metadata["image_primary_label"] = ["Plots and Charts"]
    samples[8][1]["json"] = json.dumps(metadata).encode()
    other_key = keys[9].replace("filelist_noncommercial", "filelist_other")
    samples[9] = (other_key, samples[9][1])
    keys[9] = other_key

    path = write_shard(tmp_path / "damaged" / "000000.tar", samples)
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as archive:
        members = {member.name: member for member in archive}
    caption_header = members[f"{keys[10]}.txt"].offset
    data[caption_header + 148 : caption_header + 156] = b"9999999\x00"  # a corrupt header checksum
    cut = members[f"{keys[13]}.jpg"].offset_data + 1000
    path.write_bytes(bytes(data[:cut]))

    expected = {
        keys[1]: "corrupt_image",
        keys[2]: "empty_caption",
        keys[3]: "caption_not_utf8",
        keys[4]: "image_too_large",
        keys[5]: "duplicate_image",
        keys[7]: "missing_metadata",
        keys[8]: "label_not_selected",
        keys[9]: "license_not_allowed",
        keys[10]: "unreadable_member",
        keys[13]: "truncated_shard",
    }
    return path, keys, expected


def test_damaged_shard_rejections(tmp_path, damaged_shard):
    path, keys, expected = damaged_shard

    run, result = _ingest(tmp_path / "run", [SourceLocation("biomedica", str(path))], ingest={"licenses": ["commercial", "noncommercial"]})

    figures = read_records(run.stage_output("ingest"), Figure)
    assert [figure.figure_id for figure in figures] == [keys[0], keys[6], keys[11], keys[12]]
    assert _rejections(run) == expected
    assert result.count == 4
    assert result.rejected == {reason: 1 for reason in expected.values()}
    assert run.stage_entry("ingest")["rejected"] == result.rejected
    assert result.stats["samples_read"] == 14  # samples 0-13; sample 14 lies after the cut
    assert figures[1].near_duplicate_of == keys[0]
    assert figures[1].image_format == "jpg"
    assert [figure.near_duplicate_of for figure in figures if figure.figure_id != keys[6]] == ["", "", ""]
    details = dict(zip(*[pq.read_table(run.stage_rejected("ingest"))[name].to_pylist() for name in ("item_id", "detail")]))
    assert details[keys[5]] == f"same image as {keys[0]}"
    assert "2500000000 pixels" in details[keys[4]]


def test_near_duplicates_dropped_when_configured(tmp_path, damaged_shard):
    path, keys, expected = damaged_shard

    run, result = _ingest(
        tmp_path / "run",
        [SourceLocation("biomedica", str(path))],
        ingest={"licenses": ["commercial", "noncommercial"], "drop_near_duplicates": True},
    )

    assert _rejections(run) == {**expected, keys[6]: "near_duplicate"}
    assert result.count == 3


def test_release_parquet_and_shard_share_ids(tmp_path, biomedica_shard, demo_parquet):
    sources = locate_sources([str(demo_parquet), str(biomedica_shard)])

    run, result = _ingest(tmp_path / "run", sources)

    figures = read_records(run.stage_output("ingest"), Figure)
    assert result.count == 15
    assert result.rejected == {"duplicate_id": 15}
    assert {figure.source_kind for figure in figures} == {"parquet"}
    assert figures[0].figure_id == pq.read_table(demo_parquet)["image_name"][0].as_py().removesuffix(".jpg")
    assert figures[0].caption


def test_same_image_under_other_keys(tmp_path, biomedica_shard, sample_members, write_shard):
    renamed = [(f"copy-{key}", members) for key, members in sample_members]
    copy = write_shard(tmp_path / "copy.tar", renamed)

    run, result = _ingest(tmp_path / "run", locate_sources([str(biomedica_shard), str(copy)]))

    assert result.count == 15
    assert result.rejected == {"duplicate_image": 15}


def test_limit_counts_figures_after_deduplication(tmp_path, biomedica_shard, sample_members, write_shard, distinct_copy):
    duplicates = write_shard(tmp_path / "1.tar", [(f"copy-{key}", members) for key, members in sample_members])
    fresh = write_shard(tmp_path / "2.tar", distinct_copy(sample_members, 1))
    sources = locate_sources([str(biomedica_shard), str(duplicates), str(fresh)])

    run, result = _ingest(tmp_path / "run", sources, limit=20)

    figures = read_records(run.stage_output("ingest"), Figure)
    assert result.count == 20
    assert [figure.figure_id for figure in figures] == [key for key, _ in sample_members] + [
        key for key, _ in distinct_copy(sample_members, 1)[:5]
    ]


def test_workers_give_same_output(tmp_path, biomedica_shard, elife_small_folder, sample_members, write_shard, distinct_copy):
    shards = [write_shard(tmp_path / "in" / f"{index}.tar", distinct_copy(sample_members[:5], index)) for index in range(4)]
    sources = locate_sources([*(str(path) for path in shards), str(biomedica_shard), str(elife_small_folder)])
    executor = LocalExecutor(2)

    try:
        parallel, _ = _ingest(tmp_path / "parallel", sources, executor, ingest={"chunk_size": 2})
    finally:
        executor.close()
    serial, _ = _ingest(tmp_path / "serial", sources, ingest={"chunk_size": 2})

    assert pq.read_table(parallel.stage_output("ingest")).to_pylist() == pq.read_table(serial.stage_output("ingest")).to_pylist()
    assert pq.read_table(parallel.stage_rejected("ingest")).to_pylist() == pq.read_table(serial.stage_rejected("ingest")).to_pylist()
    assert parallel.stage_entry("ingest")["stats"] == serial.stage_entry("ingest")["stats"]


class _Crash(BaseException):
    """Stands for the process being killed at this point."""


def _shrunk(png: bytes) -> bytes:
    output = io.BytesIO()
    Image.open(io.BytesIO(png)).resize((128, 128), Image.Resampling.LANCZOS).save(output, format="PNG")
    return output.getvalue()


@pytest.fixture
def small_sources(tmp_path, sample_members, write_shard, distinct_copy):
    """Two shards and a figure folder in 2-line chunks: 6 work units, 14 figures, 2 repeated ids.

    The images are the sample's, shrunk to 128 x 128 so that each run takes little time.
    """
    samples = [(key, {**members, "jpg": _shrunk(members["jpg"])}) for key, members in sample_members[:12]]
    first = write_shard(tmp_path / "in" / "a.tar", samples[:4])
    second = write_shard(tmp_path / "in" / "b.tar", samples[2:5] + distinct_copy(samples[:2], 1))
    folder = tmp_path / "in" / "figures"
    folder.mkdir()
    lines = []
    for index, (key, members) in enumerate(distinct_copy(samples[5:12], 2)):
        (folder / f"{index}.png").write_bytes(members["jpg"])
        lines.append(json.dumps({"id": key, "image": f"{index}.png", "caption": members["txt"].decode(), "license": "CC BY"}))
    (folder / "figures.jsonl").write_text("\n".join(lines) + "\n")
    return locate_sources([str(first), str(second), str(folder)])


def test_crash_at_any_write_resumes_exactly(tmp_path, small_sources, monkeypatch):
    reference, reference_result = _ingest(tmp_path / "reference", small_sources, ingest={"chunk_size": 2})
    expected_rows = pq.read_table(reference.stage_output("ingest")).to_pylist()
    expected_rejections = pq.read_table(reference.stage_rejected("ingest")).to_pylist()
    assert reference_result.count == 14
    assert reference_result.rejected == {"duplicate_id": 2}

    calls = {"count": 0, "crash_at": None}
    original_write = run_stage_module.write_parquet
    original_store = ingest_stage.store_image
    original_set_stage = RunDir.set_stage

    def maybe_crash():
        calls["count"] += 1
        if calls["count"] == calls["crash_at"]:
            raise _Crash()

    def write(path, table):
        maybe_crash()
        original_write(path, table)

    def store(*args):
        maybe_crash()
        return original_store(*args)

    def set_stage(self, stage, **fields):
        maybe_crash()
        original_set_stage(self, stage, **fields)

    monkeypatch.setattr(run_stage_module, "write_parquet", write)
    monkeypatch.setattr(ingest_stage, "store_image", store)
    monkeypatch.setattr(RunDir, "set_stage", set_stage)
    _ingest(tmp_path / "count", small_sources, ingest={"chunk_size": 2})
    events = calls["count"]
    assert events > 20

    for crash_at in range(1, events + 1):
        root = tmp_path / f"crash-{crash_at}"
        calls.update(count=0, crash_at=crash_at)
        with pytest.raises(_Crash):
            _ingest(root, small_sources, ingest={"chunk_size": 2})
        calls.update(count=0, crash_at=None)

        run, result = _ingest(root, small_sources, ingest={"chunk_size": 2})

        assert pq.read_table(run.stage_output("ingest")).to_pylist() == expected_rows, f"crash at event {crash_at}"
        assert pq.read_table(run.stage_rejected("ingest")).to_pylist() == expected_rejections, f"crash at event {crash_at}"
        assert result.stats == reference_result.stats, f"crash at event {crash_at}"
        assert run.stage_entry("ingest")["state"] == "done"
        shutil.rmtree(root)


def test_failed_download_keeps_other_units(tmp_path, http_server, biomedica_shard, sample_members, write_shard, distinct_copy, monkeypatch):
    monkeypatch.setattr(remote, "RETRY_BACKOFF_S", 0.0)
    remote_shard = f"{http_server.url}/later.tar"
    sources = [SourceLocation("biomedica", str(biomedica_shard)), SourceLocation("biomedica", remote_shard)]
    run = RunDir(tmp_path / "run")
    run.create()
    config = load_config()

    with pytest.raises(StageIncomplete, match=r"1 of 2 work units of stage 'ingest' failed .*not found: http://127\.0\.0\.1:\d+/later\.tar"):
        run_stage(IngestStage(run, config, sources))
    assert run.stage_entry("ingest")["state"] == "failed"
    assert (run.stage_parts("ingest") / "00000-00000.parquet").exists()
    assert isinstance(StageIncomplete("x"), MicroVQAError)

    write_shard(http_server.root / "later.tar", distinct_copy(sample_members, 1))
    http_server.requests.clear()
    result = run_stage(IngestStage(run, config, sources))

    assert result.count == 30
    assert [request["path"] for request in http_server.requests] == ["/later.tar"]


def test_remote_sources_match_local(tmp_path, http_server, biomedica_shard, demo_parquet, sample_members, write_shard, distinct_copy, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    repo = http_server.root / "datasets" / "lab" / "pp" / "data"
    repo.mkdir(parents=True)
    shutil.copy(demo_parquet, repo / "train-00000-of-00001.parquet")
    shutil.copy(demo_parquet, http_server.root / "release.parquet")
    shutil.copy(biomedica_shard, http_server.root / "000000.tar")
    copy = write_shard(http_server.root / "000001.tar", distinct_copy(sample_members, 1))
    remote_sources = locate_sources(
        [f"{http_server.url}/{{000000..000001}}.tar", "hf://datasets/lab/pp", f"{http_server.url}/release.parquet"]
    )
    second_parquet = shutil.copy(demo_parquet, tmp_path / "release.parquet")
    local_sources = locate_sources([str(biomedica_shard), str(copy), str(demo_parquet), str(second_parquet)])

    remote_run, remote_result = _ingest(tmp_path / "remote", remote_sources)
    local_run, local_result = _ingest(tmp_path / "local", local_sources)

    def without_source(run):
        return [{**row, "source": ""} for row in pq.read_table(run.stage_output("ingest")).to_pylist()]

    assert [source.kind for source in remote_sources] == ["biomedica", "biomedica", "parquet", "parquet"]
    assert without_source(remote_run) == without_source(local_run)
    assert remote_result.count == 30
    assert remote_result.rejected == local_result.rejected == {"duplicate_id": 30}
    assert list((remote_run.cache_dir / "downloads").iterdir()) == []
