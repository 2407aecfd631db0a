// `npm run preview [-- --stack NAME] [-- --offline]`: the real engine's `pulumi preview --diff` with
// the policy pack (policy/), as merge-request pipelines run it.
//   online (default): against the stack's own backend, with the real provider plugins and credentials;
//   --offline: no account, no network: the stand-in plugins, a throwaway local backend, the stack
//   file's settings with its encrypted values replaced by placeholders. It shows what the engine
//   would create from scratch, so it checks the config schema, the program and the providers'
//   input checks, not the difference from your running stack.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { parseDocument } from "yaml";
import { PROJECT } from "../../infra/config";
import { EngineWorkspace, PROJECT_FILES, REQUIRED_SECRETS, installedPulumi, pulumiTools, standinSecret } from "./workspace";

/**
 * The stack file with what only its own secrets provider can read taken out: the encrypted values
 * (returned, to be set again as placeholders) and the provider's salt or key.
 */
export function offlineStackFile(text: string): { text: string; encryptedKeys: string[] } {
  const doc = parseDocument(text);
  for (const key of ["encryptionsalt", "encryptedkey", "secretsprovider"]) doc.delete(key);
  const config = doc.get("config", true) as { items?: { key: { value?: unknown } | unknown; value: unknown }[] } | undefined;
  const encryptedKeys: string[] = [];
  for (const pair of config?.items ?? []) {
    const value = pair.value as { get?(k: string): unknown; has?(k: string): boolean } | undefined;
    if (value?.has?.("secure")) encryptedKeys.push(String((pair.key as { value?: unknown }).value ?? pair.key));
  }
  for (const key of encryptedKeys) doc.deleteIn(["config", key]);
  return { text: doc.toString(), encryptedKeys };
}

/** The guardrails every preview runs (policy/), as the pipelines do. */
const POLICY_PACK = "policy";

function offline(stack: string): number {
  const stackFile = `Pulumi.${stack}.yaml`;
  if (!fs.existsSync(stackFile)) {
    console.error(`preview: no ${stackFile} here`);
    return 2;
  }
  const projectFiles = [...PROJECT_FILES.filter((f) => !/^Pulumi\..+\.yaml$/.test(f) || f === "Pulumi.yaml"), POLICY_PACK];
  const ws = new EngineWorkspace({ tools: installedPulumi() ?? pulumiTools(), typeCheck: true, projectFiles });
  try {
    const { text, encryptedKeys } = offlineStackFile(fs.readFileSync(stackFile, "utf8"));
    fs.writeFileSync(path.join(ws.project, stackFile), text);
    // The project's secrets without a namespace: Pulumi gives them the project's name, whatever
    // `pulumi new --name` chose.
    const own = (key: string) => (key.startsWith(`${PROJECT}:`) ? key.slice(PROJECT.length + 1) : key.replace(/^leaninfra:/, ""));
    const placeholders = Object.fromEntries([...new Set([...REQUIRED_SECRETS, ...encryptedKeys].map(own))].map((key) => [key, standinSecret(key, "0123456789abcdef")]));
    try {
      ws.initStack(stack, placeholders);
    } catch (error) {
      console.error(`preview: ${(error as Error).message}`);
      return 1;
    }
    console.log(`Offline preview of ${stackFile} with stand-in providers (encrypted values replaced by placeholders: ${Object.keys(placeholders).join(", ")})\n`);
    const r = spawnSync("pulumi", ["preview", "--diff", "--policy-pack", POLICY_PACK], { cwd: ws.project, env: ws.env(), stdio: "inherit" });
    return r.status ?? 1;
  } finally {
    ws.dispose();
  }
}

function online(stack: string, rest: string[]): number {
  const r = spawnSync("pulumi", ["preview", "--diff", "--stack", stack, "--policy-pack", POLICY_PACK, ...rest], { stdio: "inherit" });
  if (r.error) {
    console.error(`preview: cannot run pulumi (${r.error.message}); install the Pulumi CLI, or use --offline`);
    return 2;
  }
  return r.status ?? 1;
}

if (require.main === module) {
  const { values, positionals } = parseArgs({ options: { stack: { type: "string", default: "prod" }, offline: { type: "boolean", default: false } }, allowPositionals: true });
  process.exitCode = values.offline ? offline(values.stack) : online(values.stack, positionals);
}
