"""sandboxer: disposable sandboxes from pluggable backends.

The public Python API is `sandboxer.manager.SandboxManager`; extensions
implement the hooks in `sandboxer.hookspecs`.
"""

import logging
from importlib import metadata

# A library logs, it does not print: without a handler configured by the
# application, nothing reaches stderr (the CLI's -v turns logging on).
logging.getLogger(__name__).addHandler(logging.NullHandler())

try:
    __version__ = metadata.version("sandboxer-core")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
