# The eventplug sidecar: `eventplug serve` between event-handler and fluentd.
# The build context holds rootfs/, made by images/rootfs.sh from the release binary:
#   cargo build --release -p eventplug
#   bash images/rootfs.sh sidecar target/release/eventplug build/sidecar
#   buildah bud -f images/sidecar.Dockerfile build/sidecar    # or: docker build -f … build/sidecar
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/eventplug/eventplug
LABEL org.opencontainers.image.title="eventplug sidecar" \
      org.opencontainers.image.description="Runs WebAssembly plugins on Teleport audit events between event-handler and fluentd" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY rootfs/ /
COPY --chown=65532:65532 rootfs/home/ /home/
COPY --chown=65532:65532 rootfs/var/cache/ /var/cache/
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    EVENTPLUG_CACHE_DIR=/var/cache/eventplug/modules
USER 65532:65532
WORKDIR /
EXPOSE 8888/tcp 9090/tcp
ENTRYPOINT ["/usr/local/bin/eventplug"]
CMD ["serve", "--config", "/etc/eventplug/config.yaml"]
