/** Exit codes of `ephemera` (stable: scripts may rely on them). */
export const EXIT = {
  /** Success. */
  OK: 0,
  /** An unexpected failure (see the message). */
  FAILURE: 1,
  /** Bad usage: unknown command or option, missing argument, malformed value. */
  USAGE: 2,
  /** The configuration is invalid or a service (libvirt, Ceph, Glance) is unreachable or does not answer with it. */
  CONFIG: 3,
  /** The instance or image does not exist. */
  NOT_FOUND: 4,
  /** The instance already exists. */
  CONFLICT: 5,
  /** The image cannot be used (not active, no usable location, too large for the flavor). */
  IMAGE_UNUSABLE: 6,
  /** A wait timed out. */
  TIMEOUT: 7,
  /** An operation failed and could not be fully rolled back (run `ephemera reconcile`). */
  PARTIAL: 8,
  /** The backend cannot do that (e.g. resize on a backend without the capability). */
  UNSUPPORTED: 9,
  /** Interrupted by SIGINT (Ctrl-C): the operation was aborted and rolled back (128 + 2). */
  INTERRUPTED: 130,
  /** Terminated by SIGTERM: the operation was aborted and rolled back (128 + 15). */
  TERMINATED: 143,
} as const;

/** One of {@link EXIT}'s values. */
export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The short meaning of each exit code, as `--help` and the README list them. */
export const EXIT_MEANINGS: Readonly<Record<ExitCode, string>> = {
  0: 'ok',
  1: 'failure',
  2: 'usage',
  3: 'configuration or unreachable service',
  4: 'not found',
  5: 'already exists',
  6: 'image unusable',
  7: 'timeout',
  8: 'partial failure (run reconcile)',
  9: 'unsupported',
  130: 'interrupted by SIGINT',
  143: 'terminated by SIGTERM (the operation was rolled back; a second signal exits at once)',
};

/**
 * The single table from error `code` to exit code: every code of every package (the unit test
 * walks `DRIVER_ERROR_CODES`, `GLANCE_ERROR_CODES`, `IMAGE_BACKEND_ERROR_CODES`,
 * `LIBVIRT_XML_ERROR_CODES` and `QEMU_IMG_ERROR_CODES`), the CLI's own and commander's. A code not listed exits 1: the
 * bindings' errno names and libvirt's numbers are wrapped by the backends and the driver first.
 */
