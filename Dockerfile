# kycq worker image: `docker build -t kycq .` then `docker run kycq worker` (see docker-compose.yml).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY migrations migrations
COPY config config
RUN cargo build --release --locked --bin kycq

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 kycq
COPY --from=build /src/target/release/kycq /usr/local/bin/kycq
COPY config /etc/kycq
ENV KYCQ_CONFIG_DIR=/etc/kycq
USER kycq
ENTRYPOINT ["kycq"]
CMD ["worker"]
