/**
 * A host role is data: what one service needs on the VM. `renderRoleBundle` (bundle.ts) turns it into
 * one self-contained, idempotent bash script that the Host runs over SSH and the tests run in a real
 * Debian 13 root. Every snippet (validate, apply, healthCheck, onChange) runs as root in a subshell
 * with `set -e`, stdin from /dev/null; it must not print secrets.
 */
export interface RoleFile {
  /** Absolute path on the host. */
  path: string;
  /** Full content; a trailing newline is added when missing ("" makes an empty file). Never printed. */
  content: string;
  /** Octal mode, e.g. "0644"; secrets use "0600". */
  mode: string;
  /** Default root. The user must exist when the bundle runs (created by a listed package or an earlier role). */
  owner?: string;
  /** Default: the owner's login group. */
  group?: string;
  /**
   * Shell command run once, after validation, when this file's content, mode or owner changed
   * (e.g. "systemctl reload nginx"); files sharing a command run it once. When it fails, the files
   * this run changed are put back and the bundle exits non-zero.
   */
  onChange?: string;
}

export interface RoleDirectory {
  /** Absolute path; created with its parents when missing, its mode/owner/group fixed when they differ. */
  path: string;
  /** Octal mode, e.g. "0755" or "02775". */
  mode: string;
  /** Default root. */
  owner?: string;
  /** Default: the owner's login group. */
  group?: string;
}

export interface HostRole {
  /** Short name, [a-z0-9-]: used in log lines, the applied-role marker and the bundle's file name. */
  name: string;
  /** One line saying what the role is for; printed in the bundle header. */
  description: string;
  /** Debian packages to install when missing (never upgraded here: unattended-upgrades does that). */
  packages: string[];
  directories: RoleDirectory[];
  files: RoleFile[];
  /**
   * Checks the new files as the service will read them (e.g. `nginx -t`); runs only when this run changed
   * something. When it fails, every file this run changed is put back as it was and the bundle exits
   * non-zero: the previous state keeps serving.
   */
  validate?: string;
  /**
   * Idempotent bash run after files and handlers, on every run. It prints one line per thing it changed
   * (each is counted as a change) and nothing otherwise; stderr is passed through.
   */
  apply?: string;
  /** Exits 0 when the role's service is healthy; run last, on every run; its output is shown only on failure. */
  healthCheck?: string;
}

/**
 * A handler that runs `systemctl <action>` on the VM and, where systemd is not PID 1 (the test roots),
 * says it skipped it instead of failing.
 */
export function systemctlHandler(action: string): string {
  return `if [ -d /run/systemd/system ]; then
  systemctl ${action}
else
  echo "systemd is not running here: skipped systemctl ${action}"
fi`;
}
