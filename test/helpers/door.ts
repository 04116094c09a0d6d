/**
 * A real PostgreSQL behind a door: a TCP proxy on a free loopback port that
 * forwards to the server of `url` while open, and while closed drops every
 * connection it holds and every new one (the database away, as a client
 * sees it, without stopping the server the other tests share).
 */
import net from 'node:net';

export interface Door {
  /** `url` with the door's host and port. */
  readonly url: string;
  open(): void;
  /** Drop every connection through the door, and refuse new ones until `open`. */
  close(): void;
  /**
   * A silent partition: connections through the door stay open but nothing
   * crosses it any more (no reset, no close: each side hears nothing; the
   * kernels still answer TCP keepalive probes), and new ones are refused
   * until `open`.
   */
  freeze(): void;
  stop(): Promise<void>;
}

export async function doorTo(url: string, opts: { open?: boolean } = {}): Promise<Door> {
  const target = new URL(url);
  let isOpen = opts.open ?? false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    if (!isOpen) return void client.destroy();
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => undefined).on('close', () => sockets.delete(s));
    }
    client.pipe(upstream).pipe(client);
    const pair: [net.Socket, net.Socket] = [client, upstream];
    pairs.add(pair);
    client.on('close', () => pairs.delete(pair));
  });
  const pairs = new Set<[net.Socket, net.Socket]>();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const via = new URL(url);
  via.hostname = '127.0.0.1';
  via.port = String((server.address() as net.AddressInfo).port);
  const dropAll = (): void => {
    for (const s of sockets) s.destroy();
  };
  return {
    url: via.toString(),
    open: () => void (isOpen = true),
    close: () => {
      isOpen = false;
      dropAll();
    },
    freeze: () => {
      isOpen = false;
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    stop: async () => {
      isOpen = false;
      dropAll();
      await new Promise((r) => server.close(r));
    },
  };
}
