"""Restating question-answer pairs as declarative statements."""

from __future__ import annotations

import pytest

from microvqa_pp.signals.statement import past_tense, restate, third_person

CASES = [
    # wh-phrase as object, with do-support
    ("What does the green signal in panel B represent?", "GamGFP foci at DSBs",
     "The green signal in panel B represents GamGFP foci at DSBs.", "wh-object"),
    ("What do the arrows indicate in panel C?", "laser-induced DNA breaks",
     "The arrows indicate laser-induced DNA breaks in panel C.", "wh-object"),
    ("What does GamGFP bind to in living cells?", "double-strand ends",
     "GamGFP binds to double-strand ends in living cells.", "wh-object"),
    ("What did the authors measure?", "RAD51 foci", "The authors measured RAD51 foci.", "wh-object"),
    ("What would you propose to test whether Ku blocks GamGFP?", "a Ku80 knockout",
     "You would propose a Ku80 knockout to test whether Ku blocks GamGFP.", "wh-object"),
    # wh-phrase as subject
    ("Which protein accumulates at the septum?", "FtsZ", "FtsZ accumulates at the septum.", "wh-subject"),
    ("What is shown in panel B?", "a phage plaque assay", "A phage plaque assay is shown in panel B.", "wh-subject"),
    ("What labels are used in panel A?", "DAPI and GFP", "DAPI and GFP are used in panel A.", "wh-subject"),
    ("Which experiment could test the model?", "I-SceI cleavage", "I-SceI cleavage could test the model.", "wh-subject"),
    ("What fraction of cells shows GamGFP foci?", "about 40%", "About 40% of cells shows GamGFP foci.", "wh-subject"),
    # copulas
    ("What is the function of GamGFP?", "a DSB trap", "The function of GamGFP is a DSB trap.", "wh-copula"),
    ("What is GamGFP fused to?", "Mu Gam", "GamGFP is fused to Mu Gam.", "wh-copula"),
    ("What protein is GamGFP fused to?", "Mu Gam", "GamGFP is fused to Mu Gam.", "wh-copula"),
    # quantities
    ("How many foci are visible per cell?", "two", "Two foci are visible per cell.", "quantity"),
    ("How many foci does each cell contain?", "3", "Each cell contains 3 foci.", "quantity"),
    ("How many cells were imaged?", "120 cells", "120 cells were imaged.", "quantity"),
    # adverbials
    ("Where is GamGFP localized?", "at DNA ends", "GamGFP is localized at DNA ends.", "adverbial"),
    ("Where is GamGFP localized?", "the cell poles", "GamGFP is localized at the cell poles.", "adverbial"),
    ("Why are plaques small on WT cells?", "RecBCD degrades phage DNA",
     "Plaques are small on WT cells because RecBCD degrades phage DNA.", "adverbial"),
    ("Why does GamGFP inhibit RAD51 foci?", "it blocks end resection",
     "GamGFP inhibits RAD51 foci because it blocks end resection.", "adverbial"),
    ("How is GamGFP detected?", "fluorescence microscopy", "GamGFP is detected by fluorescence microscopy.", "adverbial"),
    ("When do GamGFP foci appear?", "after gamma irradiation", "GamGFP foci appear after gamma irradiation.", "adverbial"),
    ("How could the breaks be located?", "using I-SceI sites", "The breaks could be located using I-SceI sites.", "adverbial"),
    # yes/no
    ("Is GamGFP localized at DSBs?", "Yes", "GamGFP is localized at DSBs.", "yes-no"),
    ("Is GamGFP localized at DSBs?", "No, it is diffuse", "GamGFP is not localized at DSBs.", "yes-no"),
    ("Does Ku inhibit GamGFP recruitment?", "Yes", "Ku inhibits GamGFP recruitment.", "yes-no"),
    ("Does Ku inhibit GamGFP recruitment?", "no", "Ku does not inhibit GamGFP recruitment.", "yes-no"),
    ("Can GamGFP detect DSBs in human cells?", "yes", "GamGFP can detect DSBs in human cells.", "yes-no"),
    ("Is GamGFP a DSB marker?", "yes", "GamGFP is a DSB marker.", "yes-no"),
    # questions written by the generate stage's template writer on the bundled BIOMEDICA shard
    ("Based on this figure, how does fasudil affect endplate (EP) area?", "increases",
     "Based on this figure, fasudil increases endplate (EP) area.", "adverbial"),
    ("Which agent would you apply to increase endplate (EP) area, based on this figure?", "Fasudil",
     "You would apply Fasudil to increase endplate (EP) area, based on this figure.", "wh-object"),
    ("To reproduce this experiment, which agent should the cells be incubated with?", "CO",
     "To reproduce this experiment, the cells should be incubated with CO.", "wh-object"),
    ("What concentration of RHC would you use to reproduce this experiment?", "10 μM",
     "You would use 10 μM to reproduce this experiment.", "wh-object"),
    ("Which imaging technique shows IgG deposition along the basement membrane?", "Immunofluorescence",
     "Immunofluorescence shows IgG deposition along the basement membrane.", "wh-subject"),
    ("What length does the scale bar in this figure represent?", "20 μm",
     "The scale bar in this figure represents 20 μm.", "wh-object"),
    ("At what magnification was the image in panel A taken?", "20×",
     "The image in panel A was taken at 20× magnification.", "adverbial"),
    ("In which cell line was GamGFP expressed?", "HeLa cells", "GamGFP was expressed in HeLa cells.", "adverbial"),
    # a leading phrase, and the fallback
    ("In panel B, what do the arrows indicate?", "DSB foci", "In panel B, the arrows indicate DSB foci.", "wh-object"),
    ("Propose an experiment to test whether GamGFP binds DSBs", "Cleave I-SceI sites and count foci.",
     "Propose an experiment to test whether GamGFP binds DSBs: Cleave I-SceI sites and count foci.", "fallback"),
    ("What happens to foci after irradiation?", "they increase",
     "What happens to foci after irradiation: they increase.", "fallback"),
    ("Is the signal nuclear or cytoplasmic?", "nuclear",
     "Is the signal nuclear or cytoplasmic: nuclear.", "fallback"),
]


