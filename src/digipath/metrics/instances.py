"""Nuclear instance segmentation and classification metrics (HoVer-Net, PanNuke, CoNIC).

Inputs are *instance label maps*: ``(rows, cols)`` integer arrays in which 0 is background and
every nucleus carries its own positive id (ids need not be contiguous or ordered). Type maps
are ``(rows, cols)`` integer arrays of the same shape giving each pixel's class (0 = none).
Centroids are ``(N, 2)`` arrays of pixel coordinates; digipath writes ``(row, col)``, but any
order works as long as ground truth and prediction use the same one. Every size, area and
distance is in pixels.

The definitions follow the original HoVer-Net code (``metrics/stats_utils.py``,
``compute_stats.py``), TissueImageAnalytics/PanNuke-metrics and TissueImageAnalytics/CoNIC:

* :func:`dice1` -- binary Dice ``2|G & P| / (|G| + |P|)`` of the foregrounds.
* :func:`dice2` -- ensemble Dice: over every (true i, pred j) pair that intersects,
  ``2 sum |Gi & Pj| / sum (|Gi| + |Pj|)``.
* :func:`aji` -- Aggregated Jaccard Index (MoNuSeg): each true nucleus takes the prediction of
  highest IoU (a prediction may be taken several times); ``sum |G & P*| / (sum |G | P*| +``
  pixels of unmatched true nuclei ``+`` pixels of predictions never taken``)``.
* :func:`aji_plus` -- AJI+: the same with a unique one-to-one pairing that maximises the total
  IoU (Hungarian assignment).
* :func:`panoptic_quality` -- DQ, SQ, PQ (Kirillov et al.): pairs with IoU > ``match_iou``
  (unique for ``match_iou >= 0.5``; below that the pairing maximising the total IoU, keeping the
  pairs above the threshold); ``DQ = TP / (TP + FP/2 + FN/2)``, ``SQ = sum IoU / TP``,
  ``PQ = DQ SQ``.
* :func:`multiclass_panoptic_quality` -- PQ per class on the class's instances (each instance
  map masked by the type map, as CoNIC does) and the class-agnostic (binary) PQ of one image;
  :func:`pannuke_pq` (mPQ, bPQ averaged over images, classes absent from the ground truth of an
  image skipped) and :func:`conic_pq` (mPQ+: TP, FP, FN and IoU sums over the whole data set per
  class) aggregate them.
* :func:`classification_f1` -- HoVer-Net's detection F1 and per-type F1 with centroids paired
  within a radius (12 px by default).

Pixel pairing goes through one joint histogram of the (true id, pred id) pairs over the pixels
where both maps are foreground, so the cost is a few passes over the image whatever the number
of nuclei; the optimal assignments (exact, as the reference's Hungarian ones) run on the sparse
overlap graph only (scipy's LAPJVsp).

Deliberate differences from the reference code (none changes a result on well-formed input):

* no ``1e-6`` in the denominators: identical maps give exactly 1.0; a ratio that is 0/0 (both
  maps empty) is NaN where the reference divides by zero or returns 0; SQ with no true positive
  but some instances is 0, as in the reference;
* exact ties (equal IoU, equal intersection, equal distance) are broken by the raster order of
  the nuclei's first pixels instead of by their ids, so relabelling never changes a result;
* an image without nuclei adds no dummy nucleus at (0, 0) of type 0 to the classification
  statistics, which HoVer-Net's ``run_nuclei_type_stat`` does.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

__all__ = [
    "AJIResult",
    "CentroidPairing",
    "ClassificationResult",
    "CoNICPQResult",
    "DiceResult",
    "InstanceSegmentationStats",
    "MulticlassPQResult",
    "NucleusPoints",
    "PQCounts",
    "PanNukePQResult",
    "PanopticQualityResult",
    "TypeCounts",
    "aji",
    "aji_plus",
    "classification_f1",
    "classification_f1_dataset",
    "conic_pq",
    "dice1",
    "dice2",
    "instance_segmentation_stats",
    "multiclass_panoptic_quality",
    "nucleus_points",
    "pair_centroids",
    "pannuke_pq",
    "panoptic_quality",
]

NAN = float("nan")
DEFAULT_RADIUS = 12.0
"""HoVer-Net's centroid pairing radius in pixels (``compute_stats.py``)."""
TYPE_F1_WEIGHTS = (2, 2, 1, 1)
"""HoVer-Net's weights of (FP_c, FN_c, FP_d, FN_d) in the per-type F1."""
_DENSE_PAIRING_LIMIT = 25_000_000  # true x pred centroids for the dense reference pairing
_EMPTY = np.zeros(0, np.int64)


# --------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class DiceResult:
    """A Dice coefficient with its numerator and denominator.

    Attributes
    ----------
    dice
        ``2 intersection / total``; NaN when ``total`` is 0 (both maps empty).
    intersection
        Pixels counted in the numerator (for :func:`dice2`, summed over intersecting pairs).
    total
        Pixels counted in the denominator (``|G| + |P|``, or summed over pairs).
    """

    dice: float
    intersection: int
    total: int

    def __float__(self) -> float:
        return self.dice


@dataclass(frozen=True)
class AJIResult:
    """Aggregated Jaccard Index (AJI or AJI+) with its pairing.

    Attributes
    ----------
    aji
        ``intersection / union``; NaN when both maps are empty.
    intersection, union
        The aggregated pixel counts.
    paired_true, paired_pred
        Instance ids (as in the input maps) of the pairs; for AJI a predicted id may repeat.
    unpaired_true, unpaired_pred
        Ids of the instances whose pixels were added to the union unpaired.
    """

    aji: float
    intersection: int
    union: int
    paired_true: np.ndarray
    paired_pred: np.ndarray
    unpaired_true: np.ndarray
    unpaired_pred: np.ndarray

    def __float__(self) -> float:
        return self.aji


