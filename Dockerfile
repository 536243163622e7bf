# piston_vm service image: multi-stage, non-root. Production points it at Apache CouchDB 3.x
# with PISTON_VM_COUCHDB_URL; the bundled dev server is not part of this image.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY piston_vm ./piston_vm
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /app piston
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
# Design documents and schemas are data the service loads at startup.
COPY couchdb/account ./couchdb/account
COPY couchdb/accounts ./couchdb/accounts
COPY couchdb/modb ./couchdb/modb
COPY couchdb/events ./couchdb/events
COPY schemas ./schemas
ENV PISTON_VM_COUCHDB_DIR=/app/couchdb \
    PISTON_VM_SCHEMAS_DIR=/app/schemas \
    PISTON_VM_HOST=0.0.0.0 \
    PISTON_VM_PORT=8000
USER piston
EXPOSE 8000
# Liveness (docs/operations.md, "Probes"); load balancers should probe /readyz instead.
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["piston-vm"]
CMD ["serve"]
