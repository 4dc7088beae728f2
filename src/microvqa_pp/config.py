"""Run configuration: typed settings per stage, named profiles, a TOML file and overrides.

Settings are resolved in this order, later ones winning: the defaults below, the profile's
defaults (`offline` or `full`), the settings stored in the run by earlier commands, the TOML file
given with `--config`, typed command-line options, and `--set KEY=VALUE` overrides. Unknown keys
are errors, so a typo never passes silently.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from microvqa_pp import models
from microvqa_pp.errors import ConfigError


class Section(BaseModel):
    """Base of every settings section: unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class IngestConfig(Section):
    """Selection and validation of figures (stage `ingest`)."""

    source_kind: Literal["auto", "biomedica", "parquet", "folder"] = "auto"
    primary_labels: list[str] = Field(default_factory=lambda: ["Microscopy"])
    """A BIOMEDICA figure is kept when any of its primary labels is listed; empty keeps all."""
    secondary_labels: list[str] = Field(default_factory=list)
    """When not empty, a figure must also have one of these secondary labels."""
    licenses: list[str] = Field(default_factory=lambda: ["commercial", "noncommercial", "other"])
    """License groups (`commercial`, `noncommercial`, `other`) or exact `article_license` values."""
    min_side: int = Field(default=64, ge=1)
    """Minimum image width and height, in pixels."""
    max_pixels: int = Field(default=100_000_000, ge=1)
    """Maximum width times height; larger images are rejected before decoding (decompression bombs)."""
    min_caption_chars: int = Field(default=20, ge=0)
    max_caption_chars: int = Field(default=20_000, ge=1)
    deduplicate: bool = True
    """Drop figures whose image hash equals that of an earlier figure."""
    near_duplicate_distance: int = Field(default=4, ge=0, le=64)
    """Maximum Hamming distance between 64-bit perceptual hashes of near-duplicate images."""
    drop_near_duplicates: bool = False
    """Drop near-duplicates instead of only linking them to the first figure of their group."""
    chunk_size: int = Field(default=256, ge=1)
    """Figures per work unit of a figure folder; a tar shard, a local parquet row group and a
    remote parquet file are one unit each."""


