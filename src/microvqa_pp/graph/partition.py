"""Mini-batches for graphs larger than one batch: partitions of whole figures (Cluster-GCN style).

Neighbour sampling (`NeighborLoader`) needs pyg-lib or torch-sparse, so large graphs are cut into
partitions instead. Figures are put in an order that keeps similar figures together: the reverse
Cuthill-McKee order (scipy) of the graph that links figures whose images or QAs are nearest
neighbours. Consecutive figures are then grouped until a group contains about `batch_qas` QAs.
A partition contains its figures' image, caption and QA nodes and every edge between them.
Figure-QA edges never cross, since a figure's QAs stay with it. A graph with at most
`batch_qas` QAs is one partition, the graph itself.

Training drops the similarity edges that cross partitions, as in Cluster-GCN, and by default
scoring does too. With `filter.score_halo`, each partition is scored together with a halo: the
figures that a similarity edge joins to it (`with_halo`). So a QA gets its nearest neighbours
wherever the cut fell. Only the partition's own QAs are read from that pass. With two
message-passing layers, a neighbour's own neighbours outside the halo are still left out.

NOTE: the halo grows with the share of edges that cross partitions (18 % at 1 M QAs in 20
partitions), and there it made scoring about ten times slower (benchmarks/README.md), which is
why it is off by default.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import Tensor

from microvqa_pp.graph.build import IMAGE_IMAGE, QA_QA

logger = logging.getLogger(__name__)

MIN_SHARED_EDGES = 2
"""Figures are ordered by the links of figure pairs that at least this many similarity edges join.

