/**
 * A strict reader of the Prometheus text format as LeanInfra's jobs write it for node_exporter's
 * textfile collector: every family has one HELP and one TYPE line before its samples, its samples are
 * contiguous, no sample appears twice. Throws on anything else; returns "name{labels}" -> value.
 */
export function parsePromText(text: string): Map<string, number> {
  const samples = new Map<string, number>();
  const seen = new Set<string>();
  let family = "";
  let typed = false;
  text.split("\n").forEach((line, i) => {
    const where = `line ${i + 1} (${JSON.stringify(line)})`;
    if (line === "") return;
    const help = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$/.exec(line);
    if (help) {
      if (seen.has(help[1])) throw new Error(`second HELP for ${help[1]} at ${where}`);
      seen.add(help[1]);
      family = help[1];
      typed = false;
      return;
    }
    const type = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|untyped)$/.exec(line);
    if (type) {
      if (type[1] !== family || typed) throw new Error(`TYPE out of place at ${where}`);
      typed = true;
      return;
    }
    const sample = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="[^"\\\n]*",?)*\})? (-?[0-9.eE+-]+)$/.exec(line);
    if (!sample) throw new Error(`not a sample, HELP or TYPE line at ${where}`);
    if (sample[1] !== family || !typed) throw new Error(`sample of ${sample[1]} outside its family's block at ${where}`);
    const key = `${sample[1]}${sample[2] ?? ""}`;
    if (samples.has(key)) throw new Error(`duplicate sample ${key} at ${where}`);
    const value = Number(sample[3]);
    if (!Number.isFinite(value)) throw new Error(`not a number at ${where}`);
    samples.set(key, value);
  });
  return samples;
}
