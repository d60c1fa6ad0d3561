# fanout worker image.
#
#   docker build -t fanout:0.1.0 .
#   docker run --rm -v "$PWD/my-config.yaml:/etc/fanout/config.yaml:ro" -p 9090:9090 fanout:0.1.0
#
# Dependencies come from deploy/requirements.lock (exact versions and hashes; see
# docs/operations.md for how to regenerate it). The config file is read from
# /etc/fanout/config.yaml (FANOUT_CONFIG); checkpoints and file dead-letter queues belong on a
# volume at /var/lib/fanout.

# ---------------------------------------------------------------------------- build
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/fanout
COPY deploy/requirements.lock /tmp/requirements.lock
RUN /opt/fanout/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock

WORKDIR /src
COPY pyproject.toml README.md ./
COPY fanout ./fanout
COPY sinks ./sinks
RUN /opt/fanout/bin/pip install --no-deps . \
    && /opt/fanout/bin/pip check

# ---------------------------------------------------------------------------- runtime
FROM python:3.11-slim

LABEL org.opencontainers.image.title="fanout" \
      org.opencontainers.image.description="Read DynamoDB Streams once, fan every change out to many sinks." \
      org.opencontainers.image.licenses="Apache-2.0"

RUN groupadd --system --gid 10001 fanout \
    && useradd --system --uid 10001 --gid fanout --home-dir /var/lib/fanout --shell /usr/sbin/nologin fanout \
    && mkdir -p /etc/fanout /var/lib/fanout \
    && chown fanout:fanout /var/lib/fanout

COPY --from=build /opt/fanout /opt/fanout

ENV PATH=/opt/fanout/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FANOUT_CONFIG=/etc/fanout/config.yaml

USER 10001:10001
WORKDIR /var/lib/fanout
VOLUME ["/var/lib/fanout"]
EXPOSE 9090

# Liveness: the event loop answers /healthz (port 9090 is http.port's default).
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9090/healthz', timeout=4)"]

ENTRYPOINT ["fanout"]
CMD ["run"]
