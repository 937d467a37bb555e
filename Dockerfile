# syntax=docker/dockerfile:1
# One image for the control plane, its workers, the per-session proxy and the sandbox
# launcher; the command picks the part (`metrux control serve`, `metrux proxy run`, …).
#   docker build -t metrux .                        (needs a Docker engine)
#   docker build --target egress-lock -t metrux-egress-lock .

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/metrux
WORKDIR /src
# Dependencies exactly as locked, each file checked against its hash (scripts/lock).
COPY requirements/runtime.lock requirements/runtime.lock
RUN /opt/metrux/bin/pip install --require-hashes --no-deps -r requirements/runtime.lock
COPY pyproject.toml README.md ./
COPY core core
COPY control control
COPY proxy proxy
COPY sandbox sandbox
# A regular (not editable) install: the runtime stage copies only the virtualenv.
RUN /opt/metrux/bin/pip install --no-deps . && /opt/metrux/bin/pip check

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 metrux \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/metrux --create-home metrux
COPY --from=build /opt/metrux /opt/metrux
ENV PATH=/opt/metrux/bin:$PATH \
    METRUX_DATA_DIR=/var/lib/metrux \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/metrux
EXPOSE 8700
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8700/healthz', timeout=2)"]
ENTRYPOINT ["metrux"]
CMD ["control", "serve", "--host", "0.0.0.0", "--port", "8700"]

# The sandbox pod's init container: it lets only the proxy's user leave the pod, so the
# candidate's workload reaches nothing but the proxy on loopback (deploy/README.md).
FROM debian:bookworm-slim AS egress-lock
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/*
COPY deploy/egress-lock.sh /usr/local/bin/egress-lock
ENTRYPOINT ["/usr/local/bin/egress-lock"]
