// A second process creating overlays of one image with Qcow2Backend (the transpiled sources).
// argv: <backend-qcow2 entry> <image-backend entry> <config json>
// config: { instancesDir, imagePath, imageId, opensLog, count, delayMs, lockStaleMs }
// Prints `ready`, waits for a line on stdin, runs `count` concurrent creates, prints a JSON line
// with the results (and the disk refs), then exits.
import { appendFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';

const [backendEntry, contractEntry, configJson] = process.argv.slice(2);
const cfg = JSON.parse(configJson);
const { Qcow2Backend } = await import(backendEntry);
const { sourceImageFromBytes } = await import(contractEntry);

const bytes = new Uint8Array(await readFile(cfg.imagePath));
const img = sourceImageFromBytes(bytes, { id: cfg.imageId, chunkBytes: 128 * 1024 });
const source = {
  ...img,
  async open(o) {
    appendFileSync(cfg.opensLog, `${process.pid}\n`);
    const inner = await img.open(o);
    return (async function* () {
      for await (const chunk of inner) {
        if (cfg.delayMs) await new Promise((r) => setTimeout(r, cfg.delayMs));
        yield chunk;
      }
    })();
  },
};
const backend = new Qcow2Backend({ instancesDir: cfg.instancesDir, lockStaleMs: cfg.lockStaleMs });
process.stdout.write('ready\n');
await once(process.stdin, 'data');
const disks = Array.from({ length: cfg.count }, () => ({ instance: randomUUID(), name: 'disk' }));
const results = await Promise.allSettled(disks.map((d) => backend.createFromImage(d, source)));
process.stdout.write(
  JSON.stringify(
    results.map((r, i) =>
      r.status === 'fulfilled'
        ? { disk: disks[i], method: r.value.method }
        : { disk: disks[i], error: String(r.reason?.stack ?? r.reason) },
    ),
  ) + '\n',
);
process.stdin.destroy();