class AgentConfig(Section):
    """The model that writes and checks questions (stages `generate`, `score`, `mcq`, `eval`)."""

    backend: Literal["offline", "openai"] = "offline"
    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = ""
    api_key_env: str = "OPENAI_API_KEY"
    """Name of the environment variable that holds the API key; the key itself is never stored."""
    timeout_s: float = Field(default=120.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    concurrency: int = Field(default=8, ge=1)
    max_image_side: int = Field(default=1024, ge=32)
    """Images are shrunk so that their longer side is at most this many pixels before sending."""
    temperature: float = Field(default=0.0, ge=0)
    max_tokens: int = Field(default=2048, ge=1)
    cache: bool = True
    """Store replies in RUN/cache/llm.sqlite and reuse them, so a rerun sends no repeated request."""
    retry_base_s: float = Field(default=1.0, gt=0)
    """First back-off delay in seconds; it doubles with each retry (with full jitter)."""
    retry_max_s: float = Field(default=60.0, gt=0)
    """Maximum back-off delay in seconds, also the cap on a server's `Retry-After`."""
    structured_output: bool = True
    """Request JSON through `response_format` json_schema; servers that reject it get plain requests."""


class GenerateConfig(Section):
    """Caption-grounded question-answer pairs (stage `generate`)."""

    questions_per_figure: int = Field(default=3, ge=1)
    chunk_size: int = Field(default=64, ge=1)


class SignalsConfig(Section):
    """Consistency signals per QA (stage `score`). A model set to None is not used."""

    text_model: str = models.TEXT_EMBEDDER
    """Sentence-transformers folder or hub id, for caption-QA similarity and the text embeddings."""
    nli_model: str | None = None
    """Transformers sequence-classification NLI model (folder or hub id) with entailment, neutral
    and contradiction labels in its id2label."""
    clip_model: str | None = None
    """open_clip model as `hf-hub:ID` or `local-dir:FOLDER`, or a transformers CLIPModel folder or hub id."""
    judge: bool = False
    """Ask the agent (which must be an LLM backend) to rate each QA's consistency from 0 to 1."""
    batch_size: int = Field(default=32, ge=1)
    """Inputs per model forward pass (texts, images or NLI premise-hypothesis pairs)."""
    device: str = "auto"
    """`auto` (CUDA, then MPS, then CPU), `cpu`, `mps`, `cuda` or `cuda:N`."""
    half_precision: bool = True
    """Run the models in float16 on a GPU (CUDA or MPS); the CPU always uses float32."""
    chunk_size: int = Field(default=256, ge=1)
    """QAs per work unit; each finished unit is written to disk, so memory stays flat."""


class FilterConfig(Section):
    """HiCQA-Graph filtering (stage `filter`).

    `method` picks the score that decides: `graph` (the trained HiCQA-Graph) or one signal alone
    as a baseline: `clip` (calibrated CLIP image-QA similarity), `nli` (NLI entailment), `text`
    (sentence-embedding similarity of caption and QA) or `lexical` (word overlap).
    """

    method: Literal["graph", "clip", "nli", "text", "lexical"] = "graph"
    keep_share: float = Field(default=0.75, gt=0, le=1)
    """Share of QAs to keep, the highest scores first."""
    threshold: float | None = None
    """When set, keep every QA whose score is at least this value instead of the top share."""
    per_task: bool = False
    """Apply the keep share within each task type instead of over all QAs."""

    # Graph construction.
    knn_k: int = Field(default=8, ge=0)
    """Nearest neighbours per image and per QA by embedding similarity (0: no similarity edges)."""
    knn_exact_below: int = Field(default=20_000, ge=1)
    """Node counts below this use exact nearest-neighbour search; larger ones a random-projection forest."""
    knn_trees: int = Field(default=4, ge=1)
    """Random-projection trees of the approximate nearest-neighbour search (more: better recall)."""

    # Model.
    hidden_channels: int = Field(default=64, ge=4)
    num_layers: int = Field(default=2, ge=1)
    heads: int = Field(default=2, ge=1)
    """Attention heads of the GATv2 layers; `hidden_channels` must be divisible by it."""
    dropout: float = Field(default=0.4, ge=0, lt=1)

    # Training.
    epochs: int = Field(default=300, ge=1)
    patience: int = Field(default=40, ge=1)
    """Stop after this many epochs without a lower loss on the held-out QAs."""
    learning_rate: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=1e-3, ge=0)
    held_out_share: float = Field(default=0.2, gt=0, lt=1)
    """Share of QA nodes whose weak labels are kept out of training, for early stopping."""
    batch_qas: int = Field(default=50_000, ge=1)
    """Graphs with more QA nodes are trained and scored in partitions of about this many QAs."""
    score_halo: bool = False
    """Score each partition together with the figures that similarity edges join to it, so no QA
    loses a neighbour to the cut. Exact for one-layer models; at 1 M QAs in 20 partitions it made
    scoring about ten times slower, so it is off by default. No effect below `batch_qas` QAs."""
    threads: int | None = Field(default=None, ge=1)
    """CPU threads for training and scoring; None: one thread below 20,000 QAs, where tensors are too
    small to repay the synchronisation of several, and PyTorch's default above."""

    # Fusion of the consistency score: a weighted mean of log-odds.
    nli_weight: float = Field(default=1.0, ge=0)
    alignment_weight: float = Field(default=1.0, ge=0)
    judge_weight: float = Field(default=1.0, ge=0)
    """Weight of the agent judge's score in the fused score, for QAs that have one."""
    reliability_weighting: bool = True
    """Multiply each head's weight by 1 / (1 - R^2) of its predictions on the held-out QAs."""

    @model_validator(mode="after")
    def _one_selection_rule(self) -> "FilterConfig":
        if self.per_task and self.threshold is not None:
            raise ValueError("per_task applies the keep share within each task type and cannot be combined with threshold; unset one of them")
        return self


class McqConfig(Section):
    """Multiple-choice questions, rationales and checks (stage `mcq`)."""

    num_options: int = Field(default=4, ge=2, le=10)
    chunk_size: int = Field(default=32, ge=1)
    """QAs per work unit."""
    max_length_ratio: float = Field(default=1.5, ge=1.0)
    """A correct option longer than this many times the longest distractor (in characters) is rejected."""
    max_caption_copy_words: int = Field(default=12, ge=3)
    """A stem that shares this many consecutive words with the caption is rejected as a copy."""
    write_attempts: int = Field(default=2, ge=1)
    """Requests per QA while replies fail validation; each retry states what was wrong (LLM agents only)."""
    no_image_samples: int = Field(default=3, ge=1)
    """Text-only answers per question in each round of the no-image check."""
    no_image_max_accuracy: float = Field(default=0.5, ge=0, le=1)
    """A question answered correctly without the image in more than this share of samples is flagged."""
    rewrite_rounds: int = Field(default=2, ge=0)
    """Rewrites of a flagged question before it is marked `failed`."""
    blooms: Literal["agent", "classifier"] = "agent"
    """Source of Bloom's levels: the agent (the offline agent uses the classifier), or always the classifier."""
    text_model: str | None = models.TEXT_EMBEDDER
    """Sentence embedder for the Bloom's classifier and the offline no-image check; None uses TF-IDF
    features and word cues only."""


