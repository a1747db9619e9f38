// NOT run by `npm test` (40 trials, about 6 minutes): copy to migrate-sigkill-many.test.ts to run it.
// The migration SIGKILL test (migrate-sigkill.test.ts) with more seeded trials, to meet the rarer
// interleavings (a kill while libvirt switches the guest over, reconcile racing libvirt's job).
// EPHEMERA_MIG_TRIALS overrides the count; EPHEMERA_REL_SEED replays a run.
process.env.EPHEMERA_MIG_TRIALS ??= '40';
await import('./migrate-sigkill.test.js');
