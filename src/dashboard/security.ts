/**
 * What the dashboard lets through, in one place: which bind addresses are
 * loopback, the refusal of a non-loopback bind without a token (checked at
 * start, before anything listens), the Host check against DNS rebinding,
 * the operator token (compared in constant time, read from a header or a
 * form field, never logged), the read cookie a non-loopback page gets after
 * the token was given once, and the cross-site refusal of actions
 * (Origin / Sec-Fetch-Site).
 */
import crypto from 'node:crypto';
import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { HttpAddress } from '../config.js';

/** The header an operator action carries the token in (or the form field `token`). */
export const TOKEN_HEADER = 'x-prompt-engine-token';
/** The cookie that lets a page on a non-loopback bind read (an HMAC of the token, never the token). */
export const READ_COOKIE = 'pe_dashboard';
/** Shorter tokens are refused at start: a token guards actions that change what production serves. */
export const MIN_TOKEN_LENGTH = 16;

export function isLoopbackHost(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h.endsWith('.localhost')) return true;
  if (net.isIPv4(h)) return h.startsWith('127.');
  if (net.isIPv6(h)) return h === '::1' || h.startsWith('::ffff:127.');
  return false;
}

/** Why the dashboard must not start with these settings, or undefined. */
export function startRefusal(address: HttpAddress, token: string | undefined): string | undefined {
  if (token !== undefined && token.length < MIN_TOKEN_LENGTH)
    return `PROMPT_ENGINE_DASHBOARD_TOKEN is ${token.length} characters long; give at least ${MIN_TOKEN_LENGTH} (it guards pin, stop and reset of what production serves)`;
  if (!isLoopbackHost(address.host) && token === undefined)
    return (
      `refusing to serve the dashboard on ${address.host}, which is not a loopback address, without a token: ` +
      'anyone who reaches that address could read every prompt text. Set PROMPT_ENGINE_DASHBOARD_TOKEN (at least ' +
      `${MIN_TOKEN_LENGTH} characters), or bind to 127.0.0.1 and reach it through an SSH tunnel`
    );
  return undefined;
}

/**
 * The Host header names this server: on a loopback bind only loopback names
 * (a page of another site that rebinds its name to 127.0.0.1 sends its own
 * name and is refused); on other binds any name (the token guards reads).
 */
export function hostAllowed(req: IncomingMessage, address: HttpAddress): boolean {
  if (!isLoopbackHost(address.host)) return true;
  const host = req.headers.host;
  if (host === undefined) return false;
  const name = /^\[[^\]]*\]/.exec(host)?.[0] ?? host.split(':')[0]!;
  return isLoopbackHost(name);
}

export class TokenCheck {
  private readonly digest: Buffer | undefined;
  /** The read cookie's value: HMAC(token, "read"). */
  readonly cookieValue: string | undefined;

  constructor(token: string | undefined) {
    this.digest = token === undefined ? undefined : sha256(token);
    this.cookieValue = token === undefined ? undefined : crypto.createHmac('sha256', token).update('prompt-engine dashboard read').digest('hex');
  }

  get configured(): boolean {
    return this.digest !== undefined;
  }

  matches(given: string | undefined): boolean {
    if (this.digest === undefined || given === undefined || given === '') return false;
    return crypto.timingSafeEqual(this.digest, sha256(given));
  }

  /** The request carries the read cookie. */
  cookieMatches(req: IncomingMessage): boolean {
    if (this.cookieValue === undefined) return false;
    const c = cookieOf(req, READ_COOKIE);
    return c !== undefined && c.length === this.cookieValue.length && crypto.timingSafeEqual(Buffer.from(c), Buffer.from(this.cookieValue));
  }
}

const sha256 = (s: string): Buffer => crypto.createHash('sha256').update(s).digest();

function cookieOf(req: IncomingMessage, name: string): string | undefined {
  for (const part of (req.headers.cookie ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/**
 * Why a state-changing request is cross-site, or undefined. A browser
 * sends Sec-Fetch-Site and Origin with every POST; a page of another site
 * cannot forge either. A request with neither (curl, a script) is not a
 * browser's and still needs the token.
 */
export function crossSite(req: IncomingMessage): string | undefined {
  const site = req.headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin') return `Sec-Fetch-Site is ${JSON.stringify(site)}: actions are taken only from the dashboard's own pages`;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let host: string;
    try {
      host = new URL(origin).host;
    } catch {
      return `Origin ${JSON.stringify(origin)} is not a URL`;
    }
    if (host !== req.headers.host) return `Origin ${JSON.stringify(origin)} is not this dashboard (${String(req.headers.host)})`;
  }
  return undefined;
}
