import assert from "node:assert/strict";
import * as fs from "node:fs";
import test from "node:test";
import { DATA_LABEL, DATA_MOUNT, MOUNT_DATA_SCRIPT, mountDataScript } from "../../components/host/cloud-init";
import { withDebianRoot } from "../lib/debian-root";
import { withExt4LoopVolume } from "../lib/loop-volume";

/**
 * A real ext4 volume (a loop device over a file, as Hetzner formats it) appears in the Debian 13
 * root under Hetzner's device name; cloud-init's mount script labels it and mounts it by label.
 */
test("the data volume is labelled, listed in fstab by label with nofail, and mounted; a second run changes nothing", { timeout: 10 * 60_000 }, async () => {
  await withExt4LoopVolume(64, (loop) =>
    withDebianRoot((root) => {
      fs.writeFileSync(root.hostPath(MOUNT_DATA_SCRIPT), mountDataScript(), { mode: 0o755 });
      const nspawn = { nspawnArgs: ["--capability=CAP_SYS_ADMIN", `--bind=${loop}`] };
      // Each nspawn run has its own /dev and mount namespace: link the device, run twice, inspect, in one go.
      const script = [
        "set -e",
        "mkdir -p /dev/disk/by-id",
        `ln -s ${loop} /dev/disk/by-id/scsi-0HC_Volume_4242`,
        `${MOUNT_DATA_SCRIPT} 5`,
        "echo '--- second run'",
        `${MOUNT_DATA_SCRIPT} 5`,
        "echo '--- state'",
        `blkid -s LABEL -o value ${loop}`,
        `grep -F ' ${DATA_MOUNT} ' /etc/fstab`,
        `findmnt -n -o SOURCE,FSTYPE ${DATA_MOUNT}`,
      ].join("\n");
      const result = root.run(script, nspawn);
      assert.equal(result.code, 0, `${result.stdout}\n${result.stderr}`);
      const [first, rest] = result.stdout.split("--- second run\n");
      const [second, state] = rest.split("--- state\n");
      assert.match(first, new RegExp(`labelled /dev/disk/by-id/scsi-0HC_Volume_4242 ${DATA_LABEL}`));
      assert.match(first, /\/etc\/fstab mounts LABEL=leaninfra-data at \/srv\/data/);
      assert.match(first, /mounted \/srv\/data/);
      assert.equal(second, "", "the second run must change nothing and print nothing");
      const [label, fstab, mounted] = state.trim().split("\n");
      assert.equal(label, DATA_LABEL);
      assert.equal(fstab, `LABEL=${DATA_LABEL} ${DATA_MOUNT} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2`);
      assert.match(mounted, new RegExp(`^${loop}\\s+ext4$`));
    }),
  );
});

test("without a volume the mount script fails clearly and leaves fstab alone", { timeout: 10 * 60_000 }, async () => {
  await withDebianRoot((root) => {
    fs.writeFileSync(root.hostPath(MOUNT_DATA_SCRIPT), mountDataScript(), { mode: 0o755 });
    const result = root.run(`${MOUNT_DATA_SCRIPT} 1; echo "exit=$?"; grep -c leaninfra-data /etc/fstab || true`);
    assert.match(result.stderr, /no Hetzner volume attached after 1s/);
    assert.deepEqual(result.stdout.trim().split("\n"), ["exit=1", "0"]);
  });
});
