// A stand-in provider plugin: serves one of the providers the program uses (hcloud, cloudflare,
// random, tls, command) over Pulumi's provider protocol, with no cloud behind it. The engine launches
// it as `pulumi-resource-<package>` (see plugins.ts); argv: <package> <engine address...>.
import { randomBytes } from "node:crypto";
import { isDeepStrictEqual } from "node:util";
import * as provider from "@pulumi/pulumi/provider";
import { urnTypeAndName } from "../../../infra/urn";
import { CATALOG, PackageName, ResourceSpec, computedKeys, isPackageName, packageVersion, plain, problems } from "./catalog";

function specFor(pkg: PackageName, urn: string): { spec: ResourceSpec; type: string; name: string } {
  const { type, name } = urnTypeAndName(urn);
  const spec = CATALOG[pkg].resources[type];
  if (!spec) throw new Error(`the ${pkg} stand-in does not know ${type}: add it to tests/engine/standins/catalog.ts`);
  return { spec, type, name };
}

function newId(pkg: PackageName): string {
  // hcloud ids are integers; Cloudflare's are 32 hex digits; the others are opaque.
  if (pkg === "hcloud") return String(100000000 + (randomBytes(4).readUInt32BE() % 900000000));
  return randomBytes(16).toString("hex");
}

export function standIn(pkg: PackageName): provider.Provider {
  return {
    version: packageVersion(pkg),

    async check(urn, olds, news) {
      const { spec, name } = specFor(pkg, urn);
      // Auto-naming as Pulumi's bridged providers do it: a random suffix, kept once chosen.
      const inputs = spec.autoName && news.name === undefined ? { ...news, name: olds.name ?? `${name}-${randomBytes(4).toString("hex").slice(0, 7)}` } : news;
      return { inputs, failures: problems(spec, inputs) };
    },

    async diff(_id, urn, olds, news) {
      const { spec, type } = specFor(pkg, urn);
      // `olds` are the stored outputs: leave out what the cloud computed, compare every input.
      const computed = computedKeys(type);
      const fixed = new Set(spec.fixedAfterCreate ?? []);
      const keys = new Set([...Object.keys(news), ...Object.keys(olds).filter((k) => !computed.has(k))].filter((k) => !fixed.has(k)));
      const changed = [...keys].filter((k) => !isDeepStrictEqual(plain(olds[k]), plain(news[k])));
      const replaces = changed.filter((k) => spec.replaceOnChanges.includes(k));
      return { changes: changed.length > 0, replaces };
    },

    async create(urn, inputs) {
      const { spec, type, name } = specFor(pkg, urn);
      const failures = problems(spec, inputs);
      if (failures.length) throw new Error(failures.map((f) => `${f.property}: ${f.reason}`).join("; "));
      const outs = { ...inputs, ...spec.outputs({ type, name, inputs: plain(inputs) as Record<string, unknown> }) };
      return { id: newId(pkg), outs };
    },

    async update(id, urn, olds, news) {
      const { spec, type } = specFor(pkg, urn);
      if (spec.noUpdate) throw new Error(`${type} ${id}: doesn't support update`);
      const kept = Object.fromEntries([...computedKeys(type)].filter((k) => k in olds).map((k) => [k, olds[k]]));
      return { outs: { ...news, ...kept } };
    },

    async delete(id, urn, props) {
      const { spec, type } = specFor(pkg, urn);
      const refusal = spec.refuseDelete?.(plain(props) as Record<string, unknown>);
      if (refusal) throw new Error(`${type} ${id}: ${refusal}`);
    },

    async invoke(token, args) {
      const answer = CATALOG[pkg].functions[token];
      if (!answer) throw new Error(`the ${pkg} stand-in does not know the function ${token}`);
      return { outputs: answer(plain(args) as Record<string, unknown>) };
    },
  };
}

if (require.main === module) {
  const [pkg, ...args] = process.argv.slice(2);
  if (!isPackageName(pkg)) {
    process.stderr.write(`usage: provider.ts <${Object.keys(CATALOG).join("|")}> <engine address>\n`);
    process.exit(2);
  }
  void provider.main(standIn(pkg), args);
}
