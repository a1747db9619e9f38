export * from './errors.js';
export * from './inspector/index.js';
