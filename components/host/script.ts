import * as fs from "node:fs";
import * as path from "node:path";

/** One single-quoted shell word. */
export function shq(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** A value a rendered script or settings file holds: a word, a number, or a bash array. */
export type ShellValue = string | number | readonly string[];

/** `name=value` (or `name=(...)`) as bash reads it: every word single-quoted, numbers as they are. */
export function shellAssignment(name: string, value: ShellValue, readonly = false): string {
  const rendered = typeof value === "number" ? String(value) : typeof value === "string" ? shq(value) : `(${value.map(shq).join(" ")})`;
  const declare = readonly ? (Array.isArray(value) ? "readonly -a " : "readonly ") : "";
  return `${declare}${name}=${rendered}`;
}

const REPO = path.resolve(__dirname, "../..");

const SETTINGS_BLOCK = /^# @settings-begin\n([\s\S]*?)^# @settings-end\n/m;
const SETTING_NAME = /^readonly (?:-a )?([a-z_][a-z0-9_]*)=/;
// An include line (`source ... # @lib`) and the shellcheck directive above it naming the file from the repository's root.
const INCLUDE = /^# shellcheck source=(\S+\.sh)\n(?:source|\.) [^\n]*# @lib\n/gm;

function includedBody(file: string): string {
  // Without its shebang and leading comment block: the including script has its own.
  return fs.readFileSync(path.join(REPO, file), "utf8").replace(/^#!.*\n(#.*\n)*/, "");
}

/**
 * A role's script file (components/<role>/files/NAME.sh) as it lands on the host. The file is a
 * complete script on its own (shellcheck reads it as it is): its `# @settings-begin` ... `# @settings-end`
 * block holds example values as `readonly` lines, replaced here by the stack's values; each include
 * line (`source .../leaninfra-lib.sh # @lib`, under a `# shellcheck source=<path from the repository's
 * root>` directive) is replaced by that file's text, so the installed script needs nothing else. The names given must be exactly the names the block declares.
 */
export function renderScript(file: string, settings: Record<string, ShellValue>): string {
  let text = fs.readFileSync(file, "utf8");
  const block = SETTINGS_BLOCK.exec(text);
  const given = Object.keys(settings);
  if (block) {
    const declared = block[1]
      .split("\n")
      .map((line) => SETTING_NAME.exec(line)?.[1])
      .filter((name): name is string => name !== undefined);
    const missing = declared.filter((name) => !given.includes(name));
    const unknown = given.filter((name) => !declared.includes(name));
    if (missing.length || unknown.length) {
      throw new Error(`renderScript ${file}: settings block and values differ (not given: ${missing.join(", ") || "none"}; not in the block: ${unknown.join(", ") || "none"})`);
    }
    const rendered = declared.map((name) => shellAssignment(name, settings[name], true)).join("\n");
    text = text.replace(SETTINGS_BLOCK, () => `# Settings rendered by LeanInfra from the stack's config.\n${rendered}\n`);
  } else if (given.length) {
    throw new Error(`renderScript ${file}: no "# @settings-begin" block for ${given.join(", ")}`);
  }
  return text.replace(INCLUDE, (_line, file: string) => includedBody(file));
}
