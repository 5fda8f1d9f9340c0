# syntax=docker/dockerfile:1
# kube-npm: one image for `kube-npm operator` (Deployment, uid 65532) and `kube-npm agent`
# (DaemonSet: root with only NET_ADMIN + NET_RAW, set by its securityContext, not here).
#   docker build -t ghcr.io/kube-npm/kube-npm:0.1.0 .
# The build steps are the CI's (.ci/run: npm ci --no-audit --no-fund; npm run build);
# test/unit/install/dockerfile.test.ts checks that they stay the same.
#
# Base images are pinned by digest (the tag alone can be repointed), each the multi-arch manifest
# list digest of the official Docker Hub tag, so amd64 and arm64 builds both resolve. No registry is
# reachable from where this was written: the digests were taken from public repositories that pin
# the same tags (several independent ones agree). To refresh after a Node or Debian update:
#   docker buildx imagetools inspect node:20.X.Y-bookworm-slim   # "Digest:" of the manifest list
#   (or: crane digest node:20.X.Y-bookworm-slim)
# and replace tag and digest together in both ARG lines below.
#
# The bases are build arguments so the image can be built where Docker Hub is not reachable, from
# a local Debian bookworm + Node 20 base (hack/image/build.sh makes one and passes it as both):
#   buildah bud --build-arg BUILD_BASE=localhost/kube-npm-base:KEY \
#     --build-arg RUNTIME_BASE=localhost/kube-npm-base:KEY -t localhost/kube-npm:dev .
# Without --build-arg nothing changes: the pinned official images below.
ARG BUILD_BASE=node:20.20.2-bookworm@sha256:8f693eaa7e0a8e71560c9a82b55fd54c2ae920a2ba5d2cde28bac7d1c01c9ba5
ARG RUNTIME_BASE=node:20.20.2-bookworm-slim@sha256:2cf067cfed83d5ea958367df9f966191a942351a2df77d6f0193e162b5febfc0

# ---- build: compile TypeScript, then drop dev dependencies ----
FROM ${BUILD_BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY operator ./operator
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: Node 20 on Debian 12 with the kernel tools the agent drives ----
FROM ${RUNTIME_BASE} AS runtime
# iptables ships both backends (iptables-nft* and iptables-legacy*); the agent picks one per node.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends iptables ipset conntrack \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/dist ./dist
# The operator's user (nonroot in distroless terms); the agent's DaemonSet overrides it with 0.
USER 65532:65532
# 10091: metrics (HTTPS, token authorized); 10092: /healthz and /readyz (plain HTTP).
EXPOSE 10091 10092
ENTRYPOINT ["node", "/app/dist/operator/src/cli/main.js"]
