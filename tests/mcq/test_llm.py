"""The mcq stage with an LLM agent: a real OpenAI-compatible stub server on loopback plays the model."""

from __future__ import annotations

import json
import re
from collections import Counter
from contextlib import contextmanager
from typing import Iterator

import pytest
from stubs.openai_server import Reply

from microvqa_pp.config import load_config
from microvqa_pp.mcq.stage import McqStage
from microvqa_pp.records import MCQ, Rejection
from microvqa_pp.run.stage import read_records, run_stage

WRITE = "Write the multiple-choice question about the image above."
ANSWER = "The image is not shown to you"
REWRITE = "Rewrite the question about the image above."
BLOOMS = "Assign the most appropriate Bloom's taxonomy level"

# Plausible same-kind distractors the scripted model uses for each fixture answer.
DISTRACTORS = {
    "α-bungarotoxin (BTX)": ["phalloidin (PHA)", "DAPI stain", "Hoechst 33342"],
    "astrocytes": ["microglia", "oligodendrocytes", "fibroblasts"],
    "10 μM": ["1 μM", "50 μM", "100 μM"],
    "L929": ["HeLa", "U2OS", "A549"],
    "eosinophils": ["neutrophils", "lymphocytes", "macrophages"],
    "IgG": ["IgA", "IgM", "C3"],
    "DAPI": ["Hoechst", "SYTO 9", "DRAQ5"],
    "HE staining": ["PAS staining", "Masson trichrome", "Giemsa stain"],
    "Actinomadura madurae": ["Nocardia asteroides", "Streptomyces somaliensis", "Madurella mycetomatis"],
    "green": ["red", "magenta", "cyan"],
    "2.4 μg/mL": ["0.5 μg/mL", "10 μg/mL", "25 μg/mL"],
    "E. coli": ["B. subtilis", "S. aureus", "C. crescentus"],
}
QUESTION_LINE = re.compile(r"^Question: (.*)$", re.MULTILINE)
ANSWER_LINE = re.compile(r"^Answer: (.*)$", re.MULTILINE)
OPTION_LINE = re.compile(r"^\((\d+)\) (.*)$", re.MULTILINE)


def good_reply(question: str, answer: str) -> dict:
    return {
        "question": f"A microscopy image is shown. {question}",
        "options": [answer, *DISTRACTORS[answer]],
        "correct_answer": answer,
        "rationale": f"The image shows the features that identify {answer}; the other options would look different.",
    }


class ScriptedModel:
    """Answers each kind of request the way a test needs; `broken` maps an answer to a bad reply."""

    def __init__(
        self,
        broken: dict[str, Reply] | None = None,
        *,
        stubborn: bool = False,
        knows: set[str] = frozenset(),
        blooms: str = "Bloom's: Application\nLevel: 3\nReasoning: two steps.",
    ):
        self.broken = broken or {}
        self.stubborn = stubborn
        """Repeat the bad reply when asked to repair it, instead of fixing it."""
        self.knows = set(knows)
        """Answers the text-only model picks correctly; for all others it picks a wrong option."""
        self.blooms = blooms
        self.rewritten: set[str] = set()

    def __call__(self, request) -> Reply:
        text = request.text
        if REWRITE in text:
            return self.rewrite(text)
        if WRITE in text:
            question = QUESTION_LINE.search(text).group(1)
            answer = ANSWER_LINE.search(text).group(1)
            if "could not be used" in text and not self.stubborn:
                return Reply.json(good_reply(question, answer))
            return self.broken.get(answer) or Reply.json(good_reply(question, answer))
        if ANSWER in text:
            options = {int(number): option for number, option in OPTION_LINE.findall(text)}
            stem = text.split("\n\n")[1]
            correct = next(number for number, option in options.items() if option in DISTRACTORS)
            leaky = options[correct] in self.knows and stem not in self.rewritten
            chosen = correct if leaky else next(number for number in options if number != correct)
            return Reply.text(f"Thinking about the options. The answer is ({chosen})")
        if BLOOMS in text:
            return Reply.text(self.blooms)
        return Reply.text("unexpected request")

    def rewrite(self, text: str) -> Reply:
        answer = re.search(r"^Correct answer \(keep it unchanged\): (.*)$", text, re.MULTILINE).group(1)
        stem = "Which option matches the labelled feature in this image?"
        self.rewritten.add(stem)
        return Reply.json({"question": stem, "distractors": DISTRACTORS[answer][::-1], "rationale": "Seen in the image."})


@contextmanager
def serve(stub, model: ScriptedModel) -> Iterator:
    """Let `model` answer every request the stub receives."""
    stub.responder = model
    yield stub


def llm_config(stub, **mcq):
    agent = {"backend": "openai", "base_url": stub.url, "model": "stub-model", "retry_base_s": 0.01, "retry_max_s": 0.05, "max_retries": 1, "timeout_s": 10.0, "concurrency": 4}
    return load_config("offline", {"agent": agent, "mcq": mcq})


