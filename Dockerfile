# Build: cargo in a full Rust image (cmake for the bundled Paho MQTT C library).
FROM rust:1-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY crates crates
COPY src src
COPY templates templates
COPY static static
COPY migrations migrations
RUN cargo build --release --locked && strip target/release/coinpulse

# Run: a small Debian with only what the binary links against. /mosquitto-config belongs
# to Mosquitto's uid (1883): docker-compose.yml's mosquitto-config service runs as it and
# writes there, and a new volume takes the directory's owner.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libssl3 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home /data --uid 10001 coinpulse \
    && mkdir -p /data /mosquitto-config && chown coinpulse /data \
    && chown 1883:1883 /mosquitto-config
COPY --from=build /src/target/release/coinpulse /usr/local/bin/coinpulse
USER 10001
WORKDIR /data
ENV BIND=0.0.0.0:8080 \
    DATABASE_URL=sqlite:///data/coinpulse.db \
    MQTT_LISTEN=0.0.0.0:1883
VOLUME ["/data"]
EXPOSE 8080 1883
# Liveness: the process answers. Load balancers should use /ready (database and broker up).
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/status"]
ENTRYPOINT ["coinpulse"]
CMD ["serve"]