@dataclass(frozen=True)
class PQCounts:
    """The sufficient statistics of panoptic quality: TP, FP, FN and the sum of TP IoUs.

    Counts add up (``a + b``), which is how CoNIC's mPQ+ pools them over a data set.
    """

    tp: int = 0
    fp: int = 0
    fn: int = 0
    iou_sum: float = 0.0

    def __add__(self, other: PQCounts) -> PQCounts:
        return PQCounts(
            self.tp + other.tp, self.fp + other.fp, self.fn + other.fn, self.iou_sum + other.iou_sum
        )

    @property
    def dq(self) -> float:
        """Detection quality ``TP / (TP + FP/2 + FN/2)``; NaN without any instance."""
        denominator = self.tp + 0.5 * self.fp + 0.5 * self.fn
        return self.tp / denominator if denominator > 0 else NAN

    @property
    def sq(self) -> float:
        """Segmentation quality ``sum IoU / TP``; 0 without TP, NaN without any instance."""
        if self.tp > 0:
            return self.iou_sum / self.tp
        return 0.0 if self.fp + self.fn > 0 else NAN

    @property
    def pq(self) -> float:
        """Panoptic quality ``DQ * SQ``."""
        return self.dq * self.sq


@dataclass(frozen=True)
class PanopticQualityResult:
    """DQ, SQ and PQ of one pair of instance maps, with the pairing.

    Attributes
    ----------
    dq, sq, pq
        See :class:`PQCounts`.
    tp, fp, fn
        Paired instances, unpaired predictions, unpaired true instances.
    iou_sum
        Sum of the IoUs of the pairs.
    paired_true, paired_pred, paired_iou
        The pairs (instance ids as in the input maps) and their IoUs, by true id.
    unpaired_true, unpaired_pred
        The ids left unpaired (false negatives, false positives), ascending.
    match_iou
        The IoU threshold used (pairs need IoU strictly above it).
    """

    dq: float
    sq: float
    pq: float
    tp: int
    fp: int
    fn: int
    iou_sum: float
    paired_true: np.ndarray
    paired_pred: np.ndarray
    paired_iou: np.ndarray
    unpaired_true: np.ndarray
    unpaired_pred: np.ndarray
    match_iou: float

    @property
    def counts(self) -> PQCounts:
        """The result's TP, FP, FN and IoU sum."""
        return PQCounts(self.tp, self.fp, self.fn, self.iou_sum)

    def __float__(self) -> float:
        return self.pq


@dataclass(frozen=True)
class InstanceSegmentationStats:
    """The columns of HoVer-Net's ``compute_stats.py --mode=instance`` for one image."""

    dice1: float
    dice2: float
    aji: float
    aji_plus: float
    dq: float
    sq: float
    pq: float


@dataclass(frozen=True)
class MulticlassPQResult:
    """Per-class and class-agnostic panoptic quality of one image.

    Attributes
    ----------
    classes
        The class ids evaluated.
    per_class
        :class:`PanopticQualityResult` per class, on the instances masked by the type maps.
    binary
        PQ of the instance maps regardless of type (PanNuke's bPQ, CoNIC's PQ).
    """

    classes: tuple[int, ...]
    per_class: dict[int, PanopticQualityResult]
    binary: PanopticQualityResult

    @property
    def mpq(self) -> float:
        """PanNuke's per-image mPQ: mean PQ over classes present in the ground truth (else NaN)."""
        return _nanmean([_pannuke_class_pq(result) for result in self.per_class.values()])

    @property
    def bpq(self) -> float:
        """PanNuke's per-image bPQ: binary PQ, NaN when the ground truth has no nucleus."""
        return _pannuke_class_pq(self.binary)


@dataclass(frozen=True)
class PanNukePQResult:
    """PanNuke mPQ and bPQ over a set of images.

    Attributes
    ----------
    mpq, bpq
        Mean over images (or over tissues of the per-tissue means) of the per-image values,
        NaN images skipped.
    image_mpq, image_bpq
        The per-image values (NaN where the ground truth has no nucleus of any evaluated class).
    class_pq
        Per class, the mean over images whose ground truth has the class of its PQ.
    tissue_mpq, tissue_bpq
        Per tissue, the mean over its images; ``None`` without tissues.
    """

    mpq: float
    bpq: float
    image_mpq: np.ndarray
    image_bpq: np.ndarray
    class_pq: dict[int, float]
    tissue_mpq: dict[str, float] | None = None
    tissue_bpq: dict[str, float] | None = None


@dataclass(frozen=True)
class CoNICPQResult:
    """CoNIC's mPQ+ (data-set level) and its per-image binary PQ.

    Attributes
    ----------
    mpq_plus
        Mean over classes of the PQ computed from each class's pooled counts (classes without
        any instance in the whole data set skipped).
    class_pq
        That PQ per class.
    class_counts
        The pooled TP, FP, FN and IoU sum per class.
    pq
        Mean over images of the binary PQ (images with no nucleus in either map skipped).
    """

    mpq_plus: float
    class_pq: dict[int, float]
    class_counts: dict[int, PQCounts]
    pq: float


@dataclass(frozen=True)
class NucleusPoints:
    """Nuclei of an instance map as points.

    Attributes
    ----------
    ids
        ``(N,)`` instance ids, in raster order of each nucleus's first pixel.
    centroids
        ``(N, 2)`` float centres of mass ``(row, col)`` in pixels.
    types
        ``(N,)`` type per nucleus (majority vote of the type map, see :func:`nucleus_points`).
    """

    ids: np.ndarray
    centroids: np.ndarray
    types: np.ndarray


@dataclass(frozen=True)
class CentroidPairing:
    """A one-to-one pairing of true and predicted centroids.

    Attributes
    ----------
    paired
        ``(K, 2)`` indices ``(true, pred)`` into the centroid arrays, by true index.
    distance
        ``(K,)`` distances of the pairs in pixels (all ``<= radius``).
    unpaired_true, unpaired_pred
        Indices left unpaired.
    """

    paired: np.ndarray
    distance: np.ndarray
    unpaired_true: np.ndarray
    unpaired_pred: np.ndarray


