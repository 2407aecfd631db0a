import assert from "node:assert/strict";
import test from "node:test";
import { validateConfig } from "../../infra/config";
import { runWithMocks } from "../../infra/mock-run";
import { buildStack } from "../../infra/stack";
import { MINIMAL_CONFIG } from "../lib/mock-cloud";
import { assertShellcheckClean } from "../lib/shellcheck";

const variants: Record<string, Record<string, unknown>> = {
  "behind Cloudflare, every role": {
    redisJob: "queue",
    appImage: "ghcr.io/acme/shop",
    appTag: "2026.11.28",
    appMigrationCommand: ["./manage", "migrate"],
    appRegistryUser: "deploy",
  },
  "without the proxy (Let's Encrypt)": { cdnProxy: false, acmeEmail: "owner@example.com", appImage: "acme/shop" },
};

for (const [name, extra] of Object.entries(variants)) {
  test(`shellcheck passes every bundle the stack renders: ${name}`, { timeout: 120_000 }, async () => {
    const cfg = validateConfig("prod", { ...MINIMAL_CONFIG, ...extra });
    const { result } = await runWithMocks({ project: "leaninfra", stack: "prod", preview: true, config: {} }, () => buildStack(cfg, { offline: true }));
    const bundles = Object.entries(result.rendered).filter(([file]) => file.startsWith("bundles/"));
    assert.ok(bundles.length >= 5, `expected the stack's roles, got ${bundles.map(([f]) => f).join(", ")}`);
    for (const [file, text] of bundles) {
      assertShellcheckClean(file, text);
    }
  });
}
