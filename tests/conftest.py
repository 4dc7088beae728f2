"""Shared fixtures: paths to the bundled real data, offline model hub, and fresh run folders."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# No test may reach a model hub: loading by hub id must fail fast instead of waiting for a timeout.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def biomedica_shard() -> Path:
    """The bundled BIOMEDICA-layout shard of 15 real figures."""
    return EXAMPLES / "biomedica" / "000000.tar"


@pytest.fixture(scope="session")
def elife_folder() -> Path:
    """The bundled folder of 15 eLife 01222 figures with figures.jsonl."""
    return EXAMPLES / "elife-01222"


@pytest.fixture(scope="session")
def elife_small_folder() -> Path:
    """The bundled folder of 5 eLife 00230 figures."""
    return EXAMPLES / "elife-00230"


@pytest.fixture(scope="session")
def demo_parquet() -> Path:
    """The 15 released MicroVQA++ demo rows (release schema, 1-based correct_index)."""
    return TEST_DATA / "microvqa_pp_demo" / "train-00000-of-00001.parquet"


@pytest.fixture(scope="session")
def microvqa_csv() -> Path:
    """51 MicroVQA-format questions, text only, 0-based correct_index."""
    return TEST_DATA / "microvqa_format" / "demo_dataset.csv"


# Tiny random models of the real architectures ----------------------------------------------------
# Each is built once per session, saved to a folder and loaded back through the same code path
# as real weights. They have random weights: tests may check shapes, label mapping, caching and
# plumbing with them, never that their scores mean anything.

TINY_NLI_LABELS = {0: "neutral", 1: "contradiction", 2: "entailment"}
"""The tiny NLI model's id2label, in an order unlike any common NLI model, so a mapping that
assumes an order fails."""
TINY_NLI_BIAS = (0.5, -1.0, 2.0)
"""The tiny NLI model's logits for every input (its classifier weights are zero), by column."""


def caption_texts() -> list[str]:
    """Return the captions of the bundled eLife figures (for training tiny tokenizers)."""
    import json

    texts = []
    for folder in ("elife-01222", "elife-00230"):
        with open(EXAMPLES / folder / "figures.jsonl", encoding="utf-8") as handle:
            texts += [json.loads(line)["caption"] for line in handle]
    return texts