@dataclass(frozen=True)
class TypeCounts:
    """HoVer-Net's classification counts for one type ``t``.

    Among paired nuclei with true or predicted type ``t``: ``tp`` both ``t``, ``fp`` predicted
    ``t`` but not true ``t`` (less those of unknown true type, -1, when not exhaustive), ``fn``
    true ``t`` predicted otherwise, and ``tn`` neither -- always 0 by that restriction, as in
    the reference. ``fp_detection``/``fn_detection``: unpaired predictions/true nuclei of type
    ``t``.
    """

    tp: int
    tn: int
    fp: int
    fn: int
    fp_detection: int
    fn_detection: int

    @property
    def f1(self) -> float:
        """``2(TP+TN) / (2(TP+TN) + 2FP + 2FN + FP_d + FN_d)``; NaN when all are 0."""
        w = TYPE_F1_WEIGHTS
        good = 2 * (self.tp + self.tn)
        bad = w[0] * self.fp + w[1] * self.fn + w[2] * self.fp_detection
        bad += w[3] * self.fn_detection
        return good / (good + bad) if good + bad > 0 else NAN


@dataclass(frozen=True)
class ClassificationResult:
    """HoVer-Net's nucleus detection and classification scores (``compute_stats --mode=type``).

    Attributes
    ----------
    f1_detection
        ``F_d = 2 TP_d / (2 TP_d + FP_d + FN_d)`` over all paired/unpaired nuclei.
    accuracy
        Fraction of paired nuclei whose types agree (pairs of unknown true type excluded when
        not exhaustive).
    f1_per_type
        ``F_c`` per type (see :class:`TypeCounts`).
    tp_detection, fp_detection, fn_detection
        Paired nuclei, unpaired predictions, unpaired true nuclei.
    per_type
        The counts behind ``f1_per_type``.
    """

    f1_detection: float
    accuracy: float
    f1_per_type: dict[int, float]
    tp_detection: int
    fp_detection: int
    fn_detection: int
    per_type: dict[int, TypeCounts] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Label maps and the overlap graph


def _label_map(array: object, name: str) -> np.ndarray:
    labels = np.asarray(array)
    if labels.ndim != 2:
        raise ValueError(f"{name} must be a (rows, cols) label map, got shape {labels.shape}")
    if labels.dtype == bool:
        return labels.view(np.uint8)
    if not np.issubdtype(labels.dtype, np.integer):
        raise TypeError(f"{name} must hold integer ids, got dtype {labels.dtype}")
    return labels


def _instance_map(array: object, name: str) -> np.ndarray:
    labels = _label_map(array, name)
    if labels.size and np.issubdtype(labels.dtype, np.signedinteger) and labels.min() < 0:
        raise ValueError(
            f"{name} holds negative instance id {labels.min()}; ids are 0 (background) or positive"
        )
    return labels


