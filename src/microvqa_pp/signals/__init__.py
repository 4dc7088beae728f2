"""Consistency signals per QA (stage `score`): the evidence that the HiCQA-Graph filter fuses.

For each QA of the `generate` stage the stage writes one `QASignals` row to
`RUN/stages/score.parquet` (a signal whose model is not configured is None there):

- text: cosine similarity of the caption and the QA statement under a sentence embedder
  (`signals.text_model`, all-MiniLM-L6-v2 by default), and the lexical grounding features
  `lexical_overlap` and `span_found`;
- NLI: entailment, neutral and contradiction probabilities of the statement given the caption,
  from a cross-encoder (`signals.nli_model`), with the caption window that entailed it best;
- CLIP: cosine similarity of the image with the caption and with the statement
  (`signals.clip_model`, through open_clip or transformers);
- judge: an LLM agent's consistency rating from 0 to 1 and its reason (`signals.judge`).

The statement is the QA restated as a declarative sentence (`statement.restate`), stored as
`QASignals.hypothesis`.

Embeddings go to `RUN/stages/embeddings.parquet` as `Embedding` records (`kind`, `item_id`,
`model`, `vector`), for the graph's node features and neighbour edges:

- kind `image`, one per figure of the `ingest` stage, `item_id` the figure id: the CLIP image
  embedding, or, when no CLIP model is configured, the deterministic pixel descriptor
  (`model` = `pixel-descriptor-v1`, see `pixels.pixel_descriptor`), so image features always
  exist;
- kind `caption`, one per figure: the sentence embedding of the caption;
- kind `qa`, one per scored QA, `item_id` the QA id: the sentence embedding of the statement.

Every vector has unit length. Figures whose image cannot be read get no embeddings, and their
QAs are rejected (`stages/score.rejected.parquet`, reason `image_unreadable`). Embeddings and NLI
scores are cached in `RUN/cache/embeddings/signals.sqlite` by model identity and content hash.

`score_qas` computes the same signals for figures and QAs outside a run.
"""

from microvqa_pp.signals.scorer import ScoredBatch, SignalScorer, score_qas, unavailable_signals

__all__ = ["ScoredBatch", "SignalScorer", "score_qas", "unavailable_signals"]
