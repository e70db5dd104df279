# cacheproxy: a caching reverse proxy, as a container. docs/deployment.md "Containers" says how to run it.
#   docker build -t cacheproxy .
#   docker run -e CACHEPROXY_ADMIN__TOKEN=... -e CACHEPROXY_UPSTREAM__URL=http://api:8000 \
#       -p 8080:8080 cacheproxy
ARG BASE=python:3.12-slim

# --- build: the locked dependencies and the project, installed into a venv -------------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
# Exactly the versions in requirements.lock, and the build backend in requirements-build.lock,
# each checked against its hash (bash scripts/lock.sh writes them): this layer survives changes
# to the code.
COPY requirements.lock requirements-build.lock ./
RUN python3 -m venv /opt/cacheproxy \
    && /opt/cacheproxy/bin/pip install --require-hashes \
        -r requirements.lock -r requirements-build.lock
COPY pyproject.toml README.md ./
COPY proxy ./proxy
# The project alone, nothing more resolved, built by the locked setuptools (no isolated build
# fetching its own); pip check: the lock is within pyproject's ranges. Then the build tools go.
RUN /opt/cacheproxy/bin/pip install --no-deps --no-build-isolation . \
    && /opt/cacheproxy/bin/pip check \
    && /opt/cacheproxy/bin/pip uninstall --yes setuptools pip

# --- run: the same base, the venv, a neutral config; no build tools, no root -----------------
FROM ${BASE}
ARG UID=10001
RUN useradd --system --uid ${UID} --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cacheproxy
COPY --from=build /opt/cacheproxy /opt/cacheproxy
# Caching on, everything else opt-in. Both listeners face the network (the admin one for the
# health check and a Prometheus scraper), so the proxy refuses to start without an admin
# token (CACHEPROXY_ADMIN__TOKEN). Any key can be set with a CACHEPROXY_* variable.
COPY deploy/image/config.yaml /etc/cacheproxy/config.yaml
ENV PATH=/opt/cacheproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER cacheproxy
EXPOSE 8080 9901
# /readyz needs no token and is the proxy's own state, not the API's: an API outage must not
# take away a proxy that can serve stale answers. 503 from SIGTERM on (shutdown_delay).
# CACHEPROXY_ADMIN__PORT moves the admin port, whatever the config file says: the check follows.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('CACHEPROXY_ADMIN__PORT', '9901'), timeout=4)"]
ENTRYPOINT ["cacheproxy"]
CMD ["run", "--config", "/etc/cacheproxy/config.yaml"]
