import { z } from "zod";
import { RESERVED_APP_ENV } from "../host/names";

/** A release: a tag, optionally pinned to the image's digest ("1.8.4@sha256:<64 hex>"). */
export const RELEASE = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}(@sha256:[0-9a-f]{64})?$/;

/** The app role's config keys (Pulumi.<stack>.yaml `leaninfra:app*`), with their defaults. */
export const appSettingsSchema = z.object({
  appImage: z
    .string()
    .refine((v) => v === "" || /^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(\/[a-z0-9]+([._-][a-z0-9]+)*)*$/.test(v) || /^[a-z0-9.-]+(:[0-9]+)?(\/[a-z0-9._-]+)+$/.test(v), {
      message: "is not a container image name without tag (accepted: e.g. ghcr.io/acme/shop)",
    })
    .default("")
    .describe("The product's container image, without tag (e.g. ghcr.io/acme/shop). Empty: no app deployed yet."),
  appTag: z
    .string()
    .regex(RELEASE, {
      message: "is not an image tag, or a tag pinned to its digest (accepted: e.g. 1.8.4, 2026-11-28.3 or 1.8.4@sha256:<64 lowercase hex>)",
    })
    .default("latest")
    .describe(
      "The release to run: a tag (1.8.4), or a tag pinned to its image digest (1.8.4@sha256:<64 hex>) so the registry cannot change what runs. Deploy = set a new tag and pulumi up; rollback = set the previous tag and pulumi up.",
    ),
  appPort: z
    .number()
    .int()
    .min(1)
    .max(65535)
    .default(8080)
    .describe("The port the app listens on inside its container."),
  appHealthPath: z
    .string()
    .regex(/^\/[A-Za-z0-9._~\/?=&-]*$/, { message: 'is not a path (accepted: starts with "/", e.g. /healthz)' })
    .default("/healthz")
    .describe("Path that answers 200 when the app can serve (it should check its database)."),
  appHealthTimeoutSeconds: z
    .number()
    .int()
    .min(5)
    .max(1800)
    .default(90)
    .describe("How long a new release may take to answer its health path before the deploy gives up and keeps the old one."),
  appDrainSeconds: z
    .number()
    .int()
    .min(0)
    .max(600)
    .default(15)
    .describe("Seconds the old release keeps running after the switch, so requests in flight finish."),
  appKeepImages: z
    .number()
    .int()
    .min(2)
    .max(50)
    .default(5)
    .describe("Releases kept on the server, so a rollback needs no registry."),
  appEnv: z
    .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*=.*$/, { message: "is not KEY=value (accepted: e.g. LOG_LEVEL=info)" }))
    .default([])
    .describe("Plain environment of the app, as KEY=value. Secrets go in the secret leaninfra:appSecretEnv instead."),
  appMigrationCommand: z
    .array(z.string().min(1, { message: "is empty (accepted: one argument of the command, e.g. migrate)" }))
    .default([])
    .describe("One-shot command (as a list of arguments) run in the new release before traffic switches, e.g. [./manage, migrate]; empty when the app migrates itself."),
  appRegistryUser: z
    .string()
    .default("")
    .describe("User for a private registry; its password is the secret leaninfra:appRegistryPassword."),
  appMemoryMb: z
    .number()
    .int()
    .min(0)
    .default(0)
    .describe("Memory limit of the app container in MB (no swap beyond it); 0: half of the server's memory. At most the server's memory minus 512 MB for the system, PostgreSQL and nginx."),
  appPidsLimit: z
    .number()
    .int()
    .min(16)
    .max(65536)
    .default(1024)
    .describe("Most processes and threads the app container may run at once (a fork bomb stops there)."),
  appCapabilities: z
    .array(z.string())
    .default([])
    .describe(
      "Linux capabilities the app container keeps: it starts with none (--cap-drop ALL, no-new-privileges). Only Docker's default set may be given back, e.g. [CHOWN, SETUID, SETGID] for an entrypoint that drops root itself, NET_BIND_SERVICE for a port below 1024.",
    ),
});

/** The capabilities Docker grants a container by default: the most the app may keep (appCapabilities). */
export const DOCKER_DEFAULT_CAPABILITIES = Object.freeze([
  "AUDIT_WRITE",
  "CHOWN",
  "DAC_OVERRIDE",
  "FOWNER",
  "FSETID",
  "KILL",
  "MKNOD",
  "NET_BIND_SERVICE",
  "NET_RAW",
  "SETFCAP",
  "SETGID",
  "SETPCAP",
  "SETUID",
  "SYS_CHROOT",
] as const);

/** Memory left to the system, PostgreSQL, Redis and nginx: appMemoryMb may take the rest, no more. */
export const HOST_RESERVED_MEMORY_MB = 512;

