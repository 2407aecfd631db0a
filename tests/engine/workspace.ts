// The engine tier's workspace: the real Pulumi CLI and Node.js language host (built from Go modules
// by build-pulumi.sh), a copy of this project as a fork would have it, a fresh HOME with a local
// file backend, and the stand-in provider plugins installed at the versions the program pins.
import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { RunResult } from "../lib/debian-root";
import { PACKAGES, packageVersion } from "./standins/catalog";

export const REPO_ROOT = path.resolve(__dirname, "..", "..");
const BUILD_SCRIPT = path.join(__dirname, "build-pulumi.sh");
const STAND_IN = path.join(__dirname, "standins", "provider.ts");
/** What a fork holds besides node_modules (linked) and git: the program and its stack file. */
export const PROJECT_FILES = ["Pulumi.yaml", "Pulumi.prod.yaml", "package.json", "package-lock.json", "tsconfig.json", "infra", "components"];
export const PASSPHRASE = "correct horse battery staple";
/** The secrets a fresh stack needs before `pulumi preview` (README step 5; the example stack's alert route is a webhook). */
export const REQUIRED_SECRETS = ["hcloud:token", "cloudflare:apiToken", "leaninfra:backupApiToken", "leaninfra:alertWebhookUrl"];

/**
 * A stand-in value for a secret key, of the shape its role checks: URLs for *Url keys, a DSN for
 * sentryDsn, KEY=value for appSecretEnv; one value per key (the policy pack refuses a backup account
 * reached with the zone's own token). Keys with or without a namespace.
 */
export function standinSecret(key: string, tag: string): string {
  const token = `standin-${key.replace(/\W/g, "-")}-${tag}`;
  if (/Url$/.test(key)) return `https://hooks.example.net/${token}`;
  const name = key.replace(/^[^:]*:/, "");
  if (name === "sentryDsn") return `https://${tag}@errors.example.net/1`;
  if (name === "appSecretEnv") return `STANDIN_SECRET=${tag}`;
  return token;
}

let toolsDir: string | undefined;

/** The directory of the `pulumi` on PATH when its Node.js language host is there too, else undefined. */
export function installedPulumi(): string | undefined {
  for (const dir of (process.env.PATH ?? "").split(":")) {
    if (dir && fs.existsSync(path.join(dir, "pulumi")) && fs.existsSync(path.join(dir, "pulumi-language-nodejs"))) return dir;
  }
  return undefined;
}

/** The directory holding `pulumi` and `pulumi-language-nodejs`, built once per machine (cached). */
export function pulumiTools(): string {
  if (toolsDir) return toolsDir;
  const built = spawnSync("bash", [BUILD_SCRIPT], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 40 * 60_000 });
  const dir = (built.stdout ?? "").trim().split("\n").pop() ?? "";
  if (built.status !== 0 || !fs.existsSync(path.join(dir, "pulumi"))) {
    throw new Error(`bash ${BUILD_SCRIPT} failed (exit ${built.status}): the engine tests need the Pulumi CLI; see its output above`);
  }
  toolsDir = dir;
  return dir;
}

