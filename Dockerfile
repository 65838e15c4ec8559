# syntax=docker/dockerfile:1
# The ddbcdc worker as a container image (docs/deployment.md says how to run it).
#
# The build stage makes the sdist and the wheel of this checkout (C speedups compiled) and
# turns every dependency into a wheel; amazon-kclpy's build downloads the KCL jars from Maven
# Central. The image installs ddbcdc from those wheels alone, into a slim Python with Debian's
# Java 17 runtime. `make package-check` runs the same build and install steps in CI.

FROM python:3.11-slim-bookworm AS wheels
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir build \
 && python -m build --outdir /dist . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /dist/ddbcdc-*.whl

FROM python:3.11-slim-bookworm
# The JRE's post-install step links man pages, which slim images leave out.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*
RUN --mount=type=bind,from=wheels,source=/wheels,target=/wheels \
    python -m venv /opt/ddbcdc \
 && /opt/ddbcdc/bin/pip install --no-cache-dir --no-index --find-links /wheels ddbcdc
# DDBCDC_SOURCE=dynamodb-streams: the DynamoDB Streams adapter jar (from Maven Central,
# SHA-256 checked) and the compiled launcher, ready in the image rather than fetched at start.
ENV DDBCDC_CACHE_DIR=/opt/ddbcdc/cache
RUN /opt/ddbcdc/bin/ddbcdc worker --prepare
# The shipped example mapping; mount your mappings over it.
COPY schemas/tables/ /etc/ddbcdc/tables/
RUN useradd --system --create-home --home-dir /var/lib/ddbcdc ddbcdc
USER ddbcdc
WORKDIR /var/lib/ddbcdc
ENV PATH=/opt/ddbcdc/bin:$PATH \
    DDBCDC_MAPPINGS_DIR=/etc/ddbcdc/tables \
    DDBCDC_METRICS_HOST=0.0.0.0
EXPOSE 9108
ENTRYPOINT ["ddbcdc"]
CMD ["worker"]
