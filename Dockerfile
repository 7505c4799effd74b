# syntax=docker/dockerfile:1
# One Dockerfile, four images: `--target manager` (the default, last stage), `--target dispatcher`,
# `--target receiver`, `--target eventdisplay` (the samples' subscriber). `make docker-build`
# first builds the static binaries on the host (`make image-binaries`: CGO_ENABLED=0 -trimpath,
# the LDFLAGS of `make build`) into bin/image, so the images hold exactly what the tests ran, and
# no golang image needs pulling. Machines with no Docker engine and no registry access build the
# same images with crane (hack/image/build.sh); the README says why.
ARG BASE_IMAGE=gcr.io/distroless/static:nonroot

FROM ${BASE_IMAGE} AS dispatcher
ARG VERSION=dev
ARG REVISION=unknown
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="kafkachannel-dispatcher" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kafkachannel/kafkachannel" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --chmod=0755 bin/image/dispatcher /dispatcher
USER 65532:65532
ENTRYPOINT ["/dispatcher"]

FROM ${BASE_IMAGE} AS receiver
ARG VERSION=dev
ARG REVISION=unknown
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="kafkachannel-receiver" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kafkachannel/kafkachannel" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --chmod=0755 bin/image/receiver /receiver
USER 65532:65532
ENTRYPOINT ["/receiver"]

FROM ${BASE_IMAGE} AS eventdisplay
ARG VERSION=dev
ARG REVISION=unknown
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="kafkachannel-eventdisplay" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kafkachannel/kafkachannel" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --chmod=0755 bin/image/eventdisplay /eventdisplay
USER 65532:65532
ENTRYPOINT ["/eventdisplay"]

FROM ${BASE_IMAGE} AS manager
ARG VERSION=dev
ARG REVISION=unknown
ARG BASE_IMAGE
LABEL org.opencontainers.image.title="kafkachannel-manager" org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/kafkachannel/kafkachannel" \
      org.opencontainers.image.base.name="${BASE_IMAGE}"
COPY --chmod=0755 bin/image/manager /manager
USER 65532:65532
ENTRYPOINT ["/manager"]
