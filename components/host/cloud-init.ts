import * as fs from "node:fs";
import * as path from "node:path";
import { stringify } from "yaml";
import { HOST_KEY_FILE, HostKeyPair } from "./host-key";

export interface CloudInitSettings {
  hostname: string;
  fqdn: string;
  adminUser: string;
  adminSshPublicKey: string;
  swapSizeMb: number;
  journalMaxUseMb: number;
  /** The server's SSH host key, pinned by the roles' connection; its private half makes the user data secret. */
  hostKey: HostKeyPair;
}

/** Hetzner caps user data at 32 KiB. */
export const USER_DATA_LIMIT = 32 * 1024;
export const BOOTSTRAP_MARKER = "/var/lib/leaninfra/bootstrap-done";
export const DATA_MOUNT = "/srv/data";
export const DATA_LABEL = "leaninfra-data";
export const MOUNT_DATA_SCRIPT = "/usr/local/sbin/leaninfra-mount-data";
/** Hetzner's metadata service (IPv4 only: cloud-init's Hetzner datasource knows no IPv6 address). */
export const METADATA_ADDRESS = "169.254.169.254";
/** Only root reaches the metadata service: an nftables table of its own, loaded by a unit of its own. */
export const METADATA_GUARD = {
  unit: "leaninfra-metadata-guard.service",
  unitPath: "/etc/systemd/system/leaninfra-metadata-guard.service",
  rulesPath: "/etc/leaninfra/metadata-guard.nft",
  table: "leaninfra_metadata",
};
const HETZNER_NTP = ["ntp1.hetzner.de", "ntp2.hetzner.com", "ntp3.hetzner.net"];

export interface BootFile {
  path: string;
  permissions: string;
  content: string;
}

/**
 * Labels the Hetzner volume (the only one attached) and mounts it at /srv/data by label, with
 * `nofail` so a missing volume never blocks boot. Safe to run again: it changes only what is missing.
 */
export function mountDataScript(): string {
  return `#!/usr/bin/env bash
# Mounts the LeanInfra data volume at ${DATA_MOUNT} by label; written by cloud-init, rerun by the base role.
set -euo pipefail
wait_seconds=\${1:-120}
fstab_line="LABEL=${DATA_LABEL} ${DATA_MOUNT} ext4 defaults,nofail,x-systemd.device-timeout=30s 0 2"

settle() { if command -v udevadm >/dev/null; then udevadm settle --timeout="$1" || true; fi; }
device=""
for _ in $(seq "$wait_seconds"); do
  settle 5
  # /dev/disk/by-id may not exist yet: no match is not an error here.
  device=$(find /dev/disk/by-id -name 'scsi-0HC_Volume_*' 2>/dev/null | sort | head -n 1 || true)
  [[ -n "$device" ]] && break
  sleep 1
done
if [[ -z "$device" ]]; then
  echo "leaninfra-mount-data: no Hetzner volume attached after \${wait_seconds}s; ${DATA_MOUNT} stays on the root disk for now" >&2
  exit 1
fi

if [[ "$(blkid -s TYPE -o value "$device" || true)" != "ext4" ]]; then
  echo "leaninfra-mount-data: $device is not ext4; refusing to touch it" >&2
  exit 1
fi
if [[ -z "$(blkid -s LABEL -o value "$device" || true)" ]]; then
  e2label "$device" "${DATA_LABEL}"
  settle 10
  echo "leaninfra-mount-data: labelled $device ${DATA_LABEL}"
fi
if ! grep -qxF "$fstab_line" /etc/fstab; then
  sed -i '\\#[[:space:]]${DATA_MOUNT}[[:space:]]#d' /etc/fstab
  echo "$fstab_line" >> /etc/fstab
  systemctl daemon-reload || true
  echo "leaninfra-mount-data: /etc/fstab mounts LABEL=${DATA_LABEL} at ${DATA_MOUNT}"
fi
mkdir -p ${DATA_MOUNT}
if ! mountpoint -q ${DATA_MOUNT}; then
  # With nofail, mount exits 0 even when it mounted nothing: only mountpoint tells.
  if ! mount ${DATA_MOUNT} || ! mountpoint -q ${DATA_MOUNT}; then
    echo "leaninfra-mount-data: could not mount $device at ${DATA_MOUNT}" >&2
    exit 1
  fi
  echo "leaninfra-mount-data: mounted ${DATA_MOUNT}"
fi
`;
}

const hostFile = (name: string) => fs.readFileSync(path.join(__dirname, "files", name), "utf8");

/** The nftables ruleset: non-root processes and forwarded (container) traffic are refused the metadata service. */
export function metadataGuardRules(): string {
  return hostFile("metadata-guard.nft");
}

/** The oneshot unit loading that ruleset at every boot, before the network and Docker. */
export function metadataGuardUnit(): string {
  return hostFile(METADATA_GUARD.unit);
}

/** Runs once at first boot, after users and files are in place; its last act is the bootstrap marker. */
export function bootstrapScript(): string {
  return `#!/usr/bin/env bash
# LeanInfra first-boot steps; written by cloud-init. The host roles start only after the marker exists.
set -euo pipefail
# The user data holds the private host key: only root may read it from the metadata service, from
# now on and at every boot (the unit is written by cloud-init, nftables installed above). A failure
# stops here, before the marker, so no role or app runs on a server without it.
systemctl daemon-reload
systemctl enable --now ${METADATA_GUARD.unit}
nft list table inet ${METADATA_GUARD.table} >/dev/null
systemctl restart systemd-journald
sshd -t
systemctl reload ssh
systemctl enable --now unattended-upgrades.service
# Time sync: Debian 13 ships systemd-timesyncd as its own package (installed above by cloud-init).
systemctl enable systemd-timesyncd.service
systemctl restart systemd-timesyncd.service
# The volume is attached by a separate API call that may land after first boot; the base role retries.
${MOUNT_DATA_SCRIPT} 180 || echo "leaninfra-bootstrap: data volume not mounted yet" >&2
mkdir -p "$(dirname ${BOOTSTRAP_MARKER})"
date -u +%Y-%m-%dT%H:%M:%SZ > ${BOOTSTRAP_MARKER}
`;
}

