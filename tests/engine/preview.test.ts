// `npm run preview -- --offline`: the merge-request preview through the real engine with stand-ins,
// from a stack file as a user has it (encrypted values, its own salt).
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import * as path from "node:path";
import { after, before, test } from "node:test";
import { parse } from "yaml";
import { ok } from "./engine";
import { offlineStackFile } from "./preview";
import { EngineWorkspace, REPO_ROOT, plainText } from "./workspace";

let ws: EngineWorkspace;
before(() => {
  ws = new EngineWorkspace();
  ws.initProdStack();
  ok(ws.pulumi(["config", "set", "--secret", "leaninfra:appSecretEnv"], { stdin: "SESSION_SECRET=do-not-print-me\n" }), "config set --secret");
});
after(() => ws?.dispose());

function preview(args: string[]) {
  const r = spawnSync(process.execPath, ["--require", "ts-node/register/transpile-only", path.join(REPO_ROOT, "tests/engine/preview.ts"), ...args], {
    cwd: ws.project,
    env: { ...ws.env(), NODE_PATH: path.join(REPO_ROOT, "node_modules") },
    encoding: "utf8",
    timeout: 10 * 60_000,
  });
  return { code: r.status, output: plainText(`${r.stdout}\n${r.stderr}`) };
}

test("offlineStackFile keeps every setting and drops what only the stack's own secrets provider can read", () => {
  const original = require("node:fs").readFileSync(path.join(ws.project, "Pulumi.prod.yaml"), "utf8") as string;
  assert.match(original, /encryptionsalt:/);
  const { text, encryptedKeys } = offlineStackFile(original);
  assert.deepEqual(encryptedKeys.sort(), ["cloudflare:apiToken", "hcloud:token", "leaninfra:alertWebhookUrl", "leaninfra:appSecretEnv", "leaninfra:backupApiToken"]);
  const before = parse(original) as { config: Record<string, unknown> };
  const after = parse(text) as Record<string, unknown> & { config: Record<string, unknown> };
  assert.equal(after.encryptionsalt, undefined);
  for (const [key, value] of Object.entries(before.config)) {
    if (encryptedKeys.includes(key)) assert.equal(after.config[key], undefined, key);
    else assert.deepEqual(after.config[key], value, `${key} is kept as it was`);
  }
});

test("npm run preview -- --offline previews the stack file through the engine, secrets as placeholders", () => {
  const r = preview(["--offline"]);
  assert.equal(r.code, 0, r.output);
  assert.match(r.output, /Offline preview of Pulumi\.prod\.yaml with stand-in providers \(encrypted values replaced by placeholders: hcloud:token, cloudflare:apiToken, backupApiToken, alertWebhookUrl, appSecretEnv\)/);
  // The guardrails run in every preview, as in the pipelines.
  assert.match(r.output, /Policy Packs run:\s+Name\s+Version\s+leaninfra\|local\|policy\s/);
  assert.doesNotMatch(r.output, /mandatory\]/);
  // 52 before the observability roles; now 3 more role commands and 3 more generated passwords.
  assert.match(r.output, /Resources:\s+\+ 58 to create/);
  assert.ok(!r.output.includes("do-not-print-me"));
});

test("npm run preview -- --offline fails on bad config with the problems message", () => {
  ok(ws.pulumi(["config", "set", "leaninfra:serverType", "cx9000"]), "config set serverType");
  const r = preview(["--offline"]);
  assert.notEqual(r.code, 0, r.output);
  assert.match(r.output, /Stack "prod" has 1 configuration problem; nothing was created:\s+- leaninfra:serverType: "cx9000"/);
});
