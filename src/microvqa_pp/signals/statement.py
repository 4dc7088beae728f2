"""Restate a question and its answer as one declarative statement.

NLI models judge whether a premise entails a hypothesis, and CLIP and sentence embedders compare
texts; both work on statements, not on question-answer pairs. `restate` turns

    "What does the green signal in panel B represent?" + "GamGFP foci at DSBs"

into "The green signal in panel B represents GamGFP foci at DSBs." with a small rule-based
English grammar: wh-questions with the wh-phrase as subject or as object (with do-support,
copulas, modals and perfect auxiliaries), adverbial questions (where, when, why, how), quantity
questions (how many, how much) and yes/no questions. Anything else (imperatives such as
"Propose an experiment ...", alternative questions) falls back to "QUESTION: ANSWER.", which
keeps every content word for the models.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

WH_WORDS = frozenset({"what", "which", "who", "whom", "whose", "where", "when", "why", "how"})
COPULAS = frozenset({"is", "are", "was", "were"})
DO_FORMS = frozenset({"do", "does", "did"})
MODALS = frozenset({"can", "could", "will", "would", "may", "might", "should", "must", "shall"})
PERFECT = frozenset({"has", "have", "had"})
AUXILIARIES = COPULAS | DO_FORMS | MODALS | PERFECT

PREPOSITIONS = frozenset(
    """about above across after against along among around at before behind below beneath beside
    between beyond by during for from in inside into near of off on onto out outside over per
    through throughout to toward towards under upon via with within without""".split()
)
DETERMINERS = frozenset("the a an this that these those each every its their his her our some any both all no".split())
PRONOUNS = frozenset("i you we they it he she one researchers scientists".split())
TRAILING_CONTEXT_STARTS = frozenset("based according as in from judging".split())
"""First words of a phrase such as ", based on this figure" that may end a question."""
MEASURE_NOUNS = frozenset("fraction percentage percent proportion share number amount ratio majority".split())

COMMON_VERBS = frozenset(
    """accumulate acquire act add affect allow appear apply arise assess associate bind block cause
    change colocalize co-localize compare conclude confirm contain contribute correlate correspond decrease demonstrate
    denote depend depict detect determine differ display distinguish divide emit encode enter
    estimate examine exhibit expect explain express fluoresce follow form function generate grow have
    highlight identify illustrate imply incubate increase indicate induce infer inhibit interact label
    lead localize localise mark measure mediate migrate move observe occur overlap perform play
    predict prevent produce promote propose protect quantify recognize recruit reduce regulate
    represent require result reveal see serve show stain suggest support survive tag target test track
    undergo use visualize""".split()
)
"""Base forms of verbs common in questions about figures; used to find the main verb."""

EFFECT_VERBS = frozenset("affect alter change influence impact modulate regulate".split())
"""Verbs of "How does X affect Y?", whose short answer ("increases") is itself the verb."""

IRREGULAR_PAST = {
    "bind": "bound", "become": "became", "begin": "began", "break": "broke", "bring": "brought",
    "build": "built", "choose": "chose", "come": "came", "do": "did", "draw": "drew", "fall": "fell",
    "feed": "fed", "find": "found", "get": "got", "give": "gave", "go": "went", "grow": "grew",
    "have": "had", "hold": "held", "keep": "kept", "know": "knew", "lead": "led", "leave": "left",
    "lose": "lost", "make": "made", "mean": "meant", "put": "put", "read": "read", "rise": "rose",
    "run": "ran", "see": "saw", "set": "set", "show": "showed", "split": "split", "spread": "spread",
    "take": "took", "tell": "told", "think": "thought", "undergo": "underwent", "write": "wrote",
}
IRREGULAR_PARTICIPLES = frozenset(
    """bound become begun broken brought built chosen done drawn fallen fed found given gone grown held
    kept known left lost made meant put read risen run seen set shown split spread taken thought
    undergone written""".split()
)
PREDICATE_ADJECTIVES = frozenset(
    """abnormal absent abundant active alive big black blue bright consistent dark dead diffuse
    different dim dimmer essential evident fluorescent greater green high higher large larger likely
    long low lower magenta narrow normal present punctate red responsible round short similar small
    smaller sufficient thick thin unlikely viable white wide yellow""".split()
)

_EDGE_PUNCTUATION = "\"'“”‘’()[]{},;:"


@dataclass(frozen=True)
class Restatement:
    """A declarative statement and the name of the grammar rule that produced it."""

    text: str
    rule: str
    """`wh-subject`, `wh-object`, `wh-copula`, `adverbial`, `quantity`, `yes-no` or `fallback`."""


def restate(question: str, answer: str) -> Restatement:
    """Restate a question and its answer as one declarative sentence."""
    question = " ".join(question.split()).rstrip(" ?.")
    answer = _clean_answer(answer)
    if not question or not answer:
        return Restatement(_finish([question, answer] if question else [answer]), "fallback")

    prefix, body = _split_leading_context(question)
    body, suffix = _split_trailing_context(body)
    tokens = body.split()
    built = _restate_tokens(tokens, answer)
    if built is None:
        return Restatement(_finish([f"{question}:", answer]), "fallback")
    words, rule = built
    if prefix:
        words = [prefix + ","] + words
    if suffix:
        words = words + [", " + suffix]
    return Restatement(_finish(words), rule)


# The grammar -----------------------------------------------------------------------------------


def _restate_tokens(tokens: list[str], answer: str) -> tuple[list[str], str] | None:
    """Return the statement's words and the rule name, or None when no rule applies."""
    if not tokens:
        return None
    first = _norm(tokens[0])
    rest = tokens[1:]
    if first in ("what", "which", "who", "whom", "whose"):
        return _wh_nominal(rest, answer)
    if first == "how" and rest and _norm(rest[0]) in ("many", "much"):
        return _quantity(rest[1:], answer)
    if first in ("where", "when", "why", "how"):
        if first == "how" and rest and _norm(rest[0]) not in AUXILIARIES:
            rest = rest[1:]  # "how long", "how often": the answer carries the adverbial.
        return _adverbial(first, rest, answer)
    if first in AUXILIARIES:
        return _yes_no(tokens, answer)
    if first in PREPOSITIONS and len(rest) > 1 and _norm(rest[0]) in ("what", "which"):
        return _prepositional(tokens[0], rest[1:], answer)
    return None


