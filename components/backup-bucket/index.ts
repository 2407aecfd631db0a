import * as cloudflare from "@pulumi/cloudflare";
import * as pulumi from "@pulumi/pulumi";
import {
  BackupBucketSettings,
  assertValidSettings,
  bucketTokenResources,
  lifecycleRules,
  lockRules,
  r2Endpoint,
  s3CredentialsFromToken,
} from "./policy";

export { BACKUP_LAYOUT } from "./policy";

export type BackupBucketArgs = BackupBucketSettings;

/** What the backups role needs to reach the bucket with an S3 client such as pgBackRest. */
export interface S3Settings {
  endpoint: string;
  region: string;
  bucket: string;
  accessKeyId: string;
  secretAccessKey: string;
}

/** Object-level access to one bucket: read and write, never list other buckets or change settings. */
export const BUCKET_TOKEN_PERMISSION_GROUPS = ["Workers R2 Storage Bucket Item Read", "Workers R2 Storage Bucket Item Write"];

const PERMISSION_GROUPS_LIST = "cloudflare:index/getAccountApiTokenPermissionGroupsList:getAccountApiTokenPermissionGroupsList";

/**
 * The off-account backup bucket: an R2 bucket in the SECOND Cloudflare account with its expiry,
 * its lock and a token that reaches only this bucket, turned into S3 credentials for the server.
 * The caller passes the backup account's provider (`providers: { cloudflare: backupProvider }`).
 */
export class BackupBucket extends pulumi.ComponentResource {
  public readonly bucketName: pulumi.Output<string>;
  public readonly endpoint: pulumi.Output<string>;
  public readonly region: pulumi.Output<string>;
  /** Secret. */
  public readonly accessKeyId: pulumi.Output<string>;
  /** Secret. */
  public readonly secretAccessKey: pulumi.Output<string>;
  /** Secret: everything above in one object, for the backups role. */
  public readonly s3: pulumi.Output<S3Settings>;

  constructor(name: string, args: BackupBucketArgs, opts?: pulumi.ComponentResourceOptions) {
    super("leaninfra:backup:BackupBucket", name, {}, opts);
    assertValidSettings(args);
    // Without its own provider the bucket would silently land in the main account, beside what it protects.
    const provider = this.getProvider(PERMISSION_GROUPS_LIST);
    if (!provider) {
      throw new Error(
        `BackupBucket ${name}: no cloudflare provider was given; pass the backup account's provider ` +
          "(opts.providers: { cloudflare: backupProvider }) so the bucket is created in the second account",
      );
    }
    const child = { parent: this };
    const { accountId, jurisdiction } = args;

    const bucket = new cloudflare.R2Bucket(
      `${name}-bucket`,
      { accountId, name: args.bucketName, location: args.locationHint, jurisdiction, storageClass: "Standard" },
      child,
    );

    new cloudflare.R2BucketLifecycle(`${name}-lifecycle`, { accountId, bucketName: bucket.name, jurisdiction, rules: lifecycleRules(args) }, child);
    new cloudflare.R2BucketLock(`${name}-lock`, { accountId, bucketName: bucket.name, jurisdiction, rules: lockRules(args) }, child);

    // Looked up through the backup account's provider: the token is created in that account.
    const groupIds = BUCKET_TOKEN_PERMISSION_GROUPS.map((groupName) =>
      cloudflare
        .getAccountApiTokenPermissionGroupsListOutput({ accountId, name: groupName }, { parent: this, provider })
        .apply((list) => {
          const group = list.results.find((g) => g.name === groupName);
          if (!group) {
            throw new Error(
              `BackupBucket ${name}: account ${accountId} has no API token permission group named "${groupName}"; ` +
                "check that leaninfra:backupApiToken may read and edit API tokens of that account",
            );
          }
          return { id: group.id };
        }),
    );

    const token = new cloudflare.AccountToken(
      `${name}-token`,
      {
        accountId,
        name: `${args.bucketName}-server`,
        policies: [
          {
            effect: "allow",
            permissionGroups: groupIds,
            resources: bucket.name.apply((bucketName) => bucketTokenResources(accountId, jurisdiction, bucketName)),
          },
        ],
      },
      child,
    );

    const credentials = pulumi.secret(pulumi.all([token.id, token.value]).apply(([id, value]) => s3CredentialsFromToken(id, value)));
    this.bucketName = bucket.name;
    this.endpoint = pulumi.output(r2Endpoint(accountId, jurisdiction));
    this.region = pulumi.output("auto");
    this.accessKeyId = credentials.apply((c) => c.accessKeyId);
    this.secretAccessKey = credentials.apply((c) => c.secretAccessKey);
    this.s3 = pulumi
      .all([this.endpoint, this.region, this.bucketName, credentials])
      .apply(([endpoint, region, bucketName, c]): S3Settings => ({ endpoint, region, bucket: bucketName, ...c }));
    this.registerOutputs({
      bucketName: this.bucketName,
      endpoint: this.endpoint,
      region: this.region,
      accessKeyId: this.accessKeyId,
      secretAccessKey: this.secretAccessKey,
      s3: this.s3,
    });
  }
}
