# gantryd's own image: gantryd and the gantry CLI, nothing else.
#
#   make image        # builds the binaries (static), then this image: gantry/gantryd
#
# The binaries are built on the host first, as no Go toolchain image can be
# pulled here; the build context is what `make image` puts in build/image.
# Run it beside the engine it drives:
#
#   docker run -d --name gantryd --network host \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     -v /var/lib/docker:/var/lib/docker:ro \
#     -v /run/gantry:/run/gantry \
#     -v gantry-data:/var/lib/gantry \
#     -v "$HOME/.docker/config.json:/root/.docker/config.json:ro" \
#     gantry/gantryd
#
# The engine's data root, read-only, lets gantryd read image layers the way
# docker push does (without it, it reads them with docker save); the
# network is the host's so that registries on the host's loopback answer.
FROM scratch
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY gantryd gantry /usr/local/bin/
ENV HOME=/root PATH=/usr/local/bin GANTRY_HOST=unix:///run/gantry/gantry.sock
VOLUME /var/lib/gantry
ENTRYPOINT ["/usr/local/bin/gantryd"]