/** appMemoryMb as the deploy applies it: 0 means half of the server's memory. */
export function appMemoryLimitMb(appMemoryMb: number, serverMemoryMb: number): number {
  return appMemoryMb > 0 ? appMemoryMb : Math.floor(serverMemoryMb / 2);
}

/** What the deploy gives the app's container for error reporting when sentryDsn is set; the config may not set them. */
export const SENTRY_ENV = ["SENTRY_DSN", "SENTRY_RELEASE", "SENTRY_ENVIRONMENT"] as const;

/** What the app role gets beyond its config keys: the secret config keys and the other roles' offers. */
export type AppInputs = {
  /** Given to the container as DATABASE_URL, e.g. "postgresql://app:PW@host.docker.internal:5432/app" (the postgres role's offer). */
  databaseUrl: string;
  /** Given to the container as REDIS_URL when set, e.g. "redis://host.docker.internal:6379/0" (the redis role's offer; undefined without Redis). */
  redisUrl?: string;
  /** Secret settings, "KEY=value" lines ("" for none; blank lines and # comments are ignored). */
  appSecretEnv: string;
  /** The registry password, with appRegistryUser ("" for none). */
  appRegistryPassword: string;
  /** A Sentry (or Sentry-compatible) DSN, https://<public key>@<host>/<project id>; "" or undefined for none. */
  sentryDsn?: string;
};

/**
 * What the app role needs to know about the product's container: its config keys (appImage is the
 * repository without tag, appTag the release to serve, appEnv "KEY=value" each, appMigrationCommand
 * [] for none, appRegistryUser "" for none) and its inputs. The secret ones only ever land in
 * root-only 0600 files on the host.
 */
export type AppSettings = z.output<typeof appSettingsSchema> &
  AppInputs & {
    /** The Pulumi stack's name: SENTRY_ENVIRONMENT, with sentryDsn. */
    stack?: string;
  };

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Docker's reference grammar: optional registry host[:port], then lowercase path components.
const REGISTRY_HOST = /^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+)(?::[0-9]{1,5})?$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const HEALTH_PATH = /^\/[A-Za-z0-9._~\/%?=&+-]*$/;
const CONTROL = /[\x00-\x1f\x7f]/;

/** "ghcr.io/acme/shop" -> "ghcr.io"; "acme/shop" and "shop" -> "" (Docker Hub). */
export function registryHost(image: string): string {
  const slash = image.indexOf("/");
  if (slash < 0) return "";
  const first = image.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost" ? first : "";
}

function imageProblem(image: unknown): string | undefined {
  const accepted = '(accepted: a repository without tag or digest, e.g. "ghcr.io/acme/shop" or "acme/shop")';
  if (typeof image !== "string" || image === "") return `must be an image repository ${accepted}`;
  if (image.includes("@")) return `${JSON.stringify(image)} has a digest; give the repository here, and pin the digest in appTag (e.g. "1.8.4@sha256:<64 hex>") ${accepted}`;
  if (image.startsWith("-")) return `${JSON.stringify(image)} starts with "-", which docker would read as an option ${accepted}`;
  const host = registryHost(image);
  const path = host === "" ? image : image.slice(host.length + 1);
  if (host !== "" && !REGISTRY_HOST.test(host)) return `${JSON.stringify(image)} has an invalid registry host "${host}" ${accepted}`;
  if (path.includes(":")) return `${JSON.stringify(image)} carries a tag; put the release in appTag instead ${accepted}`;
  if (image.length > 255 || !path.split("/").every((c) => PATH_COMPONENT.test(c))) {
    return `${JSON.stringify(image)} is not a Docker repository name: lowercase letters, digits and . _ - between slashes ${accepted}`;
  }
  return undefined;
}

