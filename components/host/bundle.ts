import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { ROLE_NAME } from "./names";
import { shq } from "./script";
import { HostRole, RoleDirectory, RoleFile } from "./role";

/** Where every bundle records the digest of the role it last applied successfully. */
export const ROLE_MARKER_DIR = "/var/lib/leaninfra/roles";
/** Where a bundle keeps the previous version of each file it replaced (root-only). */
export const ROLE_BACKUP_DIR = "/var/lib/leaninfra/backups";

const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]+$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const MODE = /^0?[0-7]{3,4}$/;
// Paths land in single-quoted shell words and in log lines: a conservative alphabet keeps both plain.
const PATH_SEGMENT = /^[A-Za-z0-9._@%+=:,~-]+$/;

/** sha256 (hex) of a rendered bundle: the Host's trigger, so an unchanged bundle costs nothing. */
export function bundleDigest(bundle: string): string {
  return createHash("sha256").update(bundle, "utf8").digest("hex");
}

/** sha256 (hex) of the role's data in a fixed key order: what the on-host marker records. */
export function roleDigest(role: HostRole): string {
  const canonical = {
    name: role.name,
    description: role.description,
    packages: role.packages,
    directories: role.directories.map((d) => ({ path: d.path, mode: d.mode, owner: d.owner ?? null, group: d.group ?? null })),
    files: role.files.map((f) => ({
      path: f.path,
      content: f.content,
      mode: f.mode,
      owner: f.owner ?? null,
      group: f.group ?? null,
      onChange: f.onChange ?? null,
    })),
    validate: role.validate ?? null,
    apply: role.apply ?? null,
    healthCheck: role.healthCheck ?? null,
  };
  return createHash("sha256").update(JSON.stringify(canonical), "utf8").digest("hex");
}

/**
 * The first of LEANINFRA_EOF, LEANINFRA_EOF_1, LEANINFRA_EOF_2, ... that is not a substring of the
 * text: a heredoc body can only end early on a line equal to its delimiter, so this one cannot.
 */
export function heredocDelimiter(text: string): string {
  let candidate = "LEANINFRA_EOF";
  for (let n = 1; text.includes(candidate); n++) candidate = `LEANINFRA_EOF_${n}`;
  return candidate;
}

/** Problems with the role's data, each naming the field; empty when the role can be rendered. */
export function roleProblems(role: HostRole): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field} ${message}`);

  if (typeof role.name !== "string" || !ROLE_NAME.test(role.name)) {
    add("name", `${JSON.stringify(role.name)} must match [a-z0-9-]+ (at most 63 characters, starting with a letter or digit)`);
  }
  if (typeof role.description !== "string" || role.description.trim() === "" || /[\x00-\x1f\x7f]/.test(role.description)) {
    add("description", "must be one non-empty line of text");
  }

  const seenPackages = new Set<string>();
  (role.packages ?? []).forEach((name, i) => {
    if (typeof name !== "string" || !PACKAGE_NAME.test(name)) {
      add(`packages[${i}]`, `${JSON.stringify(name)} is not a Debian package name (e.g. "nginx", "libpq5")`);
    } else if (seenPackages.has(name)) {
      add(`packages[${i}]`, `"${name}" is listed twice`);
    }
    seenPackages.add(name);
  });

  const seenPaths = new Map<string, string>();
  const checkPath = (field: string, p: unknown) => {
    if (typeof p !== "string" || !p.startsWith("/") || p === "/") {
      add(field, `${JSON.stringify(p)} must be an absolute path below / (e.g. "/etc/leaninfra/app.env")`);
      return;
    }
    const segments = p.slice(1).split("/");
    if (segments.includes("..") || path.posix.normalize(p) !== p || p.endsWith("/")) {
      add(field, `"${p}" must be a normalized absolute path: no "..", ".", "//" or trailing "/"`);
    } else if (!segments.every((s) => PATH_SEGMENT.test(s))) {
      add(field, `"${p}" may only contain letters, digits and ._@%+=:,~- in its names`);
    } else if (seenPaths.has(p)) {
      add(field, `"${p}" is already managed by ${seenPaths.get(p)}`);
    }
    seenPaths.set(p, field);
  };
  const checkOwnership = (field: string, entry: RoleDirectory | RoleFile) => {
    if (typeof entry.mode !== "string" || !MODE.test(entry.mode)) {
      add(`${field}.mode`, `${JSON.stringify(entry.mode)} must be an octal mode like "0644" or "0750"`);
    }
    for (const key of ["owner", "group"] as const) {
      const value = entry[key];
      if (value !== undefined && (typeof value !== "string" || !USER_NAME.test(value))) {
        add(`${field}.${key}`, `${JSON.stringify(value)} is not a user/group name (lowercase, [a-z_][a-z0-9_-]*, at most 32)`);
      }
    }
  };
  const checkScript = (field: string, script: unknown) => {
    if (script === undefined) return;
    if (typeof script !== "string" || script.trim() === "" || script.includes("\0")) {
      add(field, "must be a non-empty shell snippet (leave it out when there is nothing to run)");
    }
  };

  (role.directories ?? []).forEach((dir, i) => {
    checkPath(`directories[${i}].path`, dir.path);
    checkOwnership(`directories[${i}]`, dir);
  });
  (role.files ?? []).forEach((file, i) => {
    checkPath(`files[${i}].path`, file.path);
    checkOwnership(`files[${i}]`, file);
    if (typeof file.content !== "string") {
      add(`files[${i}].content`, "must be a string");
    } else if (file.content.includes("\0")) {
      add(`files[${i}].content`, "contains a NUL byte; bundles carry text files only");
    }
    checkScript(`files[${i}].onChange`, file.onChange);
  });
  checkScript("validate", role.validate);
  checkScript("apply", role.apply);
  checkScript("healthCheck", role.healthCheck);
  return problems;
}

function assertValidRole(role: HostRole): void {
  const problems = roleProblems(role);
  if (problems.length > 0) {
    throw new Error(`Host role ${JSON.stringify(role.name)} is invalid:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}

