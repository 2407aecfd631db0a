import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as http from "node:http";
import * as https from "node:https";
import * as path from "node:path";
import type { LockRule } from "../../components/backup-bucket/policy";
import type { S3Server } from "./s3-server";

/**
 * R2's bucket lock in front of the real S3 server of the tests. R2 cannot be reached from here and
 * versitygw has no prefix-and-age locks, so this HTTPS proxy (its own process: the tests run the
 * Debian root with spawnSync, which would stall a proxy in the test's event loop) forwards every request
 * byte for byte to versitygw and refuses, as R2 does, what a lock rule forbids: overwriting or deleting
 * an object under a rule's prefix before it is older than the rule's age. Uploading new objects,
 * multipart parts and aborting uploads stay allowed.
 *
 * Its events (every write, delete and refusal) go to a JSON-lines file; a control file can make it refuse
 * data writes after a count, which leaves a half-written backup behind the way a dropped connection does.
 */
export interface LockEvent {
  op: "put" | "copy" | "complete" | "delete" | "delete-objects";
  keys: string[];
  /** The HTTP status the client got. */
  status: number;
  /** The lock rule that refused it. */
  refusedBy?: string;
  /** Refused by the control file's failWritesAfter, not by a lock. */
  injected?: boolean;
}

interface ProxyConfig {
  port: number;
  upstreamPort: number;
  bucket: string;
  storageDir: string;
  certFile: string;
  keyFile: string;
  rules: LockRule[];
  eventsFile: string;
  controlFile: string;
}

export class R2LockProxy {
  readonly eventsFile: string;
  private readonly controlFile: string;
  private child: ChildProcess | undefined;

  private constructor(
    readonly port: number,
    dir: string,
  ) {
    this.eventsFile = path.join(dir, "lock-events.jsonl");
    this.controlFile = path.join(dir, "lock-control.json");
  }

  /** Starts the proxy on `port` in front of `s3`, enforcing `rules` (the BackupBucket's own lockRules()). */
  static async start(s3: S3Server, rules: LockRule[], port: number): Promise<R2LockProxy> {
    const proxy = new R2LockProxy(port, s3.dir);
    fs.writeFileSync(proxy.eventsFile, "");
    fs.writeFileSync(proxy.controlFile, "{}");
    const config: ProxyConfig = {
      port,
      upstreamPort: s3.port,
      bucket: s3.bucket,
      storageDir: s3.storageDir,
      certFile: s3.path("cert.pem"),
      keyFile: s3.path("key.pem"),
      rules,
      eventsFile: proxy.eventsFile,
      controlFile: proxy.controlFile,
    };
    const child = spawn(process.execPath, ["--require", "ts-node/register/transpile-only", __filename, JSON.stringify(config)], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    proxy.child = child;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error("R2LockProxy: did not start within 20 s")), 20_000);
      child.stdout!.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("listening")) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once("exit", (code) => {
        clearTimeout(timer);
        reject(new Error(`R2LockProxy: exited with ${code} before listening`));
      });
    });
    return proxy;
  }

  /** "https://localhost:<port>": the endpoint the backups role gets instead of the server's. */
  get endpoint(): string {
    return `https://localhost:${this.port}`;
  }

  /** Every write, delete and refusal so far. */
  events(): LockEvent[] {
    return fs
      .readFileSync(this.eventsFile, "utf8")
      .split("\n")
      .filter(Boolean)
      .map((line) => JSON.parse(line) as LockEvent);
  }

  /** From now on, refuse (403) every data write under `prefix` after `count` more succeeded; null lifts it. */
  failWritesAfter(prefix: string, count: number | null): void {
    fs.writeFileSync(this.controlFile, JSON.stringify(count === null ? {} : { prefix, count, seen: 0 }));
  }

  stop(): void {
    if (this.child && this.child.exitCode === null) this.child.kill("SIGKILL");
    this.child = undefined;
  }
}

// ---- the proxy process -----------------------------------------------------------------------------