class SplitConfig(Section):
    """Train and test splits (stage `split`)."""

    test_share: float = Field(default=0.2, gt=0, lt=1)
    """Target share of questions in the test split; grouping decides how close the split gets."""
    near_duplicate_distance: int = Field(default=10, ge=0, le=64)
    """Figures whose 64-bit perceptual hashes differ in at most this many bits share a split.

    Measured on 8 bundled eLife figures: re-encoding, halving and greyscale conversion change at
    most 2 bits, a 3 % crop up to 12 and a 30 % brightness change up to 8. The closest two
    distinct figures of the bundled sample differ in 14 bits.
    """


class ExportConfig(Section):
    """Release files and the data-set card (stage `export`)."""

    name: str = "MicroVQA++ microscopy VQA (built with microvqa-pp)"
    """The data set's title in the card."""
    microvqa_splits: list[Literal["train", "test"]] = Field(default_factory=lambda: ["test"])
    """Splits also written in the MicroVQA evaluation layout."""
    row_group_size: int = Field(default=100, ge=1)
    """Rows per parquet row group; rows carry image bytes, so groups stay small."""


class ReportConfig(Section):
    """The data-set report (`microvqa-pp report`, and the end of `build`)."""

    blooms_reference: str = models.BLOOMS_REFERENCE
    """Reference Bloom's-level distribution: the packaged MicroVQA labels, or a JSONL file path."""
    tsne_perplexity: float = Field(default=30.0, gt=0)
    tsne_iterations: int = Field(default=1000, ge=250)
    tsne_max_points: int = Field(default=2000, ge=10)
    """Larger sets are subsampled (seeded) before t-SNE, whose time grows faster than the count."""


class EvalConfig(Section):
    """Evaluation of a model on MicroVQA-layout data (`microvqa-pp eval`).

    The OpenAI-compatible server's address, key, retries and concurrency come from `agent`.
    """

    backend: Literal["openai", "transformers"] = "openai"
    no_image: Literal["off", "reference", "choices-only", "last-sentence"] = "off"
    temperature: float = Field(default=1.0, ge=0)
    """MicroVQA's reference client samples at temperature 1 (its default), so this does too."""
    max_tokens: int = Field(default=2048, ge=1)
    limit: int | None = Field(default=None, ge=1)
    """Evaluate a seeded random sample of this many questions; None takes all."""
    batch_size: int = Field(default=32, ge=1)
    """Questions per checkpoint of a resumable evaluation; the OpenAI-compatible backend uses at
    least twice `agent.concurrency`, so that every request slot stays busy."""
    max_image_side: int | None = Field(default=None, ge=32)
    """Shrink images whose longer side exceeds this many pixels; None sends them at full size,
    as MicroVQA's reference client does (and leaves resizing to a local model's processor)."""
    split: str | None = None
    """Split of a Hugging Face data set; None takes its only split."""
    device: str = "auto"
    """Torch device of the transformers backend: auto, cpu, cuda, cuda:1, mps."""
    dtype: str = "auto"
    """Torch dtype of the transformers backend: auto (the checkpoint's), float32, bfloat16, ..."""


