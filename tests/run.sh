#!/usr/bin/env bash
# `npm test`: set up what the tests need (tests/setup.sh, once per machine), type-check, then every
# test (unit, component, engine, tool checks, integration in a Debian 13 root).
set -euo pipefail
cd "$(dirname "$0")/.."

node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 22 ? 0 : 1)' ||
  { echo "npm test: Node.js 22 or newer is needed (this is $(node --version))" >&2; exit 1; }

echo "== setup"
bash tests/setup.sh

echo "== type-check (tsc --noEmit)"
npx tsc -p tsconfig.json

echo "== tests"
node --require ts-node/register/transpile-only --test --test-concurrency=2 \
  'tests/unit/**/*.test.ts' 'tests/component/**/*.test.ts' 'tests/engine/**/*.test.ts' 'tests/tools/**/*.test.ts' 'tests/integration/**/*.test.ts'
