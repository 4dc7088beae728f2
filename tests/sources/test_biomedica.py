"""The BIOMEDICA shard reader on the real sample shard and on damaged copies of it."""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile

import pytest

from microvqa_pp.sources import biomedica
from microvqa_pp.sources.biomedica import read_shard, split_member_name


def _members(path):
    """(name, header offset, data offset, size) of every member, from the intact shard."""
    with tarfile.open(path) as archive:
        return [(member.name, member.offset, member.offset_data, member.size) for member in archive]


def _corrupt_header(data: bytes, offset: int) -> bytes:
    """Flip bytes of the header checksum field at `offset` so that the header is invalid."""
    damaged = bytearray(data)
    damaged[offset + 148 : offset + 156] = b"9999999\x00"
    return bytes(damaged)


def test_reads_real_shard(biomedica_shard, sample_members):
    samples = list(read_shard(str(biomedica_shard)))

    assert [sample.key for sample in samples] == [key for key, _ in sample_members]
    first_key, first_members = sample_members[0]
    first = samples[0]
    assert first.error == ""
    assert first.image == first_members["jpg"]
    assert first.caption == first_members["txt"]
    assert first.metadata == json.loads(first_members["json"])
    assert first.metadata["image_primary_label"] == ["Microscopy", "Plots and Charts"]
    assert first.source == str(biomedica_shard)
    assert first.source_kind == "biomedica"
    assert first.extra["image_extension"] == "jpg"
    assert all(sample.error == "" and sample.image and sample.caption for sample in samples)


def test_split_member_name():
    assert split_member_name("abc-PMC1-2-x.jpg") == ("abc-PMC1-2-x", "jpg")
    assert split_member_name("dir/abc.seg.json") == ("dir/abc", "seg.json")
    assert split_member_name("abc.JPG") == ("abc", "jpg")


def test_truncated_shard_keeps_samples_before_cut(biomedica_shard, tmp_path):
    data = biomedica_shard.read_bytes()
    members = _members(biomedica_shard)
    last_name, _, last_data, last_size = members[-1]
    archive_end = last_data + (last_size + 511) // 512 * 512  # where the end-of-archive marker starts
    cuts = random.Random(7).sample(range(513, archive_end), 60)
    cuts += [offset for _, offset, _, _ in members[1:]] + [data_offset + size for _, _, data_offset, size in members]
    damaged = tmp_path / "cut.tar"

    for cut in cuts:
        damaged.write_bytes(data[:cut])
        samples = list(read_shard(str(damaged)))

        with_complete_header = [name for name, offset, _, _ in members if offset + 512 <= cut]
        damaged_key = split_member_name(with_complete_header[-1])[0]
        errors = [sample for sample in samples if sample.error]
        assert len(errors) == 1, f"cut at {cut}"
        assert samples[-1].error == "truncated_shard", f"cut at {cut}"
        assert samples[-1].key == damaged_key, f"cut at {cut}"
        expected_keys = list(dict.fromkeys(split_member_name(name)[0] for name in with_complete_header))[:-1]
        assert [sample.key for sample in samples[:-1]] == expected_keys, f"cut at {cut}"
        assert all(sample.image and sample.caption and sample.metadata for sample in samples[:-1])


def test_shard_cut_in_end_marker_is_truncated(biomedica_shard, tmp_path, sample_members):
    members = _members(biomedica_shard)
    _, _, last_data, last_size = members[-1]
    archive_end = last_data + (last_size + 511) // 512 * 512
    data = biomedica_shard.read_bytes()

    inside_marker = tmp_path / "inside.tar"
    inside_marker.write_bytes(data[: archive_end + 100])
    samples = list(read_shard(str(inside_marker)))
    assert samples[-1].error == "truncated_shard"
    assert samples[-1].key == sample_members[-1][0]

    after_marker = tmp_path / "after.tar"
    after_marker.write_bytes(data[: archive_end + 512])
    samples = list(read_shard(str(after_marker)))
    assert [sample.error for sample in samples] == [""] * 15


def test_corrupt_header_inside_sample(biomedica_shard, tmp_path, sample_members):
    members = _members(biomedica_shard)
    caption_of_fifth = next(member for member in members if member[0] == f"{sample_members[4][0]}.txt")
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(_corrupt_header(biomedica_shard.read_bytes(), caption_of_fifth[1]))

    samples = list(read_shard(str(damaged)))

    assert [sample.key for sample in samples] == [key for key, _ in sample_members]
    assert samples[4].error == "unreadable_member"
    assert f"byte {caption_of_fifth[1]}" in samples[4].error_detail
    assert [sample.error for sample in samples[:4] + samples[5:]] == [""] * 14


