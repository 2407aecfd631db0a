import { z } from "zod";
import { ROLE_NAME } from "./names";
import { HostRole } from "./role";

/**
 * Stack-wide values any role may read: config keys that belong to the stack rather than to one role
 * (named as in Pulumi.<stack>.yaml) and what derives from them. A role's own keys are its settings slice.
 */
export interface StackFacts {
  readonly stack: string;
  readonly domain: string;
  readonly hostname: string;
  /** <hostname>.<domain>. */
  readonly fqdn: string;
  readonly adminUser: string;
  readonly canonicalHost: "apex" | "www";
  readonly extraHostnames: readonly string[];
  readonly staticHostname: string;
  readonly staticPathPrefixes: readonly string[];
  readonly cdnProxy: boolean;
  readonly volumeSizeGb: number;
  readonly backupRetentionDays: number;
  readonly backupLockDays: number;
  /** The server's RAM in MB: serverMemoryGb, else the server type's. */
  readonly memoryMb: number;
  /** The server type's vCPUs. */
  readonly vcpus: number;
  /** The Hetzner server type (cx22, cax21...): cax types are Arm (arm64), the others x86-64. */
  readonly serverType: string;
}

/** The config key behind a derived fact, for problem messages. */
export const FACT_KEYS: Readonly<Record<string, string>> = Object.freeze({ memoryMb: "serverMemoryGb", vcpus: "serverType", fqdn: "hostname" });

/**
 * Where one input of a role comes from. Every input has a placeholder: the offline plan renders the
 * role from placeholders, and the config check runs the role's own checks on them before anything exists.
 */
export type RoleInput =
  /** A generated password (40 letters and digits), kept in Pulumi state under this resource name. */
  | { from: "password"; resource: string }
  /** An optional secret config key of this role (`pulumi config set --secret`); "" when unset. */
  | {
      from: "secretConfig";
      key: string;
      description: string;
      /** The offline plan's stand-in; a non-empty one means the settings need this key set for `pulumi up`. */
      placeholder?(settings: RoleSettings<z.ZodObject>): string;
    }
  /** A connection detail another role offers (listed earlier); undefined when that role is off. */
  | { from: "role"; role: string; offer: string }
  /** A value the stack's cloud components provide (certificates, bucket credentials), wired in infra/. */
  | { from: "stack"; description: string };

