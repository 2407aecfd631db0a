#!/usr/bin/env bash
# Builds the Pulumi CLI and its Node.js language host from Go modules into a cache, once per machine.
# pkg/v3's go.mod has `replace` lines, so `go install` refuses it: a small wrapper main module takes
# its go.mod, renames the module, drops the local sdk replace, and builds the command from there.
# The language host's own module is not served; sdk/v3@v3.68.0 still carries it and runs with this CLI.
# Its RunPlugin (how this CLI starts a Node.js policy pack) answers "not supported" there, so the host
# is built from a copy of its package with that one function replaced by langhost/runplugin.go. The
# host is rebuilt alone (seconds, not the CLI's minutes) when that file or this script changes: their
# checksum is kept beside the binary.
set -euo pipefail

cli_version=v3.274.1
langhost_sdk=v3.68.0
cache=${LEANINFRA_ROOT_CACHE:-/var/cache/leaninfra}
out="$cache/tools/pulumi-$cli_version"
run_plugin="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/langhost/runplugin.go"
langhost_sum=$(cat "$run_plugin" "${BASH_SOURCE[0]}" | sha256sum | cut -d' ' -f1)
export PATH="$PATH:/usr/local/go/bin" GOTOOLCHAIN=auto GOFLAGS=-mod=mod

built() {
  [[ -x "$out/pulumi" && -x "$out/pulumi-language-nodejs" && "$(cat "$out/.langhost-runplugin" 2>/dev/null)" == "$langhost_sum" ]]
}
if built; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/tools"
exec 9>"$cache/tools/.pulumi.lock"
flock 9
if built; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# build_wrapper DIR MODULE VERSION COMMAND_PACKAGE OUTPUT LDFLAGS
build_wrapper() {
  local dir=$1 module=$2 version=$3 pkg=$4 output=$5 ldflags=$6 gomod
  mkdir -p "$dir"
  gomod=$(go mod download -json "$module@$version" | sed -n 's/^\t"GoMod": "\(.*\)",$/\1/p')
  [[ -f "$gomod" ]] || { echo "build-pulumi: no go.mod for $module@$version" >&2; return 1; }
  sed -e "s#^module .*#module leaninfra.test/wrapper#" \
      -e '/^replace github.com\/pulumi\/pulumi\/sdk\/v3 => /d' "$gomod" >"$dir/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "%s"\n' "$pkg" >"$dir/tools.go"
  (
    cd "$dir"
    go mod edit -require="$module@$version"
    [[ "$module" == github.com/pulumi/pulumi/sdk/v3 ]] || go mod edit -require="github.com/pulumi/pulumi/sdk/v3@$version"
    go mod tidy -e >/dev/null 2>&1 || true
    go build -trimpath -ldflags "$ldflags" -o "$output" "$pkg"
  )
}

# build_langhost OUTPUT: the v3.68.0 host's package (its sources, not its tests) with RunPlugin from runplugin.go.
build_langhost() {
  local output=$1 dir="$work/langhost" src
  build_wrapper "$dir" github.com/pulumi/pulumi/sdk/v3 "$langhost_sdk" \
    github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs "$dir/unused" \
    "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$langhost_sdk"
  src=$(cd "$dir" && go list -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3/nodejs/cmd/pulumi-language-nodejs)
  for file in "$src"/*.go; do
    case "$file" in *_test.go) continue ;; esac
    # Drops `func (host *nodeLanguageHost) RunPlugin(...) {...}` (up to the first line that is just "}").
    awk '/^func \(host \*nodeLanguageHost\) RunPlugin\(/ { skip = 1 } !skip { print } skip && /^}$/ { skip = 0 }' \
      "$file" >"$dir/$(basename "$file")"
  done
  grep -q 'RunPlugin' "$dir/main.go" && { echo "build-pulumi: RunPlugin still in the host's main.go" >&2; return 1; }
  cp "$run_plugin" "$dir/runplugin.go"
  rm -f "$dir/tools.go" "$dir/unused"
  # gofmt and go vet read runplugin.go (and the host's sources around it) before it is built.
  [[ -z "$(gofmt -l "$dir/runplugin.go")" ]] || { echo "build-pulumi: gofmt -d $run_plugin" >&2; return 1; }
  (cd "$dir" && go vet . && go build -trimpath -ldflags "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$langhost_sdk" -o "$output" .)
}

if [[ -x "$out/pulumi" ]]; then
  echo "build-pulumi: building the Node.js language host (runplugin.go or this script changed)" >&2
  build_langhost "$work/pulumi-language-nodejs"
  mv -f "$work/pulumi-language-nodejs" "$out/pulumi-language-nodejs"
  echo "$langhost_sum" >"$out/.langhost-runplugin"
  echo "$out"
  exit 0
fi

echo "build-pulumi: building the Pulumi CLI $cli_version and its Node.js language host (once per machine, about 10 CPU-minutes)" >&2
mkdir -p "$out.tmp"
build_wrapper "$work/cli" github.com/pulumi/pulumi/pkg/v3 "$cli_version" \
  github.com/pulumi/pulumi/pkg/v3/cmd/pulumi "$out.tmp/pulumi" \
  "-s -w -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=$cli_version"
build_langhost "$out.tmp/pulumi-language-nodejs"
echo "$langhost_sum" >"$out.tmp/.langhost-runplugin"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$out"
