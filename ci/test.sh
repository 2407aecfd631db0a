#!/usr/bin/env bash
# ci/test.sh [TIER...]: `npm test`'s setup and type-check, then the test tiers named (default: unit
# component engine, the tiers that run in a container). `tools` and `integration` run commands in
# Debian 13 roots with systemd-nspawn, overlay mounts and loop devices: they need root on a machine
# (a VM or a shell-executor runner), not a container. Run after `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=ci/lib.sh
source ci/lib.sh

tiers=("$@")
((${#tiers[@]})) || tiers=(unit component engine)
globs=()
for tier in "${tiers[@]}"; do
  [[ -d tests/$tier ]] || ci_fail "test: \"$tier\" is not a test tier (allowed: $(cd tests && find . -mindepth 2 -maxdepth 2 -name '*.test.ts' -printf '%h\n' | sed 's#^\./##' | sort -u | paste -sd' ' -))"
  globs+=("tests/$tier/**/*.test.ts")
done

# Go builds the Pulumi CLI and the test servers (tests/setup.sh); a Debian image has it as golang-go.
if ! command -v go >/dev/null && [[ ! -x /usr/local/go/bin/go && $(id -u) -eq 0 ]]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends golang-go >/dev/null
fi
echo "== setup"
bash tests/setup.sh
echo "== type-check (tsc --noEmit)"
npx tsc -p tsconfig.json
echo "== tests: ${tiers[*]}"
node --require ts-node/register/transpile-only --test --test-concurrency=2 "${globs[@]}"