export function bootFiles(settings: CloudInitSettings): BootFile[] {
  return [
    {
      path: "/etc/ssh/sshd_config.d/10-leaninfra.conf",
      permissions: "0644",
      content: [
        "# LeanInfra: keys only, no root, only the admin user; the one host key the roles' connection pins",
        "# (Debian's first-boot sshd-keygen may add others: they are never offered).",
        `HostKey ${HOST_KEY_FILE}`,
        "PermitRootLogin no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "PubkeyAuthentication yes",
        `AllowUsers ${settings.adminUser}`,
        "X11Forwarding no",
        // Pulumi's SSH client offers every key of the owner's agent, each a try: 10 lets an agent of 10 keys in
        // from the first connection, before the base role's drop-in (which says the same) exists.
        "MaxAuthTries 10",
        "",
      ].join("\n"),
    },
    {
      path: "/etc/systemd/journald.conf.d/10-leaninfra.conf",
      permissions: "0644",
      content: [
        "# LeanInfra: bounded journal on disk.",
        "[Journal]",
        "Storage=persistent",
        `SystemMaxUse=${settings.journalMaxUseMb}M`,
        `SystemKeepFree=${Math.max(512, settings.journalMaxUseMb)}M`,
        "MaxRetentionSec=30day",
        "",
      ].join("\n"),
    },
    {
      path: "/etc/systemd/timesyncd.conf.d/10-leaninfra.conf",
      permissions: "0644",
      content: ["# LeanInfra: Hetzner's time servers first, Debian's pool as the fallback.", "[Time]", `NTP=${HETZNER_NTP.join(" ")}`, "FallbackNTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org", ""].join("\n"),
    },
    {
      path: "/etc/apt/apt.conf.d/20auto-upgrades",
      permissions: "0644",
      content: ['APT::Periodic::Update-Package-Lists "1";', 'APT::Periodic::Unattended-Upgrade "1";', 'APT::Periodic::AutocleanInterval "7";', ""].join("\n"),
    },
    { path: METADATA_GUARD.rulesPath, permissions: "0644", content: metadataGuardRules() },
    { path: METADATA_GUARD.unitPath, permissions: "0644", content: metadataGuardUnit() },
    { path: MOUNT_DATA_SCRIPT, permissions: "0755", content: mountDataScript() },
    { path: "/usr/local/sbin/leaninfra-bootstrap", permissions: "0755", content: bootstrapScript() },
  ];
}

/**
 * The cloud-init user data for the Host: a safe base OS and the server's SSH host key (services come
 * from host roles). It holds that key's private half, so the Host passes it to Hetzner as a secret.
 * Hetzner runs it once at first boot; later changes need a rebuild (see README).
 */
export function renderCloudInit(settings: CloudInitSettings): string {
  const doc = {
    hostname: settings.hostname,
    fqdn: settings.fqdn,
    prefer_fqdn_over_hostname: false,
    timezone: "UTC",
    locale: "C.UTF-8",
    users: [
      {
        name: settings.adminUser,
        gecos: "LeanInfra admin",
        groups: ["sudo", "adm", "systemd-journal"],
        shell: "/bin/bash",
        sudo: "ALL=(ALL) NOPASSWD:ALL",
        lock_passwd: true,
        ssh_authorized_keys: [settings.adminSshPublicKey],
      },
    ],
    disable_root: true,
    ssh_pwauth: false,
    // The image's host keys are deleted and the given one installed (with ssh_keys, cloud-init generates
    // none; ssh_genkeytypes names the one type anyway, its schema wanting at least one): sshd presents
    // exactly the pinned key.
    ssh_deletekeys: true,
    ssh_genkeytypes: ["ed25519"],
    ssh_keys: { ed25519_private: settings.hostKey.privateKeyOpenssh, ed25519_public: settings.hostKey.publicKeyOpenssh.trim() },
    package_update: true,
    package_upgrade: true,
    // Time sync is systemd-timesyncd, configured by a drop-in and started by the bootstrap script:
    // cloud-init's ntp module expects it preinstalled, and Debian 13 images need not have it.
    // nftables for the metadata guard (Debian marks it important; an image may still lack it).
    packages: ["unattended-upgrades", "apt-listchanges", "e2fsprogs", "systemd-timesyncd", "nftables"],
    swap:
      settings.swapSizeMb > 0
        ? { filename: "/swapfile", size: settings.swapSizeMb * 1024 * 1024, maxsize: settings.swapSizeMb * 1024 * 1024 }
        : undefined,
    write_files: bootFiles(settings).map((f) => ({ path: f.path, permissions: f.permissions, owner: "root:root", content: f.content })),
    runcmd: [["/usr/local/sbin/leaninfra-bootstrap"]],
    final_message: "LeanInfra base ready after $UPTIME seconds",
  };
  const body = stringify(doc, { lineWidth: 0 });
  const text = `#cloud-config\n# LeanInfra base for ${settings.fqdn}: rendered by renderCloudInit (components/host/cloud-init.ts).\n${body}`;
  if (Buffer.byteLength(text) > USER_DATA_LIMIT) {
    throw new Error(`cloud-init user data is ${Buffer.byteLength(text)} bytes; Hetzner accepts at most ${USER_DATA_LIMIT}`);
  }
  return text;
}
