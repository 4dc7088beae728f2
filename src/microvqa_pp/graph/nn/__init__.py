"""PyG modules of the HiCQA-Graph: one module per file."""

from microvqa_pp.graph.nn.consistency_head import ConsistencyHead
from microvqa_pp.graph.nn.consistency_token import ConsistencyToken
from microvqa_pp.graph.nn.encoder import HiCQAEncoder
from microvqa_pp.graph.nn.model import HEAD_NAMES, HiCQAGraph

__all__ = ["ConsistencyHead", "ConsistencyToken", "HEAD_NAMES", "HiCQAEncoder", "HiCQAGraph"]
