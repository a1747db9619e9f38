#!/usr/bin/env bash
# Runs as `unshare --mount --propagation private -- stack-libvirtd-ns.sh <root>`: inside this
# process's own mount namespace, bind-mounts <root>/{etc,run,lib,cache,log} over the paths the
# privileged libvirt QEMU driver has compiled in (/etc/libvirt, /run/libvirt, /var/lib/libvirt,
# /var/cache/libvirt, /var/log/libvirt), then execs libvirtd in the foreground (same pid).
# Two stacks therefore never share a driver lock, a domain status dir or a config dir, and the
# host's own paths are untouched. QEMU processes started by this libvirtd inherit the namespace.
set -euo pipefail
root=$1
shift
for pair in etc:/etc/libvirt run:/run/libvirt lib:/var/lib/libvirt cache:/var/cache/libvirt log:/var/log/libvirt; do
  src=$root/${pair%%:*}
  dst=${pair#*:}
  mkdir -p "$src" "$dst"
  mount --bind "$src" "$dst"
done
exec /usr/sbin/libvirtd -f "$root/etc/libvirtd.conf" --pid-file "$root/run/libvirtd.pid" "$@"
