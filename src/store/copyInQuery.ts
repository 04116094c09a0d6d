/**
 * `COPY ... FROM STDIN` on a node-postgres connection, its statement and its
 * data in one write: a `pg` Submittable that sends Query, CopyData and
 * CopyDone together and is answered at ReadyForQuery (or by the error).
 *
 * Written here, not through pg-copy-streams: that library (a Writable, for
 * data of any length) holds the data until the server's CopyInResponse has
 * come back, so every batch of group commit paid a second round trip, and
 * that round trip waits for a turn of this process's event loop, the busiest
 * part of a sidecar under load (BENCHMARKS.md, the closed loop's hot path).
 * Our batches are whole strings in memory, and the protocol lets them go at
 * once: a backend that refuses the COPY before or during it answers
 * ErrorResponse then ReadyForQuery, and drops the CopyData and CopyDone that
 * follow ("any subsequent CopyData, CopyDone, or CopyFail messages issued by
 * the frontend will simply be dropped", the protocol's COPY flow; the
 * server's main loop reads and ignores them). That is PostgreSQL's own
 * behaviour: a proxy or another server speaking its protocol in between
 * must forward them as PostgreSQL would take them.
 */
import type { Connection, Submittable } from 'pg';

/** Protocol message types (frontend): CopyData, CopyDone. */
const COPY_DATA = 0x64;
const COPY_DONE = Buffer.from([0x63, 0, 0, 0, 4]);

export class CopyInQuery implements Submittable {
  private failed = false;

  /** `sql`: the COPY statement (FROM STDIN, text format); `data`: its rows; `done` once, with the error if the server refused. */
  constructor(
    private readonly sql: string,
    private readonly data: Buffer,
    private readonly done: (err?: Error) => void,
  ) {}

  /** Returns an error (pg hands it to `handleError`) instead of writing to a connection that can no longer take it. */
  submit(connection: Connection): Error | undefined {
    const stream = connection.stream;
    if (!stream.writable) return new Error('the connection to PostgreSQL cannot be written to');
    const header = Buffer.allocUnsafe(5);
    header[0] = COPY_DATA;
    header.writeUInt32BE(this.data.length + 4, 1);
    // The three messages leave together (one writev), never a part of them left corked.
    stream.cork();
    try {
      connection.query(this.sql);
      stream.write(header);
      stream.write(this.data);
      stream.write(COPY_DONE);
    } finally {
      stream.uncork();
    }
    return undefined;
  }

  /** The data has gone already. */
  handleCopyInResponse(): void {}

  handleCommandComplete(): void {}

  /** A refused COPY (or a lost connection): the client forgets this query, and no ReadyForQuery reaches it. */
  handleError(err: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.done(err);
  }

  handleReadyForQuery(): void {
    if (!this.failed) this.done();
  }
}
