"""The offline question writer: caption-grounded QAs from answer spans and templates, no model.

Each answer span found by `spans.find_spans` can be asked about in one or more of the three
MicroVQA task types. The templates below phrase a question from the span's context (the panel
its sentence is about, the stained structure, the colour, the reagent, the subject and object of
an effect) without containing the answer. `write_questions` collects the candidates of a caption
and picks a few, alternating task types so that a figure gets one of each where it can.

The output is the same `ProposedQAs` a language model returns, so it passes through the same
grounding check; QAs written here are marked `template_generated` by the stage.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator

from microvqa_pp.generate.schema import ProposedQA, ProposedQAs
from microvqa_pp.generate.spans import Span, find_spans
from microvqa_pp.generate.text import contains_phrase, folded_text

OFFLINE_VERSION = "1"
"""Version of the templates and span rules; part of the stage fingerprint and `QA.prompt_version`."""

STAIN_TARGETS = {
    "dapi": "nuclei", "hoechst": "nuclei", "phalloidin": "actin filaments", "mitotracker": "mitochondria",
    "lysotracker": "lysosomes", "wga": "cell membranes", "wheat germ agglutinin": "cell membranes",
    "propidium iodide": "nuclei of dead cells", "sytox": "nuclei of dead cells",
}  # fmt: skip
"""Structures that well-known stains label, used when the caption does not say."""

HISTOLOGY_STAINS = re.compile(
    r"hematoxylin|haematoxylin|eosin|H&E|HE staining|periodic acid|PAS|trichrome|Giemsa|Congo|toluidine|"
    r"Nissl|cresyl|silver|Sudan|alizarin|von Kossa|Sirius|Gram|Oil Red",
    re.IGNORECASE,
)
EM_STAINS = re.compile(r"uranyl|lead citrate|osmium", re.IGNORECASE)
MICROBES = re.compile(r"^[A-Z]\. [a-z]+$|yeast|bacteri|archae|[A-Z][a-z]+ [a-z]+$")
ANIMALS = {"mice": "mice", "mouse": "mice", "rat": "rats", "rats": "rats", "zebrafish": "zebrafish"}
VERB_BASE = {
    "increases": "increase", "decreases": "decrease", "reduces": "reduce", "inhibits": "inhibit",
    "promotes": "promote", "enhances": "enhance", "induces": "induce", "blocks": "block",
    "abolishes": "abolish", "prevents": "prevent", "impairs": "impair", "restores": "restore",
    "rescues": "rescue", "elevates": "elevate", "suppresses": "suppress", "attenuates": "attenuate",
    "accelerates": "accelerate", "delays": "delay", "stimulates": "stimulate", "disrupts": "disrupt",
    "upregulates": "upregulate", "downregulates": "downregulate", "lowers": "lower", "raises": "raise",
    "triggers": "trigger",
}  # fmt: skip

MAX_OBSERVATION_CHARS = 220
"""Longer observations make a question that is mostly a copy of the caption, so they are skipped."""


@dataclass(frozen=True)
class Candidate:
    """A question the templates can ask about a span; lower `rank` is asked first."""

    task: int
    question: str
    span: Span
    rank: int


Template = Callable[[Span, "CaptionFacts"], Iterator[Candidate]]


@dataclass(frozen=True)
class CaptionFacts:
    """What templates need to know about the whole caption, e.g. whether an answer is unique."""

    spans: tuple[Span, ...]

    def distinct(self, kind: str) -> set[str]:
        return {folded_text(span.text) for span in self.spans if span.kind == kind}

    def treatments(self) -> set[str]:
        return self.distinct("treatment") | {folded_text(span.context["reagent"]) for span in self.spans if span.kind == "concentration" and span.context.get("reagent")}


def write_questions(caption: str, count: int) -> ProposedQAs:
    """Return up to `count` caption-grounded QAs for a caption, alternating the three task types."""
    spans = find_spans(caption)
    facts = CaptionFacts(tuple(spans))
    candidates = [candidate for span in spans for candidate in _candidates(span, facts)]
    candidates = [candidate for candidate in candidates if not contains_phrase(candidate.question, candidate.span.text)]
    chosen = _choose(candidates, count)
    return ProposedQAs(
        questions=[
            ProposedQA(
                question=candidate.question,
                answer=candidate.span.text,
                answer_span=candidate.span.text,
                support_sentence=candidate.span.sentence.text,
                task=candidate.task,
                answer_kind=candidate.span.kind,
            )
            for candidate in chosen
        ]
    )


def _choose(candidates: list[Candidate], count: int) -> list[Candidate]:
    """Pick `count` candidates: the best of each task type in turn, never the same answer twice."""
    by_task: dict[int, list[Candidate]] = {task: [] for task in (1, 2, 3)}
    for candidate in sorted(candidates, key=lambda candidate: (candidate.rank, candidate.span.start)):
        by_task[candidate.task].append(candidate)

    chosen: list[Candidate] = []
    used_answers: set[str] = set()
    used_questions: set[str] = set()
    while len(chosen) < count and any(by_task.values()):
        for task in (1, 2, 3):
            queue = by_task[task]
            while queue:
                candidate = queue.pop(0)
                answer = folded_text(candidate.span.text)
                question = folded_text(candidate.question)
                if answer in used_answers or question in used_questions:
                    continue
                chosen.append(candidate)
                used_answers.add(answer)
                used_questions.add(question)
                break
            if len(chosen) == count:
                break
    return sorted(chosen, key=lambda candidate: candidate.task)


def _candidates(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    yield from TEMPLATES.get(span.kind, _no_template)(span, facts)


def _no_template(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    return iter(())


# Phrasing helpers ------------------------------------------------------------------------------


def _where(span: Span, default: str = "in this image") -> str:
    """Return "in panel B" when the span's sentence starts with a panel label, else `default`."""
    sentence = span.sentence
    if not sentence.panels:
        return default
    noun = "panel" if len(sentence.panels) == 1 else "panels"
    return f"in {noun} {sentence.panel_text}"


