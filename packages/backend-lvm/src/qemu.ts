import { UnsafeImageError } from '@ephemera/image-backend';
import { ImageInspector, QemuImg, isQemuImgError, checkImageFile, safetyCheck } from '@ephemera/qemu-img-wrapper';

/** Facts of a vetted image file. */
export interface InspectedFile {
  virtualSize: number;
  format: string;
}

const qemuImg = new QemuImg();

/** Turns the inspector's refusals into the contract's `UnsafeImageError`. */
function asContractError(e: unknown): unknown {
  if (isQemuImgError(e, 'QEMU_IMG_UNSAFE_IMAGE')) return new UnsafeImageError(e.reason, e.message, { cause: e });
  if (isQemuImgError(e, 'QEMU_IMG_BAD_IMAGE'))
    return new UnsafeImageError(`invalid-image-${e.reason}`, e.message, { cause: e });
  return e;
}

/**
 * Vets an image file with the qemu-img-wrapper's format inspector (pure TypeScript, before
 * qemu-img sees it): the detected format must be the declared one, and backing files, external
 * data files and encryption are refused.
 */
export async function inspectImageFile(
  path: string,
  format: 'raw' | 'qcow2',
  signal?: AbortSignal,
): Promise<InspectedFile> {
  signal?.throwIfAborted();
  try {
    const img = await checkImageFile(path, { declaredFormat: format, allowEncrypted: false });
    if (img.virtualSize === undefined || !Number.isSafeInteger(img.virtualSize) || img.virtualSize <= 0)
      throw new UnsafeImageError('virtual-size', `image reports no valid virtual size (${String(img.virtualSize)})`);
    return { virtualSize: img.virtualSize, format: img.format };
  } catch (e) {
    throw asContractError(e);
  }
}

/**
 * `qemu-img convert -n -O raw` of `source` onto an existing block device, with progress
 * (percent) and abort, through the qemu-img-wrapper. `trusted` skips the inspector (for copies of
 * our own disks).
 */
export async function convertImageToDevice(
  source: string,
  format: 'raw' | 'qcow2',
  device: string,
  options: {
    signal?: AbortSignal | undefined;
    onProgress?: (percent: number) => void;
    timeoutMs?: number;
    trusted?: boolean;
  } = {},
): Promise<void> {
  try {
    await qemuImg.convert(source, device, {
      sourceFormat: format,
      targetFormat: 'raw',
      noCreate: true,
      untrusted: !options.trusted,
      safety: { declaredFormat: format, allowEncrypted: false },
      timeoutMs: options.timeoutMs ?? 3_600_000,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
    });
  } catch (e) {
    if (isQemuImgError(e, 'QEMU_IMG_ABORTED') && options.signal?.aborted) throw options.signal.reason ?? e;
    throw asContractError(e);
  }
}

/**
 * Watches a raw image stream with the wrapper's incremental inspector (bounded memory) and, at
 * the end, refuses data whose headers say it is not raw (e.g. a qcow2 declared `raw`).
 */
export class RawStreamCheck {
  private readonly inspector = new ImageInspector();

  /** Passes the chunks through unchanged, feeding the inspector. */
  async *tap(source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
    for await (const chunk of source) {
      this.inspector.push(chunk);
      yield chunk;
    }
  }

  /** Throws the contract's `UnsafeImageError` unless the data is raw. */
  assertRaw(): void {
    try {
      safetyCheck(this.inspector.end(), { declaredFormat: 'raw', allowEncrypted: false });
    } catch (e) {
      throw asContractError(e);
    }
  }
}
