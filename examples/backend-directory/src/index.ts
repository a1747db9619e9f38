/**
 * `@example/ephemera-backend-dir`: an example third-party Ephemera image backend that keeps
 * instance disks as sparse raw files in a directory. Written only against the public API of
 * `@ephemera/image-backend`; see docs/plugin-api.md ("A complete example").
 *
 * @packageDocumentation
 */

export { DirectoryBackend, type DirectoryBackendOptions } from './directory-backend.js';