def _wh_nominal(rest: list[str], answer: str) -> tuple[list[str], str] | None:
    """What/which/who questions: the wh-phrase is the subject, the object or a copula's complement."""
    aux_index = _first_index(rest, lambda word: _norm(word) in AUXILIARIES)
    verb_index = _first_finite_verb(rest)
    if verb_index is not None and (aux_index is None or verb_index < aux_index):
        # "Which protein accumulates at the septum": the answer replaces the wh-phrase.
        return _answer_as_subject(rest[:verb_index], answer) + rest[verb_index:], "wh-subject"
    if aux_index is None:
        return None

    wh_phrase, aux, after = rest[:aux_index], rest[aux_index], rest[aux_index + 1 :]
    aux_word = _norm(aux)
    if not after:
        # "What is it", truncated to nothing: the answer and the copula alone say little.
        return None
    if aux_word in DO_FORMS:
        clause = _do_clause(after, aux_word, answer)
        return (clause, "wh-object") if clause else None
    if aux_word in COPULAS and not wh_phrase and not _starts_predicate(after):
        return _copula_question(aux, after, answer), "wh-copula"
    if _starts_predicate(after) or _is_verb_like(after[0]):
        # "What is shown in panel B", "Which experiment could test X".
        return _answer_as_subject(wh_phrase, answer) + [aux] + after, "wh-subject"
    if aux_word in COPULAS:
        return _copula_question(aux, after, answer), "wh-copula"
    # "What would you propose to test X": a modal or perfect auxiliary with the wh-phrase as object.
    clause = _auxiliary_clause(after, aux, answer)
    return (clause, "wh-object") if clause else None


