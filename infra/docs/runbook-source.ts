import * as fs from "node:fs";
import * as path from "node:path";

/** One alert's section of docs/runbook.md: what it means and the first three things to check. */
export interface RunbookSection {
  name: string;
  means: string;
  checks: string[];
}

/**
 * Placeholders docs/runbook.md writes for what differs per stack; RUNBOOK.md has them replaced by this
 * stack's values. Others in angle brackets (`<unit>`, `<id>`, `<previous release>`) are the reader's to fill.
 */
export const STACK_MARKERS = ["<server>", "<site url>", "<health url>", "<database>"] as const;
export type StackMarker = (typeof STACK_MARKERS)[number];

export function runbookPath(root: string): string {
  return path.join(root, "docs", "runbook.md");
}

/** The anchor a Markdown heading gets (GitHub's rule): lower case, punctuation dropped, spaces as dashes. */
export function anchorOf(heading: string): string {
  return heading
    .trim()
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\s_-]/gu, "")
    .replace(/\s/g, "-");
}

/**
 * The alert sections of docs/runbook.md by name: each `## Name` with a `**Means...:**` paragraph and a
 * `**First three things to check...:**` numbered list (items may wrap on indented lines).
 */
export function parseRunbook(text: string): Map<string, RunbookSection> {
  const sections = new Map<string, RunbookSection>();
  for (const chunk of text.split(/^## /m).slice(1)) {
    const [heading, ...body] = chunk.split("\n");
    const paragraphs = body.join("\n").split(/\n{2,}/);
    const means = paragraphs.map((p) => /^\*\*Means[^*]*:\*\* ([\s\S]*)$/.exec(p.trim())).find(Boolean);
    const list = paragraphs.map((p) => /^\*\*First three things to check[^*]*:\*\*\n(\d+\. [\s\S]*)$/.exec(p.trim())).find(Boolean);
    if (!means || !list) continue;
    const checks = list[1].split(/\n(?=\d+\. )/).map((item) => item.replace(/^\d+\. /, "").replace(/\n +/g, " "));
    sections.set(heading.trim(), { name: heading.trim(), means: means[1].replace(/\n/g, " "), checks });
  }
  return sections;
}

export function readRunbook(root: string): Map<string, RunbookSection> {
  return parseRunbook(fs.readFileSync(runbookPath(root), "utf8"));
}

/** The text with every stack marker replaced by its value. */
export function fillMarkers(text: string, values: Readonly<Record<StackMarker, string>>): string {
  return STACK_MARKERS.reduce((acc, marker) => acc.replaceAll(marker, values[marker]), text);
}
