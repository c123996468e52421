"""Find, parse and validate the configuration file, reporting every problem at once.

Lookup order (the CONTRACT's): ``-c PATH``, else ``$EDGE_CLASSIFIER_CONFIG``, else
``./config.toml``, else ``/etc/edge-classifier/config.toml``; with none of them the
built-in defaults apply. Relative paths inside a file are relative to that file's
directory, so ``edge-classifier run -c /somewhere/config.toml`` works from anywhere.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import socket
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from edge_classifier.config.fields import Rule
from edge_classifier.config.schema import Config, SourceConfig
from edge_classifier.config.sources import model_problems, split_sources, with_sources
from edge_classifier.errors import ConfigError, InputMissingError

__all__ = ["SYSTEM_CONFIG", "find_config", "load_config", "parse_config"]

SYSTEM_CONFIG = Path("/etc/edge-classifier/config.toml")
ENV_VAR = "EDGE_CLASSIFIER_CONFIG"


def find_config(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> Path | None:
    """The config file to use, or None for the built-in defaults.

    A file named with ``-c`` or the environment variable must exist (InputMissingError);
    the two implicit places are only used when present.
    """
    for named, origin in ((explicit, "-c"), (environ.get(ENV_VAR), f"${ENV_VAR}")):
        if named:
            path = Path(named)
            if not path.is_file():
                raise InputMissingError(f"{named}: config file not found (given by {origin})")
            return path
    for candidate in (Path("config.toml"), SYSTEM_CONFIG):
        if candidate.is_file():
            return candidate
    return None


def load_config(explicit: str | None = None, environ: Mapping[str, str] = os.environ) -> tuple[Config, Path | None]:
    """Find and load the configuration; returns it with the file it came from."""
    path = find_config(explicit, environ)
    if path is None:
        return parse_config({}, base_dir=Path.cwd()), None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source=str(path)) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"cannot read: {exc}"], source=str(path)) from exc
    return parse_config(data, base_dir=path.resolve().parent, source=str(path)), path


def parse_config(data: Mapping[str, Any], base_dir: Path, source: str = "") -> Config:
    """Build the validated tree from parsed TOML; raise ConfigError listing every problem."""
    problems: list[str] = []
    data, sources = split_sources(data, _build, problems)
    config = with_sources(_build(Config, data, "", problems), sources)
    if not problems:
        problems.extend(_cross_checks(config))
    if problems:
        raise ConfigError(problems, source=source)
    config = _finish(config, base_dir)
    problems = model_problems(config)  # the store's folder is known only now
    if problems:
        raise ConfigError(problems, source=source)
    return config


def _cross_checks(config: Config) -> list[str]:
    """Rules that involve more than one key."""
    problems = []
    problems.extend(_source_checks(config.source, "source."))
    for index, source in enumerate(config.sources):
        problems.extend(_source_checks(source, f"sources[{index}]."))
    mqtt = config.mqtt
    if mqtt.reconnect_min > mqtt.reconnect_max:
        problems.append(f"mqtt.reconnect_min: must be <= mqtt.reconnect_max ({mqtt.reconnect_max:g}), "
                        f"not {mqtt.reconnect_min:g}")
    if bool(mqtt.tls.cert_file) != bool(mqtt.tls.key_file):
        problems.append("mqtt.tls.cert_file: a client certificate needs its key_file, and a key its cert_file")
    if (mqtt.tls.ca_file or mqtt.tls.cert_file) and not mqtt.tls.enabled:
        problems.append("mqtt.tls.enabled: must be true when TLS files are given")
    if mqtt.password and mqtt.password_file:
        problems.append("mqtt.password: give password or password_file, not both")
    if (mqtt.password or mqtt.password_file) and not mqtt.username:
        problems.append("mqtt.username: a password needs a username")
    if config.web.password and config.web.password_file:
        problems.append("web.password: give password or password_file, not both")
    overlap = set(config.classify.allow) & set(config.classify.deny)
    if overlap:
        problems.append(f"classify.deny: labels both allowed and denied: {', '.join(sorted(overlap))}")
    return problems


def _source_checks(source: SourceConfig, at: str) -> list[str]:
    problems = []
    if source.retry_initial > source.retry_max:
        problems.append(f"{at}retry_initial: must be <= {at}retry_max ({source.retry_max:g}), "
                        f"not {source.retry_initial:g}")
    if source.kind in ("images", "mqtt") and not source.uri:
        what = "a directory or glob of images" if source.kind == "images" else "a topic filter"
        problems.append(f"{at}uri: must name {what} when {at}kind = {source.kind!r}")
    if (source.width == 0) != (source.height == 0):
        problems.append(f"{at}width: width and height must be set together (or both 0)")
    return problems


def _build(cls: Any, table: Mapping[str, Any], prefix: str, problems: list[str]) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in table:
        if key not in fields:
            near = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else f" (known keys: {', '.join(fields)})"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    values: dict[str, Any] = {}
    for name, field in fields.items():
        if name not in table:
            continue
        path = f"{prefix}{name}"
        raw = table[name]
        kind = hints[name]
        if dataclasses.is_dataclass(kind):
            if not isinstance(raw, dict):
                problems.append(f"{path}: must be a table ([{path}]), not {_type_name(raw)}")
                continue
            values[name] = _build(kind, raw, f"{path}.", problems)
            continue
        rule: Rule = field.metadata["rule"]
        value, problem = _coerce(raw, kind)
        if problem is None:
            problem = rule.problem(value)
        if problem is not None:
            if rule.secret:
                problem = problem.replace(repr(raw), "<secret>")
            problems.append(f"{path}: {problem}")
            continue
        values[name] = value
    return cls(**values)


def _coerce(raw: Any, kind: Any) -> tuple[Any, str | None]:
    """Check a TOML value against a field's type; returns (value, problem)."""
    if kind is bool:
        return raw, None if isinstance(raw, bool) else f"must be true or false, not {_type_name(raw)}"
    if kind is int:
        ok = isinstance(raw, int) and not isinstance(raw, bool)
        return raw, None if ok else f"must be an integer, not {_type_name(raw)}"
    if kind is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            if not math.isfinite(raw):
                return raw, f"must be a finite number, not {raw}"
            return float(raw), None
        return raw, f"must be a number, not {_type_name(raw)}"
    if kind is str:
        return raw, None if isinstance(raw, str) else f"must be a string, not {_type_name(raw)}"
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if not isinstance(raw, list):
            return raw, f"must be an array, not {_type_name(raw)}"
        items = []
        for index, element in enumerate(raw):
            value, problem = _coerce(element, item)
            if problem is not None:
                return raw, f"item {index} {problem}"
            items.append(value)
        return tuple(items), None
    raise TypeError(f"unsupported config field type {kind!r}")  # a bug in the schema, not the file


