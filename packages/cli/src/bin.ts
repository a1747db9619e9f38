#!/usr/bin/env node
// The `ephemera` command.
import { run } from './program.js';

process.exitCode = await run(process.argv.slice(2));
