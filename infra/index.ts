// The Pulumi program: `pulumi preview` / `pulumi up` run this file. Config and the zone are checked
// before any resource is registered; the stack outputs are the returned object.
import { StackOutputs, buildStack, loadStackConfig, lookUpZone } from "./stack";

export = async (): Promise<StackOutputs> => {
  const cfg = loadStackConfig();
  const zoneId = await lookUpZone(cfg);
  return buildStack(cfg, { zoneId }).outputs;
};