def _lower_first(text: str) -> str:
    """Lower-case the first word when it is an ordinary capitalised word, not a name or acronym."""
    first, _, rest = text.partition(" ")
    letters = first.replace("-", "")
    if len(letters) >= 3 and letters.isalpha() and letters[1:].islower():
        first = first[0].lower() + first[1:]
    return f"{first} {rest}".strip()


def _sentence_case(text: str) -> str:
    return text[:1].upper() + text[1:]


def _as_statement(text: str) -> str:
    text = text.strip().rstrip(",;: ")
    return text if text.endswith(".") else f"{text}."


def _unique(facts: CaptionFacts, span: Span) -> bool:
    return facts.distinct(span.kind) == {folded_text(span.text)}


def _sentence_uses(span: Span, *words: str) -> str:
    """Return the first of `words` whose stem occurs in the span's sentence, or ""."""
    lowered = span.sentence.text.lower()
    return next((word for word in words if word[:6] in lowered), "")


# Templates, one function per span kind ---------------------------------------------------------


def _stain(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    target = span.context.get("target") or STAIN_TARGETS.get(span.text.lower().split()[0], "")
    colour = span.context.get("colour")
    where = _where(span)
    if colour:
        yield Candidate(1, f"Which stain is shown in {colour} {where}?", span, 0)
    if EM_STAINS.search(span.text):
        yield Candidate(1, f"Which contrast stain was used for the electron micrograph {where}?", span, 1)
        return
    if HISTOLOGY_STAINS.search(span.text):
        section = "this section" if where == "in this image" else f"the section {where}"
        yield Candidate(1, f"Which histological stain was used for {section}?", span, 1)
        yield Candidate(3, f"Which staining method would you use to reproduce the appearance of the tissue {where}?", span, 3)
        return
    if target:
        yield Candidate(1, f"Which stain labels the {target} {where}?", span, 1)
        yield Candidate(3, f"Which stain would you use to label the {target}, as in this experiment?", span, 1)
    elif _unique(facts, span):
        yield Candidate(1, f"Which stain was used {where}?", span, 4)


def _marker(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    colour = span.context.get("colour")
    relation = span.context.get("relation")
    where = _where(span)
    if colour:
        yield Candidate(1, f"What is labelled in {colour} {where}?", span, 0)
    if relation == "colocalises" and span.context.get("subject"):
        yield Candidate(1, f"Which protein does {span.context['subject']} co-localize with {where}?", span, 1)
    elif relation == "antibody":
        yield Candidate(1, "Antibodies against which protein were used for detection in this figure?", span, 2)
        yield Candidate(3, "Against which protein would you use antibodies to reproduce this detection?", span, 4)
    elif relation == "stained_for" and not colour:
        yield Candidate(1, f"Staining for which protein was used to identify the cells {where}?", span, 3)
    elif not relation and not colour:
        fusions = {text for text in facts.distinct("marker") if len(text) > 4}
        if fusions == {folded_text(span.text)}:
            yield Candidate(1, "Which fluorescent fusion protein is imaged in this figure?", span, 5)


def _modality(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    shows = span.context.get("shows")
    where = _where(span, "in this figure")
    technique = "technique" if span.text.lower().startswith(("western", "flow", "fish", "fluorescence in situ", "in situ")) else "imaging technique"
    if shows:
        yield Candidate(1, f"Which {technique} shows {shows} {_where(span, '')}".rstrip() + "?", span, 0)
        yield Candidate(3, f"Which {technique} would you use to visualize {shows}?", span, 1)
        return
    if span.text.lower().startswith(("western", "flow")):
        yield Candidate(1, f"Which technique was used to detect the proteins {where}?", span, 2)
    elif span.sentence.panels or len(facts.distinct("modality")) == 1:
        yield Candidate(1, f"Which {technique} was used to acquire the images {where}?", span, 2)
    identified = re.search(r"(?P<what>[\w ]+?) (?:relied on|was performed by|was done by|were identified by)\s*$", span.sentence.text[: span.start - span.sentence.start])
    if identified:
        yield Candidate(3, f"Which {technique} would you use for {identified.group('what').strip().lower()} in this experiment?", span, 0)
    elif len(facts.distinct("modality")) == 1:
        yield Candidate(3, f"Which {technique} would you use to reproduce this experiment?", span, 4)


def _magnification(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    after = span.sentence.text[span.end - span.sentence.start :].lower()
    if after.lstrip().startswith(("magnification inset", "magnified")):
        yield Candidate(1, "By what factor are the enlarged regions magnified?", span, 2)
        return
    if span.sentence.panels:
        yield Candidate(1, f"At what magnification was the image {_where(span)} taken?", span, 1)
    elif len(facts.distinct("magnification")) == 1:
        yield Candidate(1, "At what magnification was this image taken?", span, 1)


def _scale(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    after = span.sentence.text[span.end - span.sentence.start :]
    labelled = re.match(r"\s*\((?P<label>[\w -]{1,20})\)", after)
    if labelled:
        yield Candidate(1, f"What length does the scale bar in the {labelled.group('label')} images represent?", span, 2)
    elif span.sentence.panels:
        yield Candidate(1, f"What length does the scale bar {_where(span)} represent?", span, 2)
    elif len(facts.distinct("scale")) == 1:
        yield Candidate(1, "What length does the scale bar in this figure represent?", span, 2)


def _cell_type(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    colour = span.context.get("colour")
    if colour:
        yield Candidate(1, f"Which cells are shown in {colour} {_where(span)}?", span, 0)
    elif len(facts.distinct("cell_type")) == 1:
        yield Candidate(1, f"Which cells are imaged {_where(span, 'in this figure')}?", span, 3)


def _organism(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    if len(facts.distinct("organism")) != 1:
        return
    if span.text.lower() in ANIMALS:
        yield Candidate(1, "Which animal model were the samples in this figure taken from?", span, 4)
    elif MICROBES.search(span.text):
        yield Candidate(1, "Which organism is imaged in this figure?", span, 3)


def _concentration(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    reagent = span.context.get("reagent")
    if reagent and not reagent[0].isdigit():
        yield Candidate(3, f"What concentration of {reagent} would you use to reproduce this experiment?", span, 0)


def _dose(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    reagent = span.context.get("reagent") or "radiation"
    yield Candidate(3, f"What dose of {reagent} would you apply to reproduce this experiment?", span, 1)


def _duration(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    reagent = span.context.get("reagent")
    if not reagent:
        return
    verb = "incubate" if _sentence_uses(span, "incubat") else "treat"
    yield Candidate(3, f"For how long would you {verb} the cells with {reagent} to reproduce this experiment?", span, 2)


def _temperature(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    verb = {"incubat": "incubate", "grown": "grow", "cultur": "culture"}.get(_sentence_uses(span, "incubat", "grown", "cultur"))
    if verb is None:
        return
    subject = "cultures" if "culture" in span.sentence.text.lower() else "cells"
    yield Candidate(3, f"At what temperature would you {verb} the {subject} to reproduce this experiment?", span, 3)


def _treatment(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    if facts.treatments() != {folded_text(span.text)}:
        return
    verb = "incubated" if _sentence_uses(span, "incubat") else "treated"
    yield Candidate(3, f"To reproduce this experiment, which agent should the cells be {verb} with?", span, 2)


def _outcome(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    subject = _lower_first(span.context["subject"])
    object_ = span.context["object"]
    where = _where(span, "")
    if span.context.get("form") == "adjective":
        if span.text in ("more", "fewer", "larger", "smaller"):
            yield Candidate(2, f"Compared with the other conditions, how does {object_} differ in {subject}?", span, 3)
        else:
            yield Candidate(2, f"Compared with controls, what change in {object_} is seen in {subject}?", span, 1)
        return
    basis = f"panel{'s' if len(span.sentence.panels) > 1 else ''} {span.sentence.panel_text}" if where else "this figure"
    yield Candidate(2, f"Based on {basis}, how does {subject} affect {object_}?", span, 0)

    # A treatment that causes the effect is also something an experimenter would apply.
    if folded_text(span.context["subject"]) in facts.treatments():
        base = VERB_BASE.get(span.text.lower(), "")
        if base:
            yield Candidate(3, f"Which agent would you apply to {base} {object_}, based on this figure?", _subject_span(span), 1)


def _effect(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    subject = _lower_first(span.context["subject"])
    verb = span.context["verb"]
    auxiliary = "does" if verb.split()[0].endswith("s") else "do"
    base = re.sub(r"^(lead|result|cause|drive)s\b", r"\1", verb)
    yield Candidate(2, f"Based on this figure, what {auxiliary} {subject} {base}?", span, 1)


def _subject_span(span: Span) -> Span:
    """Return a span of the subject of an outcome, which is the answer of a treatment question."""
    subject = span.context["subject"]
    start = span.sentence.text.find(subject) + span.sentence.start
    return Span("treatment", subject, start, start + len(subject), span.sentence)


def _conclusion(span: Span, facts: CaptionFacts) -> Iterator[Candidate]:
    observation = span.context.get("observation", "")
    verb = span.context.get("verb", "")
    if not observation or len(observation) > MAX_OBSERVATION_CHARS:
        return
    if verb.endswith("ing"):
        # "X, indicating that Y": X is a full clause.
        question = f"{_sentence_case(_as_statement(observation))} What does this most likely indicate?"
    else:
        # "X implies that Y": X is a noun phrase, and the verb's number picks "do" or "does".
        auxiliary = "does" if verb.endswith("s") else "do"
        base = {"implies": "imply", "suggests": "suggest", "indicates": "indicate"}.get(verb, verb)
        question = f"What {auxiliary} {_lower_first(observation)} {base}?"
    yield Candidate(2, question, span, 0 if verb.endswith("ing") else 1)


TEMPLATES: dict[str, Template] = {
    "stain": _stain,
    "marker": _marker,
    "modality": _modality,
    "magnification": _magnification,
    "scale": _scale,
    "cell_type": _cell_type,
    "organism": _organism,
    "concentration": _concentration,
    "dose": _dose,
    "duration": _duration,
    "temperature": _temperature,
    "treatment": _treatment,
    "outcome": _outcome,
    "effect": _effect,
    "conclusion": _conclusion,
}

