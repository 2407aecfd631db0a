import * as pulumi from "@pulumi/pulumi";
import * as random from "@pulumi/random";
import { z } from "zod";
import { RoleBundle } from "../components/host";
import { renderRoleBundle } from "../components/host/bundle";
import { AnyRoleDefinition, RoleSettings, placeholderInputs } from "../components/host/define";
import { PROJECT, StackConfig } from "./config";
import { stackInputPlaceholders } from "./placeholders";

/** A role ready for the Host, and its text for out/<stack>/ with placeholders where secrets go. */
export interface RenderedRole extends RoleBundle {
  /** The bundle as `npm run plan` writes it: same script, secrets and cloud-issued values replaced by placeholders. */
  preview: string;
}

/** A generated password: stored only in Pulumi state (encrypted) and root-only files on the server. */
function password(name: string): pulumi.Output<string> {
  // Letters and digits only: they need no escaping in URLs, pgpass lines or env files.
  // The provider marks `result` secret; saying so here keeps it secret whatever runs the program.
  return pulumi.secret(new random.RandomPassword(name, { length: 40, special: false }).result);
}

export interface RoleWiring {
  /** The cloud components' values for the roles' `stack` inputs, by "role.input". */
  stackInputs: Readonly<Record<string, pulumi.Input<unknown>>>;
  /** Resources a role must wait for, by role name (e.g. DNS records before certbot). */
  dependsOn?: Readonly<Record<string, pulumi.Resource[] | undefined>>;
  /** Under mocks (the offline plan, component tests): an unset secret config key gets its placeholder. */
  offline?: boolean;
}

/**
 * Every enabled role of the list, rendered twice from the same definition: from its real inputs
 * (generated passwords, secret config, other roles' offers, cloud values) as a secret bundle for the
 * Host, and from their placeholders for out/<stack>/. Returns the generated passwords by resource name.
 */
export function renderStackRoles(
  cfg: StackConfig,
  roles: readonly AnyRoleDefinition[],
  wiring: RoleWiring,
): { roles: RenderedRole[]; passwords: ReadonlyMap<string, pulumi.Output<string>> } {
  const settings = cfg as unknown as RoleSettings<z.ZodObject>;
  const config = new pulumi.Config(PROJECT);
  const passwords = new Map<string, pulumi.Output<string>>();
  const offers = new Map<string, pulumi.Output<Record<string, string>>>();
  const placeholderOffers = new Map<string, Record<string, string>>();
  const placeholders = stackInputPlaceholders(cfg);
  const rendered: RenderedRole[] = [];

  for (const role of roles) {
    if (role.enabled && !role.enabled(settings)) continue;
    const placeholderValues = placeholderInputs(role, settings, placeholderOffers, placeholders);
    const inputs: Record<string, pulumi.Input<unknown>> = {};
    for (const [name, input] of Object.entries(role.inputs ?? {})) {
      switch (input.from) {
        case "password": {
          if (!passwords.has(input.resource)) passwords.set(input.resource, password(input.resource));
          inputs[name] = passwords.get(input.resource);
          break;
        }
        case "secretConfig":
          // Unset: "" (the config check has refused it if the settings need it); offline (the plan and
          // the component tests, which cannot decrypt or leave it unset), the placeholder.
          inputs[name] = config.getSecret(input.key)?.apply((value) => value ?? "") ?? (wiring.offline ? placeholderValues[name] : "");
          break;
        case "role":
          inputs[name] = offers.get(input.role)?.apply((offered) => offered[input.offer]);
          break;
        case "stack":
          inputs[name] = wiring.stackInputs[`${role.name}.${name}`];
          break;
      }
    }
    const values = pulumi.output(inputs) as unknown as pulumi.Output<Record<string, unknown>>;
    if (role.offers) {
      const offer = role.offers.bind(role);
      offers.set(role.name, pulumi.secret(values.apply((v) => offer(settings, v))));
      placeholderOffers.set(role.name, offer(settings, placeholderValues));
    }
    rendered.push({
      name: role.name,
      bundle: values.apply((v) => renderRoleBundle(role.render(settings, v))),
      preview: renderRoleBundle(role.render(settings, placeholderValues)),
      dependsOn: wiring.dependsOn?.[role.name],
    });
  }
  return { roles: rendered, passwords };
}
