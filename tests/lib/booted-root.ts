import assert from "node:assert/strict";
import { ChildProcess, spawn, spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { DebianRoot, RunResult, show } from "./debian-root";
import { holdLock } from "./host-lock";

/**
 * A Debian 13 root booted with systemd as PID 1 (`systemd-nspawn --boot --capability=all`), on a fresh
 * overlay of the cached root. It shares the host's network, so booted roots are serialized by a lock
 * file, and whatever they leave in the host's network namespace (Docker's bridge and iptables rules,
 * ip_forward) is put back at shutdown. Commands run inside with `nsenter -a`.
 */

export interface Bind {
  /** Directory (or file) on the host. */
  host: string;
  /** Absolute path inside the root. */
  root: string;
  readOnly?: boolean;
}

export interface BootOptions {
  binds?: Bind[];
  /**
   * Absolute paths inside the root that get an empty host directory (removed at shutdown) bound over
   * them: e.g. /var/lib/docker, since Docker's overlay2 driver cannot sit on the root's overlayfs.
   */
  scratch?: string[];
  /** Bind /var/cache/leaninfra/apt-archives over /var/cache/apt/archives so .debs download once per machine. Default true. */
  aptCache?: boolean;
  /**
   * Let dockerd run containers inside: cgroup controllers and /proc/sys writable in the root's mount
   * namespace, the keyring system calls runc needs allowed, ip_forward on (restored at shutdown).
   */
  docker?: boolean;
  /**
   * Files written into the fresh overlay before it boots (e.g. a cloud-init seed, a unit): content, or a
   * symlink target (e.g. to enable a unit). Parent directories are created.
   */
  files?: { path: string; content?: string; mode?: number; symlinkTo?: string }[];
  /** How long to wait for the lock (another booted root) and for systemd to finish booting. */
  lockTimeoutMs?: number;
  bootTimeoutMs?: number;
}

export interface AsyncRunOptions {
  stdin?: string;
  timeoutMs?: number;
}

const CACHE_DIR = process.env.LEANINFRA_ROOT_CACHE ?? "/var/cache/leaninfra";
/** Booted roots share the host's network (ports, bridge, iptables): one at a time on a machine. */
export const BOOTED_ROOT_LOCK = "/run/lock/leaninfra-booted-root.lock";
const APT_ARCHIVES = path.join(CACHE_DIR, "apt-archives");
const ROOT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8", "TERM=dumb"];
const IP_FORWARD = "/proc/sys/net/ipv4/ip_forward";
/** Host-wide settings dockerd may change from inside (the netns is shared): put back at shutdown. */
const HOST_SYSCTLS = [IP_FORWARD, "/proc/sys/net/bridge/bridge-nf-call-iptables", "/proc/sys/net/bridge/bridge-nf-call-ip6tables"];

interface HostState {
  links: Set<string>;
  cgroups: Set<string>;
  sysctls: Map<string, string>;
}

function hostState(): HostState {
  const sysctls = new Map<string, string>();
  for (const file of HOST_SYSCTLS) if (fs.existsSync(file)) sysctls.set(file, fs.readFileSync(file, "utf8").trim());
  return { links: linkNames(), cgroups: dockerCgroups(), sysctls };
}

function fail(message: string): never {
  const text = `BootedRoot: ${message} (the booted-root tests fail rather than skip).`;
  console.error(text);
  throw new Error(text);
}

function checkTools(): void {
  if (process.getuid?.() !== 0) fail("must run as root (systemd-nspawn --boot and nsenter need it)");
  for (const [tool, pkg] of [["systemd-nspawn", "systemd-container"], ["nsenter", "util-linux"], ["flock", "util-linux"], ["ip", "iproute2"]]) {
    if (spawnSync("sh", ["-c", `command -v ${tool}`]).status !== 0) fail(`${tool} is not installed; apt-get install ${pkg}`);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

async function acquireLock(timeoutMs: number): Promise<{ release(): void }> {
  try {
    return await holdLock(BOOTED_ROOT_LOCK, timeoutMs);
  } catch (error) {
    fail((error as Error).message);
  }
}

function linkNames(): Set<string> {
  const out = spawnSync("ip", ["-o", "link", "show"], { encoding: "utf8" }).stdout ?? "";
  return new Set(out.split("\n").map((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1]).filter((n): n is string => !!n));
}

function dockerCgroups(): Set<string> {
  const out = spawnSync("find", ["/sys/fs/cgroup", "-maxdepth", "4", "-type", "d", "-name", "docker"], { encoding: "utf8" }).stdout ?? "";
  return new Set(out.split("\n").filter(Boolean));
}

// Docker's rules in the (shared) host netns, removed from inside the root, which has iptables.
const IPTABLES_CLEANUP = String.raw`command -v iptables >/dev/null || exit 0
for table in filter nat; do
  iptables -t "$table" -S 2>/dev/null | grep -E '^-A (INPUT|FORWARD|OUTPUT|PREROUTING|POSTROUTING) .*(DOCKER|docker0)' |
    while read -r -a rule; do rule[0]=-D; iptables -t "$table" "${"$"}{rule[@]}"; done || true
  chains=$(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ { print $2 }')
  for chain in $chains; do iptables -t "$table" -F "$chain"; done
  for chain in $chains; do iptables -t "$table" -X "$chain"; done
done`;

const live = new Set<BootedRoot>();
process.on("exit", () => {
  for (const root of live) root.emergencyCleanup();
});

export class BootedRoot {
  /** The merged root as seen from the host. */
  readonly path: string;
  /** PID (host view) of the root's systemd. */
  readonly pid: number;
  private readonly nspawn: ChildProcess;
  private readonly overlay: DebianRoot;
  private readonly lock: { release(): void };
  private readonly scratchDir: string;
  private readonly options: BootOptions;
  private readonly before: HostState;
  private readonly consoleLog: string;
  private stopped = false;

  private constructor(init: {
    nspawn: ChildProcess;
    overlay: DebianRoot;
    lock: { release(): void };
    scratchDir: string;
    options: BootOptions;
    before: HostState;
    consoleLog: string;
    pid: number;
  }) {
    this.nspawn = init.nspawn;
    this.overlay = init.overlay;
    this.lock = init.lock;
    this.scratchDir = init.scratchDir;
    this.options = init.options;
    this.before = init.before;
    this.consoleLog = init.consoleLog;
    this.pid = init.pid;
    this.path = init.overlay.path;
  }

  /** Takes the lock, mounts a fresh overlay of the cached root, boots it and waits for systemd. */
  static async boot(options: BootOptions = {}): Promise<BootedRoot> {
    checkTools();
    const lock = await acquireLock(options.lockTimeoutMs ?? 30 * 60_000);
    let overlay: DebianRoot | undefined;
    let scratchDir = "";
    let nspawn: ChildProcess | undefined;
    const before = hostState();
    try {
      overlay = DebianRoot.create();
      for (const file of options.files ?? []) {
        const target = overlay.hostPath(file.path);
        fs.mkdirSync(path.dirname(target), { recursive: true });
        if (file.symlinkTo !== undefined) fs.symlinkSync(file.symlinkTo, target);
        else fs.writeFileSync(target, file.content ?? "", { mode: file.mode ?? 0o644 });
      }
      scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-boot-"));
      const machine = path.basename(overlay.path);
      const args = ["--boot", "--capability=all", "--register=no", "--keep-unit", "--console=read-only", `--machine=${machine}`, "-D", overlay.path];
      if (options.aptCache ?? true) {
        fs.mkdirSync(path.join(APT_ARCHIVES, "partial"), { recursive: true });
        args.push(`--bind=${APT_ARCHIVES}:/var/cache/apt/archives`);
      }
      (options.scratch ?? []).forEach((rootPath, i) => {
        const dir = path.join(scratchDir, `scratch-${i}`);
        fs.mkdirSync(dir);
        args.push(`--bind=${dir}:${rootPath}`);
      });
      for (const bind of options.binds ?? []) {
        if (!fs.existsSync(bind.host)) fail(`bind source ${bind.host} does not exist`);
        args.push(`--bind${bind.readOnly ? "-ro" : ""}=${bind.host}:${bind.root}`);
      }
      if (options.docker) {
        // runc joins a session keyring; nspawn's default seccomp filter refuses the keyring calls.
        args.push("--system-call-filter=@keyring");
        // nspawn mounts /proc/sys read-only, so dockerd cannot turn forwarding on itself.
        fs.writeFileSync(IP_FORWARD, "1\n");
      }
      const consoleLog = path.join(scratchDir, "console.log");
      const logFd = fs.openSync(consoleLog, "a");
      nspawn = spawn("systemd-nspawn", args, { stdio: ["ignore", logFd, logFd] });
      fs.closeSync(logFd);
      const pid = await BootedRoot.waitForInit(nspawn, consoleLog, 30_000);
      const root = new BootedRoot({ nspawn, overlay, lock, scratchDir, options, before, consoleLog, pid });
      live.add(root);
      if (options.docker) root.makeDockerWork();
      await root.waitForSystemd(options.bootTimeoutMs ?? 120_000);
      return root;
    } catch (error) {
      if (nspawn && nspawn.exitCode === null) nspawn.kill("SIGKILL");
      if (nspawn) await new Promise((r) => (nspawn!.exitCode !== null ? r(null) : nspawn!.once("exit", r)));
      BootedRoot.restoreHost(before);
      overlay?.dispose();
      if (scratchDir) fs.rmSync(scratchDir, { recursive: true, force: true });
      lock.release();
      throw error;
    }
  }

  private static async waitForInit(nspawn: ChildProcess, consoleLog: string, timeoutMs: number): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (nspawn.exitCode !== null) fail(`systemd-nspawn exited (${nspawn.exitCode}) while booting:\n${fs.readFileSync(consoleLog, "utf8")}`);
      const children = (() => {
        try {
          return fs.readFileSync(`/proc/${nspawn.pid}/task/${nspawn.pid}/children`, "utf8").trim().split(/\s+/).filter(Boolean);
        } catch {
          return [];
        }
      })();
      for (const child of children) {
        try {
          if (fs.readFileSync(`/proc/${child}/comm`, "utf8").trim() === "systemd") return Number(child);
        } catch {
          // gone already
        }
      }
      await sleep(100);
    }
    fail(`no systemd appeared under systemd-nspawn within ${timeoutMs} ms:\n${fs.readFileSync(consoleLog, "utf8")}`);
  }

  /** Bind-remounts the cgroup controllers and /proc/sys read-write inside the root's mount namespace. */
  private makeDockerWork(): void {
    const mounts = fs.readFileSync(`/proc/${this.pid}/mounts`, "utf8").split("\n");
    const targets = mounts
      .map((line) => line.split(" "))
      .filter((f) => f.length > 3 && ((f[2] === "cgroup" && f[1].startsWith("/sys/fs/cgroup/")) || f[1] === "/proc/sys") && f[3].split(",").includes("ro"))
      .map((f) => f[1]);
    for (const target of targets) {
      const result = spawnSync("nsenter", ["-t", String(this.pid), "-m", "mount", "-o", "remount,bind,rw", target], { encoding: "utf8" });
      if (result.status !== 0) fail(`could not make ${target} writable for dockerd: ${result.stderr.trim()}`);
    }
  }

  private async waitForSystemd(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    let result: RunResult;
    // Until dbus is up, systemctl cannot connect at all; then --wait blocks until boot has finished.
    do {
      result = await this.runAsync("systemctl is-system-running --wait", { timeoutMs: Math.max(1000, deadline - Date.now()) });
      if (!/Failed to connect to/.test(result.stderr)) break;
      await sleep(200);
    } while (Date.now() < deadline);
    const state = result.stdout.trim();
    if (state !== "running" && state !== "degraded") {
      fail(`systemd did not finish booting (state "${state}", exit ${result.code}):\n${result.stderr}`);
    }
    if (state === "degraded") {
      const failed = this.run("systemctl --failed --no-legend --plain").stdout.trim();
      console.log(`BootedRoot: booted with failed units (not fatal):\n${failed}`);
    }
  }

  private nsenterArgs(command: string): string[] {
    return ["-t", String(this.pid), "-a", "env", "-i", ...ROOT_ENV, "bash", "-c", command];
  }

  /** Runs `bash -c command` inside the booted root and waits for it. */
  run(command: string, opts: AsyncRunOptions = {}): RunResult {
    if (this.stopped) throw new Error("BootedRoot: run() after shutdown()");
    const result = spawnSync("nsenter", this.nsenterArgs(command), {
      input: opts.stdin ?? "",
      encoding: "utf8",
      maxBuffer: 64 * 1024 * 1024,
      timeout: opts.timeoutMs ?? 10 * 60_000,
    });
    if (result.error) throw new Error(`BootedRoot: nsenter failed to run ${JSON.stringify(command)}: ${result.error.message}`);
    return { code: result.status ?? 128, stdout: result.stdout, stderr: result.stderr };
  }

  /** Like run(), without blocking the event loop (e.g. while a load generator runs in this process). */
  runAsync(command: string, opts: AsyncRunOptions = {}): Promise<RunResult> {
    if (this.stopped) return Promise.reject(new Error("BootedRoot: runAsync() after shutdown()"));
    return new Promise((resolve, reject) => {
      const child = spawn("nsenter", this.nsenterArgs(command), { stdio: ["pipe", "pipe", "pipe"] });
      let stdout = "";
      let stderr = "";
      child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
      child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      const timer = setTimeout(() => {
        stderr += `\nBootedRoot: killed after ${opts.timeoutMs ?? 10 * 60_000} ms`;
        child.kill("SIGKILL");
      }, opts.timeoutMs ?? 10 * 60_000);
      child.on("error", (error) => {
        clearTimeout(timer);
        reject(new Error(`BootedRoot: nsenter failed to run ${JSON.stringify(command)}: ${error.message}`));
      });
      child.on("close", (code, signal) => {
        clearTimeout(timer);
        resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
      });
      child.stdin.on("error", () => undefined);
      child.stdin.end(opts.stdin ?? "");
    });
  }

  /** Where rootPath (absolute, inside the root) is on the host. */
  hostPath(rootPath: string): string {
    return this.overlay.hostPath(rootPath);
  }

  /** Powers the root off, puts the host's network back, removes the overlay and releases the lock. Safe twice. */
  async shutdown(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    try {
      if (this.options.docker) {
        // Stop Docker first so it cannot add rules back, then take its rules out of the host's netns.
        const cleaned = spawnSync("nsenter", this.nsenterArgs(`systemctl stop docker.socket docker.service containerd.service >/dev/null 2>&1 || true\n${IPTABLES_CLEANUP}`), {
          encoding: "utf8",
          timeout: 120_000,
        });
        if (cleaned.status !== 0) console.error(`BootedRoot: iptables clean-up said: ${cleaned.stderr}`);
      }
      spawnSync("kill", ["-s", "SIGRTMIN+4", String(this.pid)]);
      const exited = await this.waitForExit(60_000);
      if (!exited) {
        console.error("BootedRoot: the root did not power off within 60 s; killing systemd-nspawn");
        this.nspawn.kill("SIGKILL");
        await this.waitForExit(10_000);
      }
    } finally {
      this.release();
    }
  }

  private waitForExit(timeoutMs: number): Promise<boolean> {
    if (this.nspawn.exitCode !== null || this.nspawn.signalCode !== null) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      this.nspawn.once("exit", () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** What a booted root with Docker leaves in the shared host: new links (docker0, veths), cgroups, ip_forward. */
  private static restoreHost(before: HostState): void {
    for (const name of linkNames()) {
      if (!before.links.has(name) && /^(docker\d*|veth[0-9a-f]+|br-[0-9a-f]+)$/.test(name)) spawnSync("ip", ["link", "delete", name]);
    }
    for (const dir of dockerCgroups()) {
      if (!before.cgroups.has(dir)) spawnSync("sh", ["-c", `find "$1" -depth -type d -exec rmdir {} + 2>/dev/null || true`, "sh", dir]);
    }
    for (const [file, value] of before.sysctls) {
      if (fs.existsSync(file) && fs.readFileSync(file, "utf8").trim() !== value) fs.writeFileSync(file, `${value}\n`);
    }
  }

  private release(): void {
    live.delete(this);
    BootedRoot.restoreHost(this.before);
    this.overlay.dispose();
    fs.rmSync(this.scratchDir, { recursive: true, force: true });
    this.lock.release();
  }

  /** For the exit hook: no waiting, just kill and clean up. */
  emergencyCleanup(): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.nspawn.exitCode === null) this.nspawn.kill("SIGKILL");
    spawnSync("sleep", ["1"]);
    this.release();
  }

  /** The nspawn console output so far (boot messages), for failure reports. */
  consoleOutput(): string {
    return fs.existsSync(this.consoleLog) ? fs.readFileSync(this.consoleLog, "utf8") : "";
  }
}

/** Runs a command in the booted root that must succeed; its stdout. */
export function must(root: BootedRoot, command: string): string {
  const result = root.run(command);
  assert.equal(result.code, 0, `${command}\n${show(result)}`);
  return result.stdout;
}

/** Boots a root, runs fn with it and always shuts it down, also when fn throws. */
export async function withBootedRoot<T>(options: BootOptions, fn: (root: BootedRoot) => Promise<T> | T): Promise<T> {
  const root = await BootedRoot.boot(options);
  try {
    return await fn(root);
  } finally {
    await root.shutdown();
  }
}
