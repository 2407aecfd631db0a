/**
 * What the app role needs to know about the product's container. Plain values: the stack passes the
 * secret ones (registryPassword, secretEnv, databaseUrl, redisUrl) as Pulumi secret outputs, and they
 * only ever land in root-only 0600 files on the host.
 */
export interface AppSettings {
  /** Image repository without a tag, e.g. "ghcr.io/acme/shop" (Docker Hub: "acme/shop"). */
  image: string;
  /** The release to serve: a tag of `image`, e.g. "1.8.4". Roll back by setting the previous tag. */
  tag: string;
  /** Registry login, when the image is private: both or neither. */
  registryUser?: string;
  registryPassword?: string;
  /** Plain settings for the container, "KEY=value" each. */
  env: string[];
  /** Secret settings, "KEY=value" lines ("" for none; blank lines and # comments are ignored). */
  secretEnv: string;
  /** Given to the container as DATABASE_URL, e.g. "postgresql://app:PW@host.docker.internal:5432/app". */
  databaseUrl: string;
  /** Given to the container as REDIS_URL when set, e.g. "redis://host.docker.internal:6379/0". */
  redisUrl?: string;
  /** The port the app listens on inside its container (also given to it as PORT). */
  containerPort: number;
  /** Path that answers 200 once the release can serve, e.g. "/healthz". */
  healthPath: string;
  /** How long a new release may take to answer 200 on healthPath before the deploy gives up. */
  healthTimeoutSeconds: number;
  /** How long the old release keeps running after nginx switched, so requests in flight finish. */
  drainSeconds: number;
  /** How many of the last deployed releases' images stay on the host (the serving and previous one always do). */
  keepImages: number;
  /** Run once in the new image, with the app's environment, before traffic switches (e.g. ["npm", "run", "migrate"]). */
  migrationCommand?: string[];
}

/** Set by the deploy itself; the app's own env may not redefine them. */
export const RESERVED_ENV = ["RELEASE", "PORT", "DATABASE_URL", "REDIS_URL"] as const;

const ENV_KEY = /^[A-Za-z_][A-Za-z0-9_]*$/;
// Docker's reference grammar: optional registry host[:port], then lowercase path components.
const REGISTRY_HOST = /^(?:localhost|[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+|\[[0-9A-Fa-f:]+\]|[A-Za-z0-9-]+)(?::[0-9]{1,5})?$/;
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;
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
  if (image.includes("@")) return `${JSON.stringify(image)} has a digest; give the repository here and the release as tag ${accepted}`;
  const host = registryHost(image);
  const path = host === "" ? image : image.slice(host.length + 1);
  if (host !== "" && !REGISTRY_HOST.test(host)) return `${JSON.stringify(image)} has an invalid registry host "${host}" ${accepted}`;
  if (path.includes(":")) return `${JSON.stringify(image)} carries a tag; put the release in tag instead ${accepted}`;
  if (image.length > 255 || !path.split("/").every((c) => PATH_COMPONENT.test(c))) {
    return `${JSON.stringify(image)} is not a Docker repository name: lowercase letters, digits and . _ - between slashes ${accepted}`;
  }
  return undefined;
}

function wholeNumber(value: unknown, min: number, max: number): boolean {
  return typeof value === "number" && Number.isInteger(value) && value >= min && value <= max;
}

/** "KEY=value" lines of secretEnv that carry a setting (blank lines and # comments dropped), with their line numbers. */
export function secretEnvEntries(secretEnv: string): { line: number; text: string }[] {
  return secretEnv
    .split("\n")
    .map((text, i) => ({ line: i + 1, text: text.replace(/\r$/, "") }))
    .filter(({ text }) => text.trim() !== "" && !text.trimStart().startsWith("#"));
}

/**
 * Every problem with the settings, each starting with the field it is about; empty when valid.
 * Secret values are never quoted back.
 */
