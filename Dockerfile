# syntax=docker/dockerfile:1
# One Dockerfile, three images: `--target manager` (the default, last stage), `--target dispatcher`,
# `--target receiver`. Static binaries (CGO_ENABLED=0) on distroless static, non-root.
ARG GO_VERSION=1.26
FROM golang:${GO_VERSION} AS builder
ARG TARGETOS=linux
ARG TARGETARCH=amd64
ARG VERSION=dev
WORKDIR /workspace
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same flags as `make build` and the static-build test (test/images).
RUN for b in dispatcher receiver; do \
      CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
        -ldflags "-s -w -X github.com/kafkachannel/kafkachannel/internal/version.Version=${VERSION}" \
        -o /out/$b ./cmd/$b || exit 1; \
    done && \
    CGO_ENABLED=0 GOOS=${TARGETOS} GOARCH=${TARGETARCH} go build -trimpath \
      -ldflags "-s -w -X github.com/kafkachannel/kafkachannel/internal/version.Version=${VERSION}" \
      -o /out/manager .

FROM gcr.io/distroless/static:nonroot AS dispatcher
ARG VERSION=dev
LABEL org.opencontainers.image.title="kafkachannel-dispatcher" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/dispatcher /dispatcher
USER 65532:65532
ENTRYPOINT ["/dispatcher"]

FROM gcr.io/distroless/static:nonroot AS receiver
ARG VERSION=dev
LABEL org.opencontainers.image.title="kafkachannel-receiver" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/receiver /receiver
USER 65532:65532
ENTRYPOINT ["/receiver"]

FROM gcr.io/distroless/static:nonroot AS manager
ARG VERSION=dev
LABEL org.opencontainers.image.title="kafkachannel-manager" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