def _same_shape(**maps: np.ndarray) -> None:
    shapes = {name: m.shape for name, m in maps.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{name} {shape}" for name, shape in shapes.items())
        raise ValueError(f"the maps must have the same shape, got {listed}")


def _canonical(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to ``1..n`` in raster order of each instance's first pixel.

    Returns the relabelled int32 map and ``ids`` (``(n + 1,)``, ``ids[k]`` the input id of
    instance ``k``, ``ids[0] = 0``). The order depends on the geometry only, never on the ids,
    so tie-breaking by it keeps every metric invariant to relabelling.
    """
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top == 0:
        return np.zeros(labels.shape, np.int32), np.zeros(1, np.int64)
    if top < max(1 << 20, flat.size // 4):  # a table indexed by id fits: no sort needed
        fg = np.flatnonzero(flat)
        first = np.full(top + 1, flat.size, np.int64)
        np.minimum.at(first, flat[fg], fg)
        present = np.flatnonzero(first < flat.size)
        ids = present[np.argsort(first[present], kind="stable")]
        table = np.zeros(top + 1, np.int32)
        table[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
        compact = table[labels]
    else:  # huge ids: sort them
        unique, first, inverse = np.unique(flat, return_index=True, return_inverse=True)
        order = np.argsort(first, kind="stable")
        order = order[unique[order] != 0]
        table = np.zeros(unique.size, np.int32)
        table[order] = np.arange(1, order.size + 1, dtype=np.int32)
        compact = table[inverse].reshape(labels.shape)
        ids = unique[order]
    return compact, np.concatenate([[0], ids.astype(np.int64)])


class _Graph:
    """The overlap graph of two instance maps: instance sizes and the intersecting pairs.

    Instances are indexed ``1..n`` (canonical order); ``true_sizes[k] == 0`` marks an index
    absent from this graph (e.g. an instance without pixels of a class). Edges ``(t, p)`` are
    sorted by ``t`` then ``p``.
    """

    def __init__(
        self,
        true_vector: np.ndarray,
        pred_vector: np.ndarray,
        true_ids: np.ndarray,
        pred_ids: np.ndarray,
    ) -> None:
        self.true_ids = true_ids
        self.pred_ids = pred_ids
        n_pred = pred_ids.size - 1
        self.true_sizes = np.bincount(true_vector, minlength=true_ids.size).astype(np.int64)
        self.pred_sizes = np.bincount(pred_vector, minlength=pred_ids.size).astype(np.int64)
        self.true_sizes[0] = self.pred_sizes[0] = 0
        both = (true_vector > 0) & (pred_vector > 0)
        key = true_vector[both].astype(np.int64) * (n_pred + 1) + pred_vector[both]
        keys, inter = np.unique(key, return_counts=True)
        self.t = (keys // (n_pred + 1)).astype(np.intp)
        self.p = (keys % (n_pred + 1)).astype(np.intp)
        self.inter = inter.astype(np.int64)
        self.union = self.true_sizes[self.t] + self.pred_sizes[self.p] - self.inter
        self.iou = self.inter / self.union if self.inter.size else np.zeros(0)
        self.present_true = np.flatnonzero(self.true_sizes)
        self.present_pred = np.flatnonzero(self.pred_sizes)

    @property
    def empty(self) -> bool:
        return self.present_true.size == 0 and self.present_pred.size == 0

    def unpaired(self, paired_true: np.ndarray, paired_pred: np.ndarray):
        """Indices of the present instances not in ``paired_true``/``paired_pred``."""
        true = np.setdiff1d(self.present_true, paired_true, assume_unique=False)
        pred = np.setdiff1d(self.present_pred, paired_pred, assume_unique=False)
        return true, pred


def _graph(true: object, pred: object) -> _Graph:
    true = _instance_map(true, "true")
    pred = _instance_map(pred, "pred")
    _same_shape(true=true, pred=pred)
    true_compact, true_ids = _canonical(true)
    pred_compact, pred_ids = _canonical(pred)
    return _Graph(true_compact.ravel(), pred_compact.ravel(), true_ids, pred_ids)


def _max_gain_matching(rows: np.ndarray, cols: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """Edges of a one-to-one matching maximising the total gain (all gains > 0).

    ``rows``, ``cols`` and ``gain`` describe a sparse bipartite graph (edges sorted by row then
    column). Edges whose endpoints touch no other edge are taken directly; the rest is solved
    exactly as a minimum-cost perfect matching on the graph augmented with one "unmatched"
    node per vertex (LAPJVsp, sparse: never a dense true x pred matrix).
    """
    if rows.size == 0:
        return _EMPTY
    row_degree = np.bincount(rows)
    col_degree = np.bincount(cols)
    alone = (row_degree[rows] == 1) & (col_degree[cols] == 1)
    rest = np.flatnonzero(~alone)
    if rest.size == 0:
        return np.flatnonzero(alone)
    row_index, r = np.unique(rows[rest], return_inverse=True)
    col_index, c = np.unique(cols[rest], return_inverse=True)
    n_rows, n_cols = row_index.size, col_index.size
    top = float(gain[rest].max())
    unmatched = top / 2 + 1  # a pair costs (top + 1 - g) + 1, two unmatched nodes top + 2
    # rows: true 0..R-1, then one dummy per pred; cols: pred 0..C-1, then one dummy per true
    matrix_rows = np.concatenate([r, np.arange(n_rows), n_rows + np.arange(n_cols), n_rows + c])
    matrix_cols = np.concatenate([c, n_cols + np.arange(n_rows), np.arange(n_cols), n_cols + r])
    costs = np.concatenate(
        [
            top + 1 - gain[rest],
            np.full(n_rows + n_cols, unmatched),
            np.ones(rest.size),
        ]
    )
    size = n_rows + n_cols
    matrix = sparse.csr_matrix((costs, (matrix_rows, matrix_cols)), shape=(size, size))
    matched_rows, matched_cols = min_weight_full_bipartite_matching(matrix)
    real = (matched_rows < n_rows) & (matched_cols < n_cols)
    keys = r.astype(np.int64) * n_cols + c  # sorted, since the edges are
    found = np.searchsorted(keys, matched_rows[real].astype(np.int64) * n_cols + matched_cols[real])
    return np.sort(np.concatenate([np.flatnonzero(alone), rest[found]]))


def _max_iou_matching(graph: _Graph) -> np.ndarray:
    # the reference's IoU = inter / (union + 1e-6): of two pairs of equal IoU, it prefers the
    # larger one; the reported IoUs stay exact
    return _max_gain_matching(graph.t, graph.p, graph.inter / (graph.union + 1e-6))


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else NAN


def _nanmean(values: Iterable[float]) -> float:
    values = np.asarray(list(values), dtype=float)
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else NAN


# --------------------------------------------------------------------------------------------
# Dice, AJI, PQ


def _dice1(graph: _Graph) -> DiceResult:
    intersection = int(graph.inter.sum())
    total = int(graph.true_sizes.sum() + graph.pred_sizes.sum())
    return DiceResult(_ratio(2 * intersection, total), intersection, total)


def _dice2(graph: _Graph) -> DiceResult:
    intersection = int(graph.inter.sum())
    total = int((graph.true_sizes[graph.t] + graph.pred_sizes[graph.p]).sum())
    if total == 0:
        return DiceResult(NAN if graph.empty else 0.0, 0, 0)
    return DiceResult(2 * intersection / total, intersection, total)


def _aji_result(graph: _Graph, edges: np.ndarray) -> AJIResult:
    paired_true, paired_pred = graph.t[edges], graph.p[edges]
    unpaired_true, unpaired_pred = graph.unpaired(paired_true, paired_pred)
    intersection = int(graph.inter[edges].sum())
    union = int(graph.union[edges].sum())
    union += int(graph.true_sizes[unpaired_true].sum() + graph.pred_sizes[unpaired_pred].sum())
    return AJIResult(
        aji=_ratio(intersection, union),
        intersection=intersection,
        union=union,
        paired_true=graph.true_ids[paired_true],
        paired_pred=graph.pred_ids[paired_pred],
        unpaired_true=np.sort(graph.true_ids[unpaired_true]),
        unpaired_pred=np.sort(graph.pred_ids[unpaired_pred]),
    )


def _aji(graph: _Graph) -> AJIResult:
    if graph.t.size == 0:
        return _aji_result(graph, _EMPTY)
    # per true instance the edge of highest IoU; equal IoU: larger intersection (as the
    # reference's IoU = inter / (union + 1e-6) ranks them), then raster order
    order = np.lexsort((graph.p, -graph.inter, -graph.iou, graph.t))
    t_sorted = graph.t[order]
    first = np.concatenate([[True], t_sorted[1:] != t_sorted[:-1]])
    return _aji_result(graph, np.sort(order[first]))


def _aji_plus(graph: _Graph) -> AJIResult:
    return _aji_result(graph, _max_iou_matching(graph))


def _check_match_iou(match_iou: float) -> float:
    match_iou = float(match_iou)
    if not 0.0 <= match_iou <= 1.0:
        raise ValueError(f"match_iou must lie in [0, 1], got {match_iou}")
    return match_iou


def _pq(graph: _Graph, match_iou: float) -> PanopticQualityResult:
    if match_iou >= 0.5:  # IoU > 0.5 pairs are unique by construction
        edges = np.flatnonzero(graph.iou > match_iou)
    else:  # the pairing of maximal total IoU, then the pairs above the threshold
        edges = _max_iou_matching(graph)
        edges = edges[graph.iou[edges] > match_iou]
    paired_true, paired_pred = graph.t[edges], graph.p[edges]
    unpaired_true, unpaired_pred = graph.unpaired(paired_true, paired_pred)
    counts = PQCounts(
        tp=int(edges.size),
        fp=int(unpaired_pred.size),
        fn=int(unpaired_true.size),
        iou_sum=float(graph.iou[edges].sum()),
    )
    true_ids = graph.true_ids[paired_true]
    order = np.argsort(true_ids, kind="stable")
    return PanopticQualityResult(
        dq=counts.dq,
        sq=counts.sq,
        pq=counts.pq,
        tp=counts.tp,
        fp=counts.fp,
        fn=counts.fn,
        iou_sum=counts.iou_sum,
        paired_true=true_ids[order],
        paired_pred=graph.pred_ids[paired_pred][order],
        paired_iou=graph.iou[edges][order],
        unpaired_true=np.sort(graph.true_ids[unpaired_true]),
        unpaired_pred=np.sort(graph.pred_ids[unpaired_pred]),
        match_iou=match_iou,
    )


def dice1(true: np.ndarray, pred: np.ndarray) -> DiceResult:
    """Binary Dice of the foregrounds: ``2|G & P| / (|G| + |P|)`` (HoVer-Net's DICE1).

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance (or binary) maps, 0 background.

    Returns
    -------
    DiceResult
        NaN when both maps are empty, 0 when they do not overlap.
    """
    return _dice1(_graph(true, pred))


def dice2(true: np.ndarray, pred: np.ndarray) -> DiceResult:
    """Ensemble Dice (HoVer-Net's DICE2, CPM-17): over every pair of intersecting instances.

    ``2 sum_(i,j) |Gi & Pj| / sum_(i,j) (|Gi| + |Pj|)`` where ``(i, j)`` runs over the pairs of
    a true and a predicted instance that share at least one pixel (an instance touching two
    others is counted twice). Instances touching none contribute nothing.

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance maps, 0 background.

    Returns
    -------
    DiceResult
        0 when no instances intersect, NaN when both maps are empty.
    """
    return _dice2(_graph(true, pred))


def aji(true: np.ndarray, pred: np.ndarray) -> AJIResult:
    """Aggregated Jaccard Index, MoNuSeg's version (HoVer-Net's ``get_fast_aji``).

    Each true instance ``G`` takes the prediction ``P*`` of highest IoU among those it
    intersects (predictions may be taken by several true instances). AJI is
    ``sum |G & P*| / (sum |G | P*| + |unpaired true| + |predictions never taken|)`` with the
    last two terms in pixels. It over-penalises over-segmentation: the fragments not taken
    join the union. Of predictions with equal IoU the one with the larger intersection is
    taken (as the reference's ``inter / (union + 1e-6)`` ranks them), then the first in raster
    order.

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance maps, 0 background.

    Returns
    -------
    AJIResult
        NaN when both maps are empty.
    """
    return _aji(_graph(true, pred))


def aji_plus(true: np.ndarray, pred: np.ndarray) -> AJIResult:
    """AJI+ (HoVer-Net's ``get_fast_aji_plus``): AJI with a unique one-to-one pairing.

    The pairs are the assignment maximising the total IoU (Hungarian); unpaired true and
    predicted instances add their pixels to the union.

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance maps, 0 background.

    Returns
    -------
    AJIResult
        NaN when both maps are empty.
    """
    return _aji_plus(_graph(true, pred))


def panoptic_quality(
    true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5
) -> PanopticQualityResult:
    """Detection, segmentation and panoptic quality (HoVer-Net's ``get_fast_pq``).

    A true and a predicted instance pair when their IoU is strictly above ``match_iou``. For
    ``match_iou >= 0.5`` such pairs are unique; below 0.5 the pairing maximising the total IoU
    (an exact assignment on the sparse overlap graph) is found first and its pairs
    above the threshold kept, as in the reference. ``DQ = TP / (TP + FP/2 + FN/2)``,
    ``SQ = sum IoU / TP``, ``PQ = DQ SQ``.

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance maps, 0 background.
    match_iou
        IoU threshold in ``[0, 1]``.

    Returns
    -------
    PanopticQualityResult
        With the pairs; all NaN when both maps are empty, SQ 0 when nothing pairs.
    """
    return _pq(_graph(true, pred), _check_match_iou(match_iou))


def instance_segmentation_stats(
    true: np.ndarray, pred: np.ndarray, match_iou: float = 0.5
) -> InstanceSegmentationStats:
    """DICE1, DICE2, AJI, AJI+, DQ, SQ and PQ of one image from a single overlap histogram.

    Parameters
    ----------
    true, pred
        ``(rows, cols)`` instance maps, 0 background.
    match_iou
        PQ's IoU threshold.

    Returns
    -------
    InstanceSegmentationStats
    """
    match_iou = _check_match_iou(match_iou)
    graph = _graph(true, pred)
    pq = _pq(graph, match_iou)
    return InstanceSegmentationStats(
        dice1=_dice1(graph).dice,
        dice2=_dice2(graph).dice,
        aji=_aji(graph).aji,
        aji_plus=_aji_plus(graph).aji,
        dq=pq.dq,
        sq=pq.sq,
        pq=pq.pq,
    )


# --------------------------------------------------------------------------------------------
# Multi-class PQ: PanNuke and CoNIC


def _values_present(values: np.ndarray) -> np.ndarray:
    if values.size == 0:
        return values[:0].astype(np.int64)
    low, high = int(values.min()), int(values.max())
    if low >= 0 and high < 1 << 20:
        return np.flatnonzero(np.bincount(values))
    return np.unique(values).astype(np.int64)


def multiclass_panoptic_quality(
    true_instances: np.ndarray,
    true_types: np.ndarray,
    pred_instances: np.ndarray,
    pred_types: np.ndarray,
    *,
    classes: Sequence[int] | None = None,
    match_iou: float = 0.5,
) -> MulticlassPQResult:
    """PQ per class and class-agnostic PQ of one image.

    The instances of class ``c`` are ``instances * (types == c)``: each instance map is masked
    by its type map pixel by pixel, as CoNIC's ``get_multi_pq_info`` does (PanNuke stores one
    instance map per class, which is the same thing). Type 0 is no class.

    Parameters
    ----------
    true_instances, pred_instances
        ``(rows, cols)`` instance maps, 0 background.
    true_types, pred_types
        ``(rows, cols)`` type maps of the same shape. For per-instance types, paint them first
        (``types = lookup[instances]``).
    classes
        Class ids to evaluate; default: every nonzero type found inside an instance of either
        map. Pass the data set's full list (e.g. 1..5 for PanNuke, 1..6 for CoNIC) so that all
        images are evaluated alike.
    match_iou
        PQ's IoU threshold.

    Returns
    -------
    MulticlassPQResult
    """
    match_iou = _check_match_iou(match_iou)
    true = _instance_map(true_instances, "true_instances")
    pred = _instance_map(pred_instances, "pred_instances")
    true_type = _label_map(true_types, "true_types")
    pred_type = _label_map(pred_types, "pred_types")
    _same_shape(
        true_instances=true, true_types=true_type, pred_instances=pred, pred_types=pred_type
    )
    true_compact, true_ids = _canonical(true)
    pred_compact, pred_ids = _canonical(pred)
    foreground = np.flatnonzero((true_compact.ravel() > 0) | (pred_compact.ravel() > 0))
    true_vector = true_compact.ravel()[foreground]
    pred_vector = pred_compact.ravel()[foreground]
    true_type_vector = true_type.ravel()[foreground].astype(np.int64)
    pred_type_vector = pred_type.ravel()[foreground].astype(np.int64)
    if classes is None:
        inside = np.concatenate(
            [true_type_vector[true_vector > 0], pred_type_vector[pred_vector > 0]]
        )
        classes = tuple(int(c) for c in _values_present(inside) if c != 0)
    else:
        classes = tuple(int(c) for c in classes)
        if 0 in classes:
            raise ValueError("classes must not include 0, the type of no class")
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes lists a class twice: {classes}")
    per_class = {}
    for c in classes:
        graph = _Graph(
            np.where(true_type_vector == c, true_vector, 0),
            np.where(pred_type_vector == c, pred_vector, 0),
            true_ids,
            pred_ids,
        )
        per_class[c] = _pq(graph, match_iou)
    binary = _pq(_Graph(true_vector, pred_vector, true_ids, pred_ids), match_iou)
    return MulticlassPQResult(classes=classes, per_class=per_class, binary=binary)


def _pannuke_class_pq(result: PanopticQualityResult) -> float:
    """PanNuke's rule: NaN when the ground truth has no instance (predictions then ignored)."""
    return result.pq if result.tp + result.fn > 0 else NAN


def _check_results(results: Sequence[MulticlassPQResult], name: str) -> list:
    results = list(results)
    for index, result in enumerate(results):
        if not isinstance(result, MulticlassPQResult):
            raise TypeError(
                f"{name} expects MulticlassPQResult items (from multiclass_panoptic_quality), "
                f"item {index} is {type(result).__name__}"
            )
    return results


def pannuke_pq(
    results: Sequence[MulticlassPQResult], tissues: Sequence[str] | None = None
) -> PanNukePQResult:
    """PanNuke's mPQ and bPQ (TissueImageAnalytics/PanNuke-metrics ``run.py``).

    Per image: the PQ of each class whose ground truth has at least one instance in that image
    (classes absent from the ground truth are skipped, so false positives of them are not
    penalised), averaged over those classes (mPQ); and the class-agnostic PQ (bPQ), skipped
    when the ground truth has no nucleus. Then the mean over images, skipping NaN -- or, with
    ``tissues``, the mean over the images of each tissue and then over tissues.

    Parameters
    ----------
    results
        One :func:`multiclass_panoptic_quality` result per image.
    tissues
        Optional tissue name per image (PanNuke's ``types.npy``).

    Returns
    -------
    PanNukePQResult
    """
    results = _check_results(results, "pannuke_pq")
    image_mpq = np.array([r.mpq for r in results], dtype=float)
    image_bpq = np.array([r.bpq for r in results], dtype=float)
    classes = sorted({c for r in results for c in r.classes})
    class_pq = {
        c: _nanmean(_pannuke_class_pq(r.per_class[c]) for r in results if c in r.per_class)
        for c in classes
    }
    if tissues is None:
        return PanNukePQResult(
            _nanmean(image_mpq), _nanmean(image_bpq), image_mpq, image_bpq, class_pq
        )
    tissues = [str(t) for t in tissues]
    if len(tissues) != len(results):
        raise ValueError(f"got {len(tissues)} tissues for {len(results)} images")
    names = list(dict.fromkeys(tissues))
    index = np.array(tissues, dtype=object)
    tissue_mpq = {n: _nanmean(image_mpq[index == n]) for n in names}
    tissue_bpq = {n: _nanmean(image_bpq[index == n]) for n in names}
    return PanNukePQResult(
        mpq=_nanmean(tissue_mpq.values()),
        bpq=_nanmean(tissue_bpq.values()),
        image_mpq=image_mpq,
        image_bpq=image_bpq,
        class_pq=class_pq,
        tissue_mpq=tissue_mpq,
        tissue_bpq=tissue_bpq,
    )


def conic_pq(results: Sequence[MulticlassPQResult]) -> CoNICPQResult:
    """CoNIC's mPQ+ (TissueImageAnalytics/CoNIC ``compute_stats.py``) and its binary PQ.

    For each class, TP, FP, FN and the IoU sum are added over *all* images; the class's PQ is
    computed from the totals and mPQ+ is the mean over classes. Unlike per-image averaging, an
    image in which a class is rare weighs as much as its nuclei. A class predicted somewhere
    but never in the ground truth scores 0; one with no instance anywhere is skipped.

    Parameters
    ----------
    results
        One :func:`multiclass_panoptic_quality` result per image, all computed with the same
        ``classes`` (a class missing from an image's result counts as no instance).

    Returns
    -------
    CoNICPQResult
    """
    results = _check_results(results, "conic_pq")
    classes = sorted({c for r in results for c in r.classes})
    counts = {c: PQCounts() for c in classes}
    for result in results:
        for c, pq in result.per_class.items():
            counts[c] = counts[c] + pq.counts
    class_pq = {c: counts[c].pq for c in classes}
    return CoNICPQResult(
        mpq_plus=_nanmean(class_pq.values()),
        class_pq=class_pq,
        class_counts=counts,
        pq=_nanmean(r.binary.pq for r in results),
    )


# --------------------------------------------------------------------------------------------
# Classification: centroids, pairing, F1


def nucleus_points(instances: np.ndarray, types: np.ndarray | None = None) -> NucleusPoints:
    """Centroids and types of the nuclei of an instance map.

    The centroid is the mean ``(row, col)`` of the nucleus's pixels (HoVer-Net's moments
    centroid, in the other axis order). The type is HoVer-Net's vote: the most frequent nonzero
    type among its pixels (ties: the smaller type), 0 when all its pixels are type 0.

    Parameters
    ----------
    instances
        ``(rows, cols)`` instance map, 0 background.
    types
        ``(rows, cols)`` type map; without it every type is 0.

    Returns
    -------
    NucleusPoints
        Nuclei in raster order of their first pixel.
    """
    labels = _instance_map(instances, "instances")
    compact, ids = _canonical(labels)
    n = ids.size - 1
    flat = compact.ravel()
    fg = np.flatnonzero(flat)
    owner = flat[fg]
    rows, cols = np.divmod(fg, labels.shape[1]) if labels.shape[1] else (fg, fg)
    counts = np.bincount(owner, minlength=n + 1)[1:]
    centroids = np.zeros((n, 2))
    if n:
        centroids[:, 0] = np.bincount(owner, weights=rows, minlength=n + 1)[1:] / counts
        centroids[:, 1] = np.bincount(owner, weights=cols, minlength=n + 1)[1:] / counts
    nucleus_types = np.zeros(n, np.int64)
    if types is not None:
        type_map = _label_map(types, "types")
        _same_shape(instances=labels, types=type_map)
        values = type_map.ravel()[fg].astype(np.int64)
        keep = values != 0
        owner_kept, values = owner[keep], values[keep]
        if owner_kept.size:
            type_values, codes = np.unique(values, return_inverse=True)
            key = owner_kept.astype(np.int64) * type_values.size + codes
            keys, votes = np.unique(key, return_counts=True)
            who, code = np.divmod(keys, type_values.size)
            order = np.lexsort((code, -votes, who))  # most votes first, then smaller type
            who_sorted = who[order]
            first = order[np.concatenate([[True], who_sorted[1:] != who_sorted[:-1]])]
            nucleus_types[who[first] - 1] = type_values[code[first]]
    return NucleusPoints(ids=ids[1:], centroids=centroids, types=nucleus_types)


def _points(array: object, name: str) -> np.ndarray:
    points = np.asarray(array, dtype=float)
    if points.size == 0:
        return points.reshape(0, 2)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of coordinates, got {points.shape}")
    if not np.all(np.isfinite(points)):
        raise ValueError(f"{name} holds a coordinate that is not finite")
    return points


def pair_centroids(
    true_centroids: np.ndarray,
    pred_centroids: np.ndarray,
    radius: float = DEFAULT_RADIUS,
    *,
    pairing: Literal["reference", "radius"] = "reference",
) -> CentroidPairing:
    """Pair true and predicted centroids one-to-one within ``radius`` pixels.

    Parameters
    ----------
    true_centroids, pred_centroids
        ``(N, 2)`` and ``(M, 2)`` coordinates in pixels (same axis order).
    radius
        Largest distance of a pair, in pixels (HoVer-Net: 12).
    pairing
        ``"reference"``: HoVer-Net's ``pair_coordinates`` -- the Hungarian assignment of least
        total Euclidean distance over *all* points, then the pairs farther than ``radius``
        dropped. In crowds that can leave a pair within the radius unpaired (the assignment
        trades it for two cheaper long pairs), and it needs the dense N x M distance matrix
        (refused above 25 million entries). ``"radius"``: the pairing with the most pairs
        within ``radius``, of least total distance among those; sparse, for large images.

    Returns
    -------
    CentroidPairing
    """
    true = _points(true_centroids, "true_centroids")
    pred = _points(pred_centroids, "pred_centroids")
    radius = float(radius)
    if not radius >= 0:
        raise ValueError(f"radius must be a non-negative number of pixels, got {radius}")
    if pairing not in ("reference", "radius"):
        raise ValueError(f"pairing must be 'reference' or 'radius', got {pairing!r}")
    if len(true) == 0 or len(pred) == 0:
        rows = cols = _EMPTY
        distance = np.zeros(0)
    elif pairing == "reference":
        if len(true) * len(pred) > _DENSE_PAIRING_LIMIT:
            raise ValueError(
                f"the reference pairing of {len(true)} x {len(pred)} centroids needs a dense "
                "distance matrix that large; use pairing='radius'"
            )
        distances = cdist(true, pred)
        rows, cols = linear_sum_assignment(distances)
        distance = distances[rows, cols]
        keep = distance <= radius
        rows, cols, distance = rows[keep], cols[keep], distance[keep]
    else:
        near = cKDTree(true).sparse_distance_matrix(cKDTree(pred), radius, output_type="ndarray")
        near = near[near["v"] <= radius]
        order = np.lexsort((near["j"], near["i"]))
        i, j, d = near["i"][order], near["j"][order], near["v"][order]
        # most pairs first: each pair gains more than any rearrangement of distances can cost
        bonus = radius * (min(len(true), len(pred)) + 1) + 1
        edges = _max_gain_matching(i.astype(np.intp), j.astype(np.intp), bonus - d)
        rows, cols, distance = i[edges], j[edges], d[edges]
    order = np.argsort(rows, kind="stable")
    rows, cols, distance = rows[order], cols[order], distance[order]
    return CentroidPairing(
        paired=np.stack([rows, cols], axis=1).astype(np.int64).reshape(-1, 2),
        distance=np.asarray(distance, dtype=float),
        unpaired_true=np.setdiff1d(np.arange(len(true)), rows),
        unpaired_pred=np.setdiff1d(np.arange(len(pred)), cols),
    )


def _types(array: object, count: int, name: str) -> np.ndarray:
    types = np.asarray(array)
    if types.ndim == 2 and types.shape[1:] == (1,):
        types = types[:, 0]  # HoVer-Net's (N, 1) inst_type
    if types.shape != (count,):
        raise ValueError(f"{name} must hold one type per centroid ({count}), got {types.shape}")
    if types.size and not np.issubdtype(types.dtype, np.integer):
        if not np.all(np.equal(np.mod(types, 1), 0)):
            raise TypeError(f"{name} must hold integer types, got dtype {types.dtype}")
    return types.astype(np.int64)


def classification_f1_dataset(
    images: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    *,
    radius: float = DEFAULT_RADIUS,
    type_ids: Sequence[int] | None = None,
    exhaustive: bool = True,
    pairing: Literal["reference", "radius"] = "reference",
) -> ClassificationResult:
    """HoVer-Net's detection and classification F1 pooled over images (``run_nuclei_type_stat``).

    In each image the centroids are paired with :func:`pair_centroids`; the pairs and the
    unpaired nuclei of all images are then pooled. ``F_d = 2TP_d / (2TP_d + FP_d + FN_d)``,
    the accuracy is the fraction of pairs with equal types, and per type ``t`` (see
    :class:`TypeCounts`)::

        F_t = 2(TP_t + TN_t) / (2(TP_t + TN_t) + 2FP_t + 2FN_t + FP_d,t + FN_d,t)

    where TP/TN/FP/FN_t count the pairs in which the true or the predicted type is ``t`` (so
    TN_t is 0, as in the reference) and FP_d,t/FN_d,t the unpaired predictions/true nuclei of
    type ``t``.

    Parameters
    ----------
    images
        Per image ``(true_centroids, true_types, pred_centroids, pred_types)``: ``(N, 2)``
        coordinates in pixels and ``(N,)`` integer types (see :func:`nucleus_points` to get
        them from maps).
    radius
        Pairing radius in pixels.
    type_ids
        Types to score; default: every type in the ground truth (except -1).
    exhaustive
        ``False`` when some true nuclei have unknown type -1: pairs with them are not counted
        as type errors.
    pairing
        See :func:`pair_centroids`.

    Returns
    -------
    ClassificationResult
        Ratios with a zero denominator are NaN.
    """
    paired_true, paired_pred, unpaired_true, unpaired_pred, all_true = [], [], [], [], []
    for index, image in enumerate(images):
        if len(image) != 4:
            raise ValueError(
                f"image {index} must be (true_centroids, true_types, pred_centroids, "
                f"pred_types), got {len(image)} items"
            )
        true_xy = _points(image[0], f"image {index} true_centroids")
        pred_xy = _points(image[2], f"image {index} pred_centroids")
        true_type = _types(image[1], len(true_xy), f"image {index} true_types")
        pred_type = _types(image[3], len(pred_xy), f"image {index} pred_types")
        found = pair_centroids(true_xy, pred_xy, radius, pairing=pairing)
        paired_true.append(true_type[found.paired[:, 0]])
        paired_pred.append(pred_type[found.paired[:, 1]])
        unpaired_true.append(true_type[found.unpaired_true])
        unpaired_pred.append(pred_type[found.unpaired_pred])
        all_true.append(true_type)
    joined = [
        np.concatenate(parts) if parts else _EMPTY
        for parts in (paired_true, paired_pred, unpaired_true, unpaired_pred, all_true)
    ]
    paired_true, paired_pred, unpaired_true, unpaired_pred, all_true = joined

    agree = int((paired_true == paired_pred).sum())
    disagree = int((paired_true != paired_pred).sum())
    if not exhaustive:
        disagree -= int((paired_true == -1).sum())
    tp_d, fp_d, fn_d = paired_true.size, unpaired_pred.size, unpaired_true.size
    if type_ids is None:
        type_ids = [int(t) for t in np.unique(all_true) if t != -1]
    per_type = {}
    for t in (int(t) for t in type_ids):
        involved = (paired_true == t) | (paired_pred == t)
        true_t, pred_t = paired_true[involved], paired_pred[involved]
        fp = int(((true_t != t) & (pred_t == t)).sum())
        if not exhaustive:
            fp -= int((true_t == -1).sum())
        per_type[t] = TypeCounts(
            tp=int(((true_t == t) & (pred_t == t)).sum()),
            tn=int(((true_t != t) & (pred_t != t)).sum()),
            fp=fp,
            fn=int(((true_t == t) & (pred_t != t)).sum()),
            fp_detection=int((unpaired_pred == t).sum()),
            fn_detection=int((unpaired_true == t).sum()),
        )
    return ClassificationResult(
        f1_detection=_ratio(2 * tp_d, 2 * tp_d + fp_d + fn_d),
        accuracy=_ratio(agree, agree + disagree),
        f1_per_type={t: counts.f1 for t, counts in per_type.items()},
        tp_detection=tp_d,
        fp_detection=fp_d,
        fn_detection=fn_d,
        per_type=per_type,
    )


def classification_f1(
    true_centroids: np.ndarray,
    true_types: np.ndarray,
    pred_centroids: np.ndarray,
    pred_types: np.ndarray,
    *,
    radius: float = DEFAULT_RADIUS,
    type_ids: Sequence[int] | None = None,
    exhaustive: bool = True,
    pairing: Literal["reference", "radius"] = "reference",
) -> ClassificationResult:
    """HoVer-Net's detection and classification F1 of one image.

    See :func:`classification_f1_dataset` (which pools several images, as HoVer-Net reports
    them) for the definitions and parameters.
    """
    return classification_f1_dataset(
        [(true_centroids, true_types, pred_centroids, pred_types)],
        radius=radius,
        type_ids=type_ids,
        exhaustive=exhaustive,
        pairing=pairing,
    )