def _quantity(rest: list[str], answer: str) -> tuple[list[str], str] | None:
    """How many/much questions: the answer is the quantity of the noun phrase that follows."""
    aux_index = _first_index(rest, lambda word: _norm(word) in AUXILIARIES)
    verb_index = _first_finite_verb(rest)
    if verb_index is not None and (aux_index is None or verb_index < aux_index):
        noun_phrase, after = rest[:verb_index], rest[verb_index:]
        return _quantified(answer, noun_phrase) + after, "quantity"
    if aux_index is None:
        return None
    noun_phrase, aux, after = rest[:aux_index], rest[aux_index], rest[aux_index + 1 :]
    aux_word = _norm(aux)
    if aux_word in DO_FORMS:
        # "How many foci does each cell contain": the quantity is the object.
        clause = _do_clause(after, aux_word, " ".join(_quantified(answer, noun_phrase)))
        return (clause, "quantity") if clause else None
    # "How many foci are visible per cell", "How many cells were imaged".
    return _quantified(answer, noun_phrase) + [aux] + after, "quantity"


def _adverbial(wh_word: str, rest: list[str], answer: str) -> tuple[list[str], str] | None:
    """Where/when/why/how questions: the answer becomes an adverbial at the end of the clause."""
    if not rest or _norm(rest[0]) not in AUXILIARIES or len(rest) < 2:
        return None
    aux, after = rest[0], rest[1:]
    if wh_word == "how" and _norm(aux) in DO_FORMS and len(answer.split()) <= 3:
        verb_index = _find_main_verb(after)
        if verb_index is not None and _norm(after[verb_index]) in EFFECT_VERBS:
            # "How does fasudil affect EP area?" + "increases" -> "Fasudil increases EP area."
            return after[:verb_index] + [answer] + after[verb_index + 1 :], "adverbial"
    clause = _declarative_clause(aux, after)
    if clause is None:
        return None
    passive = any(_is_participle(word) for word in after)
    return clause + _adverbial_answer(wh_word, answer, passive), "adverbial"


def _prepositional(preposition: str, rest: list[str], answer: str) -> tuple[list[str], str] | None:
    """`At what magnification was the image taken`: the answer and its noun follow the clause."""
    aux_index = _first_index(rest, lambda word: _norm(word) in AUXILIARIES)
    if aux_index is None or aux_index + 1 >= len(rest):
        return None
    clause = _declarative_clause(rest[aux_index], rest[aux_index + 1 :])
    if clause is None:
        return None
    return clause + [preposition.lower()] + _quantified(answer, rest[:aux_index]), "adverbial"


def _declarative_clause(aux: str, after: list[str]) -> list[str] | None:
    """Undo subject-auxiliary inversion: `(was) the image taken` -> `the image was taken`."""
    aux_word = _norm(aux)
    if aux_word in DO_FORMS:
        verb_index = _find_main_verb(after)
        if verb_index is None:
            return None
        return after[:verb_index] + [_inflect(after[verb_index], aux_word)] + after[verb_index + 1 :]
    if aux_word in COPULAS:
        # A participle ends the subject ("the image in panel A | taken"); else an adjective or preposition.
        split = _first_index(after, _is_participle, start=1)
        if split is None:
            split = _predicate_start(after, include_determiners=False)
        return after + [aux] if split is None else after[:split] + [aux] + after[split:]
    verb_index = _first_index(after[1:], _is_verb_like)
    if verb_index is None:
        return None
    return after[: verb_index + 1] + [aux] + after[verb_index + 1 :]


