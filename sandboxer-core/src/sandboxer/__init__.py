"""sandboxer: disposable sandboxes from pluggable backends.

The public Python API is `sandboxer.manager.SandboxManager`; extensions
implement the hooks in `sandboxer.hookspecs`.
"""

from importlib import metadata

try:
    __version__ = metadata.version("sandboxer-core")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
