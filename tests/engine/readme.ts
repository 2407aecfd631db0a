// The README's "From fork to a running server", read as the engine test runs it: every command of
// its `sh` blocks, in order. A command the test cannot run as written must have a stated stand-in
// here, so the README and the test cannot drift apart.
import * as fs from "node:fs";
import * as path from "node:path";
import { REPO_ROOT } from "./workspace";

export const README_PATH_HEADING = "## From fork to a running server";

/** How the engine test carries out one README command. */
export type Step =
  | { command: string; action: "run" }
  | { command: string; action: "run"; stdin: string }
  | { command: string; action: "instead"; reason: string };

/** The commands of the README's path, one per line, comments and blank lines dropped. */
export function readmePathCommands(heading = README_PATH_HEADING, readme = fs.readFileSync(path.join(REPO_ROOT, "README.md"), "utf8")): string[] {
  const start = readme.indexOf(`\n${heading}\n`);
  if (start < 0) throw new Error(`README.md has no "${heading}" section`);
  // The section ends at the next heading of any level.
  const rest = readme.slice(start + heading.length + 2);
  const end = rest.search(/^#{1,6} /m);
  const section = end < 0 ? rest : rest.slice(0, end);
  const commands: string[] = [];
  for (const block of section.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1].split("\n")) {
      const command = line.replace(/\s+#.*$/, "").replace(/^#.*$/, "").trim();
      if (command) commands.push(command);
    }
  }
  return commands;
}

/**
 * What the engine test does for each README command. Everything is run as written, in the fork's
 * directory, except: secrets are typed on standard input (as at the CLI's prompt), and the few lines
 * that touch the user's machine rather than the stack have a stated stand-in.
 */
export function stepFor(command: string, secretValue: (key: string) => string): Step {
  const secret = /^pulumi config set --secret (\S+)$/.exec(command);
  if (secret) return { command, action: "run", stdin: `${secretValue(secret[1])}\n` };
  if (/^git clone /.test(command) || /^cd /.test(command)) {
    return { command, action: "instead", reason: "the fork is a copy of this working tree" };
  }
  if (command === "npm ci") return { command, action: "instead", reason: "node_modules is this checkout's, installed by npm ci before the tests" };
  if (/^ssh-add /.test(command)) return { command, action: "instead", reason: "the stand-in command provider does not connect over SSH" };
  if (/^(pulumi|npm run|mkdir) /.test(command)) return { command, action: "run" };
  throw new Error(`README command "${command}" is neither run by the engine test nor given a stand-in in tests/engine/readme.ts`);
}
