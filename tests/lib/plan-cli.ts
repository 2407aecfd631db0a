// `npm run plan` as a user runs it, on a stack file of a temporary project: for the tests that feed it
// hostile or refused config and check the exit code, the message and what was (not) rendered.
import { spawn } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { stringify } from "yaml";

const REPO = path.resolve(__dirname, "../..");
const PLAN = path.join(REPO, "infra/plan.ts");

export interface PlanRun {
  code: number | null;
  stdout: string;
  stderr: string;
  /** The temporary project: Pulumi.yaml, Pulumi.<stack>.yaml and, when the plan ran, out/<stack>/. */
  dir: string;
}

/**
 * Runs the plan of stack `stack` whose file is `config` (keys without a namespace get `leaninfra:`),
 * or the literal YAML text given. Remove `dir` when done.
 */
export function runPlan(config: Record<string, unknown> | string, stack = "hostile"): Promise<PlanRun> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-plan-"));
  fs.copyFileSync(path.join(REPO, "Pulumi.yaml"), path.join(dir, "Pulumi.yaml"));
  const text =
    typeof config === "string" ? config : stringify({ config: Object.fromEntries(Object.entries(config).map(([k, v]) => [k.includes(":") ? k : `leaninfra:${k}`, v])) });
  fs.writeFileSync(path.join(dir, `Pulumi.${stack}.yaml`), text);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ["--require", "ts-node/register/transpile-only", PLAN, "--stack", stack], {
      cwd: dir,
      env: { ...process.env, TS_NODE_PROJECT: path.join(REPO, "tsconfig.json"), NODE_PATH: path.join(REPO, "node_modules") },
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    child.on("close", (code) => resolve({ code, stdout, stderr, dir }));
  });
}

/** Runs the plans two at a time (each is its own Node process), results in the order given. */
export async function runPlans(configs: (Record<string, unknown> | string)[], stack?: string): Promise<PlanRun[]> {
  const results: PlanRun[] = [];
  for (let i = 0; i < configs.length; i += 2) results.push(...(await Promise.all(configs.slice(i, i + 2).map((c) => runPlan(c, stack)))));
  return results;
}

/** Why a run is not a clean refusal naming `key` and saying `says`; undefined when it is one. */
export function refusalProblem(run: PlanRun, stack: string, key: string, says: string): string | undefined {
  const { code, stdout, stderr, dir } = run;
  const lines = stderr.split("\n").filter((l) => l.startsWith(`  - ${key}: `));
  if (code !== 2) return `exit ${code}\n${stderr.slice(0, 600)}`;
  if (!stderr.startsWith(`Stack "${stack}" has `)) return `not the config-problems message: ${stderr.slice(0, 300)}`;
  if (lines.length === 0) return `no problem names ${key}: ${stderr.slice(0, 600)}`;
  if (!lines.some((line) => line.includes(says))) return `no problem of ${key} says "${says}": ${lines.join("\n")}`;
  if (/\n\s+at /.test(stderr)) return `a stack trace: ${stderr.slice(0, 600)}`;
  if (stdout !== "" || fs.existsSync(path.join(dir, "out"))) return "something was rendered";
  return undefined;
}
