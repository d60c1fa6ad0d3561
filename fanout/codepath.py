"""Importing user code the way Lambda does: from a task root that comes first on ``sys.path``.

A handler's ``code_path`` (by default the config file's directory) plays the part of Lambda's
``/var/task``: the directory that holds the handler's package and, installed next to it with
``pip install --target``, its dependencies. It is put first on ``sys.path`` before the
handler's module is imported, so ``handlers.badges:award`` is found in
``<code_path>/handlers/badges.py`` whatever the working directory, with no ``PYTHONPATH``.

One process imports each module once. Two handler sinks whose code paths hold different
modules of the same name cannot both be imported; that is reported instead of silently
calling the wrong one.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType

from fanout.errors import ConfigError


def add_to_sys_path(code_path: str | Path) -> str:
    """Put ``code_path`` (made absolute) first on ``sys.path``, once; returns it."""
    entry = str(Path(code_path).resolve())
    if entry not in sys.path:
        sys.path.insert(0, entry)
        importlib.invalidate_caches()
    return entry


def _origin(module: ModuleType) -> Path | None:
    file = getattr(module, "__file__", None)
    if file:
        return Path(file).resolve()
    locations = getattr(module, "__path__", None)
    for location in locations or ():
        return Path(location).resolve()
    return None


def import_module(name: str, code_path: str | Path | None, path: str = "handler") -> ModuleType:
    """Import module ``name``, looking in ``code_path`` first.

    Raises:
        ConfigError: naming ``path``, when the module cannot be imported, or when its top-level
            package lives in ``code_path`` but was already imported from somewhere else.
    """
    root = Path(add_to_sys_path(code_path)) if code_path is not None else None
    if root is not None and not root.is_dir():
        raise ConfigError(path, f"code_path {str(root)!r} is not a directory")
    try:
        module = importlib.import_module(name)
    except Exception as exc:
        where = f" (code_path {str(root)!r})" if root is not None else ""
        raise ConfigError(path, f"cannot import module {name!r}{where}: {exc}") from exc
    if root is not None:
        top = name.partition(".")[0]
        local = root / top
        if local.is_dir() or local.with_suffix(".py").is_file():
            origin = _origin(sys.modules[top])
            if origin is not None and not origin.is_relative_to(root):
                raise ConfigError(
                    path,
                    f"module {top!r} was already imported from {origin}, not from code_path "
                    f"{str(root)!r}: handlers with different code paths need distinct "
                    "top-level module names",
                )
    return module
