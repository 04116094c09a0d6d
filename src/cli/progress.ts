/**
 * The `train` verb's progress on stderr: a bar redrawn in place on a
 * terminal, one line per epoch otherwise (logs, CI). Epochs come from the
 * trainer's `training epoch` log records (info level), which the verb
 * routes here instead of printing them.
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
      if (tty) {
        draw();
        timer = setInterval(draw, 500);
      } else out.write('train: reading the tracked history…\n');
      return () => {
        clearInterval(timer);
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