/** Removes terminal colours and Pulumi's progress redraws, so output can be matched as text. */
export function plainText(text: string): string {
  // eslint-disable-next-line no-control-regex
  return text.replace(/\x1b\[[0-9;?]*[A-Za-z]/g, "").replace(/\r/g, "");
}

export interface PulumiRun extends RunResult {
  /** stdout and stderr together, colours removed. */
  output: string;
}

export interface RunOpts {
  stdin?: string;
  env?: Record<string, string>;
  timeoutMs?: number;
}

/**
 * One user's machine: HOME, PULUMI_HOME with the stand-in plugins, and the project copied as a fork.
 * `pulumi(...)` runs the real CLI in the project directory. dispose() removes it all.
 */
export class EngineWorkspace {
  readonly root: string;
  readonly home: string;
  readonly project: string;
  private readonly tools: string;

  private readonly typeCheck: boolean;

  /**
   * `tools`: the directory of `pulumi` and its language host (default: the pinned build).
   * `typeCheck`: let the language host type-check the program on every run, as it does for users;
   * the tests leave it off (npm test runs tsc over the same files first), which saves seconds a run.
   */
  constructor(options: { tools?: string; projectFiles?: string[]; typeCheck?: boolean } = {}) {
    this.tools = options.tools ?? pulumiTools();
    this.typeCheck = options.typeCheck ?? false;
    this.root = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-engine-"));
    this.home = path.join(this.root, "home");
    this.project = path.join(this.root, "project");
    fs.mkdirSync(path.join(this.home, ".pulumi"), { recursive: true });
    fs.mkdirSync(this.project);
    for (const file of options.projectFiles ?? PROJECT_FILES) fs.cpSync(path.join(REPO_ROOT, file), path.join(this.project, file), { recursive: true });
    fs.symlinkSync(path.join(REPO_ROOT, "node_modules"), path.join(this.project, "node_modules"));
    this.installStandIns();
  }

  /** The environment a user's shell would have, with nothing of this machine's Pulumi settings. */
  env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
    return {
      PATH: [this.tools, path.dirname(process.execPath), "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"].join(":"),
      HOME: this.home,
      PULUMI_HOME: path.join(this.home, ".pulumi"),
      LANG: "C.UTF-8",
      TMPDIR: os.tmpdir(),
      PULUMI_CONFIG_PASSPHRASE: PASSPHRASE,
      PULUMI_SKIP_UPDATE_CHECK: "true",
      // Plugins come from the stand-ins installed here; never from the internet.
      PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION: "true",
      // A terminal user answers "yes" to `pulumi up`'s prompt; the tests have no terminal.
      PULUMI_SKIP_CONFIRMATIONS: "true",
      ...(this.typeCheck ? {} : { PULUMI_NODEJS_TRANSPILE_ONLY: "true" }),
      ...extra,
    };
  }

  /** A local backend in HOME and a stack with its secrets, as the README's steps 3 and 5 make them. */
  initStack(stack: string, secrets: Record<string, string>): void {
    const steps: [string, string?][] = [['mkdir -p ~/.leaninfra-state && pulumi login "file://$HOME/.leaninfra-state"'], [`pulumi stack init ${stack}`]];
    for (const [key, value] of Object.entries(secrets)) steps.push([`pulumi config set --secret ${key}`, value]);
    for (const [line, stdin] of steps) {
      const r = this.shell(line, { stdin });
      if (r.code !== 0) throw new Error(`${line} failed:\n${r.output}`);
    }
  }

  /** The prod stack with its required secrets. */
  initProdStack(): void {
    this.initStack("prod", Object.fromEntries(REQUIRED_SECRETS.map((key) => [key, standinSecret(key, "0123456789")])));
  }

  /** Runs `pulumi ARGS` in the project directory. */
  pulumi(args: string[], opts: RunOpts = {}): PulumiRun {
    return this.run("pulumi", args, opts);
  }

  /** Runs a command line from the README with bash in the project directory. */
  shell(line: string, opts: RunOpts = {}): PulumiRun {
    return this.run("bash", ["-c", line], opts);
  }

  private run(file: string, args: string[], opts: RunOpts): PulumiRun {
    const r = spawnSync(file, args, {
      cwd: this.project,
      env: this.env(opts.env),
      input: opts.stdin ?? "",
      encoding: "utf8",
      timeout: opts.timeoutMs ?? 10 * 60_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    const stdout = plainText(r.stdout ?? "");
    const stderr = plainText(r.stderr ?? "") + (r.error ? `\n${r.error.message}` : "");
    return { code: r.status ?? -1, stdout, stderr, output: `${stdout}\n${stderr}` };
  }

  /** `pulumi plugin install resource NAME VERSION --file WRAPPER` for each stand-in, as a user installs a local plugin. */
  private installStandIns(): void {
    const bin = path.join(this.root, "standins");
    fs.mkdirSync(bin);
    const tsNode = require.resolve("ts-node/register/transpile-only", { paths: [REPO_ROOT] });
    for (const pkg of PACKAGES) {
      const wrapper = path.join(bin, `pulumi-resource-${pkg}`);
      fs.writeFileSync(
        wrapper,
        `#!/bin/sh\n# Stand-in for the ${pkg} provider plugin (tests/engine/standins).\nexec "${process.execPath}" --require "${tsNode}" "${STAND_IN}" ${pkg} "$@"\n`,
        { mode: 0o755 },
      );
      const r = this.pulumi(["plugin", "install", "resource", pkg, packageVersion(pkg), "--file", wrapper]);
      if (r.code !== 0) throw new Error(`installing the ${pkg} stand-in failed:\n${r.output}`);
    }
  }

  dispose(): void {
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}
