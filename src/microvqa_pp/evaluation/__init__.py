"""Evaluation of multimodal models on MicroVQA and on data sets in its layouts.

The reference protocol reproduces MicroVQA's own evaluation, `eval/eval.py` in the GitHub
repository jmhb0/microvqa. It sends the same prompt with options numbered `(1)`, `(2)`, ... and
the images as separate content parts after the text. It reads replies with the same answer
regex, the first match winning, and scores an unparsed reply wrong. A second, robust parser is
reported beside it.

Modules, in the order an evaluation uses them:

- `loaders`: read a data set (MicroVQA parquet or Hugging Face id, the project's export, the
  MicroVQA++ release schema, MicroVQA-format CSV) into `EvalQuestion` items.
- `prompt`: render the reference prompt and its no-image variants into chat requests.
- `parsing`: the reference and robust answer parsers.
- `runner`: send requests through a chat backend, checkpoint, resume, write per-question results.
- `metrics` and `report`: accuracy, unparsed share, confidence intervals, summary.json and the
  Markdown report in the layout of MicroVQA's leaderboard.
"""
