# keysvc container image: python:3.11-slim, every backend's client library, a non-root user.
#   docker build -t keysvc:0.1.0 .
#   docker run --rm -p 8080:8080 \
#     -v "$PWD/keysvc.toml:/etc/keysvc/keysvc.toml:ro" -v "$PWD/keys:/etc/keysvc/keys:ro" keysvc:0.1.0
# Key and token files must be owned by uid 10001 and not readable by group or others: keysvc
# refuses them otherwise (deploy/kubernetes/ shows how on Kubernetes).

FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md constraints.txt ./
COPY keysvc ./keysvc
RUN pip install --prefix=/install -c constraints.txt ".[all]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
# A container must listen on every interface: keysvc's default server.host, 127.0.0.1, is the
# container's own loopback, which `docker run -p` and a Kubernetes Service cannot reach. This sets
# server.host (the config's port stays); --listen HOST:PORT or --address win over it.
ENV KEYSVC_HOST=0.0.0.0
RUN groupadd --system --gid 10001 keysvc \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin keysvc
COPY --from=build /install /usr/local
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["keysvc"]
CMD ["serve", "--config", "/etc/keysvc/keysvc.toml"]
