/** Instance records on disk (`<instancesPath>/<uuid>/instance.json`) and the names derived from a UUID. */
import { mkdir, readdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { inject, injectable } from 'inversify';
import { isUuid } from '@ephemera/image-backend';
import type { DriverConfig } from './config.js';
import { DRIVER_TYPES } from './tokens.js';
import type { InstanceRecord } from './types.js';

@injectable()
export class InstanceStore {
  constructor(@inject(DRIVER_TYPES.Config) private readonly config: DriverConfig) {}

  /** The libvirt domain name of an instance. */
  domainName(uuid: string): string {
    return `${this.config.libvirt.domainPrefix}${uuid.toLowerCase()}`;
  }

  /** The instance UUID a domain name carries, or undefined for domains that are not ours. */
  uuidOfDomain(name: string): string | undefined {
    const p = this.config.libvirt.domainPrefix;
    if (!name.startsWith(p)) return undefined;
    const rest = name.slice(p.length);
    return isUuid(rest) ? rest.toLowerCase() : undefined;
  }

  /** The instance's directory (record, console log). */
  dir(uuid: string): string {
    return join(this.config.instancesPath, uuid.toLowerCase());
  }

  /** Path of the instance's serial console log. */
  consolePath(uuid: string): string {
    return join(this.dir(uuid), 'console.log');
  }

  /** UUIDs that have a directory, sorted (a directory without a record is possible). */
  async uuids(): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.config.instancesPath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return names.filter(isUuid).sort();
  }

  async read(uuid: string): Promise<InstanceRecord | undefined> {
    try {
      return JSON.parse(await readFile(join(this.dir(uuid), 'instance.json'), 'utf8')) as InstanceRecord;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Writes the record atomically (temp file, rename). */
  async write(rec: InstanceRecord): Promise<void> {
    const dir = this.dir(rec.uuid);
    await mkdir(dir, { recursive: true });
    const tmp = join(dir, `.instance.json.${process.pid}`);
    await writeFile(tmp, JSON.stringify(rec, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, join(dir, 'instance.json'));
  }
}
