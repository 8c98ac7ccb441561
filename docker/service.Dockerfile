# syntax=docker/dockerfile:1.7
# One image per service: docker build -f docker/service.Dockerfile --build-arg PACKAGE=shop-product \
#   --build-arg BIN=shop-product -t <repo>/shop-product:<tag> .
# Multi-stage: the builder compiles one release binary; the runtime is Debian slim (glibc and zlib for
# the bundled librdkafka) running as the unprivileged UID 65532 with nothing else installed.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
ARG PACKAGE
ARG BIN
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p "${PACKAGE}" --bin "${BIN}" \
 && install -D "target/release/${BIN}" /out/app

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd -g 65532 nonroot && useradd -u 65532 -g 65532 -M -s /usr/sbin/nologin nonroot
COPY --from=build /out/app /usr/local/bin/app
USER 65532:65532
ENV SHOP_BIND=0.0.0.0
ENTRYPOINT ["/usr/local/bin/app"]
