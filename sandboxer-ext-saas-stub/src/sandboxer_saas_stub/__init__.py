"""ext.saas-stub: the reference extension; see `extension.py`."""

from importlib import metadata

try:
    __version__ = metadata.version("sandboxer-ext-saas-stub")
except metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"
