# The eventplug operator: `eventplug-operator run`, installed by charts/eventplug-operator.
# The build context holds rootfs/, made by images/rootfs.sh from the release binary:
#   cargo build --release -p eventplug-operator
#   bash images/rootfs.sh operator target/release/eventplug-operator build/operator
#   buildah bud -f images/operator.Dockerfile build/operator  # or: docker build -f … build/operator
FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/eventplug/eventplug
LABEL org.opencontainers.image.title="eventplug operator" \
      org.opencontainers.image.description="Injects the eventplug sidecar beside Teleport's event-handler and runs the EventPlugins it is given" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY rootfs/ /
COPY --chown=65532:65532 rootfs/home/ /home/
ENV PATH=/usr/local/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532:65532
WORKDIR /
EXPOSE 8080/tcp 9443/tcp
ENTRYPOINT ["/usr/local/bin/eventplug-operator"]
CMD ["run", "--settings", "/etc/eventplug-operator/settings.yaml"]