function wholeNumber(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

/** "KEY=value" lines of appSecretEnv that carry a setting (blank lines and # comments dropped), with their line numbers. */
export function secretEnvEntries(secretEnv: string): { line: number; text: string }[] {
  return secretEnv
    .split("\n")
    .map((text, i) => ({ line: i + 1, text: text.replace(/\r$/, "") }))
    .filter(({ text }) => text.trim() !== "" && !text.trimStart().startsWith("#"));
}

/**
 * What is wrong with a Sentry DSN, never quoting it (it is a secret): undefined when it is
 * https://<public key>[:<secret key>]@<host>[:port][/<path>]/<project id>, as Sentry's SDKs read it.
 */
export function sentryDsnProblem(dsn: unknown): string | undefined {
  if (typeof dsn !== "string" || /\s/.test(dsn) || CONTROL.test(dsn)) return "must be one URL without spaces";
  let url: URL;
  try {
    url = new URL(dsn);
  } catch {
    return "is not a URL";
  }
  if (url.protocol !== "https:") return `has scheme "${url.protocol}", not https: (the SDK would send errors, with their data, in clear text)`;
  if (url.username === "") return "names no public key before the @";
  if (!/^[A-Za-z0-9]+$/.test(url.username) || !/^[A-Za-z0-9]*$/.test(url.password)) return "has a key that is not letters and digits";
  if (url.hostname === "") return "names no host";
  if (url.search !== "" || url.hash !== "") return "has a query or fragment, which a DSN never has";
  if (!/^(\/[A-Za-z0-9._~-]+)*\/[0-9]+$/.test(url.pathname)) return "does not end with /<project id> (digits)";
  return undefined;
}

/**
 * Every problem with the settings, each starting with the config key (or input) it is about, then a
 * space; empty when valid. Secret values (appSecretEnv, appRegistryPassword, the URLs) are never quoted.
 */
export function appSettingsProblems(settings: AppSettings): string[] {
  const problems: string[] = [];
  const add = (key: string, message: string) => problems.push(`${key} ${message}`);
  const s = settings as Partial<Record<keyof AppSettings, unknown>>;

  const image = imageProblem(s.appImage);
  if (image) add("appImage", image);
  if (typeof s.appTag !== "string" || !RELEASE.test(s.appTag)) {
    add(
      "appTag",
      `${JSON.stringify(s.appTag)} is not a Docker tag, or a tag pinned to a digest (accepted: letters, digits and _ . -, at most 128, not starting with . or -, optionally followed by @sha256: and 64 lowercase hex digits; e.g. "1.8.4" or "1.8.4@sha256:9f86d0…")`,
    );
  }
  if (!wholeNumber(s.appMemoryMb, 64, 1 << 22)) add("appMemoryMb", `${JSON.stringify(s.appMemoryMb)} must be a whole number of MB, at least 64 (e.g. 1024; 0 in the stack file means half of the server's memory)`);
  if (!wholeNumber(s.appPidsLimit, 16, 65536)) add("appPidsLimit", `${JSON.stringify(s.appPidsLimit)} must be a whole number, 16 to 65536 (e.g. 1024)`);
  if (!Array.isArray(s.appCapabilities)) {
    add("appCapabilities", "must be a list of capability names ([] for none)");
  } else {
    const seen = new Set<string>();
    s.appCapabilities.forEach((cap, i) => {
      if (typeof cap !== "string" || !(DOCKER_DEFAULT_CAPABILITIES as readonly string[]).includes(cap)) {
        add(`appCapabilities[${i}]`, `${JSON.stringify(cap)} is not one of Docker's default capabilities (accepted: ${DOCKER_DEFAULT_CAPABILITIES.join(", ")}; written without CAP_)`);
      } else if (seen.has(cap)) {
        add(`appCapabilities[${i}]`, `${JSON.stringify(cap)} is listed twice`);
      }
      if (typeof cap === "string") seen.add(cap);
    });
  }

  const hasUser = s.appRegistryUser !== undefined && s.appRegistryUser !== "";
  const hasPassword = s.appRegistryPassword !== undefined && s.appRegistryPassword !== "";
  if (hasUser && (typeof s.appRegistryUser !== "string" || /\s/.test(s.appRegistryUser) || CONTROL.test(s.appRegistryUser) || s.appRegistryUser.startsWith("-"))) {
    // It reaches `docker login --username`, where a leading "-" would read as an option.
    add("appRegistryUser", `${JSON.stringify(s.appRegistryUser)} must be a user name without spaces, not starting with "-"`);
  }
  if (hasPassword && (typeof s.appRegistryPassword !== "string" || CONTROL.test(s.appRegistryPassword))) {
    add("appRegistryPassword", "must be one line of text");
  }
  if (hasUser !== hasPassword) {
    if (hasUser) add("appRegistryPassword", "goes together with appRegistryUser: set both for a private registry, or neither");
    else add("appRegistryUser", "goes together with appRegistryPassword: set both for a private registry, or neither");
  }

  const keys = new Map<string, string>();
  const checkEntry = (where: string, entry: unknown, secret: boolean) => {
    if (typeof entry !== "string") {
      add(where, "must be a string KEY=value");
      return;
    }
    const eq = entry.indexOf("=");
    const key = eq < 0 ? entry : entry.slice(0, eq);
    // A secret line without "=" may be a pasted secret: never quote it back.
    if (eq < 1 || !ENV_KEY.test(key)) {
      add(where, `${secret ? "" : `${JSON.stringify(entry)} `}is not KEY=value with KEY made of letters, digits and _ (not starting with a digit)`);
      return;
    }
    const shown = secret ? `"${key}=…"` : JSON.stringify(entry);
    if (CONTROL.test(entry)) add(where, `${shown} has control characters or newlines in its value (accepted: one line of text)`);
    if ((RESERVED_APP_ENV as readonly string[]).includes(key)) {
      add(where, `sets ${key}, which LeanInfra provides itself: the deploy sets ${RESERVED_APP_ENV.join(", ")} (accepted: any other KEY=value)`);
    } else if ((SENTRY_ENV as readonly string[]).includes(key)) {
      // In the env files the restore drill's container would get it too, and report the copy's errors as production's.
      add(where, `sets ${key}, which the deploy sets from the secret leaninfra:sentryDsn (accepted: set the DSN there: pulumi config set --secret leaninfra:sentryDsn https://<key>@<host>/<project id>)`);
    } else if (keys.has(key)) {
      add(where, `sets ${key}, which ${keys.get(key)} already sets (accepted: each KEY once in appEnv and appSecretEnv)`);
    }
    keys.set(key, where);
  };
  if (!Array.isArray(s.appEnv)) add("appEnv", 'must be a list of "KEY=value" strings ([] for none)');
  else s.appEnv.forEach((entry, i) => checkEntry(`appEnv[${i}]`, entry, false));
  if (typeof s.appSecretEnv !== "string") add("appSecretEnv", 'must be "KEY=value" lines ("" for none)');
  else for (const { line, text } of secretEnvEntries(s.appSecretEnv)) checkEntry(`appSecretEnv line ${line}`, text, true);

  const url = (key: string, value: unknown, schemes: string[], example: string) => {
    const accepted = `(accepted: ${schemes.map((x) => `${x}://`).join(" or ")} URL, e.g. "${example}")`;
    if (typeof value !== "string" || /\s/.test(value) || CONTROL.test(value)) {
      add(key, `must be a URL without spaces ${accepted}`);
      return;
    }
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      add(key, `is not a URL ${accepted}`);
      return;
    }
    if (!schemes.includes(parsed.protocol.replace(/:$/, ""))) add(key, `has scheme "${parsed.protocol}" ${accepted}`);
    else if (parsed.hostname === "") add(key, `names no host ${accepted}`);
  };
  url("databaseUrl", s.databaseUrl, ["postgresql", "postgres"], "postgresql://app:PASSWORD@host.docker.internal:5432/app");
  if (s.redisUrl !== undefined && s.redisUrl !== "") url("redisUrl", s.redisUrl, ["redis", "rediss"], "redis://host.docker.internal:6379/0");

  if (s.sentryDsn !== undefined && s.sentryDsn !== "") {
    const problem = sentryDsnProblem(s.sentryDsn);
    if (problem) add("sentryDsn", `${problem} (accepted: https://<public key>@<host>/<project id>, e.g. https://0123abcd@o1.ingest.sentry.io/42; the value is secret and not shown)`);
  }

  if (!wholeNumber(s.appPort, 1, 65535)) add("appPort", `${JSON.stringify(s.appPort)} must be a port number, 1 to 65535 (e.g. 8000)`);
  if (typeof s.appHealthPath !== "string" || !HEALTH_PATH.test(s.appHealthPath) || s.appHealthPath.length > 200) {
    add("appHealthPath", `${JSON.stringify(s.appHealthPath)} must be a URL path starting with / (letters, digits and . _ ~ / % ? = & + -; e.g. "/healthz")`);
  }
  if (!wholeNumber(s.appHealthTimeoutSeconds, 1, 3600)) {
    add("appHealthTimeoutSeconds", `${JSON.stringify(s.appHealthTimeoutSeconds)} must be a whole number of seconds, 1 to 3600 (e.g. 60)`);
  }
  if (!wholeNumber(s.appDrainSeconds, 0, 600)) add("appDrainSeconds", `${JSON.stringify(s.appDrainSeconds)} must be a whole number of seconds, 0 to 600 (e.g. 10)`);
  if (!wholeNumber(s.appKeepImages, 1, 100)) add("appKeepImages", `${JSON.stringify(s.appKeepImages)} must be a whole number, 1 to 100 (e.g. 5)`);

  // [] means no migration.
  const cmd = s.appMigrationCommand;
  if (!Array.isArray(cmd)) {
    add("appMigrationCommand", 'must be a list of arguments (e.g. ["npm", "run", "migrate"]), or [] for none');
  } else {
    cmd.forEach((arg, i) => {
      if (typeof arg !== "string" || arg === "" || CONTROL.test(arg)) add(`appMigrationCommand[${i}]`, "must be a non-empty one-line string");
    });
  }
  return problems;
}
