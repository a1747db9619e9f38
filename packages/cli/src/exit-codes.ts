/** Exit codes of `ephemera` (stable: scripts may rely on them). */
export const EXIT = {
  /** Success. */
  OK: 0,
  /** An unexpected failure (see the message). */
  FAILURE: 1,
  /** Bad usage: unknown command or option, missing argument, malformed value. */
  USAGE: 2,
  /** The configuration is invalid or a service (libvirt, Ceph, Glance) is unreachable with it. */
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

/** The exit code for an error (by its `code`). */
export function exitCodeFor(err: unknown): number {
  const code = (err as { code?: unknown })?.code;
  switch (code) {
    case 'INVALID_ARGUMENT':
    case 'commander.unknownOption':
    case 'commander.unknownCommand':
    case 'commander.missingArgument':
    case 'commander.missingMandatoryOptionValue':
    case 'commander.optionMissingArgument':
    case 'commander.invalidArgument':
    case 'commander.excessArguments':
      return EXIT.USAGE;
    case 'INVALID_CONFIG':
      return EXIT.CONFIG;
    case 'INSTANCE_NOT_FOUND':
    case 'IMAGE_NOT_FOUND':
    case 'NOT_FOUND':
      return EXIT.NOT_FOUND;
    case 'INSTANCE_EXISTS':
    case 'ALREADY_EXISTS':
      return EXIT.CONFLICT;
    case 'IMAGE_UNUSABLE':
      return EXIT.IMAGE_UNUSABLE;
    case 'TIMEOUT':
      return EXIT.TIMEOUT;
    case 'ROLLBACK_FAILED':
      return EXIT.PARTIAL;
    case 'UNSUPPORTED':
    case 'UNSUPPORTED_OPERATION':
      return EXIT.UNSUPPORTED;
    default:
      return EXIT.FAILURE;
  }
}