class Config(Section):
    """All settings of a run."""

    profile: Literal["offline", "full"] = "offline"
    seed: int = 0
    executor: Literal["local", "ray"] = "local"
    workers: int = Field(default=1, ge=1)
    """Worker processes (local executor) or Ray tasks running at once."""
    limit: int | None = Field(default=None, ge=1)
    """Stop after this many accepted figures; None takes all."""
    ingest: IngestConfig = Field(default_factory=IngestConfig)
    agent: AgentConfig = Field(default_factory=AgentConfig)
    generate: GenerateConfig = Field(default_factory=GenerateConfig)
    signals: SignalsConfig = Field(default_factory=SignalsConfig)
    filter: FilterConfig = Field(default_factory=FilterConfig)
    mcq: McqConfig = Field(default_factory=McqConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    report: ReportConfig = Field(default_factory=ReportConfig)

    def section_fingerprint(self, *keys: str) -> str:
        """Return a short hash of the named top-level settings, for cache keys and resume checks."""
        data = self.model_dump(mode="json")
        selected = {key: data[key] for key in keys}
        encoded = json.dumps(selected, sort_keys=True).encode()
        return hashlib.sha256(encoded).hexdigest()[:16]


PROFILES: dict[str, dict[str, Any]] = {
    # No model hub and no LLM server: the template agent, the sentence embedder and lexical
    # features. CLIP and NLI are reported as unavailable.
    "offline": {
        "agent": {"backend": "offline"},
        "signals": {"nli_model": None, "clip_model": None, "judge": False},
    },
    # The field's models: an OpenAI-compatible MLLM, BiomedCLIP and a DeBERTa-v3 NLI model.
    "full": {
        "agent": {"backend": "openai"},
        "signals": {
            "nli_model": models.NLI_CROSS_ENCODER,
            "clip_model": models.BIOMEDCLIP,
            "judge": True,
        },
    },
}


def merge_settings(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge `update` into a copy of `base`, recursing into nested tables."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(text: str) -> dict[str, Any]:
    """Parse `section.key=VALUE` into a nested dict; VALUE is read as TOML, else as a string."""
    key, separator, raw_value = text.partition("=")
    if not separator or not key.strip():
        raise ConfigError(f"invalid override {text!r}: expected KEY=VALUE, e.g. filter.keep_share=0.8")
    try:
        value = tomllib.loads(f"value = {raw_value}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw_value
    if raw_value.strip().lower() in ("none", "null"):
        value = None
    nested: dict[str, Any] = {}
    node = nested
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML configuration file, raising ConfigError with the file and line on failure."""
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError as error:
        raise ConfigError(f"configuration file not found: {path}") from error
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"invalid TOML in {path}: {error}") from error


def _drop_nones(data: dict[str, Any]) -> dict[str, Any]:
    """Remove None values, which TOML cannot store (a missing key means the default)."""
    cleaned = {}
    for key, value in data.items():
        if isinstance(value, dict):
            cleaned[key] = _drop_nones(value)
        elif value is not None:
            cleaned[key] = value
    return cleaned


def explicit_settings(
    *,
    base: dict[str, Any] | None = None,
    file: Path | None = None,
    values: dict[str, Any] | None = None,
    overrides: list[str] | tuple[str, ...] = (),
) -> dict[str, Any]:
    """Layer the settings a user chose explicitly: `base`, then the file, typed options, overrides."""
    merged = copy.deepcopy(base or {})
    if file is not None:
        merged = merge_settings(merged, read_toml(file))
    if values:
        merged = merge_settings(merged, values)
    for text in overrides:
        merged = merge_settings(merged, parse_override(text))
    return merged


def load_config(profile: str | None = None, explicit: dict[str, Any] | None = None) -> Config:
    """Resolve the configuration: the profile's defaults with the explicit settings on top.

    The profile is `profile` if given, else the explicit `profile` key, else `offline`.
    """
    explicit = explicit or {}
    chosen = profile or explicit.get("profile") or "offline"
    if chosen not in PROFILES:
        raise ConfigError(f"unknown profile {chosen!r}; choose one of {sorted(PROFILES)}")
    merged = merge_settings(PROFILES[chosen], explicit)
    merged["profile"] = chosen
    try:
        return Config.model_validate(merged)
    except ValidationError as error:
        problems = "; ".join(_describe_problem(item) for item in error.errors())
        raise ConfigError(f"invalid configuration: {problems}") from error


def _describe_problem(item: dict[str, Any]) -> str:
    """Word one pydantic error for a user: an unknown key gets the nearest known names."""
    location = [str(part) for part in item["loc"]]
    key = ".".join(location)
    if item["type"] != "extra_forbidden":
        return f"{key}: {item['msg']}"
    model: type[BaseModel] = Config
    for part in location[:-1]:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            break
        model = annotation
    prefix = ".".join(location[:-1])
    qualified = {name: f"{prefix}.{name}" if prefix else name for name in model.model_fields}
    close = [qualified[name] for name in difflib.get_close_matches(location[-1], list(qualified), n=3, cutoff=0.6)]
    hint = f"did you mean {' or '.join(close)}?" if close else f"known settings here: {', '.join(qualified.values())}"
    return f"unknown setting {key}; {hint}"


def config_to_toml(config: Config) -> str:
    """Render a configuration as TOML (None values are left out and mean the default)."""
    import tomli_w

    return tomli_w.dumps(_drop_nones(config.model_dump(mode="json")))
