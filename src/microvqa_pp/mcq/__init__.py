"""Stage 3: multiple-choice questions with rationales, Bloom's levels and the no-image check.

- `writing`: the agent task that turns a kept QA into a question stem, the correct answer,
  distractors and a rationale. Its offline version (`offline`) draws distractors from same-kind
  caption spans.
- `spans`: span kinds (stains, organisms, quantities with a unit, ...) and the corpus pool of
  same-kind spans that offline distractors come from.
- `validation`: the rules every MCQ must pass, each failure with a named reason.
- `positions`: the balanced, seeded placement of the correct option.
- `no_image`: the text-only answerer and the rewrite loop for questions answerable without the image.
- `blooms`: Bloom's taxonomy levels by the agent or by an offline classifier.
- `embedding`, `text`: the sentence embedder and the text normalisation the parts share.
- `stage`: `McqStage`, which runs all of the above over the QAs that the filter kept.
"""
