"""What a network client may point the server at: only model directories under its roots.

TF Serving's ModelService.HandleReloadConfigRequest lets any gRPC client replace the served
models with a config naming any absolute base_path: with it, a client could make the server
list and load any directory the process can read (a SavedModel can read and write files
when it runs). Here a reload over the network may only name base paths inside the server's
model roots: --model-base-path, or the folders holding the startup config's models. Paths are
compared after resolving `..` and symlinks, so neither reaches outside. The operator's own
files (--model_config_file and its polled re-reads) are not restricted.

Request-supplied model names and version labels never reach the file system: they are looked
up among the models and labels the server already has (models.ModelRegistry.resolve).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from serving import errors


def real(path: str) -> str:
    return os.path.realpath(os.path.abspath(path))


def within(path: str, roots: Iterable[str]) -> bool:
    """Whether `path` (resolved) is one of `roots` (resolved) or below one."""
    resolved = real(path)
    for root in roots:
        root = real(root)
        if os.path.commonpath([resolved, root]) == root:
            return True
    return False


def roots_for(base_path: str, source_paths: Iterable[str]) -> tuple[str, ...]:
    """The model roots: the base path, else each startup model's parent folder."""
    if base_path:
        return (real(base_path),)
    return tuple(sorted({os.path.dirname(real(p)) for p in source_paths if "://" not in p}))


def check_sources(sources, roots: tuple[str, ...]) -> None:
    """PERMISSION_DENIED for a model whose base_path lies outside `roots`."""
    for source in sources:
        if "://" in source.base_path or not within(source.base_path, roots):
            raise errors.ServingError(
                errors.Code.PERMISSION_DENIED,
                f"Model {source.name}: base_path {source.base_path} is outside the server's "
                f"model roots ({', '.join(roots) or 'none'}); a reload request may only name "
                "model directories there",
            )
