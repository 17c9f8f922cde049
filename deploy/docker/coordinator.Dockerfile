# The coordinator image: `coord` on distroless (glibc, CA certificates, a nonroot user; no shell, no
# package manager). Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t tracefleet/coordinator:0.1.0 .
# The toolchain matches rust-toolchain.toml; --locked builds exactly Cargo.lock.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin coord \
 && strip target/release/coord

FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/coord /usr/local/bin/coord
# distroless' nonroot user; the data dir is a mounted volume (StatefulSet) owned through fsGroup.
USER 65532:65532
EXPOSE 50051 50052 9464
ENTRYPOINT ["/usr/local/bin/coord"]
CMD ["serve", "--help"]
