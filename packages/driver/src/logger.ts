/** Structured logging (pino). Every line of an instance operation carries `instance`. */
import { pino, type Logger } from 'pino';

export type { Logger } from 'pino';

/** A pino logger writing JSON lines to stderr (or `destination`, a file descriptor or path). */
export function createLogger(level: string, destination: number | string = 2): Logger {
  return pino(
    {
      name: 'ephemera-driver',
      level,
      redact: { paths: ['password', 'token', 'key', '*.password', '*.token', '*.key'], censor: '***' },
    },
    pino.destination({ dest: destination, sync: true }),
  );
}
