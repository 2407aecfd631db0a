import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A run's exit code and both streams, for assertion messages. */
export function show(r: RunResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
}

export interface RunOptions {
  /** Fed to the command's standard input (e.g. a bundle for `bash -s`). */
  stdin?: string;
  /** Extra systemd-nspawn options, e.g. ["--capability=CAP_SYS_ADMIN"]. */
  nspawnArgs?: string[];
  /** Kill the command after this long; default 10 minutes. */
  timeoutMs?: number;
}

const REPO_ROOT = path.resolve(__dirname, "..", "..");
const FIXTURE = path.join(REPO_ROOT, "tests", "fixtures", "debian13-root.sh");

/** Thrown, never skipped: a machine that cannot run these tests must say so and fail. */
function missing(what: string, fix: string): never {
  const message = `DebianRoot: ${what}. ${fix} (the integration tests need it; they fail rather than skip).`;
  console.error(message);
  throw new Error(message);
}

function checkTools(): void {
  if (process.getuid?.() !== 0) missing("must run as root (overlay mounts and systemd-nspawn need it)", "Run the tests as root");
  for (const tool of ["systemd-nspawn", "debootstrap", "mount", "umount"]) {
    const found = spawnSync("sh", ["-c", `command -v ${tool}`], { encoding: "utf8" });
    if (found.status !== 0) missing(`${tool} is not installed`, "apt-get install systemd-container debootstrap");
  }
  const filesystems = fs.readFileSync("/proc/filesystems", "utf8");
  if (!/\boverlay\b/.test(filesystems)) {
    spawnSync("modprobe", ["overlay"]);
    if (!/\boverlay\b/.test(fs.readFileSync("/proc/filesystems", "utf8"))) {
      missing("the kernel has no overlay filesystem", "Load it with modprobe overlay");
    }
  }
}

/** The cached Debian 13 root (built once, about 70 s); never written to. */
function cachedRoot(): string {
  const built = spawnSync("bash", [FIXTURE], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 15 * 60_000 });
  const root = (built.stdout ?? "").trim().split("\n").pop() ?? "";
  if (built.status !== 0 || !root || !fs.existsSync(path.join(root, ".leaninfra-fixture-ready"))) {
    missing(`bash ${FIXTURE} failed (exit ${built.status}${built.error ? `, ${built.error.message}` : ""})`, "See its output above");
  }
  return root;
}

const live = new Set<DebianRoot>();
process.on("exit", () => {
  for (const root of live) root.dispose();
});

/**
 * A throwaway Debian 13 root: an overlay (upper and work dirs in a mkdtemp directory) over the cached
 * root, so tests can install packages and break things without touching the cache. Call dispose()
 * in a finally block; an exit hook also cleans up after a crashed test.
 */
export class DebianRoot {
  /** The merged root as seen from the host: read files the command left behind under it. */
  readonly path: string;
  private readonly tempDir: string;
  private readonly machine: string;
  private disposed = false;

  private constructor(lower: string) {
    this.tempDir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-root-"));
    const id = randomBytes(4).toString("hex");
    this.machine = `leaninfra-test-${id}`;
    const upper = path.join(this.tempDir, "upper");
    const work = path.join(this.tempDir, "work");
    this.path = path.join(this.tempDir, this.machine);
    for (const dir of [upper, work, this.path]) fs.mkdirSync(dir);
    const mounted = spawnSync(
      "mount",
      ["-t", "overlay", "overlay", "-o", `lowerdir=${lower},upperdir=${upper},workdir=${work}`, this.path],
      { encoding: "utf8" },
    );
    if (mounted.status !== 0) {
      fs.rmSync(this.tempDir, { recursive: true, force: true });
      missing(`the overlay mount failed: ${mounted.stderr.trim()}`, "Check that overlayfs works on this machine");
    }
    live.add(this);
  }

  /** Checks the tools, builds or reuses the cached root, and mounts a fresh overlay of it. */
  static create(): DebianRoot {
    checkTools();
    return new DebianRoot(cachedRoot());
  }

  /** Runs `bash -c command` inside the root (systemd-nspawn, no systemd as PID 1, host network). */
  run(command: string, opts: RunOptions = {}): RunResult {
    if (this.disposed) throw new Error("DebianRoot: run() after dispose()");
    const result = spawnSync(
      "systemd-nspawn",
      [
        "--quiet",
        "--register=no",
        "--keep-unit",
        "--console=pipe",
        `--machine=${this.machine}`,
        ...(opts.nspawnArgs ?? []),
        "-D",
        this.path,
        "bash",
        "-c",
        command,
      ],
      { input: opts.stdin ?? "", encoding: "utf8", maxBuffer: 64 * 1024 * 1024, timeout: opts.timeoutMs ?? 10 * 60_000 },
    );
    if (result.error) throw new Error(`DebianRoot: systemd-nspawn failed to run ${JSON.stringify(command)}: ${result.error.message}`);
    return { code: result.status ?? 128, stdout: result.stdout, stderr: result.stderr };
  }

  /** Copies a host file into the root at rootPath (an absolute path inside the root). */
  copyIn(hostPath: string, rootPath: string): void {
    const target = this.hostPath(rootPath);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.copyFileSync(hostPath, target);
  }

  /** Where rootPath (absolute, inside the root) is on the host. */
  hostPath(rootPath: string): string {
    if (!path.isAbsolute(rootPath)) throw new Error(`DebianRoot: ${rootPath} is not an absolute path`);
    return path.join(this.path, rootPath);
  }

  /** Unmounts the overlay and removes the temp directory; safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    live.delete(this);
    let unmounted = spawnSync("umount", [this.path]).status === 0;
    if (!unmounted) unmounted = spawnSync("umount", ["--lazy", this.path]).status === 0;
    if (!unmounted && fs.existsSync(this.path) && spawnSync("mountpoint", ["-q", this.path]).status === 0) {
      // Never rm -rf through a live mount: leave the directory for a person to look at.
      console.error(`DebianRoot: could not unmount ${this.path}; left ${this.tempDir} in place`);
      return;
    }
    fs.rmSync(this.tempDir, { recursive: true, force: true });
  }
}

/** Runs fn with a fresh root and always disposes of it, also when fn throws. */
export async function withDebianRoot<T>(fn: (root: DebianRoot) => Promise<T> | T): Promise<T> {
  const root = DebianRoot.create();
  try {
    return await fn(root);
  } finally {
    root.dispose();
  }
}
