import { it } from 'vitest';
import { RbdBackend } from '@ephemera/backend-rbd';
import { sourceImageFromBytes } from '@ephemera/image-backend';
import { loadStack, stackCommand } from '@ephemera/testkit';
import { randomBytes, randomUUID } from 'node:crypto';
const dir = '/tmp/eph-rel-Z9TI';
it('probe', async () => {
  const s = loadStack(dir);
  const u = s.ceph.users.ephemera;
  const b = await RbdBackend.create({ pool: 'vms', confPath: u.confPath, clientId: u.id, keyringPath: u.keyringPath, connectTimeoutMs: 4000, busyTimeoutMs: 2000 });
  const data = randomBytes(48 << 20);
  const img = sourceImageFromBytes(data, { diskFormat: 'raw' } as never);
  const uuid = randomUUID();
  let stopped = 0; let fired = false;
  const t0 = performance.now();
  const p = b.createFromImage({ instance: uuid, name: 'disk' }, img, { forceImport: true, onProgress: (e) => {
    if (!fired && e.bytesDone > 4 << 20) { fired = true; stackCommand(['stop', 'osd'], { dir }).then(() => { stopped = performance.now(); console.log('osd stopped', stopped - t0); }); }
  } });
  try { await p; console.log('succeeded?!'); } catch (e) { console.log('failed after stop', performance.now() - stopped, (e as Error).name, (e as {code?:string}).code, (e as Error).message); }
  await stackCommand(['start', 'osd'], { dir });
  const t1 = performance.now();
  try { console.log('remove', await b.remove({ instance: uuid, name: 'disk' }), performance.now() - t1); } catch (e) { console.log('remove failed', (e as Error).message, performance.now() - t1); }
  console.log('list', JSON.stringify(await b.list({ instance: uuid })));
  await b.close();
}, 600_000);
