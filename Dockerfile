# syntax=docker/dockerfile:1
#
# The teamaccess operator image: `teamaccess run`, a statically linked binary
# alone on `scratch`, non-root. Build it from the repository root:
#
#   docker build -t ghcr.io/teamaccess/teamaccess:0.1.0 .
#
# Static glibc, not musl and not a distroless base: TLS is rustls (ring), so
# the binary needs no shared library at all, and musl's allocator is markedly
# slower under a tokio runtime decoding watch streams (fixing that would mean
# an allocator crate). With nothing to link at run time, the runtime stage
# needs no base image, so `make image-test` (hack/image-test.sh) can build and
# run this very recipe on machines that cannot pull images: Containerfile.local
# has the same runtime stage, byte for byte (tests/image.rs keeps them equal),
# and takes the binary and CA bundle from its build context instead of the
# builder stage.

ARG RUST_VERSION=1

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build
# crt-static links glibc statically. The explicit --target keeps RUSTFLAGS
# off build scripts and proc-macro crates, which must stay dynamic host
# libraries to be loaded by rustc.
ENV RUSTFLAGS="-C target-feature=+crt-static"
ARG TARGET=x86_64-unknown-linux-gnu

# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every source change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked --target "$TARGET" --bin teamaccess \
    && rm -rf src

# Then the crate itself. Its fingerprints are removed so that cargo cannot
# take the stub build above for an up-to-date one (COPY keeps the sources'
# modification times from the build context, which may be older than the
# stub's).
COPY src ./src
RUN rm -rf target/"$TARGET"/release/.fingerprint/teamaccess-* \
    && cargo build --release --locked --target "$TARGET" --bin teamaccess \
    && mkdir /out \
    && cp target/"$TARGET"/release/teamaccess /out/teamaccess \
    && cp /etc/ssl/certs/ca-certificates.crt /out/ca-certificates.crt

# What the runtime stage takes: the binary and Debian's CA bundle.
FROM scratch AS artifacts
COPY --from=builder /out/ /out/

# ---- runtime stage: identical in Dockerfile and Containerfile.local ----
# No shell, no package manager, no libc to load: the binary, CA certificates
# (for any TLS server whose CA is not given explicitly) and a passwd/group
# naming uid/gid 65532, which the Deployment's securityContext requires.
FROM scratch AS runtime
LABEL org.opencontainers.image.title="teamaccess" \
      org.opencontainers.image.description="Kubernetes operator that grants Microsoft Entra ID groups Reader, Writer or Admin access to namespaces" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY image/rootfs/ /
COPY --from=artifacts /out/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=artifacts /out/teamaccess /teamaccess
USER 65532:65532
# /metrics, /healthz, /readyz (TEAMACCESS_HTTP_ADDRESS, default 0.0.0.0:8080)
EXPOSE 8080
ENTRYPOINT ["/teamaccess"]
CMD ["run"]
