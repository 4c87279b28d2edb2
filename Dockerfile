# syntax=docker/dockerfile:1
# Build: docker build -t tether .
# Run:   docker run --rm -p 8080:8080 -p 9901:9901 -v $PWD/config:/etc/tether:ro tether
#
# The base images are build arguments, defaulting to the official ones. CI (.ci/image)
# builds this same file against local stand-ins, having no registry to pull from.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# Dependencies first, so source edits do not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && cargo build --release --locked --bin tether \
 && rm -rf src benches
COPY src src
COPY benches benches
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked --bin tether \
 && strip target/release/tether

# glibc + CA certificates, no shell. The USER line makes uid 65532 hold whatever the
# base's own user is (distroless :nonroot has it, :latest is root).
FROM ${RUNTIME_IMAGE}
COPY --from=build /src/target/release/tether /usr/local/bin/tether
USER 65532:65532
EXPOSE 8080 9901
ENTRYPOINT ["/usr/local/bin/tether"]
CMD ["run", "--config", "/etc/tether/tether.toml"]
