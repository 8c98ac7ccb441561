# syntax=docker/dockerfile:1.7
# One image per service: docker build -f docker/service.Dockerfile --build-arg PACKAGE=shop-product \
#   --build-arg BIN=shop-product -t <repo>/shop-product:<tag> .
# Multi-stage: the builder compiles one release binary; the runtime is distroless cc (glibc, libgcc_s;
# no shell) running as nonroot (65532), plus the libraries it lacks. hack/images.sh builds the same image
# without Docker; tests/e2e/tests/images.rs fails when the two recipes differ.
ARG RUST_VERSION=1.95
# Shared libraries the binary needs beyond distroless cc-debian12: zlib, linked by the bundled librdkafka
# (distroless cc-debian12 has no zlib1g). Copied from the builder, which is the same Debian release. The
# test checks this list against `ldd` of the real binary.
ARG EXTRA_LIBS="libz.so.1"
FROM rust:${RUST_VERSION}-bookworm AS build
ARG PACKAGE
ARG BIN
ARG EXTRA_LIBS
RUN apt-get update && apt-get install -y --no-install-recommends cmake && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p "${PACKAGE}" --bin "${BIN}" \
 && install -D "target/release/${BIN}" /out/app \
 && multiarch="$(gcc -print-multiarch)" \
 && for lib in ${EXTRA_LIBS}; do \
      install -D -m 0644 "/lib/${multiarch}/${lib}" "/out/libs/lib/${multiarch}/${lib}"; \
    done

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/libs/ /
COPY --from=build /out/app /usr/local/bin/app
USER 65532:65532
ENV SHOP_BIND=0.0.0.0
ENTRYPOINT ["/usr/local/bin/app"]