A single edge is often an approximate-search miss that joins unrelated topics, and a few such
bridges make reverse Cuthill-McKee order mix topics; related figures share several edges. On
the clustered graphs of `benchmarks/graph_scale.py`, 20 partitions of 100,000 QAs keep 72% of the
edges with every link and 98% without the single ones."""


class PartitionedGraph:
    """A HiCQA-Graph split into partitions; `self[i]` builds partition i as its own HeteroData.

    `qa_ids[i]` contains the global indices of the QAs in partition i, in the order of its nodes.
    """

    def __init__(self, data, batch_qas: int):
        self.data = data
        self.batch_qas = batch_qas
        num_figures = data["image"].num_nodes
        num_qas = data["qa"].num_nodes
        qa_figure = data["qa"].figure.numpy()

        if num_qas <= batch_qas:
            figure_part = np.zeros(num_figures, dtype=np.int64)
        else:
            figure_part = _figure_partitions(data, qa_figure, batch_qas)
        self.num_parts = int(figure_part.max()) + 1 if num_figures else 1
        self.qa_figure = qa_figure
        self.figure_part = figure_part
        self.part_of = {"image": figure_part, "caption": figure_part, "qa": figure_part[qa_figure]}

        # Node ids of each partition, and each node's position inside its partition.
        self.members: dict[str, list[Tensor]] = {}
        self.local: dict[str, np.ndarray] = {}
        for node_type, parts in self.part_of.items():
            order = np.argsort(parts, kind="stable")
            bounds = np.searchsorted(parts[order], np.arange(self.num_parts + 1))
            self.members[node_type] = [torch.from_numpy(order[bounds[i] : bounds[i + 1]]) for i in range(self.num_parts)]
            local = np.empty(parts.size, dtype=np.int64)
            local[order] = np.arange(parts.size) - np.repeat(bounds[:-1], np.diff(bounds))
            self.local[node_type] = local
        self.qa_ids = self.members["qa"]

        # Edges of each partition, sorted once so that a partition's edges are one slice.
        self.edges: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
        kept = total = 0
        for edge_type in data.edge_types:
            source_type, _, target_type = edge_type
            index = data[edge_type].edge_index.numpy()
            source_part = self.part_of[source_type][index[0]]
            inside = source_part == self.part_of[target_type][index[1]]
            positions = np.nonzero(inside)[0]
            positions = positions[np.argsort(source_part[positions], kind="stable")]
            bounds = np.searchsorted(source_part[positions], np.arange(self.num_parts + 1))
            self.edges[edge_type] = (positions, bounds)
            kept += positions.size
            total += index.shape[1]
        self.kept_edge_share = kept / total if total else 1.0
        if self.num_parts > 1:
            logger.info(
                "graph: %d partitions of about %d QAs; %.1f%% of edges lie inside a partition",
                self.num_parts,
                batch_qas,
                100 * self.kept_edge_share,
            )

    def __len__(self) -> int:
        return self.num_parts

    def __getitem__(self, part: int):
        if self.num_parts == 1:
            return self.data
        from torch_geometric.data import HeteroData

        subgraph = HeteroData()
        for node_type in self.data.node_types:
            members = self.members[node_type][part]
            store = self.data[node_type]
            for key, value in store.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == store.num_nodes:
                    subgraph[node_type][key] = value[members]
            subgraph[node_type].num_nodes = members.numel()
        for edge_type in self.data.edge_types:
            source_type, _, target_type = edge_type
            positions, bounds = self.edges[edge_type]
            selected = torch.from_numpy(positions[bounds[part] : bounds[part + 1]])
            index = self.data[edge_type].edge_index[:, selected]
            local_source = torch.from_numpy(self.local[source_type])[index[0]]
            local_target = torch.from_numpy(self.local[target_type])[index[1]]
            subgraph[edge_type].edge_index = torch.stack([local_source, local_target])
            if "edge_attr" in self.data[edge_type]:
                subgraph[edge_type].edge_attr = self.data[edge_type].edge_attr[selected]
        return subgraph


    def with_halo(self, part: int):
        """Return partition `part` with its halo, the global ids of its QA nodes and which are its own.

        The halo is every figure (image, caption and QAs) that an image-image or QA-QA similarity
        edge joins to the partition. The subgraph has every edge among its nodes. Returns
        (subgraph, qa_ids, own): `qa_ids[i]` is the global index of QA node i, and `own[i]` is
        True for the partition's QAs, False for the halo's.
        """
        if self.num_parts == 1:
            qa_ids = torch.arange(self.data["qa"].num_nodes)
            return self.data, qa_ids, torch.ones(qa_ids.numel(), dtype=torch.bool)
        from torch_geometric.data import HeteroData

        own_figures = self.figure_part == part
        chosen = own_figures.copy()
        for edge_type, figure_of in ((IMAGE_IMAGE, None), (QA_QA, self.qa_figure)):
            index = self.data[edge_type].edge_index.numpy()
            figures = index if figure_of is None else figure_of[index]
            crossing = own_figures[figures[0]] != own_figures[figures[1]]
            chosen[figures[:, crossing].ravel()] = True

        in_subgraph = {"image": chosen, "caption": chosen, "qa": chosen[self.qa_figure]}
        subgraph = HeteroData()
        local: dict[str, np.ndarray] = {}
        for node_type in self.data.node_types:
            members = np.nonzero(in_subgraph[node_type])[0]
            positions = np.full(in_subgraph[node_type].size, -1, dtype=np.int64)
            positions[members] = np.arange(members.size)
            local[node_type] = positions
            store = self.data[node_type]
            selected = torch.from_numpy(members)
            for key, value in store.items():
                if isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == store.num_nodes:
                    subgraph[node_type][key] = value[selected]
            subgraph[node_type].num_nodes = members.size
        for edge_type in self.data.edge_types:
            source_type, _, target_type = edge_type
            index = self.data[edge_type].edge_index.numpy()
            keep = in_subgraph[source_type][index[0]] & in_subgraph[target_type][index[1]]
            kept = index[:, keep]
            subgraph[edge_type].edge_index = torch.from_numpy(np.stack([local[source_type][kept[0]], local[target_type][kept[1]]]))
            if "edge_attr" in self.data[edge_type]:
                subgraph[edge_type].edge_attr = self.data[edge_type].edge_attr[torch.from_numpy(keep)]
        qa_members = np.nonzero(in_subgraph["qa"])[0]
        own = torch.from_numpy(own_figures[self.qa_figure[qa_members]])
        return subgraph, torch.from_numpy(qa_members), own


def _figure_partitions(data, qa_figure: np.ndarray, batch_qas: int) -> np.ndarray:
    """Assign every figure to a partition so that each contains at most about `batch_qas` QAs.

    Figures are linked when at least MIN_SHARED_EDGES similarity edges join their images or QAs,
    and put in reverse Cuthill-McKee order, which keeps linked figures close together. Cutting
    that order into consecutive runs then cuts few links.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import reverse_cuthill_mckee

    num_figures = data["image"].num_nodes
    image_edges = data[IMAGE_IMAGE].edge_index.numpy()
    qa_edges = qa_figure[data[QA_QA].edge_index.numpy()]
    rows = np.concatenate([image_edges[0], qa_edges[0]])
    columns = np.concatenate([image_edges[1], qa_edges[1]])
    links = coo_matrix((np.ones(rows.size, dtype=np.int32), (rows, columns)), shape=(num_figures, num_figures)).tocsr()
    links.data = (links.data >= MIN_SHARED_EDGES).astype(np.int8)
    links.eliminate_zeros()
    order = reverse_cuthill_mckee(links, symmetric_mode=True)

    qas_per_figure = np.bincount(qa_figure, minlength=num_figures)[order]
    # Cut the ordered figures whenever the running QA count passes a multiple of `batch_qas`.
    cumulative = np.cumsum(qas_per_figure) - qas_per_figure
    figure_part = np.empty(num_figures, dtype=np.int64)
    figure_part[order] = cumulative // batch_qas
    # Renumber so that partition ids are 0..P-1 without gaps.
    _, figure_part = np.unique(figure_part, return_inverse=True)
    return figure_part.astype(np.int64)
