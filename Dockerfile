# syntax=docker/dockerfile:1
# tokenbroker (default target) and the development IdP (target devidp):
# static binaries on distroless, running as a non-root user.
#   docker build -t tokenbroker .
#   docker build --target devidp -t tokenbroker-devidp .

FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
ENV CGO_ENABLED=0
RUN go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tokenbroker ./cmd/tokenbroker \
 && go build -trimpath -ldflags "-s -w" -o /out/devidp ./cmd/devidp

FROM gcr.io/distroless/static-debian12:nonroot AS devidp
COPY --from=build /out/devidp /devidp
# nonroot, numerically, so Kubernetes' runAsNonRoot can verify it
USER 65532:65532
EXPOSE 9000
ENTRYPOINT ["/devidp"]
CMD ["--listen", "0.0.0.0:9000"]

FROM gcr.io/distroless/static-debian12:nonroot AS tokenbroker
COPY --from=build /out/tokenbroker /tokenbroker
USER 65532:65532
# 9191 ext_authz gRPC, 9192 HTTP forward-auth, 9193 admin (/healthz /readyz /metrics)
EXPOSE 9191 9192 9193
# distroless has no shell or curl: the binary asks its own gRPC health service.
# With listen.grpc off, override it: HEALTHCHECK CMD ["/tokenbroker", "health", "--http", "http://127.0.0.1:9193/readyz"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/tokenbroker", "health", "--grpc", "127.0.0.1:9191"]
ENTRYPOINT ["/tokenbroker"]
CMD ["serve", "--config", "/etc/tokenbroker/tokenbroker.yaml"]
