/**
 * In the Port's stdio mode stdout carries frames only. Frames are written
 * through their own socket on fd 1; everything a library would print with
 * `console.*` or `process.stdout.write` is sent to stderr instead.
 */
export function redirectStdoutToStderr(): void {
  const toErr = process.stderr.write.bind(process.stderr) as typeof process.stdout.write;
  process.stdout.write = toErr;
  console.log = console.error;
  console.info = console.error;
  console.debug = console.error;
  console.warn = console.error;
  console.trace = console.error;
  console.dir = (obj: unknown) => console.error(obj);
  console.table = (obj: unknown) => console.error(obj);
}