/** "0644" -> "644": the form `stat -c %a` prints. */
function statMode(mode: string): string {
  return parseInt(mode, 8).toString(8);
}

/** How a handler is named in log lines: its command when that is one short line, else its files. */
function handlerLabel(command: string, paths: string[]): string {
  const text = command.trim();
  const of = `onChange of ${paths.join(", ")}`;
  return !text.includes("\n") && text.length <= 80 ? `${text} (${of})` : of;
}

function fileFunction(file: RoleFile, index: number): string {
  const content = file.content === "" || file.content.endsWith("\n") ? file.content : `${file.content}\n`;
  const write =
    content === ""
      ? [`  : >"$tmp_file"`]
      : (() => {
          const delimiter = heredocDelimiter(content);
          return [`  cat >"$tmp_file" <<'${delimiter}'`, `${content}${delimiter}`];
        })();
  return [
    `file_${index}() {`,
    `  step=${shq(`file ${file.path}`)}`,
    `  new_temp ${index}`,
    ...write,
    `  put_file ${index} ${shq(statMode(file.mode))} ${shq(file.owner ?? "root")} ${shq(file.group ?? "")}`,
    `}`,
  ].join("\n");
}

function snippetFunction(name: string, body: string): string {
  return `${name}() {\n${body.replace(/\n+$/, "")}\n}`;
}

