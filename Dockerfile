# cacheproxy: a caching reverse proxy, as a container. README "Containers" says how to run it.
#   docker build -t cacheproxy .
#   docker run -e ADMIN_TOKEN=... -e UPSTREAM_URL=http://api:8000 -p 8080:8080 cacheproxy
ARG BASE=python:3.12-slim

# --- build: wheels for the project and its dependencies, installed into a venv ---------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
# Dependencies first, from pyproject.toml alone: this layer survives changes to the code.
RUN mkdir proxy && touch proxy/__init__.py \
    && python3 -m pip wheel --wheel-dir /wheels '.[uvloop]' \
    && rm -rf proxy build /wheels/cacheproxy-*.whl
COPY proxy ./proxy
RUN python3 -m pip wheel --no-deps --wheel-dir /wheels . \
    && python3 -m venv /opt/cacheproxy \
    && /opt/cacheproxy/bin/pip install --no-index --find-links /wheels 'cacheproxy[uvloop]' \
    && /opt/cacheproxy/bin/pip uninstall --yes pip

# --- run: the same base, the venv, the example config; no build tools, no root ---------------
FROM ${BASE}
ARG UID=10001
RUN useradd --system --uid ${UID} --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin cacheproxy
COPY --from=build /opt/cacheproxy /opt/cacheproxy
COPY config.yaml /etc/cacheproxy/config.yaml
# Inside a container both listeners face the pod/network: the admin one for the health check
# and a Prometheus scraper. config.yaml reads these; a non-loopback admin host makes the
# proxy refuse to start without ADMIN_TOKEN (or admin.allow_insecure), so security holds.
ENV PATH=/opt/cacheproxy/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CACHEPROXY_LISTEN_HOST=0.0.0.0 \
    CACHEPROXY_ADMIN_HOST=0.0.0.0
USER cacheproxy
EXPOSE 8080 9901
# /health needs no token; 503 (upstream gone) or no answer makes the container unhealthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('CACHEPROXY_ADMIN_PORT', '9901'), timeout=4)"]
ENTRYPOINT ["cacheproxy"]
CMD ["run", "--config", "/etc/cacheproxy/config.yaml"]
