#!/usr/bin/python3
"""python3-rbd side of case 9 of bench/main.mjs: a parent with many clone children.

  pyrbd_scale.py <conf> <client id> <parent pool> <image> <snap> <dest pool> <clone format>

Connects once with rbd_default_clone_format set to <clone format> (1 or 2: this python3-rbd has no
clone_format argument), opens both pools, prints {"ready": true}, then answers one JSON line per
JSON command read from stdin:
  {"op": "children", "names": [...]}  clones each name (8 threads: librbd drops the GIL), {"ms"}
  {"op": "remove", "names": [...]}    removes each name that exists, {"ms", "removed"}
  {"op": "clone", "name": N}          the bare RBD().clone() alone, timed, then removes it (untimed)
  {"op": "stats"}                     what grows with the children, each read timed (see below)
The key comes from the keyring named in the conf, never from argv.
"""
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import rados
import rbd

conf, client, ppool, image, snap, dpool, fmt = sys.argv[1:8]
c = rados.Rados(conffile=conf, rados_id=client)
c.conf_set("rbd_default_clone_format", fmt)
c.connect(timeout=30)


def omap(ioctx, oid, keys=None, prefix=""):
    """The omap of `oid` (all keys with `prefix`, or just `keys`) as {key: bytes}, and the read's ms."""
    t = time.perf_counter()
    out = {}
    try:
        with rados.ReadOpCtx() as op:
            if keys is not None:
                it, _ = ioctx.get_omap_vals_by_keys(op, tuple(keys))
            else:
                it, _ = ioctx.get_omap_vals(op, "", prefix, 100000)
            ioctx.operate_read_op(op, oid)
            out = {k: v for k, v in it}
    except rados.ObjectNotFound:
        pass
    return out, (time.perf_counter() - t) * 1000.0


def stats(src, dst):
    """Sizes of what librbd touches per clone, and how long one read of each takes.

    - v1: the child pool's `rbd_children` omap: one key per parent snapshot, its value the set of
      child ids (add_child reads and rewrites that set on every clone);
    - v2: the parent header's `snap_children_*` omap key of the snapshot (child_attach rewrites the
      set of child specs);
    - both: the child pool's `rbd_directory` omap (two keys per image, name_ and id_);
    - list_children2() of the parent snapshot (what anything listing the children pays).
    """
    with rbd.Image(src, image, read_only=True) as img:
        pid = img.id()
        img.set_snap(snap)
        t = time.perf_counter()
        kids = list(img.list_children2())
        list_ms = (time.perf_counter() - t) * 1000.0
    v1, v1_ms = omap(dst, "rbd_children")
    v2, v2_ms = omap(src, "rbd_header." + pid, prefix="snap_children_")
    directory, dir_ms = omap(dst, "rbd_directory")
    return {
        "children": len(kids),
        "listChildrenMs": list_ms,
        "v1ChildrenBytes": sum(len(v) for v in v1.values()),
        "v1ReadMs": v1_ms,
        "v2ChildrenBytes": sum(len(v) for v in v2.values()),
        "v2ReadMs": v2_ms,
        "directoryKeys": len(directory),
        "directoryReadMs": dir_ms,
    }


def run(cmd, src, dst, pool):
    op = cmd["op"]
    t0 = time.perf_counter()
    if op == "children":
        list(pool.map(lambda n: rbd.RBD().clone(src, image, snap, dst, n), cmd["names"]))
        return {"ms": (time.perf_counter() - t0) * 1000.0}
    if op == "remove":

        def rm(n):
            try:
                rbd.RBD().remove(dst, n)
                return 1
            except rbd.ImageNotFound:
                return 0

        removed = sum(pool.map(rm, cmd["names"]))
        return {"ms": (time.perf_counter() - t0) * 1000.0, "removed": removed}
    if op == "clone":
        rbd.RBD().clone(src, image, snap, dst, cmd["name"])
        ms = (time.perf_counter() - t0) * 1000.0
        rbd.RBD().remove(dst, cmd["name"])
        return {"cloneMs": ms}
    if op == "stats":
        return stats(src, dst)
    return {"error": "unknown op " + op}


try:
    src = c.open_ioctx(ppool)
    dst = c.open_ioctx(dpool)
    pool = ThreadPoolExecutor(max_workers=8)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            out = run(json.loads(line), src, dst, pool)
        except (rados.Error, rbd.Error) as e:
            # Reported, not fatal: the node side cleans up and says which command failed.
            out = {"error": "%s: %s" % (type(e).__name__, e)}
        print(json.dumps(out), flush=True)
    pool.shutdown()
    src.close()
    dst.close()
finally:
    c.shutdown()
