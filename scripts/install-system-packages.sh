#!/usr/bin/env bash
# Installs the system packages the integration tests run for real, when they are missing:
# Orthanc with its DICOMweb plugin (the test PACS), a Redis server, Chromium (the browser
# that renders the status page) and dicom3tools (dciodvfy, which validates the DICOM objects
# model-proxy creates). Debian/Ubuntu only.
set -euo pipefail
need=()
[[ -x /usr/sbin/Orthanc ]] || need+=(orthanc)
[[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ]] || need+=(orthanc-dicomweb)
[[ -x /usr/bin/redis-server ]] || need+=(redis-server)
[[ -x /usr/bin/chromium ]] || need+=(chromium)
[[ -x /usr/bin/dciodvfy ]] || need+=(dicom3tools)
if ((${#need[@]} == 0)); then
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "missing ${need[*]}: install them with your package manager" >&2
  exit 1
fi
sudo=""
[[ $(id -u) == 0 ]] || sudo="sudo"
echo "installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${need[@]}" >/dev/null
