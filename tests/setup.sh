#!/usr/bin/env bash
# Everything `npm test` needs on a Debian machine, installed once and then found in place: Debian's
# packages (as root, `apt-get update` first), versitygw (the S3 server of the backup tests) and the
# Pulumi CLI with its Node.js language host (the engine tests), both built from Go modules, and the
# pipelines' checkers (actionlint from its Go module, gitlab-ci-local from npm), cached under
# /var/cache/leaninfra (LEANINFRA_ROOT_CACHE). A second run costs a second.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PATH="$PATH:/usr/local/go/bin"

# Packages: shellcheck for the bundle checks; debootstrap + systemd-container: the Debian 13 root the role tests
# run in; util-linux (losetup, nsenter, flock), e2fsprogs (mkfs.ext4), iproute2 (ip): the volume and
# booted-root tests; curl, openssl: test clients and the test PKI; git, jq: the pipelines' scripts (ci/).
packages=(ca-certificates curl debian-archive-keyring debootstrap e2fsprogs git iproute2 jq openssl systemd-container shellcheck util-linux)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: missing Debian packages: ${missing[*]}; run as root: apt-get update && apt-get install ${missing[*]}" >&2
    exit 1
  fi
  echo "== setup: installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v go >/dev/null || { echo "setup: Go (>= 1.21) is needed to build versitygw and the Pulumi CLI; install it to /usr/local/go" >&2; exit 1; }
cache=${LEANINFRA_ROOT_CACHE:-/var/cache/leaninfra}
if [[ ! -x "$cache/tools/versitygw-v1.8.0/versitygw" ]]; then
  echo "== setup: building versitygw v1.8.0 (once per machine, a few minutes)"
  GOBIN="$cache/tools/versitygw-v1.8.0" GOTOOLCHAIN=auto go install github.com/versity/versitygw/cmd/versitygw@v1.8.0
fi
if [[ ! -x "$cache/tools/victoria-logs-v1.52.1/victoria-logs" ]]; then
  # The logs tests serve it as the vendor's release archive (tests/lib/victorialogs.ts): github.com is not reachable here.
  echo "== setup: building VictoriaLogs v1.52.1 (once per machine, about a minute and a half)"
  GOBIN="$cache/tools/victoria-logs-v1.52.1" GOTOOLCHAIN=auto go install github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@v1.52.1
fi
if [[ ! -x "$cache/tools/actionlint-v1.7.12/actionlint" ]]; then
  echo "== setup: building actionlint v1.7.12 (the GitHub workflow's checker)"
  GOBIN="$cache/tools/actionlint-v1.7.12" GOTOOLCHAIN=auto go install github.com/rhysd/actionlint/cmd/actionlint@v1.7.12
fi
if [[ ! -x "$cache/tools/gitlab-ci-local-4.75.1/node_modules/.bin/gitlab-ci-local" ]]; then
  # Beside the project, not in package.json: only the pipeline test uses it.
  echo "== setup: installing gitlab-ci-local 4.75.1 (the GitLab pipeline's checker)"
  npm install --no-save --no-audit --no-fund --prefix "$cache/tools/gitlab-ci-local-4.75.1" gitlab-ci-local@4.75.1 >/dev/null
fi
echo "== setup: Pulumi CLI in $(bash tests/engine/build-pulumi.sh)"