function xmlError(code: string, message: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
}

function unescapeXml(s: string): string {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, '"').replace(/&apos;/g, "'").replace(/&amp;/g, "&");
}

function serve(config: ProxyConfig): void {
  const ca = fs.readFileSync(config.certFile);
  const log = (event: LockEvent) => fs.appendFileSync(config.eventsFile, `${JSON.stringify(event)}\n`);
  const lockedBy = (key: string): string | undefined => {
    const file = path.join(config.storageDir, config.bucket, key);
    let stat: fs.Stats;
    try {
      stat = fs.statSync(file);
    } catch {
      return undefined;
    }
    if (!stat.isFile()) return undefined;
    const ageSeconds = (Date.now() - stat.mtimeMs) / 1000;
    return config.rules.find((r) => r.enabled && key.startsWith(r.prefix) && ageSeconds < r.condition.maxAgeSeconds)?.id;
  };

  const server = https.createServer({ cert: fs.readFileSync(config.certFile), key: fs.readFileSync(config.keyFile) }, (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const body = Buffer.concat(chunks);
      const url = new URL(req.url ?? "/", "https://localhost");
      const q = url.searchParams;
      const prefix = `/${config.bucket}/`;
      const key = url.pathname.startsWith(prefix) ? decodeURIComponent(url.pathname.slice(prefix.length)) : "";
      const method = req.method ?? "GET";

      let op: LockEvent["op"] | undefined;
      let keys: string[] = [];
      if (key && method === "PUT" && !q.has("partNumber") && !q.has("uploadId")) {
        op = req.headers["x-amz-copy-source"] ? "copy" : "put";
        keys = [key];
      } else if (key && method === "POST" && q.has("uploadId")) {
        op = "complete";
        keys = [key];
      } else if (key && method === "DELETE" && !q.has("uploadId")) {
        op = "delete";
        keys = [key];
      } else if (method === "POST" && q.has("delete")) {
        op = "delete-objects";
        keys = [...body.toString("utf8").matchAll(/<Key>([\s\S]*?)<\/Key>/g)].map((m) => unescapeXml(m[1]));
      }

      if (op) {
        for (const k of keys) {
          const rule = lockedBy(k);
          if (rule) {
            log({ op, keys, status: 403, refusedBy: rule });
            res.writeHead(403, { "content-type": "application/xml" });
            res.end(xmlError("AccessDenied", `${k} is locked by the bucket lock rule ${rule}`));
            return;
          }
        }
        const control = JSON.parse(fs.readFileSync(config.controlFile, "utf8")) as { prefix?: string; count?: number; seen?: number };
        if ((op === "put" || op === "complete") && control.prefix !== undefined && keys[0].startsWith(control.prefix)) {
          control.seen = (control.seen ?? 0) + 1;
          fs.writeFileSync(config.controlFile, JSON.stringify(control));
          if (control.seen > (control.count ?? 0)) {
            log({ op, keys, status: 403, injected: true });
            res.writeHead(403, { "content-type": "application/xml" });
            res.end(xmlError("AccessDenied", "refused by the test (failWritesAfter)"));
            return;
          }
        }
      }

      const headers = { ...req.headers };
      delete headers.expect;
      const upstream = https.request(
        { host: "127.0.0.1", servername: "localhost", port: config.upstreamPort, method, path: req.url, headers, ca },
        (up: http.IncomingMessage) => {
          if (op) log({ op, keys, status: up.statusCode ?? 0 });
          res.writeHead(up.statusCode ?? 502, up.headers);
          up.pipe(res);
        },
      );
      upstream.on("error", (error) => {
        res.writeHead(502, { "content-type": "text/plain" });
        res.end(`proxy: ${error.message}`);
      });
      upstream.end(body);
    });
  });
  server.listen(config.port, "127.0.0.1", () => process.stdout.write("listening\n"));
}

if (require.main === module) serve(JSON.parse(process.argv[2]) as ProxyConfig);
