/**
 * The built-in backend names, listed once: the config schema, the plugin table and the resolver
 * target derive from these (a leaf module, so `config.ts` can import it without a cycle).
 */

/** Backends that can hold an instance's disks (`images.type`). */
export const BOOTABLE_BACKENDS = ['rbd', 'qcow2', 'lvm'] as const;
/** A name in {@link BOOTABLE_BACKENDS}. */
export type BootableBackendName = (typeof BOOTABLE_BACKENDS)[number];

/** Every built-in backend plugin: the bootable ones and the in-memory reference backend. */
export const BACKEND_NAMES = [...BOOTABLE_BACKENDS, 'memory'] as const;
/** A name in {@link BACKEND_NAMES}. */
export type BackendName = (typeof BACKEND_NAMES)[number];

/** True for the name of a bootable backend. */
export function isBootableBackend(name: string): name is BootableBackendName {
  return (BOOTABLE_BACKENDS as readonly string[]).includes(name);
}