def _yes_no(tokens: list[str], answer: str) -> tuple[list[str], str] | None:
    """Yes/no questions answered yes or no: the statement is the claim, negated for no."""
    polarity = _polarity(answer)
    if polarity is None or len(tokens) < 3:
        return None
    aux, after = tokens[0], tokens[1:]
    aux_word = _norm(aux)
    negation = [] if polarity else ["not"]
    if aux_word in DO_FORMS:
        verb_index = _find_main_verb(after)
        if verb_index is None:
            return None
        subject, verb, objects = after[:verb_index], after[verb_index], after[verb_index + 1 :]
        if polarity:
            return subject + [_inflect(verb, aux_word)] + objects, "yes-no"
        return subject + [aux_word, "not", verb] + objects, "yes-no"
    if aux_word in COPULAS:
        split = _predicate_start(after, include_determiners=True)
    else:
        split = _first_index(after, _is_verb_like, start=1)
    if split is None:
        return None
    return after[:split] + [aux_word] + negation + after[split:], "yes-no"


# Clause builders -------------------------------------------------------------------------------


def _copula_question(aux: str, after: list[str], answer: str) -> list[str]:
    """`What is X (participle (preposition))`: X is the subject, the answer the complement."""
    split = _first_index(after, _is_participle, start=1)
    if split is None:
        # "What is the function of GamGFP" -> "The function of GamGFP is ANSWER".
        return after + [aux, answer]
    # "What is GamGFP fused to" -> "GamGFP is fused to ANSWER".
    return after[:split] + [aux] + _place_object(after[split : split + 1], after[split + 1 :], answer)


def _do_clause(after: list[str], aux_word: str, answer: str) -> list[str] | None:
    """`(does) SUBJECT VERB REST` with the answer as the verb's object, the verb inflected."""
    verb_index = _find_main_verb(after)
    if verb_index is None:
        return None
    subject, verb, rest = after[:verb_index], after[verb_index], after[verb_index + 1 :]
    return subject + _place_object([_inflect(verb, aux_word)], rest, answer)


def _auxiliary_clause(after: list[str], aux: str, answer: str) -> list[str] | None:
    """`(would) SUBJECT VERB REST` with a modal or perfect auxiliary kept before the verb."""
    # A pronoun subject ("would you apply") is one word, so the verb follows it.
    verb_index = 1 if _norm(after[0]) in PRONOUNS and len(after) > 1 else _first_index(after, _is_verb_like, start=1)
    if verb_index is None:
        return None
    subject, verb, rest = after[:verb_index], after[verb_index], after[verb_index + 1 :]
    return subject + _place_object([_norm(aux), verb], rest, answer)


def _place_object(verb_words: list[str], rest: list[str], answer: str) -> list[str]:
    """Put the answer after the verb, or after a stranded preposition ("bind to ANSWER in cells").

    A passive participle after the verb ("be incubated with") keeps its place before the answer.
    """
    if rest and _norm(rest[0]) in PREPOSITIONS and (len(rest) == 1 or _norm(rest[1]) in PREPOSITIONS):
        return verb_words + [rest[0], answer] + rest[1:]
    if rest and _is_participle(rest[0]) and _norm(verb_words[-1]) in ("be", "been", *COPULAS):
        return verb_words + _place_object([rest[0]], rest[1:], answer)
    return verb_words + [answer] + rest


def _answer_as_subject(wh_phrase: list[str], answer: str) -> list[str]:
    """Return the subject words when the answer replaces a wh-phrase such as `fraction of cells`."""
    if wh_phrase and _norm(wh_phrase[0]) in MEASURE_NOUNS and len(wh_phrase) > 1 and _norm(wh_phrase[1]) == "of":
        return [answer] + wh_phrase[1:]
    return [answer]


def _quantified(answer: str, noun_phrase: list[str]) -> list[str]:
    """Return `ANSWER NOUNS`, or the answer alone when it already names one of the nouns."""

    def stem(word: str) -> str:
        return _norm(word).removesuffix("s")

    if {stem(word) for word in noun_phrase} & {stem(word) for word in answer.split()}:
        return [answer]
    return [answer] + noun_phrase


