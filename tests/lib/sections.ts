/** Splits a script's output on its "== name" lines: one entry per section, trimmed. */
export function sections(stdout: string): Record<string, string> {
  const out: Record<string, string> = {};
  let name = "";
  for (const line of stdout.split("\n")) {
    const header = /^== (\S+)$/.exec(line);
    if (header) {
      name = header[1];
      out[name] = "";
    } else if (name) {
      out[name] += `${line}\n`;
    }
  }
  for (const key of Object.keys(out)) out[key] = out[key].trim();
  return out;
}
