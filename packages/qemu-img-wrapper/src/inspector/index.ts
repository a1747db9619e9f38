import { ImageFormatError, ImageSafetyError, type SafetyIssue } from '../errors.js';
import { detectFormat } from './formats/index.js';
import { BufferReader, StreamDriver, driveFile, NeedData } from './source.js';
import type { ImageFormat, InspectedImage } from './types.js';

/** What a caller allows, and what it declared, when checking an image. */
export interface SafetyOptions {
  /**
   * The format the caller claims the image has (Glance's `disk_format`: `raw`, `qcow2`, `vmdk`,
   * `vhd`/`vpc`, `vhdx`, `vdi`, `iso`, `qed`, `luks`, `ami`/`ari`/`aki` = raw). Any difference
   * from the detected format is rejected with `format-mismatch`.
   */
  declaredFormat?: string;
  /** Accept images naming a backing file (never for untrusted uploads). Default false. */
  allowBackingFile?: boolean;
  /** Accept qcow2 images with an external data file. Default false. */
  allowDataFile?: boolean;
  /** Accept encrypted images (LUKS, encrypted qcow2). Default true. */
  allowEncrypted?: boolean;
  /** Reject images whose virtual size exceeds this many bytes. */
  maxVirtualSize?: number;
}

/** Detected formats each declared format accepts. `raw` accepts formats qemu reads as raw bytes. */
const DECLARED: Record<string, (img: InspectedImage) => boolean> = {
  raw: (i) =>
    i.format === 'raw' || i.format === 'iso' || (i.details.format === 'vhd' && i.details.subformat === 'fixed'),
  iso: (i) => i.format === 'iso',
  qcow2: (i) => i.format === 'qcow2',
  vmdk: (i) => i.format === 'vmdk',
  vhd: (i) => i.format === 'vhd',
  vpc: (i) => i.format === 'vhd',
  vhdx: (i) => i.format === 'vhdx',
  vdi: (i) => i.format === 'vdi',
  qed: (i) => i.format === 'qed',
  luks: (i) => i.format === 'luks',
};
DECLARED['ami'] = DECLARED['raw']!;
DECLARED['ari'] = DECLARED['raw']!;
DECLARED['aki'] = DECLARED['raw']!;

/** Declared formats {@link safetyCheck} understands. */
export const DECLARABLE_FORMATS: readonly string[] = Object.keys(DECLARED);

/**
 * Judges an inspected image. Throws {@link ImageSafetyError} listing every problem (the first
 * one is its `reason`), or {@link ImageFormatError} (`unknown-format`) for a declared format this
 * inspector does not know. Returns the image when it is safe.
 */
export function safetyCheck(img: InspectedImage, options: SafetyOptions = {}): InspectedImage {
  const issues: SafetyIssue[] = [];
  if (options.declaredFormat !== undefined) {
    const accepts = DECLARED[options.declaredFormat.toLowerCase()];
    if (!accepts) {
      throw new ImageFormatError(
        'unknown-format',
        `declared format ${JSON.stringify(options.declaredFormat)} is not one the inspector can verify`,
      );
    }
    if (!accepts(img)) {
      issues.push({
        reason: 'format-mismatch',
        message: `declared ${options.declaredFormat} but the content is ${img.format}`,
      });
    }
  }
  for (const issue of img.issues) {
    if (issue.reason === 'backing-file' && options.allowBackingFile) continue;
    if (issue.reason === 'data-file' && options.allowDataFile) continue;
    issues.push(issue);
  }
  if (img.encrypted && options.allowEncrypted === false) {
    issues.push({ reason: 'encrypted', message: `${img.format} image is encrypted` });
  }
  if (
    options.maxVirtualSize !== undefined &&
    img.virtualSize !== undefined &&
    img.virtualSize > options.maxVirtualSize
  ) {
    issues.push({
      reason: 'virtual-size',
      message: `virtual size ${img.virtualSize} exceeds the limit of ${options.maxVirtualSize} bytes`,
    });
  }
  if (issues.length) throw new ImageSafetyError(img.format, issues);
  return img;
}

