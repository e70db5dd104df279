"""The one place each library's private internals are touched: aiohttp's protocol and response
fields (`aiohttp_internals`), prometheus_client's multiprocess values (`prometheus_internals`),
asyncio's and uvloop's SSLProtocol (`asyncio_tls`).

The basement: imports no other proxy package, so every folder may use it. Each module checks
at import that what it reads exists in the installed version and names what does not; the
versions are pinned to the tested range in pyproject.toml (docs/development.md "Dependencies").
"""
