"""Answer spans in a caption, found by rules: what was stained, imaged, treated and measured.

`find_spans(caption)` returns `Span`s, each an exact substring of the caption with its offsets,
its kind (one of SPAN_KINDS) and the context a question template needs (the stained structure,
the colour a marker is shown in, the drug a concentration belongs to, the subject and object of
a reported effect). The offline question writer turns them into questions, and the multiple-choice
stage can draw distractors from spans of the same kind in other captions.

The rules cover the usual wording of microscopy figure legends; they favour precision over recall,
so a caption they do not understand yields fewer spans rather than wrong ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from microvqa_pp.generate.text import Sentence, split_sentences

SPAN_KINDS: dict[str, str] = {
    "stain": "a dye or histological stain (DAPI, phalloidin, hematoxylin and eosin)",
    "marker": "a labelled protein, antibody target or fluorescent fusion (RAD51, GFP, TetR-mCherry)",
    "cell_type": "a cell type or cell line (HeLa cells, astrocytes, MEFs)",
    "organism": "an organism or species (E. coli, yeast, mice)",
    "modality": "an imaging or detection technique (confocal microscopy, FISH, western blot)",
    "magnification": "an objective or image magnification (×200, 20×)",
    "scale": "the length of a scale bar (25 μm)",
    "concentration": "the concentration of a reagent (200 ng/ml, 10 μM)",
    "dose": "a radiation dose (12 Gy)",
    "treatment": "a drug, reagent or treatment applied to the sample (doxycycline, MMC)",
    "duration": "how long a treatment or incubation lasted (8 hours, 16 min)",
    "temperature": "an incubation temperature (37 °C)",
    "outcome": "the direction of a reported effect (increases, reduces, inhibits)",
    "effect": "the consequence of a reported cause (partner intermixing, UV sensitivity)",
    "conclusion": "what the authors infer from an observation (a clause after 'indicating that')",
}
"""Kinds of answer span and what each one is; `QA.answer_kind` is one of these names or "other"."""


@dataclass(frozen=True)
class Span:
    """An answer span: `caption[start:end] == text`, of kind `kind`.

    `context` contains what a question about the span may mention, depending on the kind:
    `target` (what a stain or marker labels), `colour`, `reagent` (of a concentration, dose or
    duration), `subject` and `object` (of an outcome), `observation` (of a conclusion).
    """

    kind: str
    text: str
    start: int
    end: int
    sentence: Sentence
    context: dict[str, str] = field(default_factory=dict, hash=False, compare=False)


# Vocabularies --------------------------------------------------------------------------------

STAINS = [
    r"DAPI", r"Hoechst(?: ?\d{5})?", r"phalloidin", r"propidium iodide", r"MitoTracker(?: \w+)?",
    r"LysoTracker(?: \w+)?", r"calcein(?:-AM)?", r"FITC", r"TRITC", r"Alexa Fluor ?\d{3}",
    r"rhodamine", r"hematoxylin and eosin", r"haematoxylin and eosin", r"H&E", r"HE staining",
    r"periodic acid[–-]Schiff", r"PAS", r"Masson'?s trichrome", r"Giemsa", r"Gram", r"Congo red",
    r"Oil Red O", r"toluidine blue", r"crystal violet", r"Coomassie(?: brilliant)?(?: blue)?",
    r"Nissl", r"cresyl violet", r"X-gal", r"uranyl acetate(?:/lead citrate)?", r"lead citrate",
    r"osmium tetroxide", r"[αa]-bungarotoxin", r"bungarotoxin", r"wheat germ agglutinin", r"WGA",
    r"TUNEL", r"SYTOX(?: \w+)?", r"acridine orange", r"silver stain(?:ing)?", r"Sudan (?:black|III|IV)",
    r"alizarin red", r"von Kossa", r"Picrosirius red", r"Sirius red", r"eosin", r"hematoxylin",
    r"haematoxylin", r"Hoechst",
]  # fmt: skip
FLUORESCENT_PROTEINS = r"(?:E?GFP|EmGFP|sfGFP|E?YFP|E?CFP|RFP|BFP|mCherry|tdTomato|mNeonGreen|mScarlet|mKate2?|DsRed|m?Venus|Citrine|mTurquoise2?|mRuby\d?|mOrange)"
MODALITIES = [
    r"confocal (?:fluorescence |laser scanning )?microscopy", r"confocal(?: fluorescence)?(?= images?| micrographs?)", r"(?:wide-?field |epi)?fluorescence microscopy", r"immunofluorescence",
    r"[Ii]munofluorescence", r"immunohistochemistry", r"immunocytochemistry",
    r"(?:transmission |scanning )?electron microscopy", r"cryo-?electron microscopy", r"TEM",
    r"SEM(?= images?| micrographs?| imaging)", r"light microscopy", r"phase[- ]contrast(?: microscopy)?",
    r"bright[- ]?field(?: microscopy)?", r"differential interference contrast", r"DIC(?= images?| microscopy)",
    r"time-lapse (?:fluorescence )?microscopy", r"time-lapse photography", r"time-lapse imaging",
    r"live[- ]cell imaging", r"super-resolution microscopy", r"STED(?: microscopy)?",
    r"two-photon microscopy", r"fluorescence in situ hybridi[sz]ation", r"FISH", r"western blot(?:ting)?",
    r"flow cytometry", r"atomic force microscopy", r"polari[sz]ed light microscopy",
    r"in situ hybridi[sz]ation",
]  # fmt: skip
CELL_TYPES = [
    r"neurons", r"astrocytes", r"microglia", r"oligodendrocytes", r"fibroblasts", r"macrophages",
    r"monocytes", r"neutrophils", r"eosinophils", r"lymphocytes", r"T cells", r"B cells",
    r"(?:epithelial|endothelial|stem|cancer|tumou?r|dendritic|hair|mast|germ|Schwann|Purkinje|"
    r"ganglion|satellite|stromal|immune|progenitor|granule|pyramidal|beta|islet) cells",
    r"cardiomyocytes", r"hepatocytes", r"keratinocytes", r"myoblasts", r"myotubes", r"oocytes",
    r"podocytes", r"erythrocytes", r"platelets", r"adipocytes", r"osteoblasts", r"osteoclasts",
    r"chondrocytes", r"spermatozoa", r"embryos", r"organoids", r"spheroids", r"MEFs", r"BMSCs",
    r"iPSCs", r"HUVECs", r"PBMCs",
]  # fmt: skip
CELL_LINES = r"(?:HeLa|Hela|HEK ?293T?|COS-?7|NIH ?3T3|U2OS|U-2 OS|MCF-?7|MCF10A|A549|Jurkat|CHO|HCT ?116|HepG2|SH-SY5Y|PC12|RPE-?1|hTERT-RPE1|Vero|MDCK|LNCaP|DU-?145|PC-?3|RKO|HT-?29|Caco-?2|MDA-MB-\d+|T47D|K562|THP-1|RAW ?264\.7|L929|3T3-L1|C2C12|BV-?2|HaCaT|MIP101|RWPE-1|[A-Z]{1,5}-?\d{1,4}[A-Z]?)"
ORGANISMS = [
    r"[A-Z]\. [a-z]{3,}", r"yeast", r"mice", r"mouse", r"rats?", r"zebrafish", r"Drosophila(?: melanogaster)?",
    r"Arabidopsis(?: thaliana)?", r"Xenopus(?: laevis)?", r"Caenorhabditis elegans", r"Escherichia coli",
    r"Saccharomyces cerevisiae", r"Schizosaccharomyces pombe", r"Bacillus subtilis", r"Dictyostelium",
]  # fmt: skip
GENUS_ENDINGS = r"(?:bacter|coccus|monas|vibrio|myces|bacterium|bacillus|ella|ura|ia|ium|ococcus|spora|phyton)"
COLOURS = r"(?:green|red|blue|magenta|cyan|yellow|white|gr[ae]y|orange|teal|purple|far-red|pink|violet)"
DIRECTIONS = (
    r"increases|decreases|reduces|inhibits|promotes|enhances|induces|blocks|abolishes|prevents|impairs|"
    r"restores|rescues|elevates|suppresses|attenuates|accelerates|delays|stimulates|disrupts|"
    r"upregulates|downregulates|lowers|raises|triggers"
)
INFERENCE_VERBS = r"indicating|suggesting|implying"
CONCLUSION_VERBS = r"imply|implies|suggest|suggests|indicate|indicates"

NOT_A_LABEL = {
    "fluorescence", "signal", "signals", "staining", "stain", "cells", "cell", "line", "lines", "arrow",
    "arrows", "arrowhead", "arrowheads", "circle", "box", "boxes", "foci", "focus", "dots", "asterisk",
    "asterisks", "bars", "bar", "channel", "overlay", "merge", "merged", "image", "images", "outline",
    "population", "and", "or", "with", "the", "a", "an", "in", "of", "dotted", "dashed", "solid",
}  # fmt: skip
"""Words that precede a colour in brackets without naming what is labelled, e.g. "arrows (red)"."""

UNIT_LENGTH = r"(?:μm|µm|um|nm|mm|cm|microns?)"
UNIT_CONCENTRATION = r"(?:(?:ng|μg|µg|ug|mg|g|pg)\s?/\s?(?:ml|mL|μl|µl|ul|L|l|kg|g)|(?:pM|nM|μM|µM|uM|mM|M)(?![A-Za-z]))"
NUMBER = r"(?:\d+(?:[.,]\d+)?|[Oo]ne|[Tt]wo|[Tt]hree|[Ff]ive|[Tt]en|[Tt]wenty|[Ff]ifty|[Oo]ne hundred)"
REAGENT = r"[A-Za-z][\w-]*(?: [A-Z][\w-]*)?"


def _alternatives(patterns: list[str]) -> str:
    return "(?:" + "|".join(patterns) + ")"


_STAIN = re.compile(rf"(?<![\w-])({_alternatives(STAINS)})(?![\w])")
_FUSION = re.compile(rf"(?<![\w-])([A-Za-z0-9]+(?:-[A-Za-z0-9]+)*-?{FLUORESCENT_PROTEINS}|{FLUORESCENT_PROTEINS}(?:-[A-Za-z0-9]+)?)(?![\w])")
_MODALITY = re.compile(rf"(?<![\w-])({_alternatives(MODALITIES)})(?![\w])", re.IGNORECASE)
_MODALITY_CASED = re.compile(r"(?<![\w-])(TEM|SEM|DIC|FISH|STED)(?![\w])")
_CELL_TYPE = re.compile(rf"(?<![\w-])({_alternatives(CELL_TYPES)})(?![\w])")
_CELL_LINE = re.compile(rf"(?<![\w/-])(?P<name>{CELL_LINES}(?:,? (?:and |or )?{CELL_LINES})*) (?:cells|cell lines?)(?![\w])")
_ORGANISM = re.compile(rf"(?<![\w-])({_alternatives(ORGANISMS)})(?![\w])")
_BINOMIAL = re.compile(rf"(?<![\w-])((?:[A-Z][a-z]+{GENUS_ENDINGS}) [a-z]{{4,}})(?![\w])")
_COLOUR_LABEL = re.compile(rf"(?<![\w/-])([A-Za-z0-9αβγδ][\w/αβγδ-]*) \(({COLOURS})\)")
_STAINED_WITH = re.compile(
    rf"(?<![\w-])(?P<target>(?!(?:were|was|are|is)\b)[\w-]+(?: (?!(?:were|was|are|is)\b)[\w-]+)?) (?:(?:were|was|are|is) )?"
    rf"(?:counter)?(?:stained|labell?ed|visuali[sz]ed|detected)"
    rf" (?:with|using|by) (?P<stain>{_alternatives(STAINS)})"
)
_STAINED_FOR = re.compile(
    r"(?:(?:immuno)?(?:stained|labell?ed|immunolabell?ed|immunostained|probed) for|(?:positive )?staining (?:of|for))"
    r" (?P<marker>[A-Z0-9αβγ][\w/-]*)"
)
_ANTIBODY = re.compile(r"antibod(?:y|ies) (?:against|to|for) (?P<marker>[A-Z0-9αβγ][\w/-]*)|anti-(?P<anti>[A-Z0-9αβγ][\w/-]*)")
_COLOCALISES = re.compile(r"(?:(?P<subject>[A-Z][\w-]*) )?co-?locali[sz]es? with (?P<marker>[A-Z0-9αβγ][\w/-]*)")
_MAGNIFICATION = re.compile(r"(?<![\w.])(×\s?\d{1,3}(?:,\d{3})*|\d{1,3}(?:,\d{3})*\s?×)(?![\w])")
_SCALE = re.compile(rf"[Ss]cale bars?\s*(?:=|:|,|are|is|represents?|indicates?|corresponds? to)?\s*(?P<length>\d+(?:\.\d+)?\s?{UNIT_LENGTH})")
_CONCENTRATION = re.compile(rf"(?<![\w.])(?P<value>{NUMBER}\s?{UNIT_CONCENTRATION})")
_DOSE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s?Gy)(?![\w])")
_DURATION = re.compile(r"(?<![\w.])(?:for|after) (?P<value>\d+(?:\.\d+)?(?: or \d+(?:\.\d+)?)?\s?(?:hours?|hrs?|h|min(?:utes)?|days?|weeks?|s|seconds))(?![\w])")
_TEMPERATURE = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?\s?°\s?C)(?![\w])")
_TREATED_WITH = re.compile(
    rf"(?P<verb>treated|incubated|exposed|pre-?treated|pre-?incubated|induced|challenged|incubation|treatment|exposure)(?: for [\w .]+?)? (?:with|to) (?P<reagent>{REAGENT})"
)
_TREATED_ADJECTIVE = re.compile(r"(?<![\w-])(?P<reagent>[A-Za-z][a-z]{3,})-treated")
_OBJECT_END = r"(?=,|;|\.(?:\s+[A-Z(]|\s*$)|$| in | on | at | upon | when | by | through | via | than | compared )"
_OUTCOME = re.compile(rf"^(?P<subject>[A-Z][^,;:()]*?(?:\([^)]*\)[^,;:()]*?)*) (?P<verb>{DIRECTIONS}) (?P<object>[^,;:]+?){_OBJECT_END}")
_DISPLAY_CHANGE = re.compile(rf"^(?P<subject>[A-Z][^,;:]*?) (?:display|displays|show|shows|have|has|exhibit|exhibits) (?:significantly )?(?P<verb>reduced|increased|decreased|elevated|enhanced|impaired|larger|smaller|fewer|more) (?P<object>[^,;:]+?){_OBJECT_END}")
_CAUSE = re.compile(r"^(?P<subject>[A-Z][^,;:()]*?(?:\([^)]*\)[^,;:()]*?)*) (?P<verb>leads? to|results? in|causes?|drives?) (?P<object>[^,;:]+?)(?=,|;|\.(?:\s+[A-Z(]|\s*$)|$| in | than | similar to | compared )")
_INFERENCE = re.compile(rf"^(?P<observation>[^;]{{20,}}?), (?P<verb>{INFERENCE_VERBS}) that (?P<conclusion>[^;]+?)\.?$")
_CONCLUSION = re.compile(rf"^(?P<observation>[^;]{{8,}}?) (?P<verb>{CONCLUSION_VERBS}) that (?P<conclusion>[^;]+?)\.?$")
_DATA_CONCLUSION = re.compile(rf"^(?:These|The|Our) (?:data|results|findings|observations) (?P<verb>{CONCLUSION_VERBS}) (?:that )?(?P<conclusion>[^;]+?)\.?$")

REAGENT_STOPWORDS = {
    "the", "a", "an", "of", "or", "and", "with", "various", "different", "increasing", "indicated",
    "medium", "media", "buffer", "cells", "vehicle", "control", "either", "both", "same", "fresh",
    "probe", "solid", "liquid", "presence", "absence", "each", "all", "no", "fluorescent", "light",
    "laser", "high", "low", "decreasing", "concentrations", "doses", "amounts",
}  # fmt: skip


def find_spans(caption: str) -> list[Span]:
    """Return the answer spans in a caption, in caption order, without duplicates."""
    spans: list[Span] = []
    for sentence in split_sentences(caption):
        spans.extend(_sentence_spans(caption, sentence))
    return _deduplicate(spans)


def _sentence_spans(caption: str, sentence: Sentence) -> list[Span]:
    finders = (
        _stains, _markers, _modalities, _cell_types, _organisms, _magnifications, _scales,
        _concentrations, _doses, _durations, _temperatures, _treatments, _outcomes, _effects, _conclusions,
    )  # fmt: skip
    spans: list[Span] = []
    for finder in finders:
        spans.extend(finder(caption, sentence))
    return spans


def _span(kind: str, sentence: Sentence, match: re.Match[str], group: int | str = 1, **context: str) -> Span:
    start = sentence.start + match.start(group)
    end = sentence.start + match.end(group)
    return Span(kind, match.group(group), start, end, sentence, {key: value for key, value in context.items() if value})


def _stains(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    targets = {}
    for match in _STAINED_WITH.finditer(sentence.text):
        target = _strip_article(match.group("target"))
        targets[(match.start("stain"), match.end("stain"))] = target
        spans.append(_span("stain", sentence, match, "stain", target=target))
    for match in _STAIN.finditer(sentence.text):
        if (match.start(1), match.end(1)) in targets:
            continue
        colour = _colour_after(sentence.text, match.end(1))
        spans.append(_span("stain", sentence, match, colour=colour))
    return spans


def _markers(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for pattern, relation in ((_STAINED_FOR, "stained_for"), (_ANTIBODY, "antibody"), (_COLOCALISES, "colocalises")):
        for match in pattern.finditer(sentence.text):
            group = "anti" if match.groupdict().get("anti") else "marker"
            colour = _colour_after(sentence.text, match.end(group))
            subject = match.groupdict().get("subject") or ""
            spans.append(_span("marker", sentence, match, group, colour=colour, relation=relation, subject=subject))
    for match in _FUSION.finditer(sentence.text):
        spans.append(_span("marker", sentence, match, colour=_colour_after(sentence.text, match.end(1))))
    for match in _COLOUR_LABEL.finditer(sentence.text):
        label = match.group(1)
        kind = _kind_of_label(label)
        # A name is an acronym, a gene or a listed stain or cell type, not an adjective or
        # a word such as "arrows (red)".
        named = any(character.isupper() or character.isdigit() for character in label) or kind != "marker"
        if not named or label.lower() in NOT_A_LABEL or _is_number(label):
            continue
        spans.append(_span(kind, sentence, match, 1, colour=match.group(2)))
    return spans


def _kind_of_label(label: str) -> str:
    if _STAIN.fullmatch(label):
        return "stain"
    if _CELL_TYPE.fullmatch(label):
        return "cell_type"
    return "marker"


def _modalities(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _MODALITY.finditer(sentence.text):
        text = match.group(1)
        # Upper-case acronyms must match in upper case ("SEM" is also the standard error).
        if text.isupper() and not _MODALITY_CASED.fullmatch(text):
            continue
        if text.lower() in ("tem", "sem", "dic", "fish", "sted") and not text.isupper():
            continue
        if text.upper() == "SEM" and re.search(r"±\s*$|mean\s*$", sentence.text[: match.start(1)]):
            continue
        spans.append(_span("modality", sentence, match, shows=_shown_object(sentence.text, match.end(1))))
    return spans


def _cell_types(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _CELL_TYPE.finditer(sentence.text):
        start = _extend_left(sentence.text, match.start(1))
        end = match.end(1)
        spans.append(
            Span("cell_type", sentence.text[start:end], sentence.start + start, sentence.start + end, sentence,
                 {"colour": _colour_after(sentence.text, end)} if _colour_after(sentence.text, end) else {})
        )  # fmt: skip
    for match in _CELL_LINE.finditer(sentence.text):
        # Strain numbers and genotypes look like cell lines; require a known line or a digit.
        if re.fullmatch(r"[A-Z]{1,5}", match.group("name")) or match.group("name") in ("WT", "KO"):
            continue
        spans.append(_span("cell_type", sentence, match, 0))
    return spans


def _organisms(caption: str, sentence: Sentence) -> list[Span]:
    spans = [_span("organism", sentence, match) for match in _ORGANISM.finditer(sentence.text)]
    spans += [_span("organism", sentence, match) for match in _BINOMIAL.finditer(sentence.text)]
    return spans


def _magnifications(caption: str, sentence: Sentence) -> list[Span]:
    return [_span("magnification", sentence, match) for match in _MAGNIFICATION.finditer(sentence.text)]


def _scales(caption: str, sentence: Sentence) -> list[Span]:
    return [_span("scale", sentence, match, "length") for match in _SCALE.finditer(sentence.text)]


def _concentrations(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _CONCENTRATION.finditer(sentence.text):
        reagent = _reagent_near(sentence.text, match.start("value"), match.end("value"))
        spans.append(_span("concentration", sentence, match, "value", reagent=reagent))
    return spans


def _doses(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _DOSE.finditer(sentence.text):
        before = sentence.text[max(0, match.start(1) - 40) : match.start(1)]
        radiation = re.search(r"((?:ionizing |γ-|gamma-|X-)?(?:radiation|irradiation|IR|rays?))\s*\(?\s*$", before)
        spans.append(_span("dose", sentence, match, reagent=radiation.group(1) if radiation else ""))
    return spans


def _durations(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _DURATION.finditer(sentence.text):
        reagent = ""
        treated = _TREATED_WITH.search(sentence.text)
        if treated and abs(treated.start() - match.start()) < 60:
            reagent = treated.group("reagent")
        spans.append(_span("duration", sentence, match, "value", reagent=_clean_reagent(reagent)))
    return spans


def _temperatures(caption: str, sentence: Sentence) -> list[Span]:
    return [_span("temperature", sentence, match) for match in _TEMPERATURE.finditer(sentence.text)]


def _treatments(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    for match in _TREATED_WITH.finditer(sentence.text):
        reagent = _clean_reagent(match.group("reagent"))
        if not reagent:
            continue
        start = match.start("reagent") + match.group("reagent").index(reagent)
        spans.append(Span("treatment", reagent, sentence.start + start, sentence.start + start + len(reagent), sentence))
    for match in _TREATED_ADJECTIVE.finditer(sentence.text):
        if match.group("reagent").lower() in ("vehicle", "mock", "sham", "control"):
            continue
        spans.append(_span("treatment", sentence, match, "reagent"))
    return spans


def _outcomes(caption: str, sentence: Sentence) -> list[Span]:
    spans = []
    body = sentence.body
    offset = sentence.label_end
    for pattern, form in ((_OUTCOME, "verb"), (_DISPLAY_CHANGE, "adjective")):
        match = pattern.search(body)
        if match is None:
            continue
        subject = match.group("subject").strip()
        object_ = match.group("object").strip()
        if len(subject.split()) > 12 or subject.lower().startswith(("we ", "this ", "these ", "it ")) or " that " in subject:
            continue
        if object_.count("(") != object_.count(")") or len(object_) < 3 or "()" in subject + object_:
            continue
        start = sentence.start + offset + match.start("verb")
        spans.append(
            Span(
                "outcome",
                match.group("verb"),
                start,
                start + len(match.group("verb")),
                sentence,
                {"subject": subject, "object": object_, "form": form},
            )
        )
    return spans


def _effects(caption: str, sentence: Sentence) -> list[Span]:
    match = _CAUSE.search(sentence.body)
    if match is None:
        return []
    subject = match.group("subject").strip()
    object_ = match.group("object").strip()
    if len(subject.split()) > 14 or subject.lower().startswith(("we ", "this ", "these ", "it ")) or len(object_) < 4:
        return []
    # Empty brackets are symbols lost in extraction ("foci ()"); such a phrase reads badly.
    if object_.count("(") != object_.count(")") or "()" in subject + object_:
        return []
    start = sentence.start + sentence.label_end + match.start("object")
    return [Span("effect", object_, start, start + len(object_), sentence, {"subject": subject, "verb": match.group("verb")})]


def _conclusions(caption: str, sentence: Sentence) -> list[Span]:
    body = sentence.body.rstrip()
    offset = sentence.label_end
    for pattern in (_INFERENCE, _DATA_CONCLUSION, _CONCLUSION):
        match = pattern.search(body)
        if match is None:
            continue
        conclusion = match.group("conclusion").strip()
        if len(conclusion.split()) < 3 or len(conclusion) > 200:
            continue
        observation = (match.groupdict().get("observation") or "").strip()
        if pattern is _CONCLUSION and (observation.lower().startswith(("we ", "this ", "it ", "whereas ")) or len(observation) > 150):
            continue
        start = sentence.start + offset + match.start("conclusion")
        return [
            Span(
                "conclusion",
                conclusion,
                start,
                start + len(conclusion),
                sentence,
                {"observation": observation, "verb": match.group("verb")},
            )
        ]
    return []


# Helpers ---------------------------------------------------------------------------------------


def _colour_after(text: str, end: int) -> str:
    match = re.match(rf"\s*\(({COLOURS})\)", text[end:])
    return match.group(1) if match else ""


def _shown_object(text: str, end: int) -> str:
    """Return what a technique "shows" or "showing" right after its name, if the text says so."""
    match = re.match(r"\s+(?:shows?|showing|revealed|reveals?|of)\s+(?P<object>[^.;()]{5,80}?)(?=\s*(?:\(|,|;|\.|$| and ))", text[end:])
    return match.group("object") if match else ""


def _reagent_near(text: str, start: int, end: int) -> str:
    """Return the reagent of a concentration: the word after it, or the name before its bracket."""
    after = re.match(rf"\s+(?:of\s+)?(?P<reagent>{REAGENT})", text[end:])
    if after:
        reagent = _clean_reagent(after.group("reagent"))
        if reagent:
            return reagent
    before = re.search(r"(?P<reagent>[A-Za-z][\w-]*)\s*\(\s*$", text[:start])
    if before:
        return _clean_reagent(before.group("reagent"))
    return ""


def _clean_reagent(reagent: str) -> str:
    words = reagent.split()
    while words and words[0].lower() in REAGENT_STOPWORDS:
        words = words[1:]
    if not words:
        return ""
    first = words[0]
    if first.lower() in REAGENT_STOPWORDS or len(first) < 2 or first.isdigit():
        return ""
    # Keep a second word only when it is an acronym or a name ("probe RHC"), not a verb.
    return " ".join(words[:2]) if len(words) > 1 and words[1][:1].isupper() else first


CELL_MODIFIERS = {
    "normal", "human", "murine", "mouse", "rat", "primary", "cultured", "differentiated", "prostate",
    "breast", "lung", "colon", "colorectal", "liver", "hepatic", "renal", "kidney", "neuronal", "neural",
    "cortical", "hippocampal", "retinal", "mammary", "skin", "dermal", "intestinal", "gastric",
    "pancreatic", "cervical", "ovarian", "glioma", "glioblastoma", "melanoma", "bronchial", "airway",
    "vascular", "smooth", "muscle", "embryonic", "pluripotent", "mesenchymal", "hematopoietic",
}  # fmt: skip
"""Words that may precede a cell type as part of its name ("human prostate epithelial cells")."""


def _extend_left(text: str, start: int) -> int:
    """Return where a cell type's name starts, taking in cell lines and modifiers before it."""
    while True:
        match = re.search(r"(?:^|(?<=\s))(?P<word>[\w-]+)(?P<comma>,?) $", text[:start])
        if match is None:
            return start
        word = match.group("word")
        line_like = re.fullmatch(CELL_LINES, word) is not None and any(character.isdigit() or character.isupper() for character in word[1:])
        if word.lower() in CELL_MODIFIERS and not match.group("comma"):
            start = match.start("word")
        elif line_like:
            start = match.start("word")
        else:
            return start


def _strip_article(text: str) -> str:
    return re.sub(r"^(?:the|a|an)\s+", "", text, flags=re.IGNORECASE)


def _is_number(text: str) -> bool:
    return re.fullmatch(r"[\d.,]+", text) is not None


def _deduplicate(spans: list[Span]) -> list[Span]:
    """Drop repeated (kind, offsets) pairs and spans nested in a longer span of the same kind."""
    unique: dict[tuple[str, int, int], Span] = {}
    for span in spans:
        key = (span.kind, span.start, span.end)
        if key not in unique or len(span.context) > len(unique[key].context):
            unique[key] = span
    kept = []
    for span in unique.values():
        nested = any(
            other.kind == span.kind and other.start <= span.start and span.end <= other.end and (other.start, other.end) != (span.start, span.end)
            for other in unique.values()
        )
        if not nested:
            kept.append(span)
    return sorted(kept, key=lambda span: (span.start, span.end, span.kind))