/** Normalises anything a parser may throw into the inspector's typed errors. */
function typed(e: unknown): never {
  if (e instanceof ImageFormatError || e instanceof ImageSafetyError) throw e;
  if (e instanceof NeedData) throw new ImageFormatError('truncated', 'the image ended before its headers did');
  throw new ImageFormatError('invalid-header', `unparseable header: ${(e as Error)?.message ?? String(e)}`, undefined, {
    cause: e,
  });
}

/**
 * Inspects an image file (or block device), reading only the header regions its format needs.
 * Throws {@link ImageFormatError} when the headers cannot be parsed.
 */
export async function inspectImageFile(path: string): Promise<InspectedImage> {
  try {
    return await driveFile(path, detectFormat);
  } catch (e) {
    return typed(e);
  }
}

/** Inspects an image held in memory. */
export function inspectImageBuffer(bytes: Uint8Array): InspectedImage {
  try {
    return detectFormat(new BufferReader(bytes));
  } catch (e) {
    return typed(e);
  }
}

/** {@link inspectImageFile} followed by {@link safetyCheck}. */
export async function checkImageFile(path: string, options: SafetyOptions = {}): Promise<InspectedImage> {
  return safetyCheck(await inspectImageFile(path), options);
}

/**
 * Incremental inspector for an image that arrives as a stream (e.g. from Glance while it is
 * written to RBD): `push()` every chunk in order, then `end()`. It keeps only the leading 64 KiB,
 * the trailing 1 KiB and the header regions the format asks for (capped at 8 MiB), so memory is
 * bounded whatever the image size.
 *
 * ```ts
 * const insp = new ImageInspector();
 * for await (const chunk of body) { insp.push(chunk); await sink.write(chunk); }
 * const image = insp.end();          // throws ImageFormatError
 * safetyCheck(image, { declaredFormat: 'qcow2' }); // throws ImageSafetyError
 * ```
 */
export class ImageInspector {
  private readonly driver = new StreamDriver(detectFormat);

  /** Bytes pushed so far. */
  get position(): number {
    return this.driver.position;
  }

  /**
   * How many leading bytes the inspector still needs before it can decide (`Infinity` when it
   * needs the end of the stream, e.g. for raw images whose size is the stream length; 0 once
   * decided). Formats with a header at offset 0 usually decide within the first megabytes.
   */
  get bytesWanted(): number {
    return this.driver.bytesWanted;
  }

  /** True once the result is known (a format decided before the end, or after `end()`). */
  get decided(): boolean {
    return this.driver.settled;
  }

  /**
   * The result if decided, else undefined. Throws the typed error if inspection failed. Note:
   * before `end()`, `inputSize` is undefined.
   */
  get result(): InspectedImage | undefined {
    try {
      return this.driver.result();
    } catch (e) {
      return typed(e);
    }
  }

  /** Feeds the next chunk. Cheap once decided. */
  push(chunk: Uint8Array): void {
    if (this.driver.settled) {
      this.driver.push(chunk);
      return;
    }
    try {
      this.driver.push(chunk);
    } catch (e) {
      typed(e);
    }
  }

  /** Marks the end of the stream and returns the result (throws {@link ImageFormatError}). */
  end(): InspectedImage {
    try {
      this.driver.end();
      const r = this.driver.result();
      if (!r) throw new ImageFormatError('truncated', 'the image ended before its headers did');
      return { ...r, inputSize: this.driver.position };
    } catch (e) {
      return typed(e);
    }
  }
}

/** Consumes a whole stream and inspects it (memory stays bounded as with {@link ImageInspector}). */
export async function inspectImageStream(
  source: AsyncIterable<Uint8Array> | Iterable<Uint8Array>,
): Promise<InspectedImage> {
  const insp = new ImageInspector();
  for await (const chunk of source) insp.push(chunk);
  return insp.end();
}

export type { ImageFormat, InspectedImage };
