import { execFileSync, spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as http from "node:http";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { VICTORIALOGS_VERSION, victoriaLogsFiles } from "../../components/logs/config";

/**
 * VictoriaLogs for the tests, as the logs role installs it on the VM: the release's layout (an archive
 * with victoria-logs-prod at its root, and a checksums file beside it as the vendor's Makefile writes it)
 * served over HTTP on loopback, for leaninfra:victoriaLogsUrl. This machine cannot reach github.com, so
 * the binary inside is built from the same version's Go module (`go install`), once per machine, and
 * cached. A missing binary that cannot be built fails the tests, it never skips them.
 */
export const VICTORIALOGS_MODULE = "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs";
const CACHE_DIR = process.env.LEANINFRA_ROOT_CACHE ?? "/var/cache/leaninfra";
export const VICTORIALOGS_DIR = path.join(CACHE_DIR, "tools", `victoria-logs-${VICTORIALOGS_VERSION}`);
/** What tests/setup.sh runs (Go >= 1.21 on PATH; about 76 s on 2 cores). */
export const VICTORIALOGS_INSTALL = `GOBIN=${VICTORIALOGS_DIR} GOTOOLCHAIN=auto go install ${VICTORIALOGS_MODULE}@${VICTORIALOGS_VERSION}`;

/** The cached victoria-logs binary, built with `go install` when missing. */
export function victoriaLogsBinary(): string {
  const binary = path.join(VICTORIALOGS_DIR, "victoria-logs");
  if (fs.existsSync(binary)) return binary;
  const envPath = `${process.env.PATH ?? ""}:/usr/local/go/bin`;
  const go = spawnSync("sh", ["-c", "command -v go"], { encoding: "utf8", env: { ...process.env, PATH: envPath } });
  if (go.status !== 0) throw new Error(`VictoriaLogs: ${binary} is missing and Go is not installed to build it. Install Go (>= 1.21), then run: ${VICTORIALOGS_INSTALL}`);
  console.error(`VictoriaLogs: building ${VICTORIALOGS_VERSION} into ${VICTORIALOGS_DIR} (once per machine, about a minute and a half)`);
  fs.mkdirSync(VICTORIALOGS_DIR, { recursive: true });
  const built = spawnSync(go.stdout.trim(), ["install", `${VICTORIALOGS_MODULE}@${VICTORIALOGS_VERSION}`], {
    env: { ...process.env, PATH: envPath, GOBIN: VICTORIALOGS_DIR, GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? "auto" },
    encoding: "utf8",
    timeout: 20 * 60_000,
  });
  if (built.status !== 0 || !fs.existsSync(binary)) {
    throw new Error(`VictoriaLogs: building failed (exit ${built.status}); run it by hand: ${VICTORIALOGS_INSTALL}\n${built.stderr ?? ""}`);
  }
  return binary;
}

const sha256 = (file: string) => createHash("sha256").update(fs.readFileSync(file)).digest("hex");

export interface ReleaseDir {
  /** The directory holding the archive and the checksums file. */
  dir: string;
  archive: string;
  checksums: string;
  /** SHA-256 of the archive: what leaninfra:victoriaLogsSha256 pins. */
  archiveSha256: string;
  binarySha256: string;
  remove(): void;
}

/**
 * A release directory for one architecture: victoria-logs-linux-<arch>-<version>.tar.gz holding
 * victoria-logs-prod at its root, and <stem>_checksums.txt with the archive's and the binary's SHA-256
 * (sha256sum's format). `binary` defaults to the Go-built one; `checksumsOverride` replaces the file's text.
 */
export function buildReleaseDir(opts: { arch?: "amd64" | "arm64"; binary?: string; checksumsOverride?: string } = {}): ReleaseDir {
  const arch = opts.arch ?? "amd64";
  const { archive, checksums } = victoriaLogsFiles(arch);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-vlrelease-"));
  const stage = path.join(dir, "stage");
  fs.mkdirSync(stage);
  fs.copyFileSync(opts.binary ?? victoriaLogsBinary(), path.join(stage, "victoria-logs-prod"));
  fs.chmodSync(path.join(stage, "victoria-logs-prod"), 0o755);
  execFileSync("tar", ["--owner=0", "--group=0", "-czf", path.join(dir, archive), "-C", stage, "victoria-logs-prod"]);
  const archiveSha256 = sha256(path.join(dir, archive));
  const binarySha256 = sha256(path.join(stage, "victoria-logs-prod"));
  fs.rmSync(stage, { recursive: true });
  fs.writeFileSync(path.join(dir, checksums), opts.checksumsOverride ?? `${archiveSha256}  ${archive}\n${binarySha256}  victoria-logs-prod\n`);
  return { dir, archive, checksums, archiveSha256, binarySha256, remove: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

export interface ReleaseServer {
  /** http://127.0.0.1:<port>/release: what leaninfra:victoriaLogsUrl is set to. */
  url: string;
  /** The paths requested so far, in order. */
  requests: string[];
  close(): Promise<void>;
}

/**
 * Serves a release directory's files over HTTP on loopback (the booted roots share the host's network),
 * under /release/. Anything else is a 404.
 */
export async function serveRelease(dir: string): Promise<ReleaseServer> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const url = req.url ?? "";
    requests.push(url);
    const name = url.startsWith("/release/") ? url.slice("/release/".length) : "";
    const file = path.join(dir, name);
    if (!name || name.includes("/") || !fs.existsSync(file) || !fs.statSync(file).isFile()) {
      res.writeHead(404).end("not found\n");
      return;
    }
    res.writeHead(200, { "content-type": "application/octet-stream", "content-length": fs.statSync(file).size });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/release`,
    requests,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}

export interface LocalVictoriaLogs {
  /** http://127.0.0.1:<port> */
  url: string;
  port: number;
  /** Sends entries in the journal export format to /insert/journald/upload, as systemd-journal-upload does. */
  uploadJournal(entries: Record<string, string>[]): Promise<void>;
  stop(): Promise<void>;
}

/**
 * The cached VictoriaLogs binary on a free loopback port with a temp data directory and the logs role's
 * flags for stream fields (`args` adds more), for tests that need no booted root. Waits for /health.
 */
export async function startVictoriaLogs(args: string[] = []): Promise<LocalVictoriaLogs> {
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-vl-"));
  const port = await new Promise<number>((resolve, reject) => {
    const probe = net.createServer();
    probe.on("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const p = (probe.address() as net.AddressInfo).port;
      probe.close(() => resolve(p));
    });
  });
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(victoriaLogsBinary(), [`-httpListenAddr=127.0.0.1:${port}`, `-storageDataPath=${dataDir}`, "-journald.streamFields=_SYSTEMD_UNIT,SYSLOG_IDENTIFIER", ...args], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr = (stderr + d).slice(-4000)));
  const stop = async () => {
    if (child.exitCode === null) {
      child.kill("SIGTERM");
      await new Promise((r) => child.once("exit", r));
    }
    fs.rmSync(dataDir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    const ok = await fetch(`${url}/health`).then((r) => r.ok, () => false);
    if (ok) break;
    if (i > 100 || child.exitCode !== null) {
      await stop();
      throw new Error(`VictoriaLogs did not start on ${url}:\n${stderr}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const uploadJournal = async (entries: Record<string, string>[]) => {
    const body = entries.map((e) => Object.entries(e).map(([k, v]) => `${k}=${v}\n`).join("")).join("\n") + "\n";
    const response = await fetch(`${url}/insert/journald/upload`, { method: "POST", headers: { "content-type": "application/vnd.fdo.journal" }, body });
    if (!response.ok) throw new Error(`VictoriaLogs refused the journal upload: ${response.status} ${await response.text()}`);
  };
  return { url, port, uploadJournal, stop };
}
