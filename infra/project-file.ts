// `npm run project-file`: rewrites Pulumi.yaml's `config:` block from infra/config.ts (a test keeps them equal).
import * as fs from "node:fs";
import * as path from "node:path";
import { stringify } from "yaml";
import { pulumiConfigDeclarations } from "./config";

export const PROJECT_FILE = path.resolve(__dirname, "../Pulumi.yaml");

export function renderProjectFile(): string {
  const doc = {
    name: "leaninfra",
    description: "One Hetzner VM with nginx, PostgreSQL, Cloudflare in front and restore-proven off-account backups.",
    runtime: { name: "nodejs", options: { packagemanager: "npm", typescript: true } },
    config: pulumiConfigDeclarations(),
  };
  return `# Generated from infra/config.ts by \`npm run project-file\`; edit the schema there.\n${stringify(doc, { lineWidth: 0 })}`;
}

if (require.main === module) {
  fs.writeFileSync(PROJECT_FILE, renderProjectFile());
  process.stdout.write(`wrote ${PROJECT_FILE}\n`);
}
