"""The end of a build: train and test splits without leakage, the release files, the card and the report.

- `grouping`: figures that must share a split (same article, image or near-duplicate image).
- `split`: stage `split`, which assigns groups to train and test and measures the overlap left.
- `overlap`: nearest-training-neighbour similarity of test questions and images.
- `export`, `formats`, `card`: stage `export`, the Hugging Face parquet, MicroVQA and chat files
  and the data-set card.
- `report`, `plots`, `blooms`, `tsne`: the self-contained HTML report, its plots, the Bloom's
  reference distribution and the t-SNE maps.
- `cli`: the `microvqa-pp report` command.
"""
