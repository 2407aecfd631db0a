#!/usr/bin/env bash
# ci/install-pulumi.sh: the Pulumi CLI at PULUMI_VERSION (default 3.274.1, the version the engine tests
# build), installed once by Pulumi's own install script into PULUMI_INSTALL_ROOT (default
# ~/.pulumi-VERSION); prints the directory to put on PATH.
set -euo pipefail

version=${PULUMI_VERSION:-3.274.1}
root=${PULUMI_INSTALL_ROOT:-$HOME/.pulumi-$version}
if [[ $("$root/bin/pulumi" version 2>/dev/null || true) != "v$version" ]]; then
  curl -fsSL https://get.pulumi.com | sh -s -- --version "$version" --install-root "$root" --no-edit-path >&2
fi
echo "$root/bin"
