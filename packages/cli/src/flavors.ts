/** Flavors: a few named ones, or an inline spec `vcpus=1,ram=64,root=1,ephemeral=0,swap=8`. */
import type { Flavor } from '@ephemera/driver';

/** Built-in flavors (sizes fit the dev stack's test guest). */
export const FLAVORS: Readonly<Record<string, Flavor>> = Object.freeze({
  'e1.nano': { name: 'e1.nano', vcpus: 1, memoryMiB: 64, rootGiB: 0 },
  'e1.micro': { name: 'e1.micro', vcpus: 1, memoryMiB: 128, rootGiB: 1 },
  'e1.small': { name: 'e1.small', vcpus: 1, memoryMiB: 256, rootGiB: 1, ephemeralGiB: 1, swapMiB: 64 },
  'e1.medium': { name: 'e1.medium', vcpus: 2, memoryMiB: 1024, rootGiB: 10, ephemeralGiB: 5, swapMiB: 512 },
});

const KEYS: Record<string, keyof Flavor> = {
  vcpus: 'vcpus',
  cpu: 'vcpus',
  ram: 'memoryMiB',
  memory: 'memoryMiB',
  root: 'rootGiB',
  disk: 'rootGiB',
  ephemeral: 'ephemeralGiB',
  eph: 'ephemeralGiB',
  swap: 'swapMiB',
};

/** Parses `--flavor`: a built-in name or `key=value,...` (vcpus, ram MiB, root GiB, ephemeral GiB, swap MiB). */
export function parseFlavor(text: string): Flavor {
  const named = FLAVORS[text];
  if (named) return { ...named };
  if (!text.includes('=')) {
    throw Object.assign(
      new Error(
        `unknown flavor ${JSON.stringify(text)} (built-in: ${Object.keys(FLAVORS).join(', ')}; or vcpus=1,ram=64,root=1,ephemeral=0,swap=8)`,
      ),
      { code: 'INVALID_ARGUMENT' },
    );
  }
  const f: Flavor = { name: 'custom', vcpus: 1, memoryMiB: 64, rootGiB: 0 };
  for (const part of text.split(',')) {
    const [k, v] = part.split('=').map((s) => s.trim());
    const key = KEYS[k ?? ''];
    if (!key || v === undefined || !/^\d+$/.test(v)) {
      throw Object.assign(
        new Error(`bad flavor part ${JSON.stringify(part)} (keys: ${Object.keys(KEYS).join(', ')}; integer values)`),
        { code: 'INVALID_ARGUMENT' },
      );
    }
    (f as unknown as Record<string, number>)[key] = Number(v);
  }
  return f;
}
