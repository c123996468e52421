"""Building the daemon's model sets: which file, on which accelerator, in or out of process.

- A model compiled for the Edge TPU (or one with an ``_edgetpu`` twin beside it) runs on the
  TPU when ``accelerator`` allows, always in a supervised worker (``WorkerEngine``), one
  interpreter per device; every TPU interpreter of the daemon lives in the one engine host
  child (``engine/host.py``): a USB Coral serves one process, so two cameras on two models
  share it there;
- otherwise its CPU twin runs, in process (or in workers with ``model.isolate``), one
  single-thread interpreter per configured thread.

A set remembers how it was made (``EngineSpec``) and, for a TPU set, how to make its CPU
fallback, so the daemon can switch between the two when the TPU fails and comes back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from edge_classifier.classifier import Classifier, resolve_labels
from edge_classifier.config.schema import ClassifyConfig, Config, ModelConfig
from edge_classifier.daemon.modelsets import DEFAULT, ModelSet
from edge_classifier.engine.edgetpu import library_problem
from edge_classifier.engine.interpreter import Engine, EngineLike
from edge_classifier.engine.model import ModelFile
from edge_classifier.errors import AcceleratorError, ConfigError
from edge_classifier.store.store import sidecar_labels

__all__ = ["EngineSpec", "ModelPlan", "fallback_spec", "open_engines", "open_model_set", "plan_model",
           "wants_embedding", "worker_count"]

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, slots=True)
class EngineSpec:
    """How to open the engines of one set."""

    path: Path
    accelerator: str  # "edgetpu" | "cpu"
    devices: tuple[str, ...]  # one per engine ("" = any)
    threads: int
    count: int
    isolated: bool
    timeout: float
    embedding: bool = False  # in-process CPU engines expose the penultimate tensor (learned classes)
    shared: bool = False  # isolated engines live in the daemon's one engine host child (the Edge TPU's)


@dataclasses.dataclass(frozen=True, slots=True)
class ModelPlan:
    """What to run for a model: the TPU spec (if any), the CPU spec (if any), labels."""

    requested: Path
    tpu: EngineSpec | None
    cpu: EngineSpec | None
    labels: Path | None


def worker_count(model: ModelConfig, accelerator: str) -> int:
    """How many interpreters: as configured, else one per thread on the CPU, one on the TPU."""
    if accelerator == "edgetpu":
        return max(1, len(model.devices))
    if model.interpreters:
        return model.interpreters
    return max(1, min(model.threads, os.cpu_count() or 1))


def plan_model(model: ModelConfig, path: str | Path | None = None, labels: str | Path | None = None, *,
               embedding: bool = False) -> ModelPlan:
    """The TPU and CPU ways to run ``path`` (default ``model.path``) under ``model``'s settings;
    with ``embedding``, CPU engines also give the penultimate tensor (``Engine.embedding``)."""
    requested = ModelFile.inspect(path or model.path)
    tpu_file = requested.path if requested.edgetpu else requested.edgetpu_twin
    tpu = None
    if model.accelerator != "cpu" and tpu_file.is_file():
        devices = model.devices or (model.device,)
        tpu = EngineSpec(tpu_file, "edgetpu", devices, 1, len(devices), True, model.invoke_timeout, shared=True)
    elif model.accelerator == "edgetpu":
        raise ConfigError([
            f"model.accelerator: 'edgetpu' needs a model compiled for the Edge TPU, but {requested.path} "
            f"is not and {requested.edgetpu_twin.name} is not beside it"
        ])
    cpu_file = requested.cpu_twin
    cpu = None
    if model.accelerator != "edgetpu" and cpu_file is not None and cpu_file.is_file():
        count = worker_count(model, "cpu")
        # $EDGE_CLASSIFIER_WORKER_HOST=shared puts isolated CPU workers in the engine host too:
        # how the shared host is tested (and drilled) without a TPU.
        shared = False
        if model.isolate:  # engine/ and multiprocessing only when used (the start-up imports, READY)
            from edge_classifier.engine.host import HOST_ENV

            shared = os.environ.get(HOST_ENV, "") == "shared"
        cpu = EngineSpec(cpu_file, "cpu", ("",) * count, max(1, model.threads // count), count, model.isolate,
                         model.invoke_timeout, embedding, shared)
    if tpu is None and cpu is None:
        twin = cpu_file.name if cpu_file else "a CPU twin"
        raise AcceleratorError(f"{requested.path}: compiled for the Edge TPU and {twin} is not beside it; "
                               "model.accelerator = 'cpu' cannot run it")
    if labels is None:
        labels = model.labels or sidecar_labels(requested.path)
    return ModelPlan(requested.path, tpu, cpu, Path(labels) if labels else None)


def wants_embedding(config: Config) -> bool:
    """Whether the model's engines should give the penultimate tensor: learned classes from the model."""
    if not config.learn.enabled:
        return False
    from edge_classifier.learn.embedder import FROM_MODEL  # learn/ only with [learn] (start-up imports)

    return config.learn.extractor == FROM_MODEL


