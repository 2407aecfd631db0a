import * as fs from "node:fs";
import * as path from "node:path";

/** The proxy role's host files and templates. */
export const PROXY_FILES_DIR = path.join(__dirname, "files");

/** A value for a template marker: one line of text, or lines (for a marker alone on its line). */
export type TemplateValue = string | number | readonly string[];

const MARKER = /\{\{([a-z_]+)\}\}/g;
const WHOLE_LINE = /^( *)\{\{([a-z_]+)\}\}$/;
// Notes on the template itself, for the person editing it; they never reach the host.
const TEMPLATE_NOTE = /^ *#:/;

/**
 * A config template of components/proxy/files/ filled with values. The substitution: lines starting
 * with `#:` are notes on the template and are dropped; a `{{name}}` alone on its line (after spaces)
 * becomes the value's lines, each indented like the marker (no lines: the line goes); any other
 * `{{name}}` becomes the value as one line of text. Every marker needs a value and every value a marker.
 */
export function fillTemplate(file: string, values: Readonly<Record<string, TemplateValue>> = {}): string {
  const where = path.relative(path.join(PROXY_FILES_DIR, "..", "..", ".."), path.join(PROXY_FILES_DIR, file));
  const used = new Set<string>();
  const valueOf = (name: string): TemplateValue => {
    if (!(name in values)) throw new Error(`fillTemplate ${where}: no value for {{${name}}}`);
    used.add(name);
    return values[name];
  };
  const lines: string[] = [];
  for (const line of fs.readFileSync(path.join(PROXY_FILES_DIR, file), "utf8").split("\n")) {
    if (TEMPLATE_NOTE.test(line)) continue;
    const whole = WHOLE_LINE.exec(line);
    if (whole) {
      const value = valueOf(whole[2]);
      const inserted = typeof value === "string" ? value.replace(/\n$/, "").split("\n") : typeof value === "number" ? [String(value)] : value;
      lines.push(...inserted.map((l) => (l === "" ? "" : `${whole[1]}${l}`)));
      continue;
    }
    lines.push(
      line.replace(MARKER, (_, name: string) => {
        const value = valueOf(name);
        if (typeof value !== "number" && (typeof value !== "string" || value.includes("\n"))) {
          throw new Error(`fillTemplate ${where}: {{${name}}} is inside a line and takes one line of text`);
        }
        return String(value);
      }),
    );
  }
  const unused = Object.keys(values).filter((name) => !used.has(name));
  if (unused.length > 0) throw new Error(`fillTemplate ${where}: no marker for ${unused.map((n) => `{{${n}}}`).join(", ")}`);
  return lines.join("\n");
}
