import assert from "node:assert/strict";
import test from "node:test";
import { validateConfig } from "../../infra/config";
import { runWithMocks } from "../../infra/mock-run";
import { buildStack } from "../../infra/stack";
import { MINIMAL_CONFIG, mockCloudOutputs } from "../lib/mock-cloud";

const cfg = validateConfig("prod", MINIMAL_CONFIG);

test("the whole stack: backups go through the second account's provider, the edge through the default one", async () => {
  const { resources } = await runWithMocks(
    {
      project: "leaninfra",
      stack: "prod",
      preview: false,
      // The secrets `pulumi up` needs for this stack: the backup account's token and the alert route (webhook by default).
      config: { "leaninfra:backupApiToken": "backup-token", "leaninfra:alertWebhookUrl": "https://ntfy.example.net/alerts" },
      secretKeys: ["leaninfra:backupApiToken", "leaninfra:alertWebhookUrl"],
      computed: mockCloudOutputs,
    },
    () => buildStack(cfg),
  );
  const provider = resources.find((r) => r.type === "pulumi:providers:cloudflare" && r.name === "backup-account");
  assert.ok(provider, "a second cloudflare provider exists");
  assert.equal(provider.inputs.apiToken, "[secret]", "its token comes from the secret leaninfra:backupApiToken");
  const r2 = resources.filter((r) => r.type.startsWith("cloudflare:index/r2") || r.type === "cloudflare:index/accountToken:AccountToken");
  assert.equal(r2.length, 4);
  for (const r of r2) assert.match(r.provider ?? "", /::pulumi:providers:cloudflare::backup-account::/, `${r.type} through the backup account`);
  const edge = resources.filter((r) => r.parent === "leaninfra:edge:Edge::edge" && r.type.startsWith("cloudflare:"));
  assert.ok(edge.length > 10);
  for (const r of edge) assert.doesNotMatch(r.provider ?? "", /backup-account/, `${r.type} ${r.name} stays in the main account`);
});

test("`pulumi up` without leaninfra:backupApiToken stops with Pulumi's missing-secret error", async () => {
  let thrown: unknown;
  await runWithMocks({ project: "leaninfra", stack: "prod", preview: true, config: {} }, () => {
    try {
      return buildStack(cfg);
    } catch (error) {
      thrown = error;
      return undefined;
    }
  });
  assert.match(String(thrown), /leaninfra:backupApiToken/);
});
