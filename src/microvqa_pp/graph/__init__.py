"""HiCQA-Graph: the weakly supervised cross-modal consistency filter (stage `filter`).

The pipeline of this package, in the order a run meets it:

    inputs.py      read figures, QAs, signals and embeddings of a run; turn them into arrays
    signals.py     the signal matrix, its scaling, and the two weak labels the heads predict
    build.py       the PyG HeteroData of image, caption and QA nodes (knn.py: similarity edges)
    hiding.py      model inputs with the predicted signals hidden
    nn/            the model: consistency token, heterogeneous GraphSAGE/GATv2 encoder, heads
    train.py       masked weakly supervised training, early stopping, scoring, fusion
    partition.py   mini-batches of whole figures for graphs larger than one batch
    selection.py   keep the top share or everything above a threshold, with reasons
    baselines.py   single-signal filters under the same interface
    stage.py       the `filter` stage; checkpoint.py saves the model with the run
    dataset.py     `filter --input`: a user's VQA data set as filter inputs
    bench.py       `filter-bench`: the corruption benchmark
"""

import warnings

# PyTorch Geometric compiles a few helpers with torch.jit.script when it is imported, and torch
# 2.14 warns that torch.jit.script is deprecated. The warning concerns PyG, not this package, and
# would show in every build, so it is silenced here for that one message.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
