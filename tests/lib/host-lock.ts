import { ChildProcess, spawn } from "node:child_process";
import * as fs from "node:fs";
import * as path from "node:path";

/**
 * Holds a machine-wide lock through a `flock` child: released by release(), or when this process dies
 * (the child's stdin closes). For what tests share on the host: booted roots share its network, and
 * every test Redis listens on its port 6379.
 */
export async function holdLock(file: string, timeoutMs: number): Promise<{ release(): void }> {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const holder: ChildProcess = spawn("flock", ["-w", String(Math.ceil(timeoutMs / 1000)), file, "-c", "echo locked; exec cat >/dev/null"], {
    stdio: ["pipe", "pipe", "inherit"],
  });
  const started = Date.now();
  let announced = false;
  const waiting = setInterval(() => {
    if (!announced) console.log(`waiting for ${file} (held by another test)`);
    announced = true;
  }, 5000);
  try {
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on("data", (chunk: Buffer) => {
        if (chunk.toString().includes("locked")) resolve();
      });
      holder.on("exit", (code) => reject(new Error(`flock ${file} gave up after ${Date.now() - started} ms (exit ${code})`)));
      holder.on("error", reject);
    });
  } finally {
    clearInterval(waiting);
  }
  return { release: () => holder.stdin?.end() };
}

/** Redis's fixed port 6379 on the host's loopback, shared by every root that runs a Redis. */
export const REDIS_PORT_LOCK = "/run/lock/leaninfra-redis-6379.lock";

/** Runs fn while holding `file`. */
export async function withLock<T>(file: string, timeoutMs: number, fn: () => Promise<T> | T): Promise<T> {
  const lock = await holdLock(file, timeoutMs);
  try {
    return await fn();
  } finally {
    lock.release();
  }
}
