"""Public modules whose names are imported on first use (PEP 562).

``fame``, :mod:`fame.errors`, :mod:`fame.lowlevel`, :mod:`fame.security`
and :mod:`fame.storage` re-export names from the private layers. Imported
eagerly, any of them loads nearly all of fame (about 120 modules, 0.15 s
and 4 MiB per process), which every process paid whatever it used: ``fame
up`` before it could start the services, the sentinel for the node's
uplink, the node for the sentinel's server. Each public module lists where
its names live instead, and :func:`exports` resolves one when it is first
looked up; it is then an ordinary attribute of the module. ``from fame
import X``, ``fame.X``, ``dir()`` and ``__all__`` are unchanged.

Type checkers see the same names through ``if TYPE_CHECKING:`` imports in
each public module.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["exports"]


def exports(
    module_name: str, names: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of the public module ``module_name``.

    ``names`` maps each lazily imported name to where it lives:
    ``"package.module"`` (the attribute of the same name),
    ``"package.module:other"`` (an attribute of another name), or
    ``"package.module:"`` (the module itself).
    """
    namespace = sys.modules[module_name].__dict__

    def __getattr__(name: str) -> Any:
        target = names.get(name)
        if target is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        source, colon, attribute = target.partition(":")
        module = importlib.import_module(source)
        value = module if colon and not attribute else getattr(module, attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__
