"""MicroVQA's reference prompt and its no-image variants, rendered into chat requests.

The templates are files beside this module (`prompts/`), copied word for word from MicroVQA's
`eval/eval.py`; their headers give the source and licence. Options are numbered from 1 as
`  (1): TEXT`, one per line, and the images follow the text as separate content parts of the
single user message, as in MicroVQA's API client.

No-image modes:

- `off`: the reference prompt with the images.
- `reference`: MicroVQA's `no_image=True` run, the no-image prompt and no images.
- `choices-only`: no images and no question text, only the options.
- `last-sentence`: no images and only the last sentence of the question, which drops the
  context that the question states before it.

NOTE: MicroVQA's `run_eval.py` names the last two ablations (`is_noimage_v2`, `is_noimage_v3`)
and describes them in comments, but no stored version of its `eval.py` implements them. Here
they use the no-image template with the question text reduced as those comments describe.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path

from microvqa_pp.agents.base import ChatRequest, ImagePart, Message
from microvqa_pp.errors import ConfigError
from microvqa_pp.evaluation.records import NO_IMAGE_MODES, EvalQuestion

TASK_NAME = "microvqa-eval"


@dataclass(frozen=True)
class PromptTemplate:
    """A prompt template file: its header fields and the template text after the separator."""

    name: str
    version: str
    text: str

    @property
    def cache_namespace(self) -> str:
        """Name and version, so that a changed template never reuses cached replies."""
        return f"{TASK_NAME}/{self.name}@{self.version}"


@cache
def load_template(filename: str) -> PromptTemplate:
    """Read a template file from `prompts/`: a header between `---` lines, then the template.

    Header lines are `key: value`; indented lines continue the previous value and `#` lines are
    comments. The text after the closing `---` line is kept byte for byte, trailing spaces and
    final newline included, because the reference prompt must be reproduced exactly.
    """
    raw = resources.files("microvqa_pp.evaluation").joinpath("prompts", filename).read_text(encoding="utf-8")
    opening, _, rest = raw.partition("---\n")
    header, separator, text = rest.partition("\n---\n")
    if opening or not separator:
        raise ValueError(f"prompt template {filename} must start with a header between two '---' lines")
    fields: dict[str, str] = {}
    for line in header.splitlines():
        if line.startswith(("#", " ")) or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    if not fields.get("name") or not fields.get("version"):
        raise ValueError(f"prompt template {filename} has no name or version in its header")
    return PromptTemplate(name=fields["name"], version=fields["version"], text=text)


def template_for(no_image: str) -> PromptTemplate:
    """Return the template of a no-image mode."""
    check_no_image_mode(no_image)
    filename = "microvqa_reference.txt" if no_image == "off" else "microvqa_reference_no_image.txt"
    return load_template(filename)


def check_no_image_mode(no_image: str) -> None:
    if no_image not in NO_IMAGE_MODES:
        raise ConfigError(f"invalid no-image mode {no_image!r}; choose one of {', '.join(NO_IMAGE_MODES)}")


_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def last_sentence(question: str) -> str:
    """Return the last sentence of a question (the whole question when it has one sentence)."""
    sentences = [sentence for sentence in _SENTENCE_END.split(question.strip()) if sentence.strip()]
    return sentences[-1].strip() if sentences else ""


def render_text(template: PromptTemplate, question: str, choices: list[str]) -> str:
    """Fill a template the way MicroVQA does: the question first, then the numbered options."""
    text = template.text.replace("{{QUESTION}}", question)
    options = "".join(f"  ({number}): {choice}\n" for number, choice in enumerate(choices, start=1))
    return text.replace("{{CHOICES}}", options)


def question_text(item: EvalQuestion, no_image: str) -> str:
    """Return the question text a no-image mode sends."""
    if no_image == "choices-only":
        return ""
    if no_image == "last-sentence":
        return last_sentence(item.question)
    return item.question


def build_messages(item: EvalQuestion, no_image: str = "off") -> list[Message]:
    """Render the single user message: the prompt text, then one image part per image."""
    template = template_for(no_image)
    text = render_text(template, question_text(item, no_image), item.choices)
    images = [ImagePart(Path(path)) for path in item.images] if no_image == "off" else []
    return [Message("user", (text, *images))]


def prompt_hash(item: EvalQuestion, messages: list[Message]) -> str:
    """Return the SHA-256 of the rendered messages, with images by the SHA-256 of their bytes."""
    digests = dict(zip(item.images, item.image_sha256))
    encoded = []
    for message in messages:
        parts = []
        for part in message.content:
            if isinstance(part, ImagePart):
                parts.append({"image_sha256": digests.get(str(part.path), str(part.path))})
            else:
                parts.append({"text": part})
        encoded.append({"role": message.role, "content": parts})
    return hashlib.sha256(json.dumps(encoded, sort_keys=True).encode("utf-8")).hexdigest()


def build_request(
    item: EvalQuestion,
    *,
    no_image: str = "off",
    temperature: float = 1.0,
    max_tokens: int = 2048,
    seed: int | None = 0,
) -> tuple[ChatRequest, str]:
    """Return the chat request for a question and its prompt hash.

    NOTE: MicroVQA's client also sends top_p 1 and zero frequency and presence penalties. Those
    are OpenAI's defaults, but `ChatRequest` cannot carry them, so a server that fills in the
    model's own generation defaults instead may sample differently.
    """
    messages = build_messages(item, no_image)
    request = ChatRequest(
        messages=tuple(messages),
        temperature=temperature,
        max_tokens=max_tokens,
        seed=seed,
        cache_namespace=template_for(no_image).cache_namespace,
    )
    return request, prompt_hash(item, messages)