def open_engines(spec: EngineSpec) -> list[EngineLike]:
    engines: list[EngineLike] = []
    try:
        for index in range(spec.count):
            device = spec.devices[index] if index < len(spec.devices) else ""
            if spec.isolated:
                # Imported here: multiprocessing and shared memory, only for the Edge TPU and
                # model.isolate (~0.5 s of an emulated start-up that most never need).
                from edge_classifier.engine.worker import WorkerEngine

                engines.append(WorkerEngine.open(spec.path, accelerator=spec.accelerator, device=device,
                                                 threads=spec.threads, timeout=spec.timeout, shared=spec.shared))
            else:
                engines.append(Engine.open(spec.path, accelerator=spec.accelerator, device=device,
                                           threads=spec.threads, embedding=spec.embedding))
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    return engines


def fallback_spec(plan: ModelPlan, spec: EngineSpec) -> EngineSpec | None:
    """What to run when the engines of ``spec`` fail: the CPU twin for the Edge TPU, the same
    model in process for isolated CPU workers; None when there is nothing else."""
    if spec.accelerator == "edgetpu":
        return plan.cpu
    if spec.isolated:
        return dataclasses.replace(spec, isolated=False, shared=False)
    return None


def open_model_set(model: ModelConfig, classify: ClassifyConfig, *, plan: ModelPlan | None = None,
                   spec: EngineSpec | None = None, engines: list[EngineLike] | None = None,
                   key: str = DEFAULT) -> ModelSet:
    """Open a set for ``plan`` (default: ``model.path``): the TPU when it loads, else the CPU.

    With ``accelerator = 'edgetpu'`` a TPU that does not load is an AcceleratorError (exit 69).
    ``spec`` opens exactly that spec (a fallback); ``engines`` are already open ones for
    ``spec`` (the recovery thread made them). ``key`` names the set among the daemon's
    (``""``: ``[model]``; a source's own model: its file name).
    """
    plan = plan or plan_model(model)
    fallback = None
    if spec is not None:
        engines = engines if engines is not None else open_engines(spec)
    elif plan.tpu is not None:
        problem = library_problem()
        try:
            if problem is not None:
                raise AcceleratorError(f"{plan.tpu.path}: {problem}")
            engines = open_engines(plan.tpu)
            spec = plan.tpu
        except AcceleratorError as exc:
            if plan.cpu is None or model.accelerator == "edgetpu":
                hint = ("; set model.accelerator = 'auto' to fall back to the CPU"
                        if model.accelerator == "edgetpu" else "")
                raise AcceleratorError(f"{exc}{hint}") from None
            fallback = str(exc)
            log.log(logging.WARNING if plan.requested == plan.tpu.path else logging.INFO,
                    "Edge TPU unavailable, running %s on the CPU: %s", plan.cpu.path.name, fallback)
    if engines is None:
        assert plan.cpu is not None  # plan_model guarantees one of the two
        engines, spec = open_engines(plan.cpu), plan.cpu
    try:
        labels, origin = resolve_labels(engines[0].info, plan.labels)
        classifiers = [
            Classifier.configured(engine, labels, origin, model, classify) for engine in engines
        ]
    except BaseException:
        for engine in engines:
            engine.close()
        raise
    assert spec is not None
    return ModelSet(classifiers, plan=plan, spec=spec, fallback=fallback, key=key)