@pytest.mark.parametrize(("question", "answer", "expected", "rule"), CASES, ids=[case[0] + " / " + case[1] for case in CASES])
def test_restate_question_forms(question: str, answer: str, expected: str, rule: str) -> None:
    restatement = restate(question, answer)
    assert restatement.text == expected
    assert restatement.rule == rule


def test_restate_lowercases_sentence_initial_span() -> None:
    statement = restate("What is GamGFP fused to?", "The Mu Gam protein.")
    assert statement.text == "GamGFP is fused to the Mu Gam protein."


def test_restate_keeps_case_of_names() -> None:
    assert restate("What does the image show?", "DNA breaks").text == "The image shows DNA breaks."
    assert restate("Which protein binds DNA ends?", "mCherry-Ku").text == "mCherry-Ku binds DNA ends."


def test_restate_empty_inputs() -> None:
    assert restate("", "GamGFP").text == "GamGFP."
    assert restate("What is shown?", "").rule == "fallback"
    assert restate("   ", "  ").text == ""


@pytest.mark.parametrize(
    ("verb", "third", "past"),
    [("show", "shows", "showed"), ("bind", "binds", "bound"), ("localize", "localizes", "localized"),
     ("stain", "stains", "stained"), ("carry", "carries", "carried"), ("stop", "stops", "stopped"),
     ("express", "expresses", "expressed"), ("open", "opens", "opened"), ("have", "has", "had")],
)
def test_verb_inflection(verb: str, third: str, past: str) -> None:
    assert third_person(verb) == third
    assert past_tense(verb) == past


def test_restate_skips_nouns_that_look_like_verbs() -> None:
    assert restate("What does the label indicate?", "the septum").text == "The label indicates the septum."
    assert restate("What does the stain show in panel B?", "nuclei").text == "The stain shows nuclei in panel B."
