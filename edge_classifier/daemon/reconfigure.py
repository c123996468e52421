"""Runtime reconfiguration: what a reload (SIGHUP, the ``reload`` command) or the ``config``
command changes in place, and what only a restart applies.

Main thread only. A change that needs a restart is refused whole (nothing changes), with
every setting that needs it named.
"""

from __future__ import annotations

from edge_classifier.config import Config
from edge_classifier.daemon.models import worker_count
from edge_classifier.daemon.pipeline import Pipeline
from edge_classifier.errors import EdgeClassifierError
from edge_classifier.publish.policy import PublishPolicy
from edge_classifier.publish.publisher import Publisher

__all__ = ["ConfigChangeNeedsRestart", "apply_runtime", "check_restart", "publish_policy"]

RESTART_SECTIONS = ("mqtt", "device", "commands", "homeassistant", "web")
RESTART_PUBLISH = ("spool_dir", "spool_max_messages", "spool_max_bytes", "spool_spill_after", "spool_max_seconds",
                   "retain", "stats_interval")


class ConfigChangeNeedsRestart(EdgeClassifierError):
    """A reload changed settings that only a restart applies."""

    exit_code = 78

    def __init__(self, what: str) -> None:
        super().__init__(f"changes to {what} need a restart (systemctl restart edge-classifier)")


def publish_policy(config: Config) -> PublishPolicy:
    p = config.publish
    return PublishPolicy(mode=p.mode, hysteresis=p.hysteresis, min_interval=p.min_interval, heartbeat=p.heartbeat)


def check_restart(old: Config, new: Config, *, workers: int, swapping: bool) -> None:
    """ConfigChangeNeedsRestart when going from ``old`` to ``new`` needs a restart (``workers``:
    the pipeline's; ``swapping``: a model swap is under way)."""
    needs_restart = [name for name in RESTART_SECTIONS if getattr(new, name) != getattr(old, name)]
    for key in RESTART_PUBLISH:
        if getattr(new.publish, key) != getattr(old.publish, key):
            needs_restart.append(f"publish.{key}")
    if worker_count(new.model, "cpu") > workers:
        needs_restart.append("model.threads / model.interpreters (more interpreters)")
    if needs_restart:
        raise ConfigChangeNeedsRestart(", ".join(needs_restart))
    if new.model != old.model and swapping:
        raise ConfigChangeNeedsRestart("model (a model swap is under way: reload again when it is done)")


def apply_runtime(old: Config, new: Config, pipeline: Pipeline, publisher: Publisher) -> None:
    """Apply ``new``'s classify, fps and publish settings (already validated) in place, to
    every model set (``[model]``'s and those of the cameras with their own)."""
    c = new.classify
    for classifier in (cl for models in pipeline.sets.all() for cl in models.classifiers):
        classifier.reconfigure(c.top_k, c.threshold, c.allow, c.deny)
    if not new.sources:  # one [source]: the config command's source.fps sets it
        pipeline.capture.set_fps(new.source.fps)
    if new.publish != old.publish:
        publisher.set_policy(publish_policy(new))
        pipeline.set_smoothing(new.publish.smoothing)
