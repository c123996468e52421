"""The model store: a folder of models, their validation, downloads, catalog and the daemon's state.

- ``store``: safe names (:func:`resolve_name`), sidecar labels, :func:`list_models`;
- ``validate``: :func:`validate_model`, every reason a swap to a file would fail;
- ``probe`` / ``sandbox``: the runtime load and smoke inference, in a child process;
- ``fetch``: :func:`fetch_url` and :func:`pull`, verified atomic downloads;
- ``catalog``: :func:`load_catalog`, the models ``pull`` knows;
- ``state``: :class:`StateFile`, the active model across restarts;
- ``files``: atomic replacement, flock-ed temporary files, the sweep of a dead writer's leftovers;
- ``roles``: only a classifier becomes the running model (never the learning extractor);
- ``signing``: ed25519 signatures (``<model>.sig``) checked against ``model.trusted_keys``.
"""

from edge_classifier.store.catalog import CATALOG_FILE, CatalogEntry, load_catalog
from edge_classifier.store.fetch import DEFAULT_MAX_BYTES, fetch_url, pull
from edge_classifier.store.state import STATE_FILE, StateFile, state_path
from edge_classifier.store.store import ModelEntry, list_models, resolve_name, sidecar_labels
from edge_classifier.store.validate import ValidationReport, validate_model

__all__ = [
    "CATALOG_FILE",
    "DEFAULT_MAX_BYTES",
    "STATE_FILE",
    "CatalogEntry",
    "ModelEntry",
    "StateFile",
    "ValidationReport",
    "fetch_url",
    "list_models",
    "load_catalog",
    "pull",
    "resolve_name",
    "sidecar_labels",
    "state_path",
    "validate_model",
]