// Fixed machinery shared by every bundle. It uses only the variables the role-specific part defines
// above it: role, role_digest, packages, file_paths, handler_labels.
// Fixed machinery shared by every bundle (a real file, shellcheck-clean on its own). It uses only the
// variables the role-specific part defines above it: role, role_digest, packages, file_paths,
// handler_labels, marker_dir, backup_dir.
const MACHINERY = fs
  .readFileSync(path.join(__dirname, "files", "role-bundle.sh"), "utf8")
  .replace(/^[\s\S]*?^# @settings-end\n/m, "");

/**
 * Renders a host role into one self-contained, idempotent bash script for `sudo bash -s`.
 * Throws an Error naming the role and every invalid field when the role's data is not valid.
 */
export function renderRoleBundle(role: HostRole): string {
  assertValidRole(role);

  // Handlers: each distinct onChange command once, in the order of the first file that names it.
  const handlers: { command: string; files: number[]; label: string }[] = [];
  role.files.forEach((file, index) => {
    if (file.onChange === undefined) return;
    const existing = handlers.find((h) => h.command === file.onChange);
    if (existing) existing.files.push(index);
    else handlers.push({ command: file.onChange, files: [index], label: "" });
  });
  for (const h of handlers) h.label = handlerLabel(h.command, h.files.map((f) => role.files[f].path));

  const summary = (items: string[]) => (items.length === 0 ? "none" : items.join(", "));
  const header = [
    "#!/usr/bin/env bash",
    `# LeanInfra host role "${role.name}": ${role.description}`,
    "# Generated by LeanInfra renderRoleBundle; do not edit: change the role in the repository and run pulumi up.",
    `# Packages: ${summary(role.packages)}`,
    `# Directories: ${summary(role.directories.map((d) => `${d.path} (${d.mode})`))}`,
    `# Files: ${summary(role.files.map((f) => `${f.path} (${f.mode})`))}`,
    "# Run as root: sudo bash -s < this-file. Prints one line per change and ends with",
    `# "[${role.name}] no changes" or "[${role.name}] N change(s)"; exits non-zero with a [${role.name}] FAILED line.`,
    "# Everything below is a function and main runs on the last line, so a truncated copy fails to",
    "# parse instead of running half a role.",
    "# shellcheck disable=SC2317 # traps and run_snippet call these functions by name, which shellcheck cannot see",
    "set -Eeuo pipefail",
    "shopt -s inherit_errexit",
    "export LC_ALL=C DEBIAN_FRONTEND=noninteractive",
    "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "",
    `role=${shq(role.name)}`,
    `role_digest=${shq(roleDigest(role))}`,
    `packages=(${role.packages.map(shq).join(" ")})`,
    `file_paths=(${role.files.map((f) => shq(f.path)).join(" ")})`,
    `handler_labels=(${handlers.map((h) => shq(h.label)).join(" ")})`,
    `marker_dir=${shq(ROLE_MARKER_DIR)}`,
    `backup_dir=${shq(ROLE_BACKUP_DIR)}`,
  ].join("\n");

  const roleFunctions: string[] = [];
  role.files.forEach((file, index) => roleFunctions.push(fileFunction(file, index)));
  handlers.forEach((h, i) => roleFunctions.push(snippetFunction(`handler_${i}`, h.command)));
  if (role.validate !== undefined) roleFunctions.push(snippetFunction("role_validate", role.validate));
  if (role.apply !== undefined) roleFunctions.push(snippetFunction("role_apply", role.apply));
  if (role.healthCheck !== undefined) roleFunctions.push(snippetFunction("role_health_check", role.healthCheck));

  const main: string[] = ["main() {", "  start"];
  if (role.packages.length > 0) main.push("  install_packages");
  for (const dir of role.directories) {
    main.push(`  ensure_dir ${shq(dir.path)} ${shq(statMode(dir.mode))} ${shq(dir.owner ?? "root")} ${shq(dir.group ?? "")}`);
  }
  if (role.files.length > 0) {
    main.push("  mark_pending");
    role.files.forEach((_, index) => main.push(`  file_${index}`));
  }
  if (role.validate !== undefined) {
    main.push(
      "  if ((changes > 0 || recovering)); then",
      "    step='validate'",
      "    run_snippet role_validate 'validation'",
      "  fi",
    );
  }
  if (handlers.length > 0) {
    main.push("  step='handlers'");
    handlers.forEach((h, i) => {
      main.push(
        `  if ((recovering)) || any_file_changed ${h.files.join(" ")}; then`,
        `    say ${shq(`handler: ${h.label}`)}`,
        `    due_handlers+=(${i})`,
        `    run_snippet handler_${i} ${shq(`handler ${h.label}`)}`,
        `    show_handler_output`,
        "  fi",
      );
    });
  }
  if (role.files.length > 0) main.push("  rollback_armed=0");
  if (role.apply !== undefined) {
    main.push("  step='apply'", "  run_snippet role_apply 'apply'", "  record_apply_changes");
  }
  if (role.healthCheck !== undefined) {
    main.push("  step='health check'", "  run_snippet role_health_check 'health check'");
  }
  main.push("  write_marker", "  finish", "}");

  return [header, MACHINERY.trim(), ...roleFunctions, main.join("\n"), 'main "$@" </dev/null; exit', ""].join("\n\n").replace(/\n\n$/, "\n");
}
