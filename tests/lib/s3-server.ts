import { ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";

/**
 * A real S3-compatible server for the tests: versitygw (Apache-2.0, github.com/versity/versitygw) with
 * its posix backend, serving TLS on loopback with a throwaway certificate, in a temp directory. Objects
 * are plain files under storageDir/<bucket>/, so a test can look at or damage them.
 *
 * The binary is built once per machine with `go install` and cached; `.ci/run` runs VERSITYGW_INSTALL.
 * A missing binary that cannot be built fails the tests, it never skips them.
 */
export const VERSITYGW_VERSION = "v1.8.0";
export const VERSITYGW_MODULE = "github.com/versity/versitygw/cmd/versitygw";
const CACHE_DIR = process.env.LEANINFRA_ROOT_CACHE ?? "/var/cache/leaninfra";
export const VERSITYGW_DIR = path.join(CACHE_DIR, "tools", `versitygw-${VERSITYGW_VERSION}`);
/** What .ci/run runs (Go >= 1.21 on PATH; it fetches the Go 1.25 toolchain versitygw needs by itself). */
export const VERSITYGW_INSTALL = `GOBIN=${VERSITYGW_DIR} GOTOOLCHAIN=auto go install ${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`;

const EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/** The cached versitygw binary, built with `go install` when missing (a few minutes, once per machine). */
export function versitygwBinary(): string {
  const binary = path.join(VERSITYGW_DIR, "versitygw");
  if (fs.existsSync(binary)) return binary;
  const envPath = `${process.env.PATH ?? ""}:/usr/local/go/bin`;
  const go = spawnSync("sh", ["-c", "command -v go"], { encoding: "utf8", env: { ...process.env, PATH: envPath } });
  if (go.status !== 0) {
    throw new Error(`S3Server: ${binary} is missing and Go is not installed to build it. Install Go (>= 1.21), then run: ${VERSITYGW_INSTALL}`);
  }
  console.error(`S3Server: building versitygw ${VERSITYGW_VERSION} into ${VERSITYGW_DIR} (once per machine, a few minutes)`);
  fs.mkdirSync(VERSITYGW_DIR, { recursive: true });
  const built = spawnSync(go.stdout.trim(), ["install", `${VERSITYGW_MODULE}@${VERSITYGW_VERSION}`], {
    env: { ...process.env, PATH: envPath, GOBIN: VERSITYGW_DIR, GOTOOLCHAIN: process.env.GOTOOLCHAIN ?? "auto" },
    encoding: "utf8",
    timeout: 20 * 60_000,
  });
  if (built.status !== 0 || !fs.existsSync(binary)) {
    throw new Error(`S3Server: building versitygw failed (exit ${built.status}); run it by hand: ${VERSITYGW_INSTALL}\n${built.stderr ?? ""}`);
  }
  return binary;
}

/** A port nobody listens on right now (the roots share the host's network). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const port = (server.address() as net.AddressInfo).port;
      server.close(() => resolve(port));
    });
  });
}

function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.destroy();
      resolve(true);
    });
    socket.on("error", () => resolve(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export interface S3ServerOptions {
  /** Created at start; default "leaninfra-backups". */
  bucket?: string;
  /** Log every request with its headers (secrets masked): needed for partSizes(). */
  debugLog?: boolean;
}

const live = new Set<S3Server>();
process.on("exit", () => {
  for (const server of live) server.dispose();
});

export class S3Server {
  readonly dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-s3-"));
  readonly storageDir = path.join(this.dir, "storage");
  readonly logFile = path.join(this.dir, "versitygw.log");
  readonly accessKey = `AK${randomBytes(10).toString("hex").toUpperCase()}`;
  readonly secretKey = randomBytes(24).toString("hex");
  readonly bucket: string;
  /** The certificate (self-signed, for localhost and 127.0.0.1): the CA a client trusts. */
  readonly caPem: string;
  port = 0;
  private child: ChildProcess | undefined;
  private readonly debugLog: boolean;
  private disposed = false;

