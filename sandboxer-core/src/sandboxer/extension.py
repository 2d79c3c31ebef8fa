"""`SandboxExtension`: an optional base class for writing an extension.

Subclass it, set `id`, `version` and `capabilities`, and define methods named
after the hooks in `sandboxer.hookspecs` (without `self` they take the same
arguments). Every `sandboxer_*` method of a subclass is marked as a hookimpl
automatically, so an instance is a complete pluggy plugin::

    class MyExtension(SandboxExtension):
        id = "ext.mine"
        version = "1.0"
        capabilities = ("exec",)

        def sandboxer_provision(self, sandbox): ...

Expose an instance through the `sandboxer` entry-point group under its id.
Module-level `@hookimpl` functions work just as well; this class only saves
the boilerplate of `sandboxer_describe`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from sandboxer.hookspecs import API_VERSION, PROJECT_NAME, hookimpl
from sandboxer.models import ExtensionInfo

_IMPL_ATTRIBUTE = f"{PROJECT_NAME}_impl"


class SandboxExtension:
    """Base class whose `sandboxer_*` methods become hook implementations."""

    id: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    capabilities: ClassVar[tuple[str, ...]] = ()
    description: ClassVar[str] = ""
    api_version: ClassVar[int] = API_VERSION

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for name, value in list(vars(cls).items()):
            if (
                name.startswith("sandboxer_")
                and callable(value)
                and not hasattr(value, _IMPL_ATTRIBUTE)
            ):
                setattr(cls, name, hookimpl(value))

    @hookimpl
    def sandboxer_describe(self) -> ExtensionInfo:
        return ExtensionInfo(
            id=self.id,
            version=self.version,
            capabilities=tuple(self.capabilities),
            api_version=self.api_version,
            description=self.description,
        )
