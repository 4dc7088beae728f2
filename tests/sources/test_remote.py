"""Remote sources over real HTTP from a server on 127.0.0.1: shards, parquet, hf:// and tokens."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
import pytest

from microvqa_pp.errors import SourceError
from microvqa_pp.sources import remote
from microvqa_pp.sources.biomedica import read_shard
from microvqa_pp.sources.remote import download, list_hub_files, open_stream, parse_hf_url, resolve_url

TOKEN = "hf_test_secret_token_123"


@pytest.fixture(autouse=True)
def no_retry_wait(monkeypatch):
    monkeypatch.setattr(remote, "RETRY_BACKOFF_S", 0.0)
    monkeypatch.delenv("HF_TOKEN", raising=False)


@pytest.fixture
def hub(http_server, monkeypatch):
    """The loopback server as the Hugging Face Hub (HF_ENDPOINT)."""
    monkeypatch.setenv("HF_ENDPOINT", http_server.url)
    return http_server


def test_shard_over_http_equals_local(http_server, biomedica_shard):
    shutil.copy(biomedica_shard, http_server.root / "000000.tar")

    remote_samples = list(read_shard(f"{http_server.url}/000000.tar"))
    local_samples = list(read_shard(str(biomedica_shard)))

    assert [(s.key, s.image, s.caption, s.metadata) for s in remote_samples] == [
        (s.key, s.image, s.caption, s.metadata) for s in local_samples
    ]
    assert remote_samples[0].source == f"{http_server.url}/000000.tar"


def test_dropped_connection_resumes_with_range(http_server, biomedica_shard):
    shutil.copy(biomedica_shard, http_server.root / "000000.tar")
    http_server.break_once["/000000.tar"] = 1_000_000

    samples = list(read_shard(f"{http_server.url}/000000.tar"))

    assert len(samples) == 15
    assert all(sample.error == "" for sample in samples)
    ranges = [request["headers"].get("Range") for request in http_server.requests]
    assert ranges[0] is None
    assert len(ranges) == 2
    assert ranges[1] is not None and ranges[1].startswith("bytes=")
    assert int(ranges[1].removeprefix("bytes=").rstrip("-")) <= 1_000_000


def test_server_errors_are_retried(http_server):
    (http_server.root / "file.bin").write_bytes(b"x" * 5000)
    http_server.fail_status["/file.bin"] = [503, 502]

    with open_stream(f"{http_server.url}/file.bin") as stream:
        assert stream.read() == b"x" * 5000
    assert len(http_server.requests) == 3


def test_retries_exhausted_names_url(http_server):
    (http_server.root / "file.bin").write_bytes(b"x")
    http_server.fail_status["/file.bin"] = [503] * remote.MAX_ATTEMPTS

    with pytest.raises(SourceError, match=r"failed to download http://127\.0\.0\.1:\d+/file\.bin: HTTP 503 after 5 attempts"):
        with open_stream(f"{http_server.url}/file.bin"):
            pass


def test_missing_url_is_not_found(http_server):
    with pytest.raises(SourceError, match="not found: .*/missing.tar .HTTP 404"):
        with open_stream(f"{http_server.url}/missing.tar"):
            pass
    assert len(http_server.requests) == 1


def test_parse_and_resolve_hf_urls(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9/")
    parsed = parse_hf_url("hf://datasets/owner/name@v1.0/data/shard.tar")

    assert parsed.repo_type == "datasets"
    assert parsed.repo_id == "owner/name"
    assert parsed.revision == "v1.0"
    assert parsed.path == "data/shard.tar"
    assert parse_hf_url("hf://datasets/owner/name").path == ""
    assert parse_hf_url("hf://datasets/o/n@refs%2Fconvert%2Fparquet/x").revision == "refs/convert/parquet"
    assert resolve_url("hf://datasets/owner/name/a/b.tar") == "http://127.0.0.1:9/datasets/owner/name/resolve/main/a/b.tar"
    assert (
        resolve_url("hf://datasets/o/n@refs%2Fconvert%2Fparquet/x.parquet")
        == "http://127.0.0.1:9/datasets/o/n/resolve/refs%2Fconvert%2Fparquet/x.parquet"
    )
    with pytest.raises(SourceError, match="expected hf://datasets/OWNER/NAME"):
        parse_hf_url("hf://owner/name/file.tar")
    with pytest.raises(SourceError, match="names no file"):
        resolve_url("hf://datasets/owner/name")


def test_hf_shard_without_token_requirement(hub, biomedica_shard):
    target = hub.root / "datasets" / "lab" / "figures" / "shards" / "000000.tar"
    target.parent.mkdir(parents=True)
    shutil.copy(biomedica_shard, target)

    samples = list(read_shard("hf://datasets/lab/figures@v2/shards/000000.tar"))

    assert len(samples) == 15
    assert hub.requests[0]["path"] == "/datasets/lab/figures/resolve/v2/shards/000000.tar"
    assert "Authorization" not in hub.requests[0]["headers"]


def test_hf_token_required_and_sent(hub, biomedica_shard, monkeypatch):
    target = hub.root / "datasets" / "lab" / "gated" / "000000.tar"
    target.parent.mkdir(parents=True)
    shutil.copy(biomedica_shard, target)
    hub.token = TOKEN

    with pytest.raises(SourceError) as denied:
        list(read_shard("hf://datasets/lab/gated/000000.tar"))
    message = str(denied.value)
    assert "hf://datasets/lab/gated/000000.tar" in message
    assert "HTTP 401" in message
    assert "HF_TOKEN is not set" in message
    assert "Set HF_TOKEN" in message

    monkeypatch.setenv("HF_TOKEN", "wrong")
    with pytest.raises(SourceError, match="HF_TOKEN is set but was not accepted"):
        list(read_shard("hf://datasets/lab/gated/000000.tar"))

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    samples = list(read_shard("hf://datasets/lab/gated/000000.tar"))
    assert len(samples) == 15
    assert hub.requests[-1]["headers"]["Authorization"] == f"Bearer {TOKEN}"


def test_token_not_sent_to_other_hosts(hub, biomedica_shard, monkeypatch):
    shutil.copy(biomedica_shard, hub.root / "000000.tar")
    hub.token = TOKEN
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    other_host = hub.url.replace("127.0.0.1", "localhost")

    with pytest.raises(SourceError, match="HF_TOKEN is sent only to the Hub"):
        list(read_shard(f"{other_host}/000000.tar"))
    assert "Authorization" not in hub.requests[-1]["headers"]


def test_list_hub_files_follows_pages(hub):
    folder = hub.root / "datasets" / "lab" / "pp"
    for name in ("data/train-00001.parquet", "data/train-00000.parquet", "README.md", "data/extra/x.parquet"):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
    hub.page_size = 2

    everything = list_hub_files("hf://datasets/lab/pp")
    data = list_hub_files("hf://datasets/lab/pp@dev/data")

    assert everything == [
        "hf://datasets/lab/pp/README.md",
        "hf://datasets/lab/pp/data/extra/x.parquet",
        "hf://datasets/lab/pp/data/train-00000.parquet",
        "hf://datasets/lab/pp/data/train-00001.parquet",
    ]
    assert data == [
        "hf://datasets/lab/pp@dev/data/extra/x.parquet",
        "hf://datasets/lab/pp@dev/data/train-00000.parquet",
        "hf://datasets/lab/pp@dev/data/train-00001.parquet",
    ]
    tree_requests = [request for request in hub.requests if request["path"].startswith("/api/")]
    assert tree_requests[0]["path"] == "/api/datasets/lab/pp/tree/main"
    assert "recursive=true" in tree_requests[0]["query"]
    assert len(tree_requests) == 2 + 2  # two pages for each listing


def test_list_hub_files_with_token(hub, monkeypatch):
    (hub.root / "datasets" / "lab" / "gated").mkdir(parents=True)
    (hub.root / "datasets" / "lab" / "gated" / "a.parquet").write_bytes(b"x")
    hub.token = TOKEN

    with pytest.raises(SourceError, match="access denied to hf://datasets/lab/gated"):
        list_hub_files("hf://datasets/lab/gated")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert list_hub_files("hf://datasets/lab/gated") == ["hf://datasets/lab/gated/a.parquet"]


def test_download_parquet_by_url(http_server, demo_parquet, tmp_path):
    shutil.copy(demo_parquet, http_server.root / "demo.parquet")

    path = download(f"{http_server.url}/demo.parquet", tmp_path / "downloads")
    again = download(f"{http_server.url}/demo.parquet", tmp_path / "downloads")

    assert path == again
    assert path.read_bytes() == demo_parquet.read_bytes()
    assert pq.read_metadata(path).num_rows == 15
    assert len(http_server.requests) == 1
    assert [item.name for item in (tmp_path / "downloads").iterdir()] == [path.name]
