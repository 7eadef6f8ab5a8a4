# syntax=docker/dockerfile:1
# tokenbroker (default target) and the development IdP (target devidp):
# static binaries on distroless, running as a non-root user.
#   make image                          (version, commit and date from git)
#   docker build -t tokenbroker .
#   docker build --target devidp -t tokenbroker-devidp .
#   docker buildx build --platform linux/amd64,linux/arm64 .
# The build stage runs on the builder's own platform and cross-compiles for
# TARGETOS/TARGETARCH (set by BuildKit), so multi-arch images need no emulation.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
ENV CGO_ENABLED=0
RUN GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
      -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${COMMIT} -X main.date=${DATE}" \
      -o /out/tokenbroker ./cmd/tokenbroker \
 && GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -ldflags "-s -w" -o /out/devidp ./cmd/devidp

FROM gcr.io/distroless/static-debian12:nonroot AS devidp
COPY --from=build /out/devidp /devidp
COPY LICENSE NOTICE /licenses/
# nonroot, numerically, so Kubernetes' runAsNonRoot can verify it
USER 65532:65532
EXPOSE 9000
ENTRYPOINT ["/devidp"]
CMD ["--listen", "0.0.0.0:9000"]

FROM gcr.io/distroless/static-debian12:nonroot AS tokenbroker
ARG VERSION=dev
ARG COMMIT=unknown
ARG DATE=unknown
LABEL org.opencontainers.image.title="tokenbroker" \
      org.opencontainers.image.description="Envoy ext_authz server that mints each machine-to-machine token once per lifetime and injects it into outbound requests" \
      org.opencontainers.image.source="https://github.com/tokenbroker/tokenbroker" \
      org.opencontainers.image.url="https://github.com/tokenbroker/tokenbroker" \
      org.opencontainers.image.documentation="https://github.com/tokenbroker/tokenbroker#readme" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}" \
      org.opencontainers.image.created="${DATE}"
COPY --from=build /out/tokenbroker /tokenbroker
COPY LICENSE NOTICE /licenses/
USER 65532:65532
# 9191 ext_authz gRPC, 9192 HTTP forward-auth, 9193 admin (/healthz /readyz /metrics)
EXPOSE 9191 9192 9193
# distroless has no shell or curl: the binary asks the admin listener's
# /readyz. The admin listener is plain HTTP whatever listen.tls says (it hands
# out no tokens), so this works with TLS and client certificates on the token
# listeners too. To probe the gRPC listener itself instead:
#   HEALTHCHECK CMD ["/tokenbroker", "health", "--config", "/etc/tokenbroker/tokenbroker.yaml"]
# (it follows listen.grpc and listen.tls; with client_ca_file add --tls-cert and --tls-key).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/tokenbroker", "health", "--http", "http://127.0.0.1:9193/readyz"]
ENTRYPOINT ["/tokenbroker"]
CMD ["serve", "--config", "/etc/tokenbroker/tokenbroker.yaml"]
