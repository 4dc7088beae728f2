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


# The OpenAI-compatible stub server, for every area whose code calls a model ------------------

import sys  # noqa: E402

# Tests import the stub's reply constructors with `from stubs.openai_server import Reply`.
sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def openai_stub():
    """A running OpenAI-compatible server on 127.0.0.1 with scripted replies (see stubs/openai_server.py)."""
    from stubs.openai_server import OpenAIStub

    with OpenAIStub() as stub:
        yield stub