def test_corrupt_header_between_samples(biomedica_shard, tmp_path, sample_members):
    members = _members(biomedica_shard)
    image_of_fifth = next(member for member in members if member[0] == f"{sample_members[4][0]}.jpg")
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(_corrupt_header(biomedica_shard.read_bytes(), image_of_fifth[1]))

    samples = list(read_shard(str(damaged)))

    keys = [sample.key for sample in samples]
    assert keys == [key for key, _ in sample_members[:4]] + [f"damaged.tar@{image_of_fifth[1]}"] + [key for key, _ in sample_members[4:]]
    assert samples[4].error == "unreadable_member"
    fifth = samples[5]
    assert fifth.error == ""
    assert fifth.image is None
    assert fifth.caption == sample_members[4][1]["txt"]
    assert all(sample.error == "" and sample.image for sample in samples[6:])


def test_corrupt_header_of_last_member(biomedica_shard, tmp_path, sample_members):
    members = _members(biomedica_shard)
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(_corrupt_header(biomedica_shard.read_bytes(), members[-1][1]))

    samples = list(read_shard(str(damaged)))

    assert len(samples) == 16
    assert samples[14].key == sample_members[14][0]
    assert samples[14].metadata is None
    assert samples[15].error == "unreadable_member"
    assert samples[15].key == f"damaged.tar@{members[-1][1]}"


def test_sample_without_json(tmp_path, sample_members, write_shard):
    key, members = sample_members[0]
    shard = write_shard(tmp_path / "nojson.tar", [(key, {"jpg": members["jpg"], "txt": members["txt"]}), sample_members[1]])

    samples = list(read_shard(str(shard)))

    assert [sample.key for sample in samples] == [key, sample_members[1][0]]
    assert samples[0].metadata is None
    assert samples[0].error == ""
    assert samples[1].metadata is not None


def test_invalid_json_member(tmp_path, sample_members, write_shard):
    key, members = sample_members[0]
    shard = write_shard(tmp_path / "badjson.tar", [(key, {**members, "json": b"{not json"}), (key + "x", {**members, "json": b"[1, 2]"})])

    samples = list(read_shard(str(shard)))

    assert [sample.error for sample in samples] == ["invalid_metadata", "invalid_metadata"]
    assert "expected an object" in samples[1].error_detail


@pytest.mark.parametrize("content", [b"", b"\xff\xd8\xff\xe0 not a tar file" * 100])
def test_not_a_tar_file(tmp_path, content):
    path = tmp_path / "bad.tar"
    path.write_bytes(content)

    samples = list(read_shard(str(path)))

    assert len(samples) == 1
    assert samples[0].error == "unreadable_shard"
    assert str(path) in samples[0].error_detail


def test_gzip_shard_and_its_truncation(biomedica_shard, tmp_path, sample_members):
    compressed = gzip.compress(biomedica_shard.read_bytes())
    whole = tmp_path / "shard.tar.gz"
    whole.write_bytes(compressed)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(compressed[: len(compressed) // 2])

    assert [sample.key for sample in read_shard(str(whole))] == [key for key, _ in sample_members]
    samples = list(read_shard(str(cut)))
    assert samples[-1].error == "truncated_shard"
    assert 0 < len(samples) - 1 < 15
    assert all(sample.error == "" for sample in samples[:-1])


def test_member_too_large_is_skipped(biomedica_shard, sample_members, monkeypatch):
    largest_image = max(len(members["jpg"]) for _, members in sample_members)
    monkeypatch.setattr(biomedica, "MAX_MEMBER_BYTES", largest_image - 1)

    samples = list(read_shard(str(biomedica_shard)))

    too_large = [sample.key for sample in samples if sample.error == "member_too_large"]
    expected = [key for key, members in sample_members if len(members["jpg"]) == largest_image]
    assert too_large == expected
    assert len(samples) == 15


def test_directories_and_links_are_ignored(tmp_path, sample_members):
    path = tmp_path / "mixed.tar"
    key, members = sample_members[0]
    with tarfile.open(path, "w") as archive:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        for extension, data in members.items():
            info = tarfile.TarInfo(f"{key}.{extension}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo(f"{key}.png")
        link.type = tarfile.SYMTYPE
        link.linkname = f"{key}.jpg"
        archive.addfile(link)

    samples = list(read_shard(str(path)))

    assert [sample.key for sample in samples] == [key]
    assert samples[0].image == members["jpg"]
