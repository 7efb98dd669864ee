"""The user's commuter configuration: a small JSON file written atomically."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from commuter.errors import ConfigError
from commuter.fsutil import atomic_write_text
from commuter.settings import Settings

KEYS = (
    "path-map",
    "transfer-dir",
    "relay",
    "name",
    "backups-keep",
    "backups-max-mb",
    "plain-max-age-days",
)
# Counts and sizes (`config set backups-keep 2`): positive integers; None means the default.
NUMBERS = {"backups-keep": "backups_keep", "backups-max-mb": "backups_max_mb"}
NUMBERS["plain-max-age-days"] = "plain_max_age_days"


@dataclass(slots=True)
class Config:
    """Values of `commuter config`; `path_maps` holds (A, B) pairs, both directions apply."""

    path_maps: list[tuple[str, str]] = field(default_factory=list)
    transfer_dir: Path | None = None
    relay: str | None = None
    name: str | None = None
    backups_keep: int | None = None
    backups_max_mb: int | None = None
    plain_max_age_days: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.path_maps:
            data["path-map"] = [list(p) for p in self.path_maps]
        if self.transfer_dir is not None:
            data["transfer-dir"] = str(self.transfer_dir)
        if self.relay:
            data["relay"] = self.relay
        if self.name:
            data["name"] = self.name
        for key, attr in NUMBERS.items():
            if getattr(self, attr) is not None:
                data[key] = getattr(self, attr)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Config:
        maps = data.get("path-map") or data.get("path-maps") or []
        td = data.get("transfer-dir")
        return cls(
            path_maps=[(str(a), str(b)) for a, b in maps],
            transfer_dir=Path(td) if td else None,
            relay=data.get("relay"),
            name=data.get("name"),
            **{attr: _number(data.get(key)) for key, attr in NUMBERS.items()},
        )


def _number(value: object) -> int | None:
    """A positive integer from the file, else None (the default applies)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def load(settings: Settings) -> Config:
    """Read the config file; a missing file is an empty config."""
    path = settings.config_file
    try:
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Config()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return Config.from_json(data)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path} is not valid commuter config ({exc})") from exc


def save(settings: Settings, config: Config) -> None:
    """Write the config file atomically."""
    atomic_write_text(settings.config_file, json.dumps(config.to_json(), indent=2) + "\n")


def set_value(settings: Settings, key: str, values: tuple[str, ...]) -> Config:
    """Apply `commuter config set KEY VALUE...` and save."""
    config = load(settings)
    if key == "path-map":
        if len(values) != 2:
            raise ConfigError("path-map needs two paths: config set path-map A B")
        a, b = (_norm_path(v) for v in values)
        config.path_maps = [p for p in config.path_maps if p[0] != a] + [(a, b)]
    elif len(values) != 1:
        raise ConfigError(f"{key} takes one value")
    elif key == "transfer-dir":
        config.transfer_dir = Path(values[0]).expanduser().resolve()
    elif key == "relay":
        url = values[0].rstrip("/")
        if not url.startswith(("http://", "https://")):
            raise ConfigError("relay must be an http:// or https:// URL")
        config.relay = url
    elif key == "name":
        name = values[0].strip()
        if not name or len(name) > 64 or any(c in name for c in "\n\r\t/\\"):
            raise ConfigError("name must be 1-64 printable characters without slashes")
        config.name = name
    elif key in NUMBERS:
        text = values[0].strip()
        if not text.isdigit() or not 0 < int(text) < 10**9:
            raise ConfigError(f"{key} must be a positive whole number, got {text[:20]!r}")
        setattr(config, NUMBERS[key], int(text))
    else:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
    save(settings, config)
    return config


def unset_value(settings: Settings, key: str) -> Config:
    """Apply `commuter config unset KEY` and save."""
    config = load(settings)
    if key == "path-map":
        config.path_maps = []
    elif key == "transfer-dir":
        config.transfer_dir = None
    elif key == "relay":
        config.relay = None
    elif key == "name":
        config.name = None
    elif key in NUMBERS:
        setattr(config, NUMBERS[key], None)
    else:
        raise ConfigError(f"unknown key {key!r} (known: {', '.join(KEYS)})")
    save(settings, config)
    return config


def _norm_path(value: str) -> str:
    text = str(Path(value).expanduser())
    if not text.startswith("/"):
        raise ConfigError(f"path-map needs absolute paths, got {value!r}")
    return text.rstrip("/") or "/"
