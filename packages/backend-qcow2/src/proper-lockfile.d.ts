// Minimal typings of proper-lockfile 4.x (the parts this package uses), so the package needs no
// @types dependency. Internal: nothing of it appears in the public API.
declare module 'proper-lockfile' {
  interface LockOptions {
    stale?: number;
    update?: number;
    retries?: number;
    realpath?: boolean;
    lockfilePath?: string;
    onCompromised?: (err: Error) => void;
  }
  export function lock(file: string, options?: LockOptions): Promise<() => Promise<void>>;
  export function check(
    file: string,
    options?: Omit<LockOptions, 'update' | 'retries' | 'onCompromised'>,
  ): Promise<boolean>;
  const _default: { lock: typeof lock; check: typeof check };
  export default _default;
}
