"""The data-set card: `export/README.md` with the Hugging Face YAML header.

The card states counts, licences per source, how the data was made, the index base of
`correct_index` in each layout, and the known limits of the run read from the manifest. It contains
no timestamps, so an unchanged run gives the same card.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

from microvqa_pp.config import Config
from microvqa_pp.records import TASK_NAMES
from microvqa_pp.release import formats
from microvqa_pp.release.blooms import BLOOMS_NAMES

if TYPE_CHECKING:
    from microvqa_pp.release.export import ExportSummary

STAGE_DESCRIPTIONS = {
    "ingest": "figures read from the sources, validated (image decodes, caption present and in range), selected by label and licence, and de-duplicated by image hash",
    "generate": "caption-grounded question-answer pairs, each answer a span of the caption, labelled with a MicroVQA task type",
    "score": "consistency signals per QA (text similarity, lexical grounding, NLI, CLIP, agent judge where configured)",
    "filter": "HiCQA-Graph cross-modal consistency filter, keeping the most consistent QAs",
    "mcq": "multiple-choice questions with distractors, a rationale, a Bloom's level and the no-image check",
    "split": "train and test splits grouped by article, image hash and near-duplicate image",
    "export": "these files",
}

COLUMN_DESCRIPTIONS = {
    "image_name": "image file name: the figure id and its extension",
    "image": "the figure image (Hugging Face `Image`: `{bytes, path}`)",
    "question": "question stem",
    "choices": "options, each prefixed `1) `, `2) `...",
    "correct_index": "**1-based** position of the correct option (matches the prefixes)",
    "correct_answer": "the correct option, with its prefix",
    "cot": "chain-of-thought rationale from visual evidence to the answer",
    "task_str": "MicroVQA task type: " + ", ".join(TASK_NAMES.values()),
    "image_caption": "the figure caption from the article",
    "images_source": "where the figure comes from and its licence",
    "mcq_id": "question id in the run",
    "qa_id": "id of the question-answer pair the question was made from",
    "figure_id": "figure id (a BIOMEDICA sample key, or the source's id)",
    "split": "`train` or `test`",
    "task": "MicroVQA task id: " + ", ".join(f"{task} {name}" for task, name in TASK_NAMES.items()),
    "pmcid": "PubMed Central id of the article, where known",
    "article_id": "article id used for grouping (PMC id, else the source's article id)",
    "doi": "article DOI, where the source gives it",
    "license": "the figure's licence, as its article states it",
    "license_group": "`commercial`, `noncommercial` or `other` (the BIOMEDICA subsets)",
    "blooms_level": "Bloom's taxonomy level, 1 Recall to 6 Create",
    "blooms_name": "Bloom's taxonomy level name",
    "blooms_source": "what set `blooms_level`: `agent:NAME` for the question writer, else the name of the offline classifier",
    "blooms_level_classifier": "the offline classifier's Bloom's level, kept beside `blooms_level` for comparison",
    "consistency_score": "fused cross-modal consistency score of the source QA (higher is more consistent)",
    "head_nli": "HiCQA-Graph head predicting NLI entailment (empty when not recorded)",
    "head_alignment": "HiCQA-Graph head predicting image-text alignment (empty when not recorded)",
    "judge_score": "agent judge's consistency rating, 0 to 1 (empty without a judge)",
    "no_image_outcome": "no-image check: `passed`, `rewritten-passed` or `failed` (answerable from text alone)",
    "no_image_accuracy": "share of no-image answers that were right",
    "generator": "what wrote the question (model name, or the offline template agent)",
    "leakage_group": "group of figures sharing an article, image or near-duplicate; one group is never in both splits",
    "image_hash": "image hash used for grouping: BIOMEDICA's `image_hash` where the source gives it, else the SHA-256 of the image file",
    "phash": "64-bit DCT perceptual hash of the image as 16 hex digits (the `imagehash.phash` algorithm); images within the split's near-duplicate distance share a leakage group",
    "template_generated": "whether the `generate` stage wrote the source QA from a template rather than with a language model (empty when the run kept no `generate` output)",
}

_HF_LICENSE = re.compile(r"^CC[ -]?(BY(?:[ -](?:NC|SA|ND))*)[ -]?(\d\.\d)$")
_PLAIN_YAML = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._/*<>+-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "none", "~"}


def hf_license_id(license_text: str) -> str | None:
    """Map a licence string with a version (`CC BY 3.0`, `CC BY-NC-SA 4.0`, `CC0 1.0`) to its Hub id."""
    text = " ".join(license_text.upper().split())
    if re.fullmatch(r"CC0(?: 1\.0)?", text):
        return "cc0-1.0"
    match = _HF_LICENSE.match(text)
    if not match:
        return None
    parts = re.split(r"[ -]", match.group(1).lower())
    return "cc-" + "-".join(parts) + "-" + match.group(2)


def yaml_lines(value: Any, indent: int = 0) -> list[str]:
    """Render a mapping of mappings, lists and scalars as block YAML (strings quoted unless plain)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = _yaml_scalar(str(key))
            if isinstance(item, (dict, list)) and item:
                lines.append(f"{pad}{name}:")
                lines.extend(yaml_lines(item, indent + 2))
            else:
                lines.append(f"{pad}{name}: {_yaml_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict) and item:
                nested = yaml_lines(item, indent + 2)
                lines.append(f"{pad}- {nested[0].lstrip()}")
                lines.extend(nested[1:])
            elif isinstance(item, list) and item:
                lines.append(f"{pad}-")
                lines.extend(yaml_lines(item, indent + 2))
            else:
                lines.append(f"{pad}- {_yaml_scalar(item)}")
    return lines


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (dict, list)):
        return "{}" if isinstance(value, dict) else "[]"
    text = str(value)
    if _PLAIN_YAML.match(text) and text.lower() not in _YAML_WORDS and not text[0].isdigit() and not text.endswith(" "):
        return text
    return json.dumps(text, ensure_ascii=False)


