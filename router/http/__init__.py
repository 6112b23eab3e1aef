"""The HTTP edge: the ASGI app and its routes, authentication, the request's whole path through
the proxy (`proxy.ProxyEndpoint`), streamed-answer bookkeeping, and the listening server."""
