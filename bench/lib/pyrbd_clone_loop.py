#!/usr/bin/python3
"""python3-rbd side of case 1c of bench/main.mjs: bare RBD().clone() calls on one open connection.

  pyrbd_clone_loop.py <conf> <client id> <parent pool> <image> <snap> <dest pool>

Connects and opens both pools once, prints {"ready": true}, then for each line read from stdin (a
destination name) clones <parent pool>/<image>@<snap> into <dest pool>/<name>, prints
{"cloneMs": ...} (the clone call alone), and removes the clone (untimed). Ends at end of input.
The key comes from the keyring named in the conf, never from argv.
"""
import json
import sys
import time

import rados
import rbd

conf, client, ppool, image, snap, dpool = sys.argv[1:7]
c = rados.Rados(conffile=conf, rados_id=client)
c.connect(timeout=30)
try:
    src = c.open_ioctx(ppool)
    dst = c.open_ioctx(dpool)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        name = line.strip()
        if not name:
            continue
        t1 = time.perf_counter()
        rbd.RBD().clone(src, image, snap, dst, name)
        t2 = time.perf_counter()
        rbd.RBD().remove(dst, name)
        print(json.dumps({"cloneMs": (t2 - t1) * 1000.0}), flush=True)
    src.close()
    dst.close()
finally:
    c.shutdown()
