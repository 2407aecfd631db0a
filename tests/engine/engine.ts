// Helpers for reading what the real engine says: preview steps, stack exports, secrets.
import assert from "node:assert/strict";
import { urnTypeAndName } from "../../infra/urn";
import { show } from "../lib/debian-root";
import { EngineWorkspace, PulumiRun } from "./workspace";

export interface PreviewStep {
  op: string;
  urn: string;
  /** `type::name`, for readable assertions. */
  key: string;
}

/** A command that must succeed; its run otherwise fails the test with both streams. */
export function ok(run: PulumiRun, what: string): PulumiRun {
  assert.equal(run.code, 0, `${what} failed:\n${show(run)}`);
  return run;
}

function stepKey(urn: string): string {
  const { type, name } = urnTypeAndName(urn);
  return `${type}::${name}`;
}

/**
 * `pulumi preview --json`: the steps the engine plans (it lists the stack and every step that is not
 * "same") and its change summary, e.g. { same: 50 }.
 */
export function previewSteps(ws: EngineWorkspace, extra: string[] = []): { steps: PreviewStep[]; summary: Record<string, number>; run: PulumiRun } {
  const run = ok(ws.pulumi(["preview", "--json", ...extra]), "pulumi preview --json");
  const doc = JSON.parse(run.stdout) as { steps?: { op: string; urn: string }[]; changeSummary?: Record<string, number> };
  const steps = (doc.steps ?? []).map((s) => ({ op: s.op, urn: s.urn, key: stepKey(s.urn) }));
  return { steps, summary: doc.changeSummary ?? {}, run };
}

/** The steps that would change something (anything but "same" and reads). */
export function changes(steps: PreviewStep[]): PreviewStep[] {
  return steps.filter((s) => s.op !== "same" && s.op !== "read");
}

export function describeSteps(steps: PreviewStep[]): string {
  return steps.map((s) => `${s.op} ${s.key}`).join("\n") || "(none)";
}

interface ExportedResource {
  urn: string;
  type: string;
  inputs?: Record<string, unknown>;
  outputs?: Record<string, unknown>;
  protect?: boolean;
}

export interface StackExport {
  text: string;
  resources: ExportedResource[];
}

export function exportStack(ws: EngineWorkspace, showSecrets = false): StackExport {
  const run = ok(ws.pulumi(["stack", "export", ...(showSecrets ? ["--show-secrets"] : [])]), "pulumi stack export");
  const doc = JSON.parse(run.stdout) as { deployment?: { resources?: ExportedResource[] } };
  return { text: run.stdout, resources: doc.deployment?.resources ?? [] };
}

const SIG = "4dabf18193072939515e22adb298388d";
const SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270";

/** Whether a value of a plain `pulumi stack export` is kept encrypted. */
export function isSecret(value: unknown): value is Record<string, unknown> {
  return !!value && typeof value === "object" && (value as Record<string, unknown>)[SIG] === SECRET_SIG;
}

/** A value from a `--show-secrets` export, with the secret wrappers taken off. */
export function revealed(value: unknown): unknown {
  if (isSecret(value)) return "plaintext" in value ? JSON.parse(String(value.plaintext)) : revealed(value.value);
  return value;
}

/** Every string the plain export keeps encrypted, read in clear from the `--show-secrets` export at the same place. */
export function encryptedStrings(plainExport: StackExport, shown: StackExport): Set<string> {
  const found = new Set<string>();
  const strings = (value: unknown): string[] => {
    const v = revealed(value);
    if (typeof v === "string") return [v];
    if (Array.isArray(v)) return v.flatMap(strings);
    if (v && typeof v === "object") return Object.values(v).flatMap(strings);
    return [];
  };
  const walk = (a: unknown, b: unknown): void => {
    if (isSecret(a)) for (const s of strings(b)) found.add(s);
    else if (Array.isArray(a) && Array.isArray(b)) a.forEach((v, i) => walk(v, b[i]));
    else if (a && typeof a === "object" && b && typeof b === "object") for (const key of Object.keys(a)) walk((a as Record<string, unknown>)[key], (b as Record<string, unknown>)[key]);
  };
  const byUrn = new Map(shown.resources.map((r) => [r.urn, r]));
  for (const resource of plainExport.resources) walk(resource, byUrn.get(resource.urn));
  return found;
}
