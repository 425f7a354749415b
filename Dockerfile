# Builds the sluice server image used by docker-compose.yml.
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends libclang-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --bin sluice

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates libstdc++6 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/sluice /usr/local/bin/sluice
COPY sql /sql
VOLUME /data
EXPOSE 5433 8088
ENTRYPOINT ["sluice", "serve", "--data-dir", "/data", "--pg-addr", "0.0.0.0:5433", "--http-addr", "0.0.0.0:8088"]
