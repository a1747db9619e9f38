#!/usr/bin/env node
// The Ephemera demo (run by `npm run demo` through tools/demo, after the dev stack is up):
//  1. build the test guest image (tools/guest-image), 2. upload it to Glance (rbd store),
//  3. read its `rbd://fsid/images/<id>/snap` location, 4. clone that snapshot copy-on-write into the
//  `vms` pool as client.ephemera (rbd CLI), once per clone; every clone after the first gets its
//  own marker written into its sector 1, 5. define and boot one libvirt domain per clone from the
//  network rbd disk with cephx, 6. read each guest's marker from its serial console, wait for its
//  clean power-off, 7. print the timings (clone vs upload) and clean up (unless --keep).
// Plain Node (no npm deps). Spawns with argv arrays; cephx keys only ever travel as keyring paths.
//   node tools/demo.mjs [--keep] [--size 256M] [--fill random|zero] [--clones N] [--timeout-ms N]
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const MARKER_PREFIX = 'EPHEMERA-MARKER ';

// ---------------------------------------------------------------- helpers

function parseArgs(argv) {
  const opts = { keep: false, size: '256M', fill: 'random', clones: 2, timeoutMs: 120_000 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    if (a === '--keep') opts.keep = true;
    else if (a === '--size') opts.size = next();
    else if (a === '--fill') opts.fill = next();
    else if (a === '--clones') opts.clones = Number(next());
    else if (a === '--timeout-ms') opts.timeoutMs = Number(next());
    else if (a === '-h' || a === '--help') {
      console.log('usage: tools/demo [--keep] [--size 256M] [--fill random|zero] [--clones N] [--timeout-ms N]');
      process.exit(0);
    } else throw new Error(`unknown argument ${JSON.stringify(a)}`);
  }
  if (!Number.isInteger(opts.clones) || opts.clones < 1 || opts.clones > 8) throw new Error('--clones must be 1..8');
  return opts;
}

/** execFile as a promise: argv array, timeout, stderr in the error. */
function run(cmd, args, { timeout = 120_000, input, label } = {}) {
  return new Promise((res, rej) => {
    const child = execFile(cmd, args, { timeout, maxBuffer: 16 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) {
        const why = err.killed ? `timed out after ${timeout} ms` : `exit ${err.code ?? err.signal}`;
        rej(new Error(`${label ?? `${cmd} ${args.slice(0, 4).join(' ')}`} failed (${why}): ${String(stderr).trim() || err.message}`));
      } else res(String(stdout));
    });
    if (input !== undefined) child.stdin.end(input);
  });
}

const t0 = performance.now();
const secs = (ms) => `${(ms / 1000).toFixed(3)} s`;
function log(msg) {
  console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(6)}s] ${msg}`);
}
async function timed(fn) {
  const start = performance.now();
  const value = await fn();
  return [value, performance.now() - start];
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const xmlEscape = (s) => String(s).replace(/[<>&'"]/g, (c) => `&#${c.charCodeAt(0)};`);

function loadStack() {
  const dir = process.env.EPHEMERA_STACK_DIR ? resolve(process.env.EPHEMERA_STACK_DIR) : join(repo, '.stack');
  const file = join(dir, 'stack.json');
  if (!existsSync(file)) throw new Error(`${file} not found: run \`bash tools/stack up\` first`);
  return JSON.parse(readFileSync(file, 'utf8'));
}

// ---------------------------------------------------------------- Glance (HTTP, keystone-less)