def _type_name(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


def _finish(config: Config, base_dir: Path) -> Config:
    """Fill in derived defaults and make file paths absolute (relative to the file's folder)."""
    device_id = config.device.id or _hostname_id()
    model = config.model
    store = _absolute(model.dir, base_dir)
    model_path = _in_store(model.path, store, base_dir)
    model = dataclasses.replace(
        model,
        dir=store,
        path=model_path,
        labels=_absolute(model.labels, base_dir) if model.labels else "",
    )
    source = _source_paths(config.source, base_dir)
    sources = tuple(_source_paths(s, base_dir) for s in config.sources)
    mqtt = config.mqtt
    tls = mqtt.tls
    tls = dataclasses.replace(
        tls,
        ca_file=_absolute(tls.ca_file, base_dir) if tls.ca_file else "",
        cert_file=_absolute(tls.cert_file, base_dir) if tls.cert_file else "",
        key_file=_absolute(tls.key_file, base_dir) if tls.key_file else "",
    )
    mqtt = dataclasses.replace(
        mqtt,
        topic_prefix=mqtt.topic_prefix.replace("{device_id}", device_id),
        client_id=mqtt.client_id or f"edge-classifier-{device_id}",
        password_file=_absolute(mqtt.password_file, base_dir) if mqtt.password_file else "",
        tls=tls,
    )
    learn = dataclasses.replace(
        config.learn,
        extractor=config.learn.extractor if config.learn.extractor == "model" else
        _in_store(config.learn.extractor, store, base_dir),
        head=_in_store(config.learn.head, store, base_dir),
    )
    web = config.web
    if web.password_file:
        web = dataclasses.replace(web, password_file=_absolute(web.password_file, base_dir))
    publish = config.publish
    if publish.spool_dir:
        publish = dataclasses.replace(publish, spool_dir=_absolute(publish.spool_dir, base_dir))
    return dataclasses.replace(
        config,
        device=dataclasses.replace(config.device, id=device_id),
        model=model,
        source=source,
        sources=sources,
        mqtt=mqtt,
        publish=publish,
        learn=learn,
        web=web,
    )


def _source_paths(source: SourceConfig, base_dir: Path) -> SourceConfig:
    if (source.kind == "images" and source.uri) or (source.kind == "opencv" and _is_local_file(source.uri)):
        source = dataclasses.replace(source, uri=_absolute(source.uri, base_dir))
    return source


def _in_store(value: str, store: str, base_dir: Path) -> str:
    """A bare file name is a file in the model store; a path is relative to the config's folder."""
    return str(Path(store) / value) if os.sep not in value else _absolute(value, base_dir)


def _absolute(value: str, base_dir: Path) -> str:
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else base_dir / path)


def _is_local_file(uri: str) -> bool:
    return bool(uri) and not uri.isdigit() and "://" not in uri and not uri.startswith("/dev/")


def _hostname_id() -> str:
    """The hostname, reduced to the characters a device id (and an MQTT topic level) allows."""
    name = socket.gethostname().split(".")[0]
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in name).strip("-")
    return cleaned[:64] or "edge-classifier"


