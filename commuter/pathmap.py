"""Path translation between machines: longest-prefix maps at path-segment boundaries."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from commuter.errors import BackendError


def _norm(path: str) -> str:
    return path.rstrip("/") or "/"


def under(path: str, prefix: str) -> bool:
    """True if `path` is `prefix` or lies below it (segment boundary, not a string prefix)."""
    prefix = _norm(prefix)
    if prefix == "/":
        return path.startswith("/")
    return path == prefix or path.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class PathMap:
    """Ordered (source prefix, target prefix) pairs; the longest matching source wins."""

    pairs: tuple[tuple[str, str], ...]

    @classmethod
    def of(cls, pairs: Iterable[tuple[str, str]]) -> PathMap:
        """Build a map, dropping identities and keeping the first pair for each source."""
        seen: dict[str, str] = {}
        for src, dst in pairs:
            src, dst = _norm(src), _norm(dst)
            if src != dst and src not in seen:
                seen[src] = dst
        ordered = sorted(seen.items(), key=lambda p: len(p[0]), reverse=True)
        return cls(tuple(ordered))

    @classmethod
    def from_config(cls, maps: Iterable[tuple[str, str]]) -> PathMap:
        """Config maps apply both ways: A→B and B→A."""
        pairs: list[tuple[str, str]] = []
        for a, b in maps:
            pairs += [(a, b), (b, a)]
        return cls.of(pairs)

    def translate(self, path: str) -> str | None:
        """The translated path, or None when no prefix matches."""
        for src, dst in self.pairs:
            if under(path, src):
                rest = path[len(src) :] if src != "/" else path[1:]
                if src == "/" and rest:
                    rest = "/" + rest
                return dst + rest if dst != "/" else (rest or "/")
        return None

    def apply(self, path: str) -> str:
        """Translate `path`, or return it unchanged."""
        out = self.translate(path)
        return path if out is None else out

    def sources(self) -> tuple[str, ...]:
        return tuple(src for src, _ in self.pairs)


def resolve_target_project(
    source: str,
    *,
    override: Path | None,
    config_maps: Iterable[tuple[str, str]],
    cwd: Path,
    git: dict[str, Any] | None,
) -> Path:
    """Pick the local project dir for a session made in `source` (see docs/architecture.md)."""
    import os

    if override is not None:
        target = Path(os.path.realpath(override.expanduser()))
        if not target.is_dir():
            raise BackendError(f"--project-dir {override} is not a directory")
        return target
    mapped = PathMap.from_config(config_maps).translate(source)
    if mapped is not None:
        if Path(mapped).is_dir():
            return Path(os.path.realpath(mapped))
        if Path(source).is_dir():  # a bundle made here (a restore): the path is already local
            return Path(os.path.realpath(source))
        raise BackendError(
            f"path-map turns {source} into {mapped}, which does not exist here; "
            "create it or pass --project-dir DIR"
        )
    if git:
        from commuter import gitstate

        guess = gitstate.same_repo_target(git, cwd)
        if guess is not None:
            return guess
    if Path(source).is_dir():
        return Path(os.path.realpath(source))
    raise BackendError(
        f"project {source} does not exist here; pass --project-dir DIR "
        "or run `commuter config set path-map SOURCE_PREFIX LOCAL_PREFIX`"
    )
