# syntax=docker/dockerfile:1.7
# The operator image: docker build -f docker/operator.Dockerfile -t <repo>/shop-operator:<tag> .
# Pure Rust (rustls), so the runtime is distroless cc (glibc and libgcc_s are all it links; no shell),
# running as nonroot (65532). hack/images.sh builds the same image without Docker;
# tests/e2e/tests/images.rs fails when the two recipes differ.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p shop-operator --bin shop-operator \
 && install -D target/release/shop-operator /out/shop-operator

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/shop-operator /usr/local/bin/shop-operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/shop-operator"]
CMD ["run"]
