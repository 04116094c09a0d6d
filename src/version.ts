/** Versions reported in the ready handshake and `health`. */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { REPO_ROOT } from './config.js';

export const PROTOCOL_VERSION = 1;
export const VERSION: string = (JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
