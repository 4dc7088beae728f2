"""Fixtures of the evaluation tests: a tiny MicroVQA-layout parquet with images and a tiny VLM."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

# Four questions over the three MicroVQA tasks, with one, two or no images each. Correct options
# (1-based): 2, 1, 2, 4. Task 1 has two questions, tasks 2 and 3 one each.
TINY_ROWS = [
    {
        "key_question": "q-1",
        "question": "A confocal image of HeLa cells stained for GM130. Which organelle is labelled?",
        "choices": ["Nucleus", "Golgi apparatus", "Mitochondria", "Lysosomes"],
        "correct_index": 1,
        "task": 1,
        "task_str": "Expert Visual Understanding",
        "blooms_level": 2,
        "images": [(200, 30, 30)],
    },
    {
        "key_question": "q-2",
        "question": "The signal disperses after nocodazole. What most likely explains this?",
        "choices": ["Microtubule depolymerisation", "ER stress", "Apoptosis", "Fixation artefact"],
        "correct_index": 0,
        "task": 2,
        "task_str": "Hypothesis Generation",
        "blooms_level": 4,
        "images": [(30, 200, 30), (30, 30, 200)],
    },
    {
        "key_question": "q-3",
        "question": "Which control best tests antibody specificity?",
        "choices": ["Secondary only", "Knockdown of the target", "A brighter laser", "A longer exposure"],
        "correct_index": 1,
        "task": 3,
        "task_str": "Experimental Proposal",
        "blooms_level": 4,
        "images": [(120, 120, 0)],
    },
    {
        "key_question": "q-4",
        "question": "Nuclei appear fragmented. Which process is most likely?",
        "choices": ["Mitosis", "Necrosis", "Autophagy", "Apoptosis"],
        "correct_index": 3,
        "task": 1,
        "task_str": "Expert Visual Understanding",
        "blooms_level": 2,
        "images": [],
    },
]


def png_bytes(color: tuple[int, int, int], size: tuple[int, int] = (48, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_microvqa_parquet(path: Path, rows: list[dict] = TINY_ROWS) -> Path:
    """Write rows in the MicroVQA layout, with `images_list` as Hugging Face Image structs."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table(
        {
            "key_question": [row["key_question"] for row in rows],
            "images_list": pa.array(
                [[{"bytes": png_bytes(color), "path": None} for color in row["images"]] for row in rows],
                type=pa.list_(image_type),
            ),
            "question": [row["question"] for row in rows],
            "choices": [row["choices"] for row in rows],
            "correct_index": [row["correct_index"] for row in rows],
            "correct_answer": [row["choices"][row["correct_index"]] for row in rows],
            "task": [row["task"] for row in rows],
            "task_str": [row["task_str"] for row in rows],
            "blooms_level": [row["blooms_level"] for row in rows],
        }
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture
def microvqa_parquet(tmp_path: Path) -> Path:
    """The four TINY_ROWS as a MicroVQA-layout parquet file with PNG images."""
    return write_microvqa_parquet(tmp_path / "data" / "microvqa.parquet")


@pytest.fixture
def tiny_rows() -> list[dict]:
    """Copies of TINY_ROWS, whose `images` are the RGB colours of the images."""
    return [dict(row) for row in TINY_ROWS]


@pytest.fixture
def parquet_writer():
    """`write_microvqa_parquet(path, rows)`, for tests that need their own rows."""
    return write_microvqa_parquet


@pytest.fixture
def make_png():
    """`png_bytes(color, size)`: the bytes of a plain PNG image."""
    return png_bytes


# A tiny random LLaVA: the real architecture, processor and loading code, a few thousand weights.
_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'].upper() }}: "
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}<image> "
    "{% else %}{{ part['text'] }} {% endif %}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT: {% endif %}"
)
TINY_VLM_ANSWER = "The answer is (2)"


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Save a tiny random LLaVA with its processor; greedy decoding replies "The answer is (2)".

    The reply is fixed through the generation config's `sequence_bias`, which the checkpoint
    stores like any other generation setting, so the reply is the same whatever the weights.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        GenerationConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    folder = tmp_path_factory.mktemp("tiny-llava")
    tokenizer_model = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer_model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer_model.decoder = decoders.WordPiece(prefix="##")
    words = "USER: ASSISTANT: The answer is (1) (2) (3) (4) Options: cell image nucleus golgi"
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "<unk>", "<s>", "</s>", "<image>"])
    tokenizer_model.train_from_iterator([words], trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer_model,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessor(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=_CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14, projection_dim=16
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    chain = ["ASSISTANT:", *TINY_VLM_ANSWER.split(), "</s>"]
    bias = [[tokenizer.convert_tokens_to_ids([first, second]), 100.0] for first, second in zip(chain, chain[1:])]
    model.generation_config = GenerationConfig(
        sequence_bias=bias,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder
