# shellcheck shell=bash disable=SC2034
# OCI image helpers (sourced). Needs umoci (Debian package umoci).

# oci_archive_from_files OUT TAG ENTRYPOINT_JSON SRC:DEST...
#   Writes OUT: a tar of an OCI image layout holding one image tagged TAG
#   (org.opencontainers.image.ref.name), whose single layer holds each SRC
#   file copied to DEST (parents created; a SRC directory's content is copied
#   into DEST), with the given entrypoint
#   (e.g. '["/pause"]', umoci --config.entrypoint repeated per element).
oci_archive_from_files() {
  local out="$1" tag="$2" entry="$3"
  shift 3
  local work
  work="$(mktemp -d "${TMPDIR:-/tmp}/kc-image.XXXXXX")"
  umoci init --layout "${work}/layout"
  umoci new --image "${work}/layout:${tag}"
  umoci unpack --image "${work}/layout:${tag}" "${work}/bundle" >/dev/null
  local spec src dest
  for spec in "$@"; do
    src="${spec%%:*}"
    dest="${work}/bundle/rootfs/${spec#*:}"
    if [[ -d "${src}" ]]; then
      mkdir -p "${dest}"
      cp -a "${src}/." "${dest}/"
    else
      mkdir -p "$(dirname "${dest}")"
      cp -a "${src}" "${dest}"
    fi
  done
  umoci repack --image "${work}/layout:${tag}" "${work}/bundle"
  local args=() e
  # entrypoint: JSON array of plain strings (no commas inside elements).
  while IFS= read -r e; do
    [[ -n "${e}" ]] && args+=(--config.entrypoint "${e}")
  done < <(printf '%s\n' "${entry}" | sed -e 's/^\[//' -e 's/\]$//' | tr ',' '\n' | sed -e 's/^ *"//' -e 's/" *$//')
  umoci config --image "${work}/layout:${tag}" --os linux --architecture amd64 "${args[@]}"
  umoci gc --layout "${work}/layout"
  tar -C "${work}/layout" -cf "${out}.tmp" .
  mv -f "${out}.tmp" "${out}"
  rm -rf "${work}"
}