async function glance(stack, method, path, { body, headers = {}, ok = [200, 201, 204] } = {}) {
  const init = { method, headers: { ...headers } };
  if (body !== undefined) {
    if (body instanceof Readable) {
      init.body = Readable.toWeb(body);
      init.duplex = 'half';
    } else {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] ??= 'application/json';
    }
  }
  const res = await fetch(`${stack.glance.url}${path}`, init);
  const text = await res.text();
  if (!ok.includes(res.status)) throw new Error(`Glance ${method} ${path}: HTTP ${res.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : undefined;
}

/** `rbd://fsid/pool/image/snap` (parts URL-quoted) -> parts. */
function parseRbdUrl(url) {
  const m = /^rbd:\/\/([^/]+)\/([^/]+)\/([^/]+)\/([^/]+)$/.exec(url);
  if (!m) return undefined;
  const [fsid, pool, image, snap] = m.slice(1).map(decodeURIComponent);
  return { fsid, pool, image, snap };
}

// ---------------------------------------------------------------- RBD (CLI as client.ephemera)

function rbdArgs(stack, ...args) {
  const u = stack.ceph.users.ephemera;
  return ['--conf', u.confPath, '--id', u.id, '--keyring', u.keyringPath, ...args];
}

/** Overwrites one 512-byte sector of an RBD image through librbd (python3-rbd); no key in argv. */
async function writeSector(stack, pool, image, offset, data) {
  const u = stack.ceph.users.ephemera;
  const script = [
    'import sys, rados, rbd',
    'conf, user, pool, name, off = sys.argv[1:6]',
    'data = sys.stdin.buffer.read()',
    'with rados.Rados(conffile=conf, name="client." + user) as c:',
    '    with c.open_ioctx(pool) as io:',
    '        with rbd.Image(io, name) as img:',
    '            img.write(data, int(off))',
    '            img.flush()',
  ].join('\n');
  // Debian's python3-rbd lives in /usr/bin/python3's dist-packages (a pyenv python3 on PATH lacks it)
  await run('/usr/bin/python3', ['-c', script, u.confPath, u.id, pool, image, String(offset)], {
    input: data, timeout: 60_000, label: `librbd write of ${pool}/${image} at ${offset}`,
  });
}

// ---------------------------------------------------------------- libvirt (virsh)

const virsh = (stack, ...args) => run('virsh', ['-q', '-c', stack.libvirt.uri, ...args], { timeout: 60_000 });

function domainXml(stack, { name, pool, image, serialLog }) {
  const hosts = stack.ceph.monitors
    .map((m) => `<host name='${xmlEscape(m.host)}' port='${Number(m.port)}'/>`)
    .join('');
  // <acpi/> matters: without it libvirt passes -no-acpi, SeaBIOS finds no FADT and APM power-off hangs.
  return `<domain type='${xmlEscape(stack.libvirt.domainType)}'>
  <name>${xmlEscape(name)}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw' cache='writeback'/>
      <auth username='${xmlEscape(stack.ceph.users.ephemera.id)}'><secret type='ceph' uuid='${xmlEscape(stack.libvirt.cephSecretUuid)}'/></auth>
      <source protocol='rbd' name='${xmlEscape(`${pool}/${image}`)}'>${hosts}</source>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='${xmlEscape(serialLog)}'/><target port='0'/></serial>
    <memballoon model='none'/>
  </devices>
</domain>
`;
}

async function domState(stack, name) {
  return (await virsh(stack, 'domstate', '--reason', name)).trim();
}

async function readSerial(path) {
  try {
    return await readFile(path, 'latin1');
  } catch {
    return '';
  }
}

function readMarker(text) {
  const end = text.lastIndexOf('\n');
  for (const line of text.slice(0, Math.max(end, 0)).split('\n')) {
    const at = line.indexOf(MARKER_PREFIX);
    if (at >= 0) return line.slice(at + MARKER_PREFIX.length).replace(/\r$/, '');
  }
  return undefined;
}

/** Starts the defined domain; resolves when the guest printed its marker and libvirt reports it shut off. */
async function bootAndWatch(stack, vm, timeoutMs) {
  const start = performance.now();
  await virsh(stack, 'start', vm.name);
  const deadline = start + timeoutMs;
  let marker;
  let markerMs;
  for (;;) {
    if (marker === undefined) {
      marker = readMarker(await readSerial(vm.serialLog));
      if (marker !== undefined) markerMs = performance.now() - start;
    }
    const state = await domState(stack, vm.name);
    if (state.startsWith('shut off')) {
      const text = await readSerial(vm.serialLog);
      marker ??= readMarker(text);
      return { marker, markerMs, offMs: performance.now() - start, state, boots: /EPHEMERA-BOOTS (\d+)/.exec(text)?.[1] };
    }
    if (performance.now() > deadline) {
      const tail = (await readSerial(vm.serialLog)).slice(-300);
      throw new Error(`${vm.name} did not power off within ${timeoutMs} ms (state ${state}); serial tail ${JSON.stringify(tail)}`);
    }
    await sleep(100);
  }
}

// ---------------------------------------------------------------- main

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const stack = loadStack();
  const tag = `${new Date().toISOString().replace(/[-:T]/g, '').slice(0, 14)}-${randomBytes(3).toString('hex')}`;
  const work = await mkdtemp(join(tmpdir(), 'ephemera-demo-'));
  const cleanup = []; // LIFO
  let interrupted = false;
  const onSignal = (sig) => {
    interrupted = true;
    log(`${sig}: cleaning up`);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const check = () => {
    if (interrupted) throw new Error('interrupted');
  };

  log(`stack ${stack.dir}: ceph ${stack.ceph.fsid} (${stack.ceph.objectStore}), glance ${stack.glance.url}, ` +
    `libvirt ${stack.libvirt.uri} (${stack.libvirt.domainType})`);
  try {
    // 1. guest image
    const marker = 'EPHEMERA-GUEST demo';
    const [imagePath, buildMs] = await timed(async () =>
      (await run('bash', [join(repo, 'tools/guest-image'), '--marker', marker, '--size', opts.size, '--fill', opts.fill],
        { timeout: 900_000 })).trim());
    const size = statSync(imagePath).size;
    log(`guest image ${imagePath} (${(size / 2 ** 20).toFixed(0)} MiB, fill ${opts.fill}) ready in ${secs(buildMs)}`);
    check();

    // 2. Glance upload
    const created = await glance(stack, 'POST', '/v2/images', {
      body: { name: `ephemera-demo-${tag}`, disk_format: 'raw', container_format: 'bare' },
    });
    const imageId = created.id;
    cleanup.push(['delete Glance image ' + imageId, () => glance(stack, 'DELETE', `/v2/images/${imageId}`, { ok: [204, 404] })]);
    const [, uploadMs] = await timed(() => glance(stack, 'PUT', `/v2/images/${imageId}/file`, {
      body: createReadStream(imagePath, { highWaterMark: 4 * 1024 * 1024 }),
      headers: { 'Content-Type': 'application/octet-stream', 'Content-Length': String(size) },
    }));
    const image = await glance(stack, 'GET', `/v2/images/${imageId}`);
    if (image.status !== 'active') throw new Error(`Glance image ${imageId} is ${image.status}, not active`);
    log(`uploaded to Glance as ${imageId} in ${secs(uploadMs)} (${(size / 2 ** 20 / (uploadMs / 1000)).toFixed(0)} MiB/s)`);
    check();

    // 3. location
    const urls = [...(image.locations ?? []).map((l) => l.url), image.direct_url].filter(Boolean);
    const loc = urls.map(parseRbdUrl).find((p) => p && p.fsid === stack.ceph.fsid);
    if (!loc) throw new Error(`no rbd:// location in this cluster (${stack.ceph.fsid}) among ${JSON.stringify(urls)}`);
    log(`location rbd://${loc.fsid}/${loc.pool}/${loc.image}/${loc.snap}`);

    // 4. clones
    const vmsPool = stack.ceph.pools.vms;
    const vms = [];
    for (let i = 1; i <= opts.clones; i++) {
      check();
      const name = `ephemera-demo-${tag}-${i}`;
      const [, cloneMs] = await timed(() =>
        run('rbd', rbdArgs(stack, 'clone', `${loc.pool}/${loc.image}@${loc.snap}`, `${vmsPool}/${name}`)));
      cleanup.push([`remove clone ${vmsPool}/${name}`, () => run('rbd', rbdArgs(stack, 'rm', '--no-progress', `${vmsPool}/${name}`))]);
      const vm = { name, cloneMs, expected: marker, serialLog: join(work, `${name}.serial.log`) };
      if (i > 1) {
        vm.expected = `EPHEMERA-GUEST demo clone ${i}`;
        const sector = Buffer.alloc(512);
        sector.write(vm.expected, 0, 'latin1');
        await writeSector(stack, vmsPool, name, 512, sector);
      }
      log(`cloned ${loc.pool}/${loc.image}@${loc.snap} -> ${vmsPool}/${name} in ${secs(cloneMs)}` +
        (i > 1 ? ` (then wrote its own marker "${vm.expected}" into sector 1)` : ''));
      vms.push(vm);
    }

    // 5. define + boot (all clones at once)
    for (const vm of vms) {
      const xmlPath = join(work, `${vm.name}.xml`);
      await writeFile(xmlPath, domainXml(stack, { name: vm.name, pool: vmsPool, image: vm.name, serialLog: vm.serialLog }));
      await virsh(stack, 'define', xmlPath);
      cleanup.push([`undefine domain ${vm.name}`, async () => {
        const state = await domState(stack, vm.name).catch(() => 'gone');
        if (state === 'gone') return;
        if (!state.startsWith('shut off')) await virsh(stack, 'destroy', vm.name);
        await virsh(stack, 'undefine', vm.name);
      }]);
    }
    check();
    log(`booting ${vms.length} domain(s) (${stack.libvirt.domainType}) from their clones`);
    const results = await Promise.all(vms.map((vm) => bootAndWatch(stack, vm, opts.timeoutMs)));

    // 6. report
    let ok = true;
    for (const [i, vm] of vms.entries()) {
      const r = results[i];
      const good = r.marker === vm.expected && r.state === 'shut off (shutdown)' && r.boots === '1';
      ok &&= good;
      log(`${vm.name}: ${MARKER_PREFIX}${r.marker ?? '(none)'} after ${r.markerMs === undefined ? '?' : secs(r.markerMs)}, ` +
        `boot count ${r.boots ?? '?'}, ${r.state} after ${secs(r.offMs)} ${good ? 'OK' : `FAILED (expected marker "${vm.expected}", boot count 1, shut off (shutdown))`}`);
    }
    const parentMarker = await run('rbd', rbdArgs(stack, 'info', '--format', 'json', `${vmsPool}/${vms[0].name}`));
    const parent = JSON.parse(parentMarker).parent;
    const cloneAvg = vms.reduce((s, v) => s + v.cloneMs, 0) / vms.length;
    console.log('\n== summary ==');
    console.log(`image        ${(size / 2 ** 20).toFixed(0)} MiB raw (${opts.fill} fill), Glance id ${imageId}`);
    console.log(`upload       ${secs(uploadMs)}  (Glance PUT into the rbd store)`);
    console.log(`clone        ${secs(cloneAvg)} per clone (rbd clone as client.ephemera; parent ${parent ? `${parent.pool}/${parent.image}@${parent.snapshot}` : '?'})`);
    console.log(`clone/upload ${(cloneAvg / uploadMs * 100).toFixed(1)} % (${(uploadMs / cloneAvg).toFixed(1)}x faster)`);
    for (const [i, vm] of vms.entries()) {
      console.log(`boot ${vm.name}: marker "${results[i].marker}" in ${secs(results[i].markerMs ?? NaN)}, off in ${secs(results[i].offMs)}`);
    }
    if (!ok) throw new Error('a guest did not print its own marker and power off cleanly');
    console.log(`demo: OK${opts.keep ? ' (kept: domains, clones and the Glance image stay; see above)' : ''}`);
  } finally {
    if (!opts.keep || interrupted) {
      let failed = 0;
      for (const [what, fn] of cleanup.reverse()) {
        try {
          await fn();
          log(`cleanup: ${what}`);
        } catch (err) {
          failed++;
          log(`cleanup FAILED: ${what}: ${err.message}`);
        }
      }
      await rm(work, { recursive: true, force: true });
      if (failed) process.exitCode = 1;
    } else {
      for (const [what] of [...cleanup].reverse()) log(`kept (to undo: ${what})`);
      log(`kept: serial logs and domain XML in ${work}`);
    }
  }
}

main().catch((err) => {
  console.error(`demo: FAILED: ${err.message}`);
  process.exit(1);
});
