import { spawnSync } from "node:child_process";
import * as fs from "node:fs";
import * as os from "node:os";
import * as path from "node:path";

function host(command: string, args: string[]): string {
  const result = spawnSync(command, args, { encoding: "utf8" });
  if (result.status !== 0) throw new Error(`${command} ${args.join(" ")}: ${result.error?.message ?? result.stderr}`);
  return result.stdout.trim();
}

/**
 * A real ext4 volume as Hetzner hands one over (formatted, no label): a file in a temp directory behind
 * a loop device, detached and removed after fn, also when it throws. fn gets the device (/dev/loopN).
 */
export async function withExt4LoopVolume<T>(sizeMb: number, fn: (device: string) => Promise<T> | T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "leaninfra-volume-"));
  let device = "";
  try {
    const image = path.join(dir, "volume.img");
    fs.writeFileSync(image, "");
    fs.truncateSync(image, sizeMb * 1024 * 1024);
    host("mkfs.ext4", ["-q", "-F", image]);
    device = host("losetup", ["--find", "--show", image]);
    return await fn(device);
  } finally {
    if (device) spawnSync("losetup", ["--detach", device]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
