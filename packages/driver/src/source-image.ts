/** Turns a Glance image record into the contract's SourceImage (record + a byte stream from Glance). */
import type { GlanceClient, GlanceImage } from '@ephemera/glance';
import type { ImageLocation, SourceImage } from '@ephemera/image-backend';

/** A SourceImage over `glance`: locations from the record, bytes from `GET /v2/images/ID/file`. */
export function sourceImageFromGlance(glance: GlanceClient, image: GlanceImage): SourceImage {
  const locations: ImageLocation[] = (image.locations ?? []).map((l) => ({ url: l.url, metadata: l.metadata ?? {} }));
  if (image.direct_url && !locations.some((l) => l.url === image.direct_url))
    locations.push({ url: image.direct_url, metadata: {} });
  return {
    id: image.id,
    ...(image.name ? { name: image.name } : {}),
    size: image.size ?? 0,
    virtualSize: image.virtual_size ?? (image.disk_format === 'raw' ? image.size : null),
    diskFormat: image.disk_format ?? 'raw',
    containerFormat: image.container_format ?? 'bare',
    checksum: image.checksum,
    osHashAlgo: image.os_hash_algo,
    osHashValue: image.os_hash_value,
    locations,
    async open(opts = {}) {
      // Backends verify the bytes against os_hash_value/checksum themselves (readImage).
      const dl = await glance.download(image.id, {
        image,
        verify: false,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
      dl.result.catch(() => undefined);
      return dl.stream;
    },
  };
}
