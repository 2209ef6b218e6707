"""The page's frame: one HTML file with its style inline and no scripts, so it opens from disk anywhere."""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="transferscale {version}">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header>
<h1>{title}</h1>
<p class="lede">{lede}</p>
</header>
<nav aria-label="sections"><ol>{nav}</ol></nav>
<main>
{body}
</main>
<footer>Made by transferscale {version} on {built} in {seconds:.1f} s. Abnar, Dehghani, Neyshabur, Sedghi,
<i>Exploring the Limits of Large Scale Pre-training</i>, ICLR 2022 (arXiv 2110.02095).</footer>
</body>
</html>
"""

CSS = """
:root { --ink: #1d1d1f; --muted: #5f6368; --rule: #dadce0; --accent: #1f5fa8; --warn: #9a4a00;
        --band: #f6f7f9; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1240px; padding: 24px 28px 48px; color: var(--ink); background: #fff;
       font: 15px/1.5 -apple-system, "Segoe UI", "DejaVu Sans", Helvetica, Arial, sans-serif; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid var(--rule); }
h3 { font-size: 15px; margin: 18px 0 6px; }
.lede { color: var(--muted); margin: 0 0 12px; }
nav ol { display: flex; flex-wrap: wrap; gap: 6px 18px; padding: 10px 14px; margin: 8px 0 0;
         background: var(--band); border-radius: 6px; list-style: decimal inside; font-size: 14px; }
a { color: var(--accent); }
figure { margin: 12px 0 4px; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid var(--rule); border-radius: 4px; }
figcaption { color: var(--muted); font-size: 13.5px; margin-top: 6px; max-width: 950px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0; }
th, td { padding: 4px 9px; border-bottom: 1px solid var(--rule); text-align: right; vertical-align: top; }
th { background: var(--band); font-weight: 600; }
td.l, th.l { text-align: left; }
td.nw { white-space: nowrap; }
table.facts td, table.facts th { text-align: left; border: none; padding: 2px 12px 2px 0; background: none; }
table.facts th { color: var(--muted); font-weight: normal; white-space: nowrap; }
.flag { color: var(--warn); font-size: 12px; }
.muted { color: var(--muted); }
.note { background: #fff8e6; border-left: 4px solid #f0b400; padding: 8px 12px; margin: 10px 0; }
.absent { background: var(--band); border-left: 4px solid var(--rule); padding: 10px 14px; }
pre, code { font: 12.5px/1.45 "DejaVu Sans Mono", Menlo, Consolas, monospace; }
pre { background: var(--band); padding: 10px 12px; border-radius: 6px; overflow-x: auto; }
pre.cmd { background: #1e2430; color: #e8eaed; }
details { margin: 10px 0; }
summary { cursor: pointer; color: var(--accent); }
footer { margin-top: 40px; color: var(--muted); font-size: 12.5px; border-top: 1px solid var(--rule);
         padding-top: 10px; }
"""
