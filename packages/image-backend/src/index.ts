/**
 * `@ephemera/image-backend`: the contract every Ephemera image backend implements.
 *
 * @packageDocumentation
 */

/**
 * Version of the image-backend contract this package defines. A plugin declares the version it
 * was built for; the registry accepts a window of versions around this one.
 */
export const IMAGE_BACKEND_API_VERSION = 1;
