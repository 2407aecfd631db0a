import * as pulumi from "@pulumi/pulumi";
import { SNAPSHOT_CALLS } from "./offline-calls";
import { urnTypeAndName } from "./urn";

/** What the offline plan and the component tests see of one registered resource. */
export interface RecordedResource {
  type: string;
  name: string;
  /** `type::name` of the parent resource, when it has one. */
  parent?: string;
  custom: boolean;
  /** The id the mock cloud gave it (applied mode only). */
  id?: string;
  /** Provider reference (`urn::id`) when the resource was given an explicit provider. */
  provider?: string;
  inputs: Record<string, unknown>;
  /** Resource options the engine would receive. */
  options: { ignoreChanges: string[]; deleteBeforeReplace: boolean; dependsOn: string[]; protect: boolean; additionalSecretOutputs: string[] };
  /** Top-level inputs that are secret (masked unless the run reveals secrets). */
  secretInputs: string[];
}

export const UNKNOWN = "(known after apply)";
export const SECRET = "[secret]";

export interface MockRunOptions {
  project: string;
  stack: string;
  /** true: like `pulumi preview` (computed outputs unknown); false: like an applied stack with `computed` outputs. */
  preview: boolean;
  /** Pulumi config as the engine passes it: `project:key` -> string. */
  config: Record<string, string>;
  secretKeys?: string[];
  /** Tests read secret inputs in clear; the plan never does. */
  revealSecrets?: boolean;
  /** Answers to provider functions that replace the offline ones (tests give a zone id, say). */
  calls?: Record<string, (args: Record<string, unknown>) => Record<string, unknown>>;
  /** Extra outputs the mock cloud returns for a resource (ids, addresses...) when not in preview. */
  computed?: (resource: RecordedResource) => Record<string, unknown>;
}

/** Offline answers to provider look-ups: the dated snapshots, and the zone as unknown. */
export const OFFLINE_CALLS: Record<string, (args: Record<string, unknown>) => Record<string, unknown>> = {
  ...SNAPSHOT_CALLS,
  // Account-specific: only the live account knows the zone's id, so offline it stays unknown.
  "cloudflare:index/getZone:getZone": (args) => ({
    ...args,
    id: args.zoneId ?? pulumi.runtime.unknownValue,
    zoneId: args.zoneId ?? pulumi.runtime.unknownValue,
    account: { id: (args.filter as { account?: { id?: string } } | undefined)?.account?.id ?? pulumi.runtime.unknownValue },
    name: (args.filter as { name?: string } | undefined)?.name ?? pulumi.runtime.unknownValue,
  }),
};

const SECRET_SIG = pulumi.runtime.specialSecretSig;
const SIG_KEY = pulumi.runtime.specialSigKey;

function isSecret(value: unknown): boolean {
  return !!value && typeof value === "object" && (value as Record<string, unknown>)[SIG_KEY] === SECRET_SIG;
}

/** Turns mock-monitor values into plain data: secrets masked, unknowns named, resources by URN. */
export function displayValue(value: unknown, revealSecrets = false): unknown {
  if (pulumi.isUnknown(value)) return UNKNOWN;
  if (Array.isArray(value)) return value.map((v) => displayValue(v, revealSecrets));
  if (pulumi.Resource.isInstance(value)) return `(resource ${String((value as unknown as { __name?: string }).__name)})`;
  if (value && typeof value === "object") {
    const record = value as Record<string, unknown>;
    if (isSecret(record)) return revealSecrets ? displayValue(record.value, true) : SECRET;
    return Object.fromEntries(Object.entries(record).map(([k, v]) => [k, displayValue(v, revealSecrets)]));
  }
  return value;
}

interface RegisterRequest {
  getType(): string;
  getName(): string;
  getParent(): string;
  getIgnorechangesList(): string[];
  getDeletebeforereplace(): boolean;
  getDependenciesList(): string[];
  getProtect(): boolean;
  getAdditionalsecretoutputsList(): string[];
}

function parentKey(parentUrn: string): string | undefined {
  if (!parentUrn) return undefined;
  const { type, name } = urnTypeAndName(parentUrn);
  return `${type}::${name}`;
}

/**
 * Runs a Pulumi program against Pulumi's mock runtime (no engine, no CLI, no cloud) and returns
 * every resource it registered, with its parent and its inputs as the engine would receive them.
 */
export async function runWithMocks<T>(
  options: MockRunOptions,
  program: () => T,
): Promise<{ resources: RecordedResource[]; result: T; raw: Map<string, Record<string, unknown>> }> {
  const resources: RecordedResource[] = [];
  const raw = new Map<string, Record<string, unknown>>();
  const parents = new Map<string, string>();
  const resourceOptions = new Map<string, RecordedResource["options"]>();
  pulumi.runtime.setAllConfig(options.config, options.secretKeys);
  await pulumi.runtime.setMocks(
    {
      newResource(args) {
        const record: RecordedResource = {
          type: args.type,
          name: args.name,
          parent: parents.get(`${args.type}::${args.name}`),
          custom: args.custom ?? true,
          provider: args.provider || undefined,
          inputs: displayValue(args.inputs, options.revealSecrets) as Record<string, unknown>,
          options: resourceOptions.get(`${args.type}::${args.name}`) ?? { ignoreChanges: [], deleteBeforeReplace: false, dependsOn: [], protect: false, additionalSecretOutputs: [] },
          secretInputs: Object.keys(args.inputs).filter((key) => isSecret(args.inputs[key])),
        };
        resources.push(record);
        raw.set(`${args.type}::${args.name}`, args.inputs);
        if (options.preview) return { id: undefined, state: args.inputs };
        record.id = String(100000000 + resources.length);
        return { id: record.id, state: { ...args.inputs, ...(options.computed?.(record) ?? {}) } };
      },
      call(args) {
        const answer = options.calls?.[args.token] ?? OFFLINE_CALLS[args.token];
        if (!answer) throw new Error(`no offline answer for provider function ${args.token}`);
        return answer(args.inputs);
      },
    },
    options.project,
    options.stack,
    options.preview,
  );
  // The mock monitor hides each resource's parent from `newResource`; it is read off the request.
  // So are its resource options; both are read off the request.
  const monitor = pulumi.runtime.getMonitor() as unknown as { registerResource(req: RegisterRequest, cb: unknown): unknown };
  const register = monitor.registerResource.bind(monitor);
  monitor.registerResource = (req, cb) => {
    const key = `${req.getType()}::${req.getName()}`;
    const parent = parentKey(req.getParent());
    if (parent) parents.set(key, parent);
    resourceOptions.set(key, {
      ignoreChanges: req.getIgnorechangesList(),
      deleteBeforeReplace: req.getDeletebeforereplace(),
      dependsOn: req.getDependenciesList().map((urn) => parentKey(urn) ?? urn),
      protect: req.getProtect(),
      additionalSecretOutputs: req.getAdditionalsecretoutputsList(),
    });
    return register(req, cb);
  };
  const result = program();
  await pulumi.runtime.disconnect();
  return { resources, result, raw };
}

/** Resolves a (known) output for assertions and printing; unknown in preview resolves to UNKNOWN. */
export function settle<T>(output: pulumi.Input<T>): Promise<T | typeof UNKNOWN> {
  const o = pulumi.output(output) as pulumi.Output<T> & { isKnown: Promise<boolean>; promise(): Promise<T> };
  return o.isKnown.then((known): Promise<T | typeof UNKNOWN> => (known ? o.promise() : Promise.resolve(UNKNOWN)));
}