def size_category(count: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return label
    return "1M<n<10M"


def card_metadata(summary: ExportSummary, config: Config) -> dict[str, Any]:
    """Return the card's YAML header: licence, task categories, configs and dataset_info."""
    items = [item for split_items in summary.items.values() for item in split_items]
    licence_ids = sorted({hf_license_id(item.figure.license) or "other" for item in items}) or ["other"]
    metadata: dict[str, Any] = {"pretty_name": config.export.name}
    metadata["license"] = licence_ids[0] if len(licence_ids) == 1 else licence_ids
    if "other" in licence_ids:
        # Each figure keeps its article's licence; the card's Licences section lists them.
        metadata["license_name"] = "per-figure"
        metadata["license_link"] = "README.md"
    metadata["language"] = ["en"]
    metadata["task_categories"] = ["visual-question-answering", "multiple-choice"]
    metadata["tags"] = ["microscopy", "biology", "biomedical", "vqa", "microvqa", "synthetic"]
    metadata["size_categories"] = [size_category(len(items))]

    if not summary.release:
        return metadata

    configs = [
        {
            "config_name": "default",
            "data_files": [{"split": split, "path": facts.path.replace("-00000-of-00001.parquet", "-*")} for split, facts in summary.release.items()],
            "default": True,
        }
    ]
    infos = [_dataset_info("default", formats.RELEASE_FEATURES, summary.release)]
    if summary.microvqa:
        configs.append(
            {
                "config_name": "microvqa",
                "data_files": [{"split": split, "path": facts.path.replace("-00000-of-00001.parquet", "-*")} for split, facts in summary.microvqa.items()],
            }
        )
        infos.append(_dataset_info("microvqa", formats.MICROVQA_FEATURES, summary.microvqa))
    metadata["configs"] = configs
    metadata["dataset_info"] = infos
    return metadata


def _dataset_info(name: str, features: dict[str, Any], files: dict[str, Any]) -> dict[str, Any]:
    return {
        "config_name": name,
        "features": formats.features_yaml(features),
        "splits": [{"name": split, "num_bytes": facts.num_bytes, "num_examples": facts.rows} for split, facts in files.items()],
        "download_size": sum(facts.file_bytes for facts in files.values()),
        "dataset_size": sum(facts.num_bytes for facts in files.values()),
    }


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def source_label(kind: str, location: str) -> str:
    name = Path(location.rstrip("/")).name or location
    labels = {"biomedica": "BIOMEDICA shard", "folder": "figure folder", "parquet": "parquet file"}
    return f"{labels.get(kind, kind)} `{name}`"


def known_limits(summary: ExportSummary, manifest: dict[str, Any], config: Config) -> list[str]:
    """List what a user of the data must know about this run, from the manifest and the data."""
    items = [item for split_items in summary.items.values() for item in split_items]
    notes = manifest.get("notes", {})
    limits = []
    if config.profile == "offline":
        limits.append(
            "Built with the offline profile: no multimodal LLM and no CLIP or NLI model. Questions, "
            "distractors and rationales come from the offline template writer, a deterministic "
            "caption-grounded agent that does not look at the image, so they test reading the caption's "
            "facts more than seeing the image. The stages' notes below say what stood in for each missing "
            "model. A column that a note names and the Fields table does not list is in the run's stage "
            "files under `stages/`, not in this export."
        )
    template_line = _template_line(items, notes)
    if template_line:
        limits.append(template_line)
    # Notes in the order the stages wrote them, which follows the pipeline.
    limits.extend(notes.values())
    failed = sum(1 for item in items if item.mcq.no_image_outcome == "failed")
    if failed:
        limits.append(f"{failed} questions failed the no-image check: a model answered them right without the image.")
    if "review" not in manifest.get("stages", {}):
        limits.append("No human review of the test split is recorded in this run.")
    if len(items) < 1000:
        limits.append(f"Small: {len(items)} questions are enough to check the pipeline but not to benchmark models.")
    return limits


def _template_line(items: list[Any], notes: dict[str, str]) -> str | None:
    """Return the known-limit line that counts template-written questions, or None when no line is needed."""
    count = sum(1 for item in items if item.template_generated)
    if not count:
        return None
    if count == len(items) and "generate" in notes:
        # The `generate` stage writes its note when its offline template writer made every QA.
        return None
    amount = f"All {count}" if count == len(items) else f"{count} of the {len(items)}"
    return f"{amount} questions were generated from templates, not by a language model (column `template_generated`)."


def render_card(summary: ExportSummary, manifest: dict[str, Any], config: Config) -> str:
    """Render the data-set card as Markdown with a YAML header."""
    items = {split: split_items for split, split_items in summary.items.items()}
    everything = [item for split_items in items.values() for item in split_items]
    figures = {item.figure.figure_id for item in everything}
    articles = {item.figure.article_id for item in everything}
    header = "\n".join(["---", *yaml_lines(card_metadata(summary, config)), "---"])

    sections = [header, f"# {config.export.name}"]
    sections.append(
        f"{len(everything)} multiple-choice microscopy questions about {len(figures)} figures from "
        f"{len(articles)} articles, each with a rationale, built from figure-caption pairs with "
        f"microvqa-pp {manifest.get('tool_version', '')} (the MicroVQA++ method) under the "
        f"`{config.profile}` profile."
    )

    sections.append("## Files\n\n" + _files_table(summary, config))
    sections.append(
        "## Index base of `correct_index`\n\n"
        "- `data/` (MicroVQA++ release schema): `choices` and `correct_answer` carry `1) `, `2) `... "
        "prefixes and `correct_index` is **1-based**, matching the prefixes, as in the published "
        "MicroVQA++ files.\n"
        "- `microvqa/` (MicroVQA evaluation layout): `choices` carry no prefixes and `correct_index` "
        "is **0-based**, as in MicroVQA (`jmhb/microvqa`).\n"
        "- `chat/`: the user turn numbers the options `(1)` to `(n)` and asks for a reply that ends "
        "with `The answer is (N)`. The assistant turn is the rationale, then a last line "
        "`The answer is (N)` with N the **1-based** number of the correct option."
    )
    sections.append("## Splits\n\n" + _splits_section(items, config.split.test_share))
    sections.append("## Fields of `data/`\n\n" + _table(["column", "type", "description"], [[f"`{name}`", _type_name(feature), COLUMN_DESCRIPTIONS.get(name, "")] for name, feature in formats.RELEASE_FEATURES.items()]))
    sections.append("## Licences\n\n" + _licences_section(everything, manifest))
    sections.append("## How the data was made\n\n" + _method_section(manifest, config))
    sections.append("## Known limits of this run\n\n" + "\n".join(f"- {limit}" for limit in known_limits(summary, manifest, config)))
    sections.append("## Bloom's taxonomy levels\n\n" + _blooms_table(everything))
    sections.append(_usage_section(summary))
    sections.append(
        "## Sources and credit\n\n"
        "- The method follows MicroVQA++ (GitHub `ieellee/MicroVQA-PlusPlus`): caption-grounded "
        "question generation, cross-modal consistency filtering with a heterogeneous graph, and "
        "multiple-choice questions with rationales.\n"
        "- The task types and the evaluation layout follow MicroVQA (`jmhb/microvqa` on Hugging Face, "
        "arXiv:2503.13399).\n"
        f"- Figures from BIOMEDICA ({formats.BIOMEDICA_URL}) come from PubMed Central open-access "
        "articles; other figures come from the articles named in `images_source` and `doi`."
    )
    return "\n\n".join(sections) + "\n"


def _type_name(feature: dict[str, Any]) -> str:
    if feature["_type"] == "Value":
        return feature["dtype"]
    if feature["_type"] == "Image":
        return "image"
    return f"list of {_type_name(feature['feature'])}"


def _files_table(summary: ExportSummary, config: Config) -> str:
    rows = []
    for split, facts in summary.release.items():
        rows.append([f"`{facts.path}`", facts.rows, "MicroVQA++ release schema plus provenance (Hugging Face parquet)"])
    for split, facts in summary.microvqa.items():
        rows.append([f"`{facts.path}`", facts.rows, "MicroVQA evaluation layout (`images_list`, 0-based `correct_index`, `task`)"])
    splits = [split for split, items in summary.items.items() if items]
    for split in splits:
        rows.append([f"`chat/{split}.jsonl`", len(summary.items[split]), "conversations: `messages` (user turn with one `<image>` token, assistant turn with rationale and answer) and `images`"])
    entries = ", ".join(f"`microvqa_pp_{split}`" for split in splits)
    rows.append(["`chat/dataset_info.json`", "", f"LLaMA-Factory data-set entries ({entries}; sharegpt formatting)"])
    rows.append(["`chat/images/`", summary.chat_images, "the image files that `chat/*.jsonl` names, relative to `chat/`"])
    return _table(["file", "rows", "contents"], rows)


def _splits_section(items: dict[str, list[Any]], test_share: float) -> str:
    rows = []
    for split, split_items in items.items():
        tasks = Counter(item.mcq.task for item in split_items)
        rows.append(
            [
                split,
                len(split_items),
                len({item.figure.figure_id for item in split_items}),
                len({item.figure.article_id for item in split_items}),
                *(tasks.get(task, 0) for task in TASK_NAMES),
            ]
        )
    table = _table(["split", "questions", "figures", "articles", *TASK_NAMES.values()], rows)
    total = sum(len(split_items) for split_items in items.values())
    test_count = len(items.get("test", []))
    achieved = test_count / total if total else 0.0
    return (
        table + f"\n\nThe test split has {test_count} of {total} questions ({achieved:.1%}; target {test_share:.1%}). "
        "No article, image hash or near-duplicate image (perceptual hash) is in both splits: "
        "questions are split by leakage group, stratified by task type as far as the groups allow. "
        "The test split is the one meant for human review and for evaluation."
    )


def _licences_section(items: list[Any], manifest: dict[str, Any]) -> str:
    locations = {source["location"]: source["kind"] for source in manifest.get("sources", [])}
    figures_by: dict[tuple[str, str], set[str]] = {}
    questions_by: Counter[tuple[str, str]] = Counter()
    for item in items:
        figure = item.figure
        kind = figure.source_kind or locations.get(figure.source, "")
        key = (source_label(kind, figure.source), figure.license or "not stated")
        figures_by.setdefault(key, set()).add(figure.figure_id)
        questions_by[key] += 1
    rows = [[source, licence, len(figures_by[(source, licence)]), questions_by[(source, licence)]] for source, licence in sorted(figures_by)]
    return (
        "Each figure and its caption keep the licence of the article they come from; check it "
        "(column `license`) before reuse. Questions, rationales and metadata derived from a figure are "
        "best shared under the same terms.\n\n" + _table(["source", "licence", "figures", "questions"], rows)
    )


def _method_section(manifest: dict[str, Any], config: Config) -> str:
    from microvqa_pp.pipeline import STAGES

    stages = manifest.get("stages", {})
    lines = []
    for name in [*STAGES, *(name for name in stages if name not in STAGES)]:
        entry = stages.get(name)
        if not entry or name == "export":
            continue
        rejected = entry.get("rejected") or {}
        detail = f"{entry.get('count', 0)} records"
        if rejected:
            reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(rejected.items(), key=lambda pair: -pair[1]))
            detail += f"; dropped {sum(rejected.values())}: {reasons}"
        lines.append(f"1. `{name}`: {STAGE_DESCRIPTIONS.get(name, '')} ({detail}).")
    sources = ", ".join(source_label(source["kind"], source["location"]) for source in manifest.get("sources", []))
    settings = (
        f"Settings: profile `{config.profile}`, agent `{config.agent.backend}`"
        + (f" (`{config.agent.model}`)" if config.agent.model else "")
        + f", filter `{config.filter.method}` keeping {config.filter.keep_share:.0%}"
        + f", {config.mcq.num_options} options per question"
        + f", test share {config.split.test_share:.0%}, near-duplicate distance {config.split.near_duplicate_distance} bits"
        + f", seed {config.seed}. The run's `manifest.json` holds every setting and package version."
    )
    return f"Sources: {sources or 'not recorded'}.\n\n" + "\n".join(lines) + "\n\n" + settings


def _blooms_table(items: list[Any]) -> str:
    counts = Counter(item.mcq.blooms_level for item in items)
    total = max(len(items), 1)
    rows = [[level, BLOOMS_NAMES.get(level, "?"), counts.get(level, 0), f"{counts.get(level, 0) / total:.0%}"] for level in sorted(set(BLOOMS_NAMES) | set(counts))]
    return _table(["level", "name", "questions", "share"], rows)


def _usage_section(summary: ExportSummary) -> str:
    data_files = ", ".join(f'"{split}": "{facts.path}"' for split, facts in summary.release.items())
    return (
        "## Use\n\n"
        "```python\n"
        "from datasets import load_dataset\n\n"
        f'data = load_dataset("parquet", data_files={{{data_files}}})\n'
        "```\n\n"
        "Fine-tuning: point LLaMA-Factory's `dataset_dir` at `chat/` and use the data sets "
        "`microvqa_pp_train` / `microvqa_pp_test`; LLaMA-Factory resolves the image paths against "
        "that folder. ms-swift reads `chat/train.jsonl` with `--dataset`; its image paths are "
        "relative to `chat/`, so start it from that folder or rewrite them to absolute paths."
    )
