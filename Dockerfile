# syntax=docker/dockerfile:1
# kube-npm: one image for `kube-npm operator` (Deployment, uid 65532) and `kube-npm agent`
# (DaemonSet: root with only NET_ADMIN + NET_RAW, set by its securityContext, not here).
#   docker build -t ghcr.io/kube-npm/kube-npm:0.1.0 .
# The build steps are the CI's (.ci/run: npm ci --no-audit --no-fund; npm run build);
# test/unit/install/dockerfile.test.ts checks that they stay the same.

# ---- build: compile TypeScript, then drop dev dependencies ----
FROM node:20.20.2-bookworm AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY operator ./operator
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# ---- runtime: Node 20 on Debian 12 with the kernel tools the agent drives ----
FROM node:20.20.2-bookworm-slim AS runtime
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
EXPOSE 10091
ENTRYPOINT ["node", "/app/dist/operator/src/cli/main.js"]
