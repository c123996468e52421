"""A model ready to classify: engine + preprocessing + labels + postprocessing.

    frame --fit()--> RGB model-sized --to_input()--> tensor --Engine.invoke()--> raw
          --to_scores()--> scores --top_k()--> predictions
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edge_classifier.config.schema import ClassifyConfig, ModelConfig
from edge_classifier.engine.interpreter import EngineLike, ModelInfo
from edge_classifier.engine.labels import embedded_labels, read_labels
from edge_classifier.errors import ConfigError, LabelsError
from edge_classifier.postprocess.scores import LabelFilter, score_table, to_scores, top_k
from edge_classifier.preprocess.prepare import Preparer
from edge_classifier.results import Classification, Prediction

__all__ = ["Classifier", "LabelSource", "resolve_labels"]

log = logging.getLogger(__name__)

LabelSource = str  # "file" | "embedded" | "none"


def resolve_labels(info: ModelInfo, labels_path: str | Path | None) -> tuple[list[str], LabelSource]:
    """The labels for a model: a labels file if given, else the model's embedded ones, else ids.

    A count that does not match the model's outputs is a LabelsError naming both files.
    """
    classes = info.classes
    if labels_path:
        labels, origin, where = read_labels(labels_path), "file", Path(labels_path)
    else:
        found = embedded_labels(info.path) or (embedded_labels(info.requested) if info.requested != info.path else None)
        if found is None:
            return [str(i) for i in range(classes)], "none"
        labels, origin, where = found, "embedded", info.path
    if len(labels) != classes:
        what = "labels file" if origin == "file" else "embedded labels of"
        raise LabelsError(
            f"{where}: {what} has {len(labels)} labels but the model {info.path.name} has {classes} outputs"
        )
    return labels, origin


_QUICK_MAX_HITS = 64  # classes over the threshold beyond which the float path is used


@dataclasses.dataclass(frozen=True, slots=True)
class _QuickPlan:
    """What ``Classifier.predictions`` needs to pick from raw bytes (made again on reconfigure,
    and swapped in as one attribute, so a frame sees the old plan or the new one)."""

    passing: np.ndarray  # bool per raw byte value: its score reaches the threshold
    k: int
    mask: np.ndarray | None  # the allow/deny filter, bool per class
    scores: list[float]  # the score of each raw byte value


class Classifier:
    """Classifies images with one engine. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        engine: EngineLike,
        labels: Sequence[str],
        *,
        label_source: LabelSource = "none",
        resize: str = "stretch",
        mean: float = 128.0,
        std: float = 128.0,
        top_k: int = 3,
        threshold: float = 0.1,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
    ) -> None:
        self.engine = engine
        self.labels = list(labels)
        self.label_source = label_source
        self.resize = resize
        tensor = engine.info.input
        self._prepare = Preparer.for_tensor(tensor.shape, tensor.dtype, tensor.scale, tensor.zero_point,
                                            resize=resize, mean=mean, std=std)
        self.input = self._prepare.spec
        self.top_k = top_k
        self.threshold = threshold
        self._filter = self._build_filter(allow, deny)
        out = engine.info.output
        # A frame's scores are one lookup for the usual 8-bit softmax output (see score_table).
        self._score_table = score_table(out.dtype, out.scale, out.zero_point)
        self._quick = self._quick_plan()

    def _build_filter(self, allow: Sequence[str], deny: Sequence[str]) -> LabelFilter:
        try:
            return LabelFilter.build(self.labels, allow, deny)
        except ValueError as exc:
            raise ConfigError([f"classify.allow/deny: {exc} ({self.engine.info.path.name})"]) from exc

    def reconfigure(self, top_k: int, threshold: float, allow: Sequence[str], deny: Sequence[str]) -> None:
        """Change the reporting settings in place (each is one attribute store, so a frame
        classified meanwhile sees either the old or the new value of each)."""
        label_filter = self._build_filter(allow, deny)
        self.top_k, self.threshold, self._filter = top_k, threshold, label_filter
        self._quick = self._quick_plan()

    def _quick_plan(self) -> _QuickPlan | None:
        """How ``predictions`` picks straight from an 8-bit softmax output's raw bytes, or None.

        Only the few raw values whose score reaches the threshold can be reported, so they are
        found with one table lookup and one scan of the raw bytes, and only those are ranked:
        the 1001-class float scores and their partition are not made at all. Without a
        threshold (nearly every class passes) there is no plan and ``pick`` does it all.
        """
        table = self._score_table
        if table is None:
            return None
        # The same float32-against-threshold comparison top_k makes, value by value.
        passing = np.array([table[value] >= self.threshold for value in range(256)], dtype=bool)
        if passing.all():
            return None
        return _QuickPlan(passing, max(0, self.top_k), self._filter.mask, table.tolist())

    @classmethod
    def configured(cls, engine: EngineLike, labels: Sequence[str], label_source: LabelSource, model: ModelConfig,
                   classify: ClassifyConfig) -> Classifier:
        """A classifier with the ``[model]`` preprocessing and the ``[classify]`` reporting settings."""
        return cls(engine, labels, label_source=label_source, resize=model.resize, mean=model.input_mean,
                   std=model.input_std, top_k=classify.top_k, threshold=classify.threshold,
                   allow=classify.allow, deny=classify.deny)

    @property
    def info(self) -> ModelInfo:
        return self.engine.info

    def prepare(self, image: np.ndarray, rgb: bool = False) -> np.ndarray:
        """The input tensor for an image of any size (BGR unless ``rgb``)."""
        return self._prepare(image, rgb)

    def scores(self, raw: np.ndarray) -> np.ndarray:
        """One score in [0, 1] per class from a raw model output."""
        table = self._score_table
        if table is not None and raw.dtype.itemsize == 1:
            return table.take(raw.reshape(-1).view(np.uint8))
        out = self.engine.info.output
        return to_scores(raw, out.scale, out.zero_point)

    def pick(self, scores: np.ndarray) -> tuple[Prediction, ...]:
        """The reported labels: allow/deny, then top-k above the threshold."""
        best = top_k(scores, self.top_k, self.threshold, self._filter)
        return tuple(Prediction(i, self.labels[i], s) for i, s in best)

    def predictions(self, raw: np.ndarray) -> tuple[Prediction, ...]:
        """The reported labels from a raw model output (what ``pick(scores(raw))`` gives)."""
        plan = self._quick
        if plan is not None and raw.dtype.itemsize == 1:
            quick = self._pick_raw(raw, plan)
            if quick is not None:
                return quick
        return self.pick(self.scores(raw))

    def _pick_raw(self, raw: np.ndarray, plan: _QuickPlan) -> tuple[Prediction, ...] | None:
        """``pick(scores(raw))`` from the raw bytes; None when too many classes pass the
        threshold for this to be the quicker way."""
        values = raw.reshape(-1).view(np.uint8)
        hits = np.flatnonzero(plan.passing.take(values))
        if plan.mask is not None:
            hits = hits[plan.mask.take(hits)]
        if hits.size > _QUICK_MAX_HITS:
            return None
        scores = plan.scores
        # Best first; ties by the lower class id, as top_k orders them.
        hit_values = values.take(hits).tolist()
        ranked = sorted(zip(hit_values, hits.tolist(), strict=True), key=lambda hit: (-scores[hit[0]], hit[1]))
        labels = self.labels
        return tuple(Prediction(i, labels[i], scores[value]) for value, i in ranked[:plan.k])

    def classify(self, image: np.ndarray, rgb: bool = False) -> Classification:
        start = time.perf_counter()
        tensor = self.prepare(image, rgb)
        raw, inference_ms = self.engine.timed_invoke(tensor)
        top = self.predictions(raw)
        total_ms = (time.perf_counter() - start) * 1000.0
        return Classification(top, self.engine.info, inference_ms, total_ms)

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Classifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