def run_llm_stage(mcq_run, stub, **mcq):
    result = run_stage(McqStage(mcq_run.run, llm_config(stub, **mcq)))
    records = read_records(mcq_run.run.stage_output("mcq"), MCQ)
    rejections = read_records(mcq_run.run.stage_rejected("mcq"), Rejection)
    return result, records, rejections


@pytest.fixture
def llm_questions(all_questions):
    """The fixture questions whose answers the scripted model has distractors for."""
    return [question for question in all_questions if question[1] in DISTRACTORS]


def broken_replies(questions) -> dict[str, Reply]:
    """One reply per validation rule, each breaking only that rule, keyed by the QA's answer."""
    question_of = {answer: question for _, answer, question, _ in questions}

    def mutate(answer: str, **changes) -> Reply:
        return Reply.json({**good_reply(question_of[answer], answer), **changes})

    good = {answer: good_reply(question_of[answer], answer) for answer in question_of}
    return {
        "α-bungarotoxin (BTX)": mutate("α-bungarotoxin (BTX)", question=""),
        "astrocytes": mutate("astrocytes", rationale=""),
        "10 μM": mutate("10 μM", options=["10 μM", "1 μM", "50 μM"]),
        "L929": mutate("L929", options=["L929", "HeLa", "U2OS", "None of the above"]),
        "eosinophils": mutate("eosinophils", options=["eosinophils", "neutrophils", "Neutrophils.", "macrophages"]),
        "IgG": mutate("IgG", correct_answer="IgE"),
        "DAPI": mutate("DAPI", options=["DAPI", "Hoechst", "dapi", "DRAQ5"]),
        "Actinomadura madurae": mutate("Actinomadura madurae", question="Is the organism forming this granule Actinomadura madurae?"),
        "green": mutate(
            "green",
            options=["green, the colour of Alexa Fluor 488 emission", "red", "cyan", "magenta"],
            correct_answer="green, the colour of Alexa Fluor 488 emission",
        ),
        "2.4 μg/mL": mutate(
            "2.4 μg/mL",
            question="MIP101 and RKO are colorectal MSI cancer cells harboring BRCA2 frameshift mutations. What concentration of MMC was used?",
        ),
        "HE staining": Reply.broken(good["HE staining"]),
    }


EXPECTED_REASONS = {
    "α-bungarotoxin (BTX)": "empty_question",
    "astrocytes": "empty_rationale",
    "10 μM": "wrong_option_count",
    "L929": "all_or_none_of_the_above",
    "eosinophils": "duplicate_options",
    "IgG": "no_correct_option",
    "DAPI": "multiple_correct_options",
    "Actinomadura madurae": "stem_contains_answer",
    "green": "correct_option_longest",
    "2.4 μg/mL": "stem_copies_caption",
    "HE staining": "unparseable_reply",
}


def test_rule_breaking_replies_rejected(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions)
    model = ScriptedModel(broken_replies(llm_questions), stubborn=True)
    with serve(openai_stub, model) as stub:
        result, records, rejections = run_llm_stage(mcq_run, stub, write_attempts=1)

    answer_of = {qa.qa_id: qa.answer for qa in mcq_run.qas}
    reasons = {answer_of[rejection.item_id]: rejection.reason for rejection in rejections}
    assert reasons == EXPECTED_REASONS
    assert [answer_of[record.qa_id] for record in records] == ["E. coli"]
    assert result.rejected == dict(Counter(EXPECTED_REASONS.values()))
    assert all(rejection.detail for rejection in rejections)


def test_empty_option_rejected(make_mcq_run, llm_questions, openai_stub):
    coli = [question for question in llm_questions if question[1] == "E. coli"]
    mcq_run = make_mcq_run(coli)
    reply = {**good_reply(coli[0][2], "E. coli"), "options": ["E. coli", " ", "S. aureus", "B. subtilis"]}
    with serve(openai_stub, ScriptedModel({"E. coli": Reply.json(reply)})) as stub:
        result, records, rejections = run_llm_stage(mcq_run, stub, write_attempts=1)

    assert records == []
    assert [rejection.reason for rejection in rejections] == ["empty_option"]
    assert result.rejected == {"empty_option": 1}


def test_failed_validation_asked_again(make_mcq_run, llm_questions, openai_stub):
    dapi = [question for question in llm_questions if question[1] == "DAPI"]
    mcq_run = make_mcq_run(dapi)
    model = ScriptedModel({"DAPI": Reply.json({**good_reply(dapi[0][2], "DAPI"), "options": ["DAPI", "Hoechst", "SYTO 9", "None of these"]})})
    with serve(openai_stub, model) as stub:
        result, records, rejections = run_llm_stage(mcq_run, stub, write_attempts=2)
        writes = [request for request in stub.requests if WRITE in request.text]

    assert rejections == []
    assert len(records) == 1
    assert result.stats["write_retries"] == 1
    assert len(writes) == 2
    assert "all_or_none_of_the_above" in writes[1].text
    assert [message["role"] for message in writes[1].messages][-2:] == ["assistant", "user"]