/** A problem with a role's settings: "<config key> <what is wrong> (accepted: ...)". */
export class SettingsError extends Error {
  constructor(
    readonly role: string,
    readonly problems: string[],
  ) {
    super(`${role} settings have ${problems.length} problem${problems.length === 1 ? "" : "s"}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "SettingsError";
  }
}

/** Throws SettingsError when there are problems; each starts with the config key it is about. */
export function refuseProblems(role: string, problems: string[]): void {
  if (problems.length > 0) throw new SettingsError(role, problems);
}

/** A role's settings as render sees them: its slice's values (by the slice's own keys) and the stack facts. */
export type RoleSettings<S extends z.ZodObject> = { readonly [K in keyof S["shape"]]: z.output<S["shape"][K]> } & StackFacts;

/**
 * What a role costs the product before anyone says yes to it ("count the new bill, secret, alert, and
 * failure point it adds"). Every role declares one; the policy pack refuses a deployed role without it,
 * and `npm run docs` prints it into the inventory.
 */
export interface RoleBudget {
  /** What the role adds to the monthly bill beyond the server it runs on (amount 0 when it only uses the server), and what it takes of the server. */
  monthlyCost: { amount: number; currency: "EUR" | "USD"; what: string };
  /** Secrets the role holds: the name, and where it lives (Pulumi state, encrypted stack config, a file on the server). */
  secrets: readonly { name: string; livesIn: string }[];
  /** The alerts that watch the role, by name: rules in its alerts.yml, or another role's that cover it. */
  alerts: readonly string[];
  /** How the role fails and what that breaks, one line each. */
  failurePoints: readonly string[];
}

export interface RoleDefinition<S extends z.ZodObject = z.ZodObject, I extends Record<string, unknown> = Record<string, unknown>> {
  /** [a-z0-9-]: the bundle's name, its log prefix and its marker on the host. */
  name: string;
  /** Roles that must be applied before this one (the list in infra/ keeps this order). */
  after: readonly string[];
  /** Its bill, secrets, alerts and failure points (RoleBudget). */
  budget: RoleBudget;
  /** The config keys this role owns (flat camelCase, with defaults and descriptions), as a zod object. */
  settings: S;
  /** Whether the stack runs this role; default always. */
  enabled?(settings: RoleSettings<S>): boolean;
  /** What the role needs beyond config: generated passwords, secret config, other roles' offers, cloud values. */
  inputs?: { [K in keyof I]-?: RoleInput };
  /** Connection details this role offers to roles after it (URLs, ports, users); computed from the same inputs. */
  offers?(settings: RoleSettings<S>, inputs: I): Record<string, string>;
  /**
   * The role's host data. Refuses bad settings by throwing SettingsError (refuseProblems), whose
   * problems the config check reports with the key before anything is created.
   */
  render(settings: RoleSettings<S>, inputs: I): HostRole;
}

/** A role definition with its types erased, as the stack's list holds it. */
export type AnyRoleDefinition = RoleDefinition<z.ZodObject, Record<string, unknown>>;


/** Declares a role; checks the definition's own shape (a programming error, not a config problem). */
export function defineRole<S extends z.ZodObject, I extends Record<string, unknown> = Record<string, never>>(definition: RoleDefinition<S, I>): RoleDefinition<S, I> {
  if (!ROLE_NAME.test(definition.name)) throw new Error(`defineRole: name ${JSON.stringify(definition.name)} must match [a-z0-9-]+`);
  for (const [key, schema] of Object.entries(definition.settings.shape as Record<string, z.ZodType>)) {
    if (!schema.description) throw new Error(`defineRole ${definition.name}: setting ${key} has no description (Pulumi.yaml shows it to the user)`);
  }
  return definition;
}

/** A generated password's placeholder: long enough for every role's check, different per input. */
export function placeholderPassword(resource: string): string {
  return `placeholder-${resource}-generated-on-pulumi-up`;
}

/**
 * The roles in the order the Host applies them. Each role's `after` must name roles earlier in the
 * list; a missing or later one is a programming error.
 */
export function checkRoleOrder(roles: readonly AnyRoleDefinition[]): void {
  const seen = new Set<string>();
  for (const role of roles) {
    if (seen.has(role.name)) throw new Error(`role ${role.name} is listed twice`);
    for (const before of role.after) {
      if (!roles.some((r) => r.name === before)) throw new Error(`role ${role.name} comes after ${before}, which is not in the role list`);
      if (!seen.has(before)) throw new Error(`role ${role.name} is listed before ${before}, which it comes after`);
    }
    seen.add(role.name);
  }
}

/**
 * The inputs' placeholder values for one role, in dependency order. `offers` holds the placeholder
 * offers of the roles before it; `secretValues` the clear values of secret config keys, where known.
 */
export function placeholderInputs(
  role: AnyRoleDefinition,
  settings: RoleSettings<z.ZodObject>,
  offers: ReadonlyMap<string, Record<string, string>>,
  stackPlaceholders: Readonly<Record<string, unknown>>,
  secretValues: Readonly<Record<string, string | undefined>> = {},
): Record<string, unknown> {
  const values: Record<string, unknown> = {};
  for (const [name, input] of Object.entries(role.inputs ?? {})) {
    switch (input.from) {
      case "password":
        values[name] = placeholderPassword(input.resource);
        break;
      case "secretConfig": {
        // `pulumi up` knows every secret key (undefined: not set, checked as ""), so a secret the
        // settings need and nobody set is refused before anything exists. The offline plan knows
        // none and checks the placeholder.
        if (input.key in secretValues) values[name] = secretValues[input.key] ?? "";
        else values[name] = input.placeholder ? input.placeholder(settings) : "";
        break;
      }
      case "role":
        values[name] = offers.get(input.role)?.[input.offer];
        break;
      case "stack":
        if (!(`${role.name}.${name}` in stackPlaceholders)) throw new Error(`role ${role.name}: no placeholder wired for stack input ${name}`);
        values[name] = stackPlaceholders[`${role.name}.${name}`];
        break;
    }
  }
  return values;
}

/**
 * A refinement for lists whose entries must differ (networks, host names, path prefixes): each repeat is
 * reported at its own index, naming the entry it repeats. Use: `z.array(...).superRefine(eachOnce())`.
 */
export function eachOnce(normalize: (entry: string) => string = (entry) => entry) {
  return (entries: readonly string[], ctx: z.core.$RefinementCtx<string[]>): void => {
    const seen = new Map<string, number>();
    // The entries' own checks run too and report an invalid entry; here it is compared as written.
    const key = (entry: string) => {
      try {
        return normalize(entry);
      } catch {
        return entry;
      }
    };
    entries.forEach((entry, index) => {
      const first = seen.get(key(entry));
      if (first === undefined) seen.set(key(entry), index);
      else ctx.addIssue({ code: "custom", path: [index], input: entry, message: `repeats entry [${first}] (accepted: each entry once)` });
    });
  };
}
