# syntax=docker/dockerfile:1
#
# The vpp-stream image: one image for every dataflow and for the schema
# registry. `docker run IMAGE canonicalize` runs the `canonicalize` flow in the
# foreground (`vpp run canonicalize`); Kubernetes overrides the command for the
# registry. See deploy/README.md.

# -- builder: build the project wheel and install it with its dependencies
#    into a self-contained virtual environment ---------------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
WORKDIR /src
COPY . .
# Every dependency ships a manylinux wheel for CPython 3.11 (bytewax needs
# glibc >= 2.31; bookworm has 2.36), so no compiler or apt package is needed.
RUN /opt/venv/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/*.whl

# -- runtime: the venv, a non-root user, nothing else --------------------------
FROM python:3.11-slim-bookworm

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VPP_STATE_DIR=/tmp/vpp \
    VPP_RECOVERY_DIR=/var/lib/vpp/recovery

RUN groupadd --system --gid 10001 vpp \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin vpp \
 && install -d -o 10001 -g 10001 /var/lib/vpp/recovery

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
USER 10001:10001

# 9999: bytewax cluster traffic between processes; 3030: bytewax dataflow
# API and Prometheus /metrics (served when BYTEWAX_DATAFLOW_API_ENABLED is set).
EXPOSE 9999 3030

ENTRYPOINT ["vpp", "run"]
CMD ["--help"]