def test_llm_records(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions)
    with serve(openai_stub, ScriptedModel()) as stub:
        result, records, rejections = run_llm_stage(mcq_run, stub, no_image_samples=2)
        seen = list(stub.requests)

    assert rejections == []
    assert len(records) == len(llm_questions)
    for record in records:
        assert record.generator == "stub-model"
        assert record.prompt_version == "mcq_write@1"
        assert record.distractor_source == "agent"
        assert record.blooms_level == 3
        assert record.blooms_name == "Application"
        assert record.blooms_source == "agent:stub-model"
        assert 1 <= record.blooms_level_classifier <= 6
        assert record.no_image_outcome == "passed"
        assert record.no_image_accuracy == 0.0
        assert record.choices[record.correct_index] == record.correct_answer
        assert record.question.startswith("A microscopy image is shown. ")

    writes = [request for request in seen if WRITE in request.text]
    answers = [request for request in seen if ANSWER in request.text]
    assert len(writes) == len(llm_questions)
    assert all(len(request.image_urls) == 1 for request in writes)
    assert all(request.image_urls[0].startswith("data:image/") for request in writes)
    assert len(answers) == 2 * len(llm_questions)
    assert all(request.image_urls == [] for request in answers)
    manifest = json.loads(mcq_run.run.manifest_path.read_text())
    assert manifest["usage"]["mcq"]["requests"] == len(seen)
    assert result.stats["correct_index_counts"] == {"0": 3, "1": 3, "2": 3, "3": 3}


def test_leaky_question_rewritten(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions[:3])
    leaky_answer = llm_questions[1][1]
    model = ScriptedModel(knows={leaky_answer})
    with serve(openai_stub, model) as stub:
        result, records, _ = run_llm_stage(mcq_run, stub)
        rewrites = [request for request in stub.requests if REWRITE in request.text]

    outcomes = {record.correct_answer: record for record in records}
    leaky = outcomes[leaky_answer]
    assert leaky.no_image_outcome == "rewritten-passed"
    assert leaky.rewrite_rounds == 1
    assert leaky.question == "Which option matches the labelled feature in this image?"
    assert leaky.cot == "Seen in the image."
    assert sorted(leaky.choices) == sorted([leaky_answer, *DISTRACTORS[leaky_answer]])
    assert [record.no_image_outcome for answer, record in outcomes.items() if answer != leaky_answer] == ["passed", "passed"]
    assert len(rewrites) == 1
    assert "chose the correct answer in 100% of its attempts" in rewrites[0].text
    assert "The answer is" in rewrites[0].text
    assert len(rewrites[0].image_urls) == 1
    assert result.stats["no_image_rewritten_passed"] == 1


def test_always_leaky_question_fails(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions[:1])
    answer = llm_questions[0][1]
    model = ScriptedModel(knows={answer})
    model.rewritten = _NeverMatches()
    with serve(openai_stub, model) as stub:
        _, records, _ = run_llm_stage(mcq_run, stub, rewrite_rounds=2)

    [record] = records
    assert record.no_image_outcome == "failed"
    assert record.rewrite_rounds == 2
    assert record.no_image_accuracy == 1.0


def test_failed_requests_do_not_stop_run(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions[:4])
    failing = llm_questions[2][1]
    model = ScriptedModel({failing: Reply.server_error()})
    with serve(openai_stub, model) as stub:
        result, records, rejections = run_llm_stage(mcq_run, stub)

    assert len(records) == 3
    [rejection] = rejections
    assert rejection.item_id == mcq_run.qas[2].qa_id
    assert rejection.reason == "http_500"


def test_unparseable_blooms_falls_back_to_classifier(make_mcq_run, llm_questions, openai_stub):
    mcq_run = make_mcq_run(llm_questions[:2])
    with serve(openai_stub, ScriptedModel(blooms="It is a good question.")) as stub:
        result, records, _ = run_llm_stage(mcq_run, stub)

    assert [record.blooms_source for record in records] == ["classifier:logreg-embedding"] * 2
    assert all(1 <= record.blooms_level <= 6 for record in records)
    assert result.stats["blooms_agent_failed"] == 2


class _NeverMatches(set):
    """A set that contains nothing, so the scripted text-only model keeps answering correctly."""

    def __contains__(self, item) -> bool:
        return False


def test_invalid_agent_settings_fail_at_build(make_mcq_run, small_questions):
    from microvqa_pp.errors import ConfigError

    mcq_run = make_mcq_run(small_questions)
    config = load_config("offline", {"agent": {"backend": "openai", "model": ""}})
    with pytest.raises(ConfigError):
        McqStage(mcq_run.run, config)
