/** Side-effect import: starts {@link startRecordingProcesses} at once. Import it FIRST in a test file, so
 * modules that capture `promisify(execFile)` at load time get the recording wrapper. */
import { startRecordingProcesses } from './record-processes.js';

startRecordingProcesses();
