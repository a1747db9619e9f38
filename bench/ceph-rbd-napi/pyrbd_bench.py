#!/usr/bin/python3
"""python3-rbd side of bench/ceph-rbd-napi/bench.mjs (the binding Nova uses).

  pyrbd_bench.py clone <conf> <keyring> <n> <parent_pool> <image> <snap> <dest_pool> <prefix>
      n sequential clones, prints {"ms": [per-clone latency]}
  pyrbd_bench.py write <conf> <keyring> <pool> <image> <total> <chunk> <window>
      aio_write of <total> bytes in <chunk> pieces with <window> in flight, then flush;
      prints {"ms": elapsed}
Reads the key from the keyring *file* (never passed on argv).
"""
import json
import os
import sys
import threading
import time

import rados
import rbd


def connect(conf, keyring):
    c = rados.Rados(conffile=conf, rados_id="admin", conf={"keyring": keyring})
    c.connect(timeout=20)
    return c


def clone(conf, keyring, n, parent_pool, image, snap, dest_pool, prefix):
    c = connect(conf, keyring)
    try:
        p = c.open_ioctx(parent_pool)
        d = c.open_ioctx(dest_pool)
        r = rbd.RBD()
        out = []
        for i in range(int(n)):
            t = time.perf_counter()
            r.clone(p, image, snap, d, "%s%d" % (prefix, i))
            out.append((time.perf_counter() - t) * 1000.0)
        p.close()
        d.close()
    finally:
        c.shutdown()
    print(json.dumps({"ms": out}))


def write(conf, keyring, pool, image, total, chunk, window):
    total, chunk, window = int(total), int(chunk), int(window)
    data = os.urandom(total)
    pieces = [data[o:o + chunk] for o in range(0, total, chunk)]
    c = connect(conf, keyring)
    try:
        io = c.open_ioctx(pool)
        img = rbd.Image(io, image)
        sem = threading.Semaphore(window)
        errors = []

        def done(comp):
            if comp.get_return_value() < 0:
                errors.append(comp.get_return_value())
            sem.release()

        t = time.perf_counter()
        for i, piece in enumerate(pieces):
            sem.acquire()
            img.aio_write(piece, i * chunk, done)
        for _ in range(window):
            sem.acquire()
        img.flush()
        ms = (time.perf_counter() - t) * 1000.0
        img.close()
        io.close()
    finally:
        c.shutdown()
    if errors:
        raise SystemExit("aio_write failed: %r" % errors[:3])
    print(json.dumps({"ms": ms}))


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"clone": clone, "write": write}[cmd](*args)
