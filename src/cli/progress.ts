/**
 * The `train` verb's progress on stderr: a bar redrawn in place on a
 * terminal, one line per epoch otherwise (logs, CI). Epochs come from the
 * trainer's `training epoch` log records; the trainer's own raw
 * `[train] epoch ...` lines are held back while the bar is shown, since the
 * bar says the same (the trainer lives in learning/, which the CLI does not
 * change: when it gains a progress callback, use that instead).
 */
export interface TrainProgress {
  /** Show the bar; returns the function that ends it. */
  start(): () => void;
  /** Consume a log line if it is an epoch record; true when it was. */
  fromLog(line: string): boolean;
}

export function trainProgress(epochs: number, out: NodeJS.WriteStream): TrainProgress {
  const tty = out.isTTY === true;
  let epoch = 0;
  let loss: number | undefined;
  let t0 = 0;
  let timer: NodeJS.Timeout | undefined;
  const draw = (): void => {
    const secs = ((Date.now() - t0) / 1000).toFixed(0);
    if (epoch === 0) return void out.write(`\rtrain: reading the tracked history and preparing the split… ${secs}s\x1b[K`);
    const w = 30;
    const filled = Math.min(w, Math.round((epoch / epochs) * w));
    out.write(`\rtrain [${'█'.repeat(filled)}${'░'.repeat(w - filled)}] epoch ${epoch}/${epochs}${loss === undefined ? '' : `  held-out loss ${loss.toFixed(4)}`}  ${secs}s\x1b[K`);
  };
  return {
    start() {
      t0 = Date.now();
      const rawWrite = out.write.bind(out);
      // Hold back the trainer's raw epoch lines (see the header).
      out.write = ((chunk: string | Uint8Array, ...rest: never[]) => {
        if (typeof chunk === 'string' && chunk.startsWith('[train] epoch')) return true;
        return rawWrite(chunk, ...rest);
      }) as typeof out.write;
      if (tty) {
        draw();
        timer = setInterval(draw, 500);
      } else out.write('train: reading the tracked history…\n');
      return () => {
        clearInterval(timer);
        out.write = rawWrite;
        if (tty) out.write(epoch > 0 ? '\n' : '\r\x1b[K');
      };
    },
    fromLog(line) {
      if (!line.includes('"msg":"training epoch"')) return false;
      const rec = JSON.parse(line) as { epoch?: number; valLoss?: number };
      epoch = rec.epoch ?? epoch + 1;
      loss = rec.valLoss;
      if (tty) draw();
      else out.write(`train: epoch ${epoch}/${epochs}${loss === undefined ? '' : `, held-out loss ${loss.toFixed(4)}`}\n`);
      return true;
    },
  };
}
