"""Testing helpers for extension authors.

`sandboxer.testing.contract` holds the extension contract suite: subclass
`ExtensionContract` in your own tests, provide the `extension` and
`sandbox_settings` fixtures, and pytest runs every check against your
extension. The pytest plugin (`sandboxer.testing.plugin`, loaded
automatically when sandboxer-core is installed) provides the
`sandboxer_environment` fixture that isolates data and config directories.
"""
