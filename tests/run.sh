#!/usr/bin/env bash
# `npm test`: type-check, then every test (unit, component, tool checks, integration in a Debian 13 root).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== type-check (tsc --noEmit)"
npx tsc -p tsconfig.json

echo "== tests"
node --require ts-node/register/transpile-only --test --test-concurrency=2 \
  'tests/unit/**/*.test.ts' 'tests/component/**/*.test.ts' 'tests/tools/**/*.test.ts' 'tests/integration/**/*.test.ts'
