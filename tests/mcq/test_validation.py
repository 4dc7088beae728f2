"""Each validation rule rejects the drafts that break it, with its named reason, and passes good ones."""

from __future__ import annotations

import pytest

from microvqa_pp.mcq.text import contains_phrase, longest_shared_run, normalize_option, resolve_correct_answer, strip_option_labels, strip_option_prefix
from microvqa_pp.mcq.validation import REASONS, McqDraft, ValidationSettings, validate_draft

CAPTION = (
    "Selective dye uptake in DU-145, LNCaP, PC-3 prostate cancer cells. Only a weak near infrared "
    "fluorescence (red) was observed in RWPE-1 normal human prostate epithelial cells (magnification, "
    "×200). The nuclei were stained with DAPI (blue)."
)
SETTINGS = ValidationSettings(num_options=4, max_length_ratio=1.5, max_caption_copy_words=12)
GOOD = McqDraft(
    question="A fluorescence micrograph of prostate cancer cells is shown. Which dye labels the nuclei?",
    options=["DAPI", "Hoechst 33342", "propidium iodide", "SYTO 9"],
    correct_answer="DAPI",
    rationale="The nuclei are blue, the emission of the DNA dye DAPI.",
)


def draft(**changes) -> McqDraft:
    values = {"question": GOOD.question, "options": list(GOOD.options), "correct_answer": GOOD.correct_answer, "rationale": GOOD.rationale}
    values.update(changes)
    return McqDraft(**values)


def test_good_draft_passes():
    assert validate_draft(GOOD, SETTINGS, CAPTION) is None


@pytest.mark.parametrize(
    ("reason", "broken"),
    [
        ("empty_question", draft(question="  ")),
        ("empty_option", draft(options=["DAPI", "", "propidium iodide", "SYTO 9"])),
        ("empty_rationale", draft(rationale="")),
        ("wrong_option_count", draft(options=["DAPI", "Hoechst 33342", "SYTO 9"])),
        ("wrong_option_count", draft(options=["DAPI", "Hoechst 33342", "SYTO 9", "propidium iodide", "TO-PRO-3"])),
        ("all_or_none_of_the_above", draft(options=["DAPI", "Hoechst 33342", "SYTO 9", "All of the above"])),
        ("all_or_none_of_the_above", draft(options=["DAPI", "Hoechst 33342", "SYTO 9", "None of these"])),
        ("all_or_none_of_the_above", draft(options=["DAPI", "Hoechst 33342", "SYTO 9", "Both A and B"])),
        ("duplicate_options", draft(options=["DAPI", "Hoechst 33342", "hoechst  33342.", "SYTO 9"])),
        ("no_correct_option", draft(correct_answer="Hoechst 34580")),
        ("multiple_correct_options", draft(options=["DAPI", "Hoechst 33342", "dapi", "SYTO 9"])),
        ("stem_contains_answer", draft(question="Is the nuclear dye in this image DAPI or another one?")),
        (
            "correct_option_longest",
            draft(
                options=["DAPI, a blue DNA dye binding AT-rich regions", "Hoechst", "SYTO 9", "PI"],
                correct_answer="DAPI, a blue DNA dye binding AT-rich regions",
            ),
        ),
        (
            "stem_copies_caption",
            draft(question="Only a weak near infrared fluorescence (red) was observed in RWPE-1 normal human prostate cells. Which dye labels the nuclei?"),
        ),
    ],
)
def test_rule_rejects_with_reason(reason, broken):
    violation = validate_draft(broken, SETTINGS, CAPTION)
    assert violation is not None
    assert violation.reason == reason
    assert violation.reason in REASONS
    assert violation.detail


def test_length_ratio_is_configurable():
    long_correct = draft(options=["4',6-diamidino-2-phenylindole", "Hoechst", "SYTO 9", "PI"], correct_answer="4',6-diamidino-2-phenylindole")
    assert validate_draft(long_correct, SETTINGS).reason == "correct_option_longest"
    assert validate_draft(long_correct, ValidationSettings(max_length_ratio=5.0)) is None


def test_short_options_exempt_from_length_ratio():
    # Twice as long, but only two characters more: no visible shortcut.
    short = draft(options=["DAPI", "PI", "EdU", "WGA"])
    assert validate_draft(short, SETTINGS) is None


def test_caption_copy_threshold():
    ten_words = draft(question="Only a weak near infrared fluorescence (red) was observed in these cells. Which dye labels the nuclei?")
    assert longest_shared_run(ten_words.question, CAPTION) == 10
    assert validate_draft(ten_words, SETTINGS, CAPTION) is None
    assert validate_draft(ten_words, ValidationSettings(max_caption_copy_words=10), CAPTION).reason == "stem_copies_caption"


def test_answer_inside_longer_word_allowed():
    # "red" is the answer; "labelled" and "reddish" are not the word "red".
    colour = draft(
        question="Which colour shows the reddish labelled cells?",
        options=["red", "green", "blue", "cyan"],
        correct_answer="red",
    )
    assert validate_draft(colour, SETTINGS) is None


def test_normalisation_helpers():
    assert normalize_option("H&E") == normalize_option("HE")
    assert normalize_option("10 µM") == normalize_option("10μM")
    assert normalize_option("DAPI") != normalize_option("DAPI 2")
    assert contains_phrase("cells treated with 10 μM drug", "10 µM")
    assert not contains_phrase("cells treated with 100 μM drug", "10 μM")
    assert strip_option_prefix("1) DAPI") == "DAPI"
    assert strip_option_prefix("(B) Hoechst 33342") == "Hoechst 33342"
    assert strip_option_prefix("53BP1") == "53BP1"
    assert strip_option_prefix("2.4 μg/mL") == "2.4 μg/mL"


@pytest.mark.parametrize(
    ("options", "stripped"),
    [
        (["A. DAPI", "B. Hoechst", "C. EdU"], ["DAPI", "Hoechst", "EdU"]),
        (["1. DAPI", "2. Hoechst", "3. EdU"], ["DAPI", "Hoechst", "EdU"]),
        (["(1) DAPI", "(2) Hoechst", "(3) EdU"], ["DAPI", "Hoechst", "EdU"]),
        (["E. coli", "B. subtilis", "S. aureus"], ["E. coli", "B. subtilis", "S. aureus"]),
        (["A. thaliana", "B. subtilis", "C. elegans"], ["thaliana", "subtilis", "elegans"]),
    ],
)
def test_option_labels(options, stripped):
    # A sequence A., B., C. is taken as labels, even for species names that happen to fit it.
    assert strip_option_labels(options) == stripped


def test_correct_answer_by_label():
    raw = ["A. DAPI", "B. Hoechst", "C. EdU"]
    options = strip_option_labels(raw)
    assert resolve_correct_answer("B. Hoechst", raw, options) == "Hoechst"
    assert resolve_correct_answer("B", raw, options) == "Hoechst"
    assert resolve_correct_answer("(3)", raw, options) == "EdU"
    assert resolve_correct_answer("DAPI", raw, options) == "DAPI"
