# syntax=docker/dockerfile:1
#
# The teamaccess operator image: `teamaccess run` in a distroless, non-root
# container. Build it from the repository root:
#
#   docker build -t ghcr.io/teamaccess/teamaccess:0.1.0 .
#
# libc choice: a glibc binary on gcr.io/distroless/cc-debian12, not a static
# musl one. kube uses rustls (ring), so no OpenSSL is needed either way, but
# musl's allocator is markedly slower under the multi-threaded,
# allocation-heavy load of a tokio runtime decoding watch streams, and fixing
# that would mean adding an allocator crate. The builder is Debian 12
# (bookworm), the same glibc (2.36) as the cc-debian12 runtime, so the binary
# links against exactly the libc it runs on.

ARG RUST_VERSION=1

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --bin teamaccess \
    && rm -rf src

# Then the crate itself. Its fingerprints are removed so that cargo cannot
# take the stub build above for an up-to-date one (COPY keeps the sources'
# modification times from the build context, which may be older than the
# stub's).
COPY src ./src
RUN rm -rf target/release/.fingerprint/teamaccess-* \
    && cargo build --release --locked --bin teamaccess \
    && cp target/release/teamaccess /teamaccess

# distroless "cc": glibc, libgcc and CA certificates, no shell, no package
# manager. The :nonroot tag runs as uid/gid 65532, which the Deployment's
# securityContext (runAsUser 65532) also requires.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="teamaccess" \
      org.opencontainers.image.description="Kubernetes operator that grants Microsoft Entra ID groups Reader, Writer or Admin access to namespaces" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /teamaccess /teamaccess
USER 65532:65532
# /metrics, /healthz, /readyz (TEAMACCESS_HTTP_ADDRESS, default 0.0.0.0:8080)
EXPOSE 8080
ENTRYPOINT ["/teamaccess"]
CMD ["run"]
