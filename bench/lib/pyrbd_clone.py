#!/usr/bin/python3
"""python3-rbd side of case 1 of bench/main.mjs: one RBD clone as Nova's RBDDriver does it.

  pyrbd_clone.py <conf> <client id> <parent pool> <image> <snap> <dest pool> <dest name>

Prints {"connectMs", "cloneMs", "totalMs"}: connect + open both pools, RBD().clone() alone,
and everything including shutdown (Nova's RBDDriver connects per operation). Run with
/usr/bin/python3 (Debian's python3-rbd). The key comes from the keyring named in the conf,
never from argv.
"""
import json
import sys
import time

t0 = time.perf_counter()
import rados  # noqa: E402
import rbd  # noqa: E402

conf, client, ppool, image, snap, dpool, dest = sys.argv[1:8]
t_import = time.perf_counter()
c = rados.Rados(conffile=conf, rados_id=client)
c.connect(timeout=30)
try:
    src = c.open_ioctx(ppool)
    dst = c.open_ioctx(dpool)
    t1 = time.perf_counter()
    rbd.RBD().clone(src, image, snap, dst, dest)
    t2 = time.perf_counter()
    src.close()
    dst.close()
finally:
    c.shutdown()
t3 = time.perf_counter()
print(json.dumps({
    "importMs": (t_import - t0) * 1000.0,
    "connectMs": (t1 - t_import) * 1000.0,
    "cloneMs": (t2 - t1) * 1000.0,
    "totalMs": (t3 - t_import) * 1000.0,
}))
