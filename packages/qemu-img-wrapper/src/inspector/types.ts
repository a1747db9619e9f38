import type { SafetyIssue } from '../errors.js';

/** Formats the inspector recognises. `vhd` is what qemu calls `vpc`. */
export type ImageFormat = 'raw' | 'qcow2' | 'vmdk' | 'vhd' | 'vhdx' | 'vdi' | 'qed' | 'luks' | 'iso';

/** The qemu-img driver (`-f`) for each detected format. */
export const QEMU_DRIVER: Readonly<Record<ImageFormat, string>> = {
  raw: 'raw',
  iso: 'raw',
  qcow2: 'qcow2',
  vmdk: 'vmdk',
  vhd: 'vpc',
  vhdx: 'vhdx',
  vdi: 'vdi',
  qed: 'qed',
  luks: 'luks',
};

/** Per-format header facts. */
export type FormatDetails =
  | { format: 'raw' }
  | {
      format: 'iso';
      /** Volume space size times logical block size, from the primary volume descriptor. */
      volumeBytes: number;
    }
  | {
      format: 'qcow2';
      version: 2 | 3;
      clusterBits: number;
      /** Set bits of the incompatible-features field (0 dirty, 1 corrupt, 2 data file, 3 compression, 4 extended L2). */
      incompatibleFeatureBits: number[];
      compatibleFeatureBits: number[];
      autoclearFeatureBits: number[];
      /** 0 = zlib, 1 = zstd. */
      compressionType: number;
      /** 0 none, 1 AES, 2 LUKS. */
      cryptMethod: number;
      l1Size: number;
      snapshotCount: number;
      refcountOrder: number;
    }
  | {
      format: 'vmdk';
      /** `createType` from the descriptor (or `vmdk3` for the legacy COWD header). */
      createType: string | undefined;
      /** True when the file is a text descriptor (no sparse header). */
      descriptorOnly: boolean;
      extents: VmdkExtent[];
    }
  | { format: 'vhd'; subformat: 'fixed' | 'dynamic' | 'differencing'; creatorApp: string }
  | { format: 'vhdx'; hasParent: boolean; logSize: number }
  | { format: 'vdi'; imageType: number }
  | { format: 'qed'; clusterSize: number; featureBits: number[] }
  | { format: 'luks'; version: number; payloadOffset: number };

/** One extent line of a VMDK descriptor. */
export interface VmdkExtent {
  access: string;
  sectors: number;
  type: string;
  filename: string | undefined;
}

/** What the inspector found in an image's headers. */
export interface InspectedImage {
  format: ImageFormat;
  /** The qemu-img `-f` value to use for this image. */
  qemuFormat: string;
  /** Guest-visible size in bytes, where the format (or, for raw, the input size) states it. */
  virtualSize: number | undefined;
  /** Bytes of input, when known (file size, or stream length once it ended). */
  inputSize: number | undefined;
  /** A partition table found at the start of raw (or ISO) data. */
  partitionTable?: 'gpt' | 'mbr';
  /** The backing file named by the header, if any. */
  backingFile?: string;
  /** The backing file's declared format, if any. */
  backingFormat?: string;
  /** qcow2 external data file name (or `''` when only the feature bit is set). */
  dataFile?: string;
  encrypted: boolean;
  details: FormatDetails;
  /** Every safety problem found in the headers; {@link safetyCheck} turns them into errors. */
  issues: SafetyIssue[];
}
