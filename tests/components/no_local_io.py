"""A stray local file call on a URI must fail, not quietly work.

`os.makedirs("gs://b/x")` or `open("ram://m/f")` silently create `./gs:/b/x` or `./ram:/m/f`
in the working directory. `forbid_local_io()` arms a process-wide audit hook (audit hooks
cannot be removed, so it is installed once and armed per test) that raises on every `open`,
`os.*` or `shutil.*` event whose path has a scheme, and checks afterwards that no `gs:` or
`ram:` folder appeared in the working directory.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

_armed: list[bool] = []
_SCHEMES = ("gs:", "ram:", "s3:")


class LocalIOOnURI(AssertionError):
    """A local file-system call was made on a path with a scheme."""


def _has_scheme(value: object) -> bool:
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    return isinstance(value, str) and ("://" in value or value.startswith(_SCHEMES))


def _hook(event: str, args: tuple) -> None:
    if not _armed or not (event == "open" or event.startswith(("os.", "shutil."))):
        return
    if any(_has_scheme(arg) for arg in args):
        raise LocalIOOnURI(f"{event}{args!r}: a local file call on a URI")


def _install() -> None:
    if not getattr(sys, "_tfx_image_no_local_io", False):
        sys.addaudithook(_hook)
        sys._tfx_image_no_local_io = True


def arm_for_process() -> None:
    """Armed for the rest of this process (a whole pipeline run: see
    tests/pipeline/no_local_io_hook/sitecustomize.py)."""
    _install()
    _armed.append(True)


def stray_folders(root: str) -> list[str]:
    """Folders under root named like a scheme (`gs:`, `ram:`): what a local call on a URI
    leaves behind (os.makedirs("gs://b/x") creates ./gs:/b/x)."""
    return [
        os.path.join(folder, name)
        for folder, names, _ in os.walk(root)
        for name in names
        if name in _SCHEMES
    ]


@contextlib.contextmanager
def forbid_local_io() -> Iterator[None]:
    _install()
    _armed.append(True)
    try:
        yield
    finally:
        _armed.pop()
    strays = [name for name in os.listdir(".") if name.rstrip(":") + ":" in _SCHEMES]
    assert not strays, f"local folders named like a scheme appeared: {strays}"
