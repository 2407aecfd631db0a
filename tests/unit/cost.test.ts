import assert from "node:assert/strict";
import test from "node:test";
import { estimateMonthlyCost } from "../../infra/cost";
import prices from "../../infra/data/prices.json";

test("cost: server, IPv4, volume and optional backups from the dated table", () => {
  const cost = estimateMonthlyCost({ serverType: "cx32", location: "fsn1", volumeSizeGb: 40, hetznerBackups: true, backupEstimatedGb: 5 });
  const server = prices.serverTypes.cx32.monthly;
  const expected = server + server * prices.backupsShareOfServer + prices.primaryIpv4Monthly + 40 * prices.volumePerGbMonthly;
  assert.equal(cost.total, Math.round(expected * 100) / 100);
  assert.equal(cost.totals.EUR, cost.total);
  assert.deepEqual(cost.unpriced, []);
  assert.equal(cost.recordedOn, prices.recordedOn);
  const withoutBackups = estimateMonthlyCost({ serverType: "cx32", location: "fsn1", volumeSizeGb: 40, hetznerBackups: false, backupEstimatedGb: 5 });
  assert.ok(withoutBackups.total < cost.total);
  assert.equal(withoutBackups.lines.some((l) => l.item === "Hetzner backups"), false);
});

test("cost: a location or type the table lacks is named, never guessed", () => {
  const us = estimateMonthlyCost({ serverType: "cpx31", location: "ash", volumeSizeGb: 20, hetznerBackups: false, backupEstimatedGb: 5 });
  assert.deepEqual(us.unpriced, ["server cpx31 in ash"]);
  assert.equal(us.lines[0].monthly, null);
  assert.ok(us.notes.some((n) => n.includes("ash")));
  const unknownType = estimateMonthlyCost({ serverType: "cx99", location: "fsn1", volumeSizeGb: 20, hetznerBackups: false, backupEstimatedGb: 5 });
  assert.deepEqual(unknownType.unpriced, ["server cx99 in fsn1"]);
});

test("cost: R2 storage beyond the free 10 GB is billed in USD, apart from Hetzner's EUR", () => {
  const small = estimateMonthlyCost({ serverType: "cx22", location: "nbg1", volumeSizeGb: 20, hetznerBackups: false, backupEstimatedGb: 8 });
  const storage = (c: typeof small) => c.lines.find((l) => l.item === "R2 backup storage")!;
  assert.equal(storage(small).monthly, 0);
  assert.equal(storage(small).currency, "USD");
  const big = estimateMonthlyCost({ serverType: "cx22", location: "nbg1", volumeSizeGb: 20, hetznerBackups: false, backupEstimatedGb: 110 });
  assert.equal(storage(big).monthly, Math.round(100 * prices.r2.storagePerGbMonthly * 100) / 100);
  assert.equal(big.totals.USD, storage(big).monthly! + big.lines.find((l) => l.item === "R2 operations")!.monthly!);
  assert.equal(big.totals.EUR, small.totals.EUR, "R2 never leaks into the EUR total");
  assert.ok(big.notes.some((n) => n.includes("no egress")));
});
