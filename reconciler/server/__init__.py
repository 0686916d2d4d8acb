"""The HTTP edge: ``linkctl serve`` (pages, the hosted OAuth callback, the token API, operations).

A thin edge over :mod:`reconciler.services`, beside :mod:`reconciler.cli`: ``app`` assembles
the Starlette application from the route lists of ``api`` (token API), ``pages`` (the
admin pages and callback) and ``ops`` (health, metrics); ``context`` holds what one process
shares between requests (settings, per-thread store connections, the API-key cache).
Nothing a request needs lives only in one process: keys, sessions and pending
authorizations are in the store, so any number of ``serve`` processes share one store.
"""
