# fleetspawn daemon image: a static-ish release build on a slim Debian base.
#   docker build -t fleetspawn .
#   docker run -v $HOME/.kube/config:/etc/fleetspawn/kubeconfig:ro \
#     -v $PWD/profiles:/etc/fleetspawn/profiles:ro -p 8080:8080 fleetspawn
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
RUN cargo build --release --locked --bin fleetspawn

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 fleetspawn
COPY --from=build /src/target/release/fleetspawn /usr/local/bin/fleetspawn
# The embedded default is for a local try-out: on 0.0.0.0 `serve` refuses its development
# token and local_user (it names both). Mount your own settings over this file, or turn
# them off with FLEETSPAWN_AUTH__TOKENS=[] and FLEETSPAWN_AUTH__LOCAL_USER="".
COPY config/fleetspawn.toml /etc/fleetspawn/fleetspawn.toml
COPY profiles /etc/fleetspawn/profiles
USER 10001
ENV FLEETSPAWN_CONFIG=/etc/fleetspawn/fleetspawn.toml \
    FLEETSPAWN_LISTEN=0.0.0.0:8080 \
    FLEETSPAWN_KUBECONFIG=/etc/fleetspawn/kubeconfig \
    FLEETSPAWN_PROFILES=/etc/fleetspawn/profiles/example.toml
EXPOSE 8080
ENTRYPOINT ["fleetspawn"]
CMD ["serve"]
