"""One exception root for the server package."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import server
from server.errors import ServerError


def test_every_exception_server_defines_has_the_one_root() -> None:
    strays = []
    for info in pkgutil.walk_packages(server.__path__, "server."):
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) \
                    and obj.__module__ == info.name and not issubclass(obj, ServerError):
                strays.append(f"{info.name}.{name}")
    assert strays == [], f"exceptions outside ServerError: {strays}"
