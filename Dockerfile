# syntax=docker/dockerfile:1
# call-outcome image: build with the Rust toolchain, run from distroless as non-root.
#   docker build -t ghcr.io/call-outcome/call-outcome:0.1.0 .
# The Helm chart (helm/call-outcome) runs this image by default, with the tag of its
# appVersion; it mounts config.toml and policy.toml at /etc/call-outcome.

# ---- build ---------------------------------------------------------------------------
# Pinned to the toolchain the project's tests run with (rustc 1.95; Cargo.toml's
# rust-version is 1.89); bookworm matches the runtime's glibc (distroless cc-debian12).
FROM rust:1.95-bookworm AS build
WORKDIR /src
# Dependencies first, cached while only the sources change: a placeholder crate with the
# real manifest and lock file (build.rs and proto/ are needed by the dependency build).
COPY Cargo.toml Cargo.lock build.rs ./
# The build's flags (Tokio's unstable API for one runtime setting).
COPY .cargo ./.cargo
COPY proto ./proto
RUN mkdir -p src/policy \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src
# The real sources; touch so cargo rebuilds the crate, not the cached placeholder.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -D -m 0755 target/release/call-outcome /out/call-outcome \
 && mkdir -p /out/etc/call-outcome \
 && cp src/policy/default.toml /out/etc/call-outcome/policy.toml \
 && printf '%s\n' \
      '# Image default: listen on all interfaces, JSON logs, the built-in policy as a file.' \
      'listen = "0.0.0.0:50051"' \
      'policy_file = "policy.toml"' \
      '[log]' \
      'format = "json"' \
      > /out/etc/call-outcome/config.toml

# ---- run -----------------------------------------------------------------------------
# Distroless "cc": glibc, libgcc, CA certificates, no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="call-outcome" \
      org.opencontainers.image.description="Classifies SIP call outcomes and streams decline events (gRPC)" \
      org.opencontainers.image.source="https://github.com/call-outcome/call-outcome" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/call-outcome /call-outcome
# A minimal config.toml and the built-in policy, so `docker run IMAGE` serves on
# 0.0.0.0:50051; the chart mounts its own config.toml and policy.toml over them.
# Owned by root, world-readable: the service cannot change its own config.
COPY --from=build /out/etc/call-outcome /etc/call-outcome
# nonroot = 65532:65532; numeric so runAsNonRoot can verify it.
USER 65532:65532
# 50051: gRPC API; 9090: admin (metrics, health) once the admin listener lands.
EXPOSE 50051 9090
ENTRYPOINT ["/call-outcome"]
CMD ["serve", "--config", "/etc/call-outcome/config.toml"]