export function appSettingsProblems(settings: AppSettings): string[] {
  const problems: string[] = [];
  const add = (field: string, message: string) => problems.push(`${field}: ${message}`);
  const s = settings as Partial<Record<keyof AppSettings, unknown>>;

  const image = imageProblem(s.image);
  if (image) add("image", image);
  if (typeof s.tag !== "string" || !TAG.test(s.tag)) {
    add("tag", `${JSON.stringify(s.tag)} is not a Docker tag (accepted: letters, digits and _ . -, at most 128, not starting with . or -; e.g. "1.8.4")`);
  }

  const hasUser = s.registryUser !== undefined && s.registryUser !== "";
  const hasPassword = s.registryPassword !== undefined && s.registryPassword !== "";
  if (hasUser && (typeof s.registryUser !== "string" || /\s/.test(s.registryUser) || CONTROL.test(s.registryUser))) {
    add("registryUser", `${JSON.stringify(s.registryUser)} must be a user name without spaces`);
  }
  if (hasPassword && (typeof s.registryPassword !== "string" || CONTROL.test(s.registryPassword))) {
    add("registryPassword", "must be one line of text");
  }
  if (hasUser !== hasPassword) {
    add(hasUser ? "registryPassword" : "registryUser", "registryUser and registryPassword go together: set both for a private registry, or neither");
  }

  const keys = new Map<string, string>();
  const checkEntry = (field: string, entry: unknown, secret: boolean) => {
    if (typeof entry !== "string") {
      add(field, "must be a string KEY=value");
      return;
    }
    const eq = entry.indexOf("=");
    const key = eq < 0 ? entry : entry.slice(0, eq);
    const shown = secret ? `"${key}=…"` : JSON.stringify(entry);
    if (eq < 1 || !ENV_KEY.test(key)) {
      // A secret line without "=" may be a pasted secret: never quote it back.
      add(field, `${secret ? "this line" : shown} is not KEY=value with KEY made of letters, digits and _ (not starting with a digit)`);
      return;
    }
    if (CONTROL.test(entry)) add(field, `${shown}: the value may not contain control characters or newlines`);
    if ((RESERVED_ENV as readonly string[]).includes(key)) {
      add(field, `${key} is set by the deploy itself (${RESERVED_ENV.join(", ")}); use databaseUrl/redisUrl, or another name`);
    } else if (keys.has(key)) {
      add(field, `${key} is already set by ${keys.get(key)}`);
    }
    keys.set(key, field);
  };
  if (!Array.isArray(s.env)) add("env", 'must be a list of "KEY=value" strings ([] for none)');
  else s.env.forEach((entry, i) => checkEntry(`env[${i}]`, entry, false));
  if (typeof s.secretEnv !== "string") add("secretEnv", 'must be "KEY=value" lines ("" for none)');
  else for (const { line, text } of secretEnvEntries(s.secretEnv)) checkEntry(`secretEnv line ${line}`, text, true);

  const url = (field: string, value: unknown, schemes: string[], example: string) => {
    const accepted = `(accepted: ${schemes.map((x) => `${x}://`).join(" or ")} URL, e.g. "${example}")`;
    if (typeof value !== "string" || /\s/.test(value) || CONTROL.test(value)) {
      add(field, `must be a URL without spaces ${accepted}`);
      return;
    }
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      add(field, `is not a URL ${accepted}`);
      return;
    }
    if (!schemes.includes(parsed.protocol.replace(/:$/, ""))) add(field, `has scheme "${parsed.protocol}" ${accepted}`);
    else if (parsed.hostname === "") add(field, `names no host ${accepted}`);
  };
  url("databaseUrl", s.databaseUrl, ["postgresql", "postgres"], "postgresql://app:PASSWORD@host.docker.internal:5432/app");
  if (s.redisUrl !== undefined && s.redisUrl !== "") url("redisUrl", s.redisUrl, ["redis", "rediss"], "redis://host.docker.internal:6379/0");

  if (!wholeNumber(s.containerPort, 1, 65535)) add("containerPort", `${JSON.stringify(s.containerPort)} must be a port number, 1 to 65535 (e.g. 8000)`);
  if (typeof s.healthPath !== "string" || !HEALTH_PATH.test(s.healthPath) || s.healthPath.length > 200) {
    add("healthPath", `${JSON.stringify(s.healthPath)} must be a URL path starting with / (letters, digits and . _ ~ / % ? = & + -; e.g. "/healthz")`);
  }
  if (!wholeNumber(s.healthTimeoutSeconds, 1, 3600)) {
    add("healthTimeoutSeconds", `${JSON.stringify(s.healthTimeoutSeconds)} must be a whole number of seconds, 1 to 3600 (e.g. 60)`);
  }
  if (!wholeNumber(s.drainSeconds, 0, 600)) add("drainSeconds", `${JSON.stringify(s.drainSeconds)} must be a whole number of seconds, 0 to 600 (e.g. 10)`);
  if (!wholeNumber(s.keepImages, 1, 100)) add("keepImages", `${JSON.stringify(s.keepImages)} must be a whole number, 1 to 100 (e.g. 5)`);

  if (s.migrationCommand !== undefined) {
    const cmd = s.migrationCommand;
    if (!Array.isArray(cmd) || cmd.length === 0) {
      add("migrationCommand", 'must be a non-empty list of arguments (e.g. ["npm", "run", "migrate"]), or left out');
    } else {
      cmd.forEach((arg, i) => {
        if (typeof arg !== "string" || arg === "" || CONTROL.test(arg)) add(`migrationCommand[${i}]`, "must be a non-empty one-line string");
      });
    }
  }
  return problems;
}

/** Throws one Error listing every problem, each naming its field. */
export function assertValidAppSettings(settings: AppSettings): void {
  const problems = appSettingsProblems(settings);
  if (problems.length > 0) {
    throw new Error(`App settings have ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join("\n")}`);
  }
}
