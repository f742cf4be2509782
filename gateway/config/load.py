"""Load a TOML config file once into frozen objects, or refuse it with every reason.

Each message names the file, the key path as written in the file, and what would be valid,
e.g. ``config/skid.toml: signal.tank_level.range: lower bound 3.0 is not below upper bound
2.5``. Nothing is adjusted or defaulted behind the user's back: duplicates, unknown keys and
contradictions refuse the file.
"""

from __future__ import annotations

import tomllib
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from gateway.config.crosscheck import crosscheck
from gateway.config.schema import CONFIG_DIR, GatewayConfig
from gateway.errors import ConfigError


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate ``path``; raise ConfigError listing every problem found.

    Relative file paths inside the config (the anomaly model's, the API's tokens file) are
    taken from the config file's directory, so the same file works from any working
    directory.
    """
    shown = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as err:
        raise ConfigError([f"{shown}: cannot read the file: {err.strerror or err}"]) from err
    return parse_config(raw, shown, base_dir=Path(path).resolve().parent)


def parse_config(
    raw: bytes | str, shown: str, *, base_dir: str | Path | None = None
) -> GatewayConfig:
    """Validate TOML text; ``shown`` is the file name used in messages.

    ``base_dir`` is where relative file paths in the config are taken from (the config
    file's directory); without it they are left as written, relative to the working
    directory.
    """
    text = raw.decode("utf-8", errors="strict") if isinstance(raw, bytes) else raw
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError([f"{shown}: not valid TOML: {err}"]) from err
    try:
        context = None if base_dir is None else {CONFIG_DIR: Path(base_dir)}
        cfg = GatewayConfig.model_validate(data, context=context)
    except ValidationError as err:
        raise ConfigError(
            [f"{shown}: {key}: {msg}" for key, msg in _describe_errors(err, data)]
        ) from err
    problems = crosscheck(cfg)
    if problems:
        raise ConfigError([f"{shown}: {key}: {msg}" for key, msg in problems])
    return cfg


def _describe_errors(err: ValidationError, data: dict[str, Any]) -> list[tuple[str, str]]:
    described = []
    for e in err.errors(include_url=False):
        loc = tuple(e["loc"])
        key, model = _key_path(loc, data)
        described.append((key, _message(e, model)))
    # One message per key and text: unions report the same fault once per member.
    return list(dict.fromkeys(described))


def _candidates(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _candidates(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [c for arg in get_args(tp) for c in _candidates(arg)]
    return [tp]


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _key_path(loc: Sequence[Any], data: Any) -> tuple[str, type[BaseModel] | None]:
    """Turn pydantic's location into the key path a user sees in the file.

    Pydantic inserts the discriminator value of a tagged union (``source.plc.opcua.x``);
    that part is not in the file, so it is dropped. Returns the model the last part
    belongs to, so an unknown-key message can list the valid keys.
    """
    parts: list[str] = []
    tp: Any = GatewayConfig
    owner: type[BaseModel] | None = None
    node = data
    for part in loc:
        nxt: Any = None
        models = [c for c in _candidates(tp) if _is_model(c)]
        if models:
            owner = models[0]
        for cand in _candidates(tp):
            if _is_model(cand) and isinstance(part, str) and part in cand.model_fields:
                owner, nxt = cand, cand.model_fields[part].annotation
                break
            origin = get_origin(cand)
            if origin is dict and isinstance(part, str):
                nxt = get_args(cand)[1]
                break
            if origin in (list, tuple) and isinstance(part, int):
                nxt = get_args(cand)[0]
                break
        if nxt is None and isinstance(part, str):
            tagged = [c for c in _candidates(tp) if _is_model(c) and _tag_of(c) == part]
            if tagged:
                owner = tp = tagged[0]
                continue
        if isinstance(part, int):
            label = f"[{part}]"
            item = node[part] if isinstance(node, list) and part < len(node) else None
            if isinstance(item, dict) and isinstance(item.get("name"), str):
                label += f"({item['name']})"
            parts.append(label)
            node = item
        else:
            parts.append(("." if parts else "") + str(part))
            node = node.get(part) if isinstance(node, dict) else None
        tp = nxt
    return "".join(parts) or "(top level)", owner


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("protocol")
    if field is None or get_origin(field.annotation) is not Literal:
        return None
    value = get_args(field.annotation)[0]
    return value if isinstance(value, str) else None


def _message(e: Any, owner: type[BaseModel] | None) -> str:
    kind = e["type"]
    given = e.get("input")
    if kind == "extra_forbidden":
        valid = ", ".join(sorted(owner.model_fields)) if owner is not None else "see docs"
        return f"unknown key; valid keys here are: {valid}"
    if kind == "missing":
        return "required key is missing"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        return "protocol must be 'opcua' or 'modbus'"
    if kind == "value_error":
        return str(e["msg"]).removeprefix("Value error, ")
    if kind == "string_pattern_mismatch" and isinstance(given, str):
        pattern = e.get("ctx", {}).get("pattern", "")
        if pattern.startswith("^[a-z]"):
            return (
                f"{given!r} is not a valid name: use lower-case letters, digits and '_', "
                "starting with a letter"
            )
        return f"{given!r} does not match the expected form {pattern}"
    return f"{e['msg']} (got {given!r})"
