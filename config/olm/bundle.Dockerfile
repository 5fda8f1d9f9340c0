# The OLM bundle image (registry+v1): docker build -f bundle.Dockerfile -t ghcr.io/kube-npm/kube-npm-bundle:0.1.0 config/olm
# The labels repeat metadata/annotations.yaml (test/unit/install checks they agree).
FROM scratch
LABEL operators.operatorframework.io.bundle.mediatype.v1=registry+v1
LABEL operators.operatorframework.io.bundle.manifests.v1=manifests/
LABEL operators.operatorframework.io.bundle.metadata.v1=metadata/
LABEL operators.operatorframework.io.bundle.package.v1=kube-npm
LABEL operators.operatorframework.io.bundle.channels.v1=alpha
LABEL operators.operatorframework.io.bundle.channel.default.v1=alpha
COPY manifests /manifests/
COPY metadata /metadata/
