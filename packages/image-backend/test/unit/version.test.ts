import { describe, expect, it } from 'vitest';
import { IMAGE_BACKEND_API_VERSION } from '@ephemera/image-backend';

describe('image-backend contract version', () => {
  it('is a positive integer', () => {
    expect(Number.isInteger(IMAGE_BACKEND_API_VERSION)).toBe(true);
    expect(IMAGE_BACKEND_API_VERSION).toBeGreaterThan(0);
  });
});