  private constructor(options: S3ServerOptions) {
    this.bucket = options.bucket ?? "leaninfra-backups";
    this.debugLog = options.debugLog ?? false;
    fs.mkdirSync(this.storageDir);
    try {
      execFileSync(
        "openssl",
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2", "-subj", "/CN=localhost",
          "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", this.path("key.pem"), "-out", this.path("cert.pem")],
        { stdio: ["ignore", "pipe", "pipe"] },
      );
    } catch (error) {
      fs.rmSync(this.dir, { recursive: true, force: true });
      throw new Error(`S3Server: openssl could not make the certificate (apt-get install openssl): ${(error as Error).message}`);
    }
    this.caPem = fs.readFileSync(this.path("cert.pem"), "utf8");
    live.add(this);
  }

  /** Starts versitygw on a free loopback port and creates the bucket. */
  static async start(options: S3ServerOptions = {}): Promise<S3Server> {
    const binary = versitygwBinary();
    const server = new S3Server(options);
    try {
      server.port = await freePort();
      await server.launch(binary);
      server.createBucket();
      return server;
    } catch (error) {
      server.dispose();
      throw error;
    }
  }

  /** "https://localhost:<port>": what the role's s3.endpoint gets. */
  get endpoint(): string {
    return `https://localhost:${this.port}`;
  }

  path(file: string): string {
    return path.join(this.dir, file);
  }

  /** Where the object `key` of the bucket is on disk. */
  objectPath(key: string): string {
    return path.join(this.storageDir, this.bucket, key);
  }

  /** Stops the server (the port refuses connections); the objects stay for restart(). */
  async stop(): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    child.kill("SIGTERM");
    const killed = await Promise.race([exited.then(() => true), sleep(10_000).then(() => false)]);
    if (!killed) {
      child.kill("SIGKILL");
      await exited;
    }
  }

  /** Starts it again on the same port with the same objects. */
  async restart(): Promise<void> {
    await this.stop();
    await this.launch(versitygwBinary());
  }

  /**
   * The part sizes of every multipart upload the server received, by object key, in part order
   * (debugLog only): what R2's "every part but the last the same size" rule is checked against.
   */
  partSizes(): Map<string, number[]> {
    if (!this.debugLog) throw new Error("S3Server: partSizes() needs { debugLog: true }");
    // eslint-disable-next-line no-control-regex
    const lines = fs.readFileSync(this.logFile, "utf8").replace(/\x1b\[[0-9;]*m/g, "").split("\n");
    const uploads = new Map<string, { key: string; parts: Map<number, number> }>();
    let pending: { id: string; key: string; part: number } | undefined;
    for (const line of lines) {
      const url = /\[URL\]: https?:\/\/[^/]+\/[^/]+\/(\S+?)\?partNumber=(\d+)&uploadId=([\w-]+)/.exec(line);
      if (url) {
        pending = { key: decodeURIComponent(url[1]), part: Number(url[2]), id: url[3] };
        continue;
      }
      if (/\[URL\]:/.test(line)) pending = undefined;
      const length = /Content-Length\s*:\s*(\d+)/.exec(line);
      if (pending && length) {
        const upload = uploads.get(pending.id) ?? { key: pending.key, parts: new Map<number, number>() };
        upload.parts.set(pending.part, Number(length[1]));
        uploads.set(pending.id, upload);
        pending = undefined;
      }
    }
    const result = new Map<string, number[]>();
    for (const { key, parts } of uploads.values()) {
      result.set(key, [...parts.entries()].sort((a, b) => a[0] - b[0]).map(([, size]) => size));
    }
    return result;
  }

  /** Stops the server and removes its directory; safe to call twice. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    live.delete(this);
    if (this.child && this.child.exitCode === null) this.child.kill("SIGKILL");
    this.child = undefined;
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private async launch(binary: string): Promise<void> {
    const log = fs.openSync(this.logFile, "a");
    const child = spawn(
      binary,
      [
        "--access", this.accessKey,
        "--secret", this.secretKey,
        "--region", "auto",
        "--cert", this.path("cert.pem"),
        "--key", this.path("key.pem"),
        "--port", `127.0.0.1:${this.port}`,
        ...(this.debugLog ? ["--log-level", "debug"] : ["--quiet"]),
        "posix",
        this.storageDir,
      ],
      { stdio: ["ignore", log, log] },
    );
    fs.closeSync(log);
    this.child = child;
    const deadline = Date.now() + 20_000;
    while (!(await listening(this.port))) {
      if (child.exitCode !== null || Date.now() > deadline) {
        throw new Error(`S3Server: versitygw did not listen on 127.0.0.1:${this.port}:\n${fs.readFileSync(this.logFile, "utf8").slice(-2000)}`);
      }
      await sleep(100);
    }
  }

  /** CreateBucket through the S3 API itself (curl signs it with SigV4). */
  private createBucket(): void {
    const made = spawnSync(
      "curl",
      ["--silent", "--show-error", "--fail", "--cacert", this.path("cert.pem"), "--aws-sigv4", "aws:amz:auto:s3",
        "--user", `${this.accessKey}:${this.secretKey}`, "-H", `x-amz-content-sha256: ${EMPTY_SHA256}`, "-X", "PUT", `${this.endpoint}/${this.bucket}`],
      { encoding: "utf8" },
    );
    if (made.status !== 0) throw new Error(`S3Server: creating bucket ${this.bucket} failed (curl exit ${made.status}): ${made.stderr}`);
  }
}
