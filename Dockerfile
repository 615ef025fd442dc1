# flagpost container image: built in a Rust image, run from a minimal distroless one as a
# non-root user. `docker build -t flagpost .`
FROM rust:1-slim-bookworm AS build
WORKDIR /src
# make: jemalloc, flagpost's allocator, is built from C sources.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends make \
    && rm -rf /var/lib/apt/lists/*
COPY .cargo ./.cargo
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin flagpost

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/flagpost /usr/local/bin/flagpost
# Where Unleash Edge's image keeps its binary, for probes and commands that name that path
# (`/app/unleash-edge health`).
COPY --from=build /src/target/release/flagpost /app/unleash-edge
# Configure with environment variables (UPSTREAM_URL, TOKENS, ...) or mount a config.toml and
# pass --config. 3063: HTTP; 3043: HTTPS when TLS_ENABLE=true.
ENV INTERFACE=0.0.0.0 \
    PORT=3063 \
    LOG_FORMAT=json
EXPOSE 3063 3043
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s CMD ["/usr/local/bin/flagpost", "health"]
ENTRYPOINT ["/usr/local/bin/flagpost"]
CMD ["edge"]
