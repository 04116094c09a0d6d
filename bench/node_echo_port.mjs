// Second baseline for bench/port.ts: the floor of Node I/O on a Port. Reads {packet,4} frames on fd 3
// and writes each back unchanged on fd 4 (no term decoding), with the same net.Socket({fd}) handles.
import net from 'node:net';
const inp = new net.Socket({ fd: 3, readable: true, writable: false });
const out = new net.Socket({ fd: 4, readable: false, writable: true });
let buf = Buffer.alloc(0);
inp.on('data', (c) => { buf = buf.length ? Buffer.concat([buf, c]) : c; while (buf.length >= 4) { const n = buf.readUInt32BE(0); if (buf.length < 4 + n) break; const f = buf.subarray(0, 4 + n); buf = buf.subarray(4 + n); out.write(Buffer.from(f)); } });
inp.on('end', () => process.exit(0));