def _adverbial_answer(wh_word: str, answer: str, passive: bool) -> list[str]:
    """Join the answer to the clause with the connective a where/when/why/how answer needs."""
    first = _norm(answer.split()[0])
    if wh_word == "where":
        return [answer] if first in PREPOSITIONS else ["at", answer]
    if wh_word == "when":
        return ["at", answer] if answer[0].isdigit() else [answer]
    if wh_word == "why":
        connectives = {"because", "since", "as", "due", "owing", "to", "so"}
        return [answer] if first in connectives or answer.lower().startswith("in order") else ["because", answer]
    # how: "by" joins a method ("by flow cytometry"); a clause is joined with a colon.
    if first in PREPOSITIONS or first in ("using", "via"):
        return [answer]
    if passive or first.endswith("ing"):
        return ["by", answer]
    return [":", answer]


# Word classes ----------------------------------------------------------------------------------


def _norm(word: str) -> str:
    return word.strip(_EDGE_PUNCTUATION).casefold()


def _first_index(words: list[str], predicate, start: int = 0) -> int | None:
    for index in range(start, len(words)):
        if predicate(words[index]):
            return index
    return None


def _base_forms(word: str) -> set[str]:
    """Return the base-form candidates of an inflected verb (-s, -es, -ies, -ed, irregular past)."""
    candidates = {word}
    if word.endswith("ies"):
        candidates.add(word[:-3] + "y")
    if word.endswith("es"):
        candidates.add(word[:-2])
    if word.endswith("s"):
        candidates.add(word[:-1])
    if word.endswith("ied"):
        candidates.add(word[:-3] + "y")
    if word.endswith("ed"):
        candidates.update({word[:-1], word[:-2], word[:-3]})
    candidates.update(base for base, past in IRREGULAR_PAST.items() if past == word)
    return candidates


def _first_finite_verb(words: list[str]) -> int | None:
    """Return the index of the first inflected common verb that is not followed by an auxiliary.

    "Which protein binds DNA" has the finite verb `binds`. In "What labels are used", `labels`
    is followed by `are`, so it is read as a noun.
    """
    for index, word in enumerate(words):
        normalized = _norm(word)
        if normalized in AUXILIARIES:
            return None
        if normalized in COMMON_VERBS:
            continue  # A bare base form after a wh-word is a noun or an infinitive, not finite.
        if _base_forms(normalized) & COMMON_VERBS:
            following = _norm(words[index + 1]) if index + 1 < len(words) else ""
            if following not in AUXILIARIES:
                return index
    return None


def _find_main_verb(words: list[str]) -> int | None:
    """Return the index of the main verb after a subject: a known verb, else the last word.

    A known verb right after a determiner is a noun ("the image", "the label") and is skipped.
    A trailing stranded preposition ("bind to") is skipped when falling back to the last word.
    """
    for index in range(1, len(words)):
        if _norm(words[index]) in COMMON_VERBS and _norm(words[index - 1]) not in DETERMINERS:
            return index
    index = len(words) - 1
    while index >= 1 and _norm(words[index]) in PREPOSITIONS:
        index -= 1
    return index if index >= 1 else None


def _is_participle(word: str) -> bool:
    normalized = _norm(word)
    if normalized in IRREGULAR_PARTICIPLES:
        return True
    return len(normalized) > 3 and normalized.endswith("ed") and not normalized.endswith("eed")


def _is_adjective(word: str) -> bool:
    normalized = _norm(word)
    return normalized in PREDICATE_ADJECTIVES or normalized.endswith(("ible", "able"))


def _starts_predicate(words: list[str]) -> bool:
    """Return whether `words` begins with a predicate (participle, adjective or preposition)."""
    return bool(words) and (_is_participle(words[0]) or _is_adjective(words[0]) or _norm(words[0]) in PREPOSITIONS)


def _is_verb_like(word: str) -> bool:
    normalized = _norm(word)
    return normalized in COMMON_VERBS or normalized in ("be", "been") or _is_participle(word)


