// `npm run docs [-- --stack NAME] [-- --out DIR]`: RUNBOOK.md and INVENTORY.md of a stack, from its config,
// the offline plan and the roles. The prod stack's files sit at the repository's root as the example.
import * as fs from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { collectDocsFacts } from "./docs/facts";
import { renderInventory } from "./docs/inventory";
import { renderRunbook } from "./docs/runbook";
import { readRunbook } from "./docs/runbook-source";
import { runCli } from "./plan";

/** RUNBOOK.md and INVENTORY.md for prod; RUNBOOK.<stack>.md and INVENTORY.<stack>.md for any other stack. */
export function docsFileNames(stack: string): { runbook: string; inventory: string } {
  const suffix = stack === "prod" ? "" : `.${stack}`;
  return { runbook: `RUNBOOK${suffix}.md`, inventory: `INVENTORY${suffix}.md` };
}

/** Both documents of one stack, by file name. */
export async function renderDocs(stack: string, root: string): Promise<Record<string, string>> {
  const facts = await collectDocsFacts(stack, root);
  const names = docsFileNames(stack);
  return { [names.runbook]: renderRunbook(facts, readRunbook(root)), [names.inventory]: renderInventory(facts) };
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: { stack: { type: "string", default: "prod" }, out: { type: "string" }, help: { type: "boolean", default: false } },
    strict: true,
  });
  if (values.help) {
    process.stdout.write("usage: npm run docs [-- --stack NAME] [--out DIR]   (default: prod, into the current directory)\n");
    return 0;
  }
  // Like `npm run plan`, it works on the project in the current directory.
  const root = process.cwd();
  const outDir = path.resolve(values.out ?? root);
  const docs = await renderDocs(values.stack, root);
  fs.mkdirSync(outDir, { recursive: true });
  for (const [name, text] of Object.entries(docs)) {
    fs.writeFileSync(path.join(outDir, name), text);
    process.stdout.write(`wrote ${path.join(outDir, name)} (${text.split("\n").length - 1} lines)\n`);
  }
  return 0;
}

if (require.main === module) runCli("docs", main);
