"""cacheproxy: a caching reverse proxy for slow HTTP APIs, on aiohttp."""

# The one place the version is written: pyproject.toml reads it from here.
__version__ = "0.1.0"


def runtime() -> tuple[str, str]:
    """The Python and aiohttp versions the proxy runs on, as `--version` and
    cacheproxy_build_info say them; aiohttp's from its metadata, so nothing is imported."""
    import platform
    from importlib import metadata

    return platform.python_version(), metadata.version("aiohttp")