def _predicate_start(words: list[str], *, include_determiners: bool) -> int | None:
    """Return where a copula's predicate begins after its subject (position 1 or later)."""

    def starts_here(word: str) -> bool:
        normalized = _norm(word)
        if include_determiners and normalized in DETERMINERS:
            return True
        return _is_participle(word) or _is_adjective(word) or normalized in PREPOSITIONS

    return _first_index(words, starts_here, start=1)


def _polarity(answer: str) -> bool | None:
    first = _norm(answer.split()[0]) if answer.split() else ""
    if first in ("yes", "true", "correct"):
        return True
    if first in ("no", "false", "incorrect"):
        return False
    return None


# Inflection and output -------------------------------------------------------------------------


def _inflect(verb: str, aux_word: str) -> str:
    """Inflect a base-form verb for the tense and person that `do`, `does` or `did` carried."""
    if aux_word == "does":
        return third_person(verb)
    if aux_word == "did":
        return past_tense(verb)
    return verb


def third_person(verb: str) -> str:
    """Return the third-person singular present of a base-form verb (`show` -> `shows`)."""
    irregular = {"be": "is", "have": "has", "do": "does", "go": "goes"}
    if verb.lower() in irregular:
        return irregular[verb.lower()]
    if verb.endswith(("s", "sh", "ch", "x", "z", "o")):
        return verb + "es"
    if len(verb) > 1 and verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ies"
    return verb + "s"


def past_tense(verb: str) -> str:
    """Return the simple past of a base-form verb (`bind` -> `bound`, `stop` -> `stopped`)."""
    if verb.lower() in IRREGULAR_PAST:
        return IRREGULAR_PAST[verb.lower()]
    if verb.endswith("e"):
        return verb + "d"
    if len(verb) > 1 and verb.endswith("y") and verb[-2] not in "aeiou":
        return verb[:-1] + "ied"
    # One-syllable verbs ending consonant-vowel-consonant double the consonant ("stop", "tag").
    if re.fullmatch(r"[^aeiou]*[aeiou][bdgmnprt]", verb.lower()):
        return verb + verb[-1] + "ed"
    return verb + "ed"


def _split_trailing_context(question: str) -> tuple[str, str]:
    """Split "Which agent ..., based on this figure" into the question proper and the tail phrase."""
    body, separator, tail = question.rpartition(", ")
    if separator and body.split() and _norm(tail.split()[0]) in TRAILING_CONTEXT_STARTS:
        return body, tail
    return question, ""


def _split_leading_context(question: str) -> tuple[str, str]:
    """Split "In panel B, what ..." into the leading phrase and the question proper."""
    parts = question.split(", ", 1)
    if len(parts) == 2 and parts[1].split() and _norm(parts[1].split()[0]) in WH_WORDS | AUXILIARIES:
        if _norm(parts[0].split()[0]) not in WH_WORDS | AUXILIARIES:
            return parts[0], parts[1]
    return "", question


def _clean_answer(answer: str) -> str:
    answer = " ".join(answer.split()).rstrip(" .;:,")
    words = answer.split(" ", 1)
    # A span copied from the start of a caption sentence ("The nucleoid") is lowercased when
    # it moves into the middle of a statement; names such as "GamGFP" or "DNA" keep their case.
    if words and words[0][:1].isupper() and words[0][1:].islower() and words[0].lower() in DETERMINERS | PRONOUNS:
        words[0] = words[0].lower()
    return " ".join(words)


def _finish(words: list[str]) -> str:
    """Join words into a sentence: one space apart, a capital first letter and a final period."""
    text = " ".join(word for word in words if word)
    text = re.sub(r"\s+([,:;])", r"\1", text).strip()
    if not text:
        return ""
    first_word = text.split(" ", 1)[0]
    if first_word.isalpha() and first_word.islower():
        text = text[0].upper() + text[1:]
    if text[-1] not in ".!?":
        text += "."
    return text
