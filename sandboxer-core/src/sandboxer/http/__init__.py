"""The HTTP API (`sandboxer serve`): the manager's operations under /v1.

`create_app(manager, token=None)` builds the starlette application. The
modules, from the outside in: `app` (assembly, authentication), `routes`
(one handler per operation), `endpoints` (how routes are declared),
`schemas` (request and response bodies), `parsing` (requests into those),
`streams` (bytes between the event loop and blocking calls), `errors` (the
one error-to-response mapping) and `openapi` (the document, generated from
the routes). docs/http-api.md is the user's guide;
`sandboxer.client.SandboxerClient` is the Python client.
"""

from sandboxer.http.app import create_app

__all__ = ["create_app"]
