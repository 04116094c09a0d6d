/**
 * The page shell and its stylesheet. The shell is the same for every page
 * and carries no data at all (no name, no prompt, no token): the script
 * reads the page from the address and draws it from the page's JSON, so
 * nothing a client sent is ever written into markup by the server.
 */

const NAV: ReadonlyArray<[string, string]> = [
  ['/experiments', 'Experiments'],
  ['/prompts', 'Tracked prompts'],
  ['/models', 'Models'],
  ['/health', 'Health'],
];

export function shellHtml(): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>prompt-engine</title>
<link rel="stylesheet" href="/assets/uPlot.min.css">
<link rel="stylesheet" href="/assets/dashboard.css">
<script src="/assets/uPlot.iife.min.js"></script>
<script type="module" src="/assets/app.js"></script>
</head>
<body>
<header>
<span class="brand">prompt-engine</span>
<nav>${NAV.map(([href, label]) => `<a href="${href}">${label}</a>`).join('')}</nav>
<span id="live" class="live" title="live updates">connecting</span>
<form id="token-form" class="token"><input id="token" type="password" autocomplete="off" placeholder="operator token"><button type="submit">use</button></form>
</header>
<main id="main"><p class="muted">loading…</p></main>
</body>
</html>
`;
}

export const DASHBOARD_CSS = `
:root { --fg: #1d2330; --muted: #6b7385; --line: #e2e5ec; --bg: #fafbfc; --accent: #2f6fdb; --good: #1f8a4c; --bad: #c0392b; --warn: #b7791f; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg); background: var(--bg); }
header { display: flex; align-items: center; gap: 18px; padding: 10px 20px; background: #fff; border-bottom: 1px solid var(--line); position: sticky; top: 0; z-index: 5; }
.brand { font-weight: 700; }
nav a { margin-right: 14px; color: var(--fg); text-decoration: none; }
nav a.current { color: var(--accent); font-weight: 600; }
.live { margin-left: auto; font-size: 12px; color: var(--muted); }
.live.on::before { content: "● "; color: var(--good); }
.live.off::before { content: "● "; color: var(--bad); }
.token input { width: 150px; font-size: 12px; padding: 3px 6px; }
.token button { font-size: 12px; }
main { padding: 16px 20px 40px; max-width: 1400px; }
h1 { font-size: 20px; margin: 4px 0 12px; }
h2 { font-size: 16px; margin: 22px 0 8px; }
table { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; font-size: 12px; color: var(--muted); background: #f4f5f8; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.muted { color: var(--muted); }
.small { font-size: 12px; }
.ci { color: var(--muted); font-size: 12px; }
.pos { color: var(--good); }
.neg { color: var(--bad); }
.state-active { color: var(--good); }
.state-retired { color: var(--muted); }
.state-banned { color: var(--bad); }
.badge { display: inline-block; padding: 0 6px; border-radius: 8px; font-size: 11px; background: #eef1f7; }
.badge.leader { background: #dff3e6; color: var(--good); }
.badge.pinned { background: #fdf0d9; color: var(--warn); }
.status-running { color: var(--good); }
.status-stopped { color: var(--warn); }
.prompt { white-space: pre-wrap; font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; max-width: 560px; max-height: 9em; overflow: auto; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin-bottom: 8px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; min-width: 140px; }
.card .k { font-size: 12px; color: var(--muted); }
.card .v { font-size: 18px; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
.chart { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
.chart .title { font-size: 12px; color: var(--muted); margin-bottom: 4px; }
svg.spark { display: block; }
.errors { background: #fdecea; border: 1px solid #f5c6c1; padding: 6px 10px; border-radius: 6px; margin-bottom: 10px; }
.notice { background: #eef4fd; border: 1px solid #cddcf6; padding: 6px 10px; border-radius: 6px; margin: 8px 0; font-size: 12px; }
button.act { font-size: 12px; margin-right: 4px; }
#action-result { min-height: 1.4em; font-size: 12px; }
.bar { display: inline-block; height: 8px; background: var(--accent); vertical-align: middle; }
`;