export const EXIT_CODE_BY_ERROR: Readonly<Record<string, ExitCode>> = {
  // commander and the CLI itself
  'commander.unknownOption': EXIT.USAGE,
  'commander.unknownCommand': EXIT.USAGE,
  'commander.missingArgument': EXIT.USAGE,
  'commander.missingMandatoryOptionValue': EXIT.USAGE,
  'commander.optionMissingArgument': EXIT.USAGE,
  'commander.invalidArgument': EXIT.USAGE,
  'commander.excessArguments': EXIT.USAGE,
  'commander.conflictingOption': EXIT.USAGE,
  FAILURE: EXIT.FAILURE,
  // @ephemera/driver
  INVALID_CONFIG: EXIT.CONFIG,
  INVALID_ARGUMENT: EXIT.USAGE,
  INSTANCE_NOT_FOUND: EXIT.NOT_FOUND,
  INSTANCE_EXISTS: EXIT.CONFLICT,
  INSTANCE_STATE: EXIT.FAILURE,
  IMAGE_NOT_FOUND: EXIT.NOT_FOUND,
  IMAGE_UNUSABLE: EXIT.IMAGE_UNUSABLE,
  SPAWN_FAILED: EXIT.FAILURE,
  MIGRATION_FAILED: EXIT.FAILURE,
  HOST_ALIVE: EXIT.CONFLICT,
  ENCRYPTION_KEY: EXIT.FAILURE,
  TIMEOUT: EXIT.TIMEOUT,
  UNSUPPORTED: EXIT.UNSUPPORTED,
  JOURNAL: EXIT.FAILURE,
  ROLLBACK_FAILED: EXIT.PARTIAL,
  // @ephemera/image-backend (INVALID_ARGUMENT above)
  NOT_FOUND: EXIT.NOT_FOUND,
  ALREADY_EXISTS: EXIT.CONFLICT,
  BUSY: EXIT.FAILURE,
  INSUFFICIENT_CAPACITY: EXIT.FAILURE,
  UNSAFE_IMAGE: EXIT.IMAGE_UNUSABLE,
  IMAGE_SOURCE: EXIT.FAILURE,
  UNSUPPORTED_OPERATION: EXIT.UNSUPPORTED,
  BACKEND_UNAVAILABLE: EXIT.CONFIG,
  ABORTED: EXIT.FAILURE,
  INCOMPATIBLE_PLUGIN: EXIT.CONFIG,
  UNKNOWN_BACKEND: EXIT.CONFIG,
  DUPLICATE_BACKEND: EXIT.CONFIG,
  // @ephemera/glance: a request Glance does not answer in time is an unresponsive service (3),
  // not one of our own waits (7, e.g. an import that does not finish).
  GLANCE_HTTP: EXIT.FAILURE,
  GLANCE_BAD_ANSWER: EXIT.FAILURE,
  GLANCE_NOT_FOUND: EXIT.NOT_FOUND,
  GLANCE_CONFLICT: EXIT.CONFLICT,
  GLANCE_AUTH: EXIT.CONFIG,
  GLANCE_CONNECTION: EXIT.CONFIG,
  GLANCE_TIMEOUT: EXIT.CONFIG,
  GLANCE_ABORTED: EXIT.FAILURE,
  GLANCE_BAD_IMAGE_ID: EXIT.USAGE,
  GLANCE_CHECKSUM_MISMATCH: EXIT.IMAGE_UNUSABLE,
  GLANCE_SIZE_MISMATCH: EXIT.IMAGE_UNUSABLE,
  GLANCE_IMPORT_FAILED: EXIT.FAILURE,
  GLANCE_IMPORT_TIMEOUT: EXIT.TIMEOUT,
  GLANCE_IMAGE_STATE: EXIT.IMAGE_UNUSABLE,
  GLANCE_BAD_LOCATION: EXIT.IMAGE_UNUSABLE,
  GLANCE_NO_PLAN: EXIT.IMAGE_UNUSABLE,
  // @ephemera/libvirt-xml: the driver validates instance definitions up front as INVALID_ARGUMENT
  INVALID_VALUE: EXIT.USAGE,
  INVALID_COMBINATION: EXIT.USAGE,
  MISSING_VALUE: EXIT.USAGE,
  // @ephemera/qemu-img-wrapper: the backends wrap these first. A qemu-img time limit guards against a
  // runaway child (it is no wait of ours), so it stays a failure (1) as it was before it had a code.
  QEMU_IMG_BAD_IMAGE: EXIT.IMAGE_UNUSABLE,
  QEMU_IMG_UNSAFE_IMAGE: EXIT.IMAGE_UNUSABLE,
  QEMU_IMG_EXIT: EXIT.FAILURE,
  QEMU_IMG_TIMEOUT: EXIT.FAILURE,
  QEMU_IMG_ABORTED: EXIT.FAILURE,
  QEMU_IMG_SPAWN: EXIT.FAILURE,
  QEMU_IMG_PARSE: EXIT.FAILURE,
  QEMU_IMG_SIGNAL: EXIT.FAILURE,
  QEMU_IMG_INVALID_ARGUMENT: EXIT.USAGE,
};

function lookup(err: unknown): ExitCode {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' && Object.hasOwn(EXIT_CODE_BY_ERROR, code) ? EXIT_CODE_BY_ERROR[code]! : EXIT.FAILURE;
}

/**
 * The exit code for an error (by its `code`). A generic failure (e.g. `SPAWN_FAILED`) whose cause is
 * an unreachable service or a timeout takes that cause's code: "Glance is down" stays 3 through the
 * driver's wrapping. Other causes are not followed (a disk not found inside a spawn is not "not found").
 */
export function exitCodeFor(err: unknown): number {
  const own = lookup(err);
  if (own !== EXIT.FAILURE) return own;
  let cause = (err as { cause?: unknown } | null | undefined)?.cause;
  for (let depth = 0; depth < 5 && cause !== undefined && cause !== null; depth++) {
    const c = lookup(cause);
    if (c === EXIT.CONFIG || c === EXIT.TIMEOUT) return c;
    cause = (cause as { cause?: unknown }).cause;
  }
  return own;
}