def build_wordpiece_tokenizer(max_length: int, vocab_size: int = 800):
    """Train a small BERT-style WordPiece tokenizer on the bundled captions."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.train_from_iterator(caption_texts(), trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=max_length,
    )


@pytest.fixture(scope="session")
def tiny_nli_model(tmp_path_factory) -> Path:
    """A DeBERTa-v2 NLI cross-encoder folder with id2label TINY_NLI_LABELS and constant logits.

    The classifier's weights are zero and its bias is TINY_NLI_BIAS, so every input gets the
    same probabilities, softmax(TINY_NLI_BIAS), column by column. The context is 128 tokens.
    """
    import torch
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    folder = tmp_path_factory.mktemp("tiny-nli")
    tokenizer = build_wordpiece_tokenizer(max_length=128)
    config = DebertaV2Config(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        type_vocab_size=0,
        relative_attention=True,
        position_buckets=16,
        pos_att_type=["p2c", "c2p"],
        position_biased_input=False,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=3,
        id2label=TINY_NLI_LABELS,
        label2id={label: index for index, label in TINY_NLI_LABELS.items()},
    )
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(config)
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor(TINY_NLI_BIAS))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_transformers_clip(tmp_path_factory) -> Path:
    """A transformers CLIPModel folder: 32-pixel images, a 32-token text context, 16-d embeddings."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    folder = tmp_path_factory.mktemp("tiny-hf-clip")
    tokenizer = build_wordpiece_tokenizer(max_length=32)
    config = CLIPConfig(
        text_config={
            "vocab_size": tokenizer.vocab_size,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": 32,
            "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.cls_token_id,
            "eos_token_id": tokenizer.sep_token_id,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_open_clip(tmp_path_factory) -> str:
    """A BiomedCLIP-shaped open_clip model, as `local-dir:FOLDER`: timm ViT image tower, BERT text tower.

    The folder contains the files of a BiomedCLIP snapshot (open_clip_config.json, the weights,
    the tokenizer files) plus the BERT text tower's config.json, which a snapshot leaves to the hub.
    Images are 160 pixels (timm's `test_vit`), the text context is 64 tokens.
    """
    import json

    import open_clip
    import torch

    folder = tmp_path_factory.mktemp("tiny-open-clip")
    tokenizer = build_wordpiece_tokenizer(max_length=64)
    tokenizer.save_pretrained(folder)
    from transformers import BertConfig

    BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    ).save_pretrained(folder)
    config = {
        "model_cfg": {
            "embed_dim": 16,
            "vision_cfg": {
                "timm_model_name": "test_vit",
                "timm_model_pretrained": False,
                "timm_pool": "",
                "timm_proj": "linear",
                "image_size": 160,
            },
            "text_cfg": {
                "hf_model_name": str(folder),
                "hf_tokenizer_name": str(folder),
                "hf_proj_type": "mlp",
                "hf_pooler_type": "cls_last_hidden_state_pooler",
                "context_length": 64,
            },
        },
        "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711]},
    }
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.manual_seed(0)
    model = open_clip.create_model(f"local-dir:{folder}", pretrained_text=False)
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return f"local-dir:{folder}"


# Sources: shards built from the real sample, and a loopback HTTP server -----------------------

import io
import json
import sys
import tarfile
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

Sample = tuple[str, dict[str, bytes]]
"""A webdataset sample: its key and its members by extension, in tar order."""


def _read_samples(shard: Path) -> list[Sample]:
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as archive:
        for member in archive:
            key, _, extension = member.name.partition(".")
            samples.setdefault(key, {})[extension] = archive.extractfile(member).read()
    return list(samples.items())


@pytest.fixture(scope="session")
def sample_members(biomedica_shard) -> list[Sample]:
    """The 15 samples of the bundled shard, in tar order: (key, {"jpg", "txt", "json": bytes})."""
    return _read_samples(biomedica_shard)


def write_shard_file(path: Path, samples: list[Sample]) -> Path:
    """Write samples as a webdataset tar (members in the given order), the way tarfile does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as archive:
        for key, members in samples:
            for extension, data in members.items():
                info = tarfile.TarInfo(f"{key}.{extension}")
                info.size = len(data)
                info.mtime = 0
                archive.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="session")
def write_shard():
    """The function `write_shard(path, samples) -> path`."""
    return write_shard_file


@dataclass
class LoopbackServer:
    """A real HTTP server on 127.0.0.1 serving files under `root`, with Hugging Face Hub routes.

    - `GET /PATH` serves `root/PATH`, with HTTP Range support.
    - `GET /datasets/OWNER/NAME/resolve/REVISION/PATH` serves `root/datasets/OWNER/NAME/PATH`.
    - `GET /api/datasets/OWNER/NAME/tree/REVISION[/PATH]?recursive=true` lists the files under
      that folder as the Hub API does, `page_size` entries per page with a `Link: rel="next"`.
    - With `token` set, every request without `Authorization: Bearer TOKEN` gets HTTP 401.
    - `break_once[PATH] = N`: the first response for PATH stops after N body bytes.
    - `fail_status[PATH] = [503, ...]`: the next responses for PATH get these statuses first.
    """

    root: Path
    token: str | None = None
    page_size: int = 1000
    break_once: dict[str, int] = field(default_factory=dict)
    fail_status: dict[str, list[int]] = field(default_factory=dict)
    requests: list[dict] = field(default_factory=list)
    url: str = ""


def _make_handler(server: LoopbackServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # quiet: the tests read `server.requests`
            pass

        def do_GET(self):
            parsed = urlparse(self.path)
            path = unquote(parsed.path)
            server.requests.append({"path": path, "query": parsed.query, "headers": dict(self.headers)})
            if server.token and self.headers.get("Authorization") != f"Bearer {server.token}":
                return self._send(401, b'{"error": "Invalid credentials"}', "application/json")
            statuses = server.fail_status.get(path)
            if statuses:
                return self._send(statuses.pop(0), b"try again")
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "datasets"] and len(parts) >= 6 and parts[4] == "tree":
                return self._tree("/".join(parts[2:4]), "/".join(parts[6:]), parse_qs(parsed.query))
            if parts[0] == "datasets" and len(parts) >= 6 and parts[3] == "resolve":
                path = "/".join(["datasets", parts[1], parts[2], *parts[5:]])
            return self._file(path)

        def _tree(self, repo: str, folder: str, query: dict) -> None:
            base = server.root / "datasets" / repo
            target = base / folder
            if not target.is_dir():
                return self._send(404, b'{"error": "not found"}', "application/json")
            entries = [
                {"type": "file", "path": item.relative_to(base).as_posix(), "size": item.stat().st_size, "oid": "0"}
                for item in sorted(target.rglob("*"))
                if item.is_file()
            ]
            start = int(query.get("cursor", ["0"])[0])
            page = entries[start : start + server.page_size]
            headers = {}
            if start + server.page_size < len(entries):
                next_url = f"{server.url}/api/datasets/{repo}/tree/main/{folder}?recursive=true&cursor={start + server.page_size}"
                headers["Link"] = f'<{next_url}>; rel="next"'
            self._send(200, json.dumps(page).encode(), "application/json", headers)

        def _file(self, path: str) -> None:
            file = server.root / path.lstrip("/")
            if not file.is_file():
                return self._send(404, b"not found")
            data = file.read_bytes()
            start = 0
            status = 200
            headers = {"Accept-Ranges": "bytes"}
            range_header = self.headers.get("Range")
            if range_header and range_header.startswith("bytes="):
                start = int(range_header.removeprefix("bytes=").split("-")[0])
                status = 206
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            cut = server.break_once.pop(path, None)
            if cut is None:
                return self._send(status, body, "application/octet-stream", headers)
            # Promise the whole body, send part of it, and close: a dropped connection.
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[:cut])
            self.wfile.flush()
            self.close_connection = True

        def _send(self, status: int, body: bytes, content_type: str = "text/plain", headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    return Handler


class _QuietHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A client that closes the connection early (as the tests make it do) is no error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture
def http_server(tmp_path):
    """A LoopbackServer serving `tmp_path / "www"`; its URL is `server.url` (http://127.0.0.1:PORT)."""
    server = LoopbackServer(root=tmp_path / "www")
    server.root.mkdir()
    httpd = _QuietHTTPServer(("127.0.0.1", 0), _make_handler(server))
    httpd.daemon_threads = True
    server.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    httpd.shutdown()
    httpd.server_close()


def distinct_copy_of(samples: list[Sample], copy: int) -> list[Sample]:
    """A copy of samples with new keys and image bytes, which de-duplication treats as new figures.

    Bytes after a PNG's end are ignored by decoders, so the copy decodes to the same pixels (a
    near-duplicate) but has another SHA-256; the json's `image_hash` changes to match.
    """
    import hashlib

    copied = []
    for key, members in samples:
        image = members["jpg"] + f"copy {copy}".encode()
        metadata = json.loads(members["json"])
        metadata["image_hash"] = hashlib.sha256(image).hexdigest()
        copied.append((f"c{copy:04d}-{key}", {"jpg": image, "txt": members["txt"], "json": json.dumps(metadata).encode()}))
    return copied


@pytest.fixture(scope="session")
def distinct_copy():
    """The function `distinct_copy(samples, copy) -> samples` (see distinct_copy_of)."""
    return distinct_copy_of


# The OpenAI-compatible stub server, for every area whose code calls a model ------------------


# Tests import the stub's reply constructors with `from stubs.openai_server import Reply`.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def openai_stub():
    """A running OpenAI-compatible server on 127.0.0.1 with scripted replies (see stubs/openai_server.py)."""
    from stubs.openai_server import OpenAIStub

    with OpenAIStub() as stub:
        yield stub
