# syntax=docker/dockerfile:1
# redmine-authz container image: the release binary only, on distroless, as UID 65532.
#   docker build -t redmine-authz:0.1.0 .
#   docker run --rm -e DATABASE_URL=postgres://... -p 9191:9191 -p 9090:9090 redmine-authz:0.1.0
# The binary links only glibc and libgcc (TLS is rustls, protoc is vendored), so the builder is
# the Debian 12 Rust image and the runtime distroless's Debian 12 "cc" image (same glibc).

ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# No debug info and stripped symbols in the image (the repository's release profile keeps
# line tables for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_PROFILE_RELEASE_STRIP=symbols \
    CARGO_TERM_COLOR=never
COPY . .
# BuildKit caches keep the registry and target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin redmine-authz \
 && install -D -m 0755 target/release/redmine-authz /out/redmine-authz

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="redmine-authz" \
      org.opencontainers.image.description="Envoy ext_authz gRPC service that authenticates requests the way Redmine does" \
      org.opencontainers.image.licenses="MIT"
COPY --from=build /out/redmine-authz /usr/local/bin/redmine-authz
# gRPC (Envoy's Check calls, gRPC health) and admin HTTP (/healthz, /readyz).
ENV AUTHZ_LISTEN=0.0.0.0:9191 \
    AUTHZ_ADMIN_LISTEN=0.0.0.0:9090
EXPOSE 9191 9090
# distroless's "nonroot" user; numeric so that runAsNonRoot can verify it.
USER 65532:65532
# For plain Docker; Kubernetes uses the chart's probes instead.
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/redmine-authz", "healthcheck", "--addr", "127.0.0.1:9191", "--timeout-ms", "3000"]
ENTRYPOINT ["/usr/local/bin/redmine-authz"]
CMD ["serve"]
