"""The session report as one self-contained HTML page: no scripts, fonts or external
requests, the chart an inline SVG drawn here on the server, so it works offline and under
a `default-src 'none'` content security policy."""

from __future__ import annotations

import datetime as dt
import html
from decimal import Decimal
from typing import Any

WIDTH, HEIGHT, PAD = 760, 240, 48

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328}
h1{font-size:1.4rem;margin:0 0 .25rem} h2{font-size:1.1rem;margin:1.75rem 0 .5rem}
.facts{display:grid;grid-template-columns:max-content auto;gap:.2rem 1rem;font-size:.9rem}
.facts dt{color:#59636e}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{padding:.3rem .5rem;border-bottom:1px solid #d1d9e0;text-align:left;white-space:nowrap}
td.num,th.num{text-align:right}
tr.error td{background:#ffebe9} tr.retry td{background:#fff8c5}
.badge{display:inline-block;padding:0 .4rem;border-radius:.6rem;font-size:.75rem}
.ok{background:#dafbe1} .bad{background:#ffebe9}
code{font-size:.8rem;word-break:break-all}
svg text{font-size:11px}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _failed(call: dict[str, Any]) -> bool:
    return call["http_status"] != 200 or not call["complete"]


def usage_chart(calls: list[dict[str, Any]]) -> str:
    """Cumulative tokens (blue, left scale) and cost (orange, dashed, right scale) against
    time since the first call; a failed or cut call is a red dot."""
    if not calls:
        return '<p id="usage-chart-empty">No calls yet.</p>'
    times = [dt.datetime.fromisoformat(c["started_at"]) for c in calls]
    seconds = [(t - times[0]).total_seconds() for t in times]
    span = seconds[-1] or 1.0
    tokens = [c["cumulative_tokens"] for c in calls]
    costs = [Decimal(c["cumulative_cost"] or 0) for c in calls]
    max_tokens = max(tokens) or 1
    max_cost = max(costs) or Decimal(1)
    inner_w, inner_h = WIDTH - 2 * PAD, HEIGHT - 2 * PAD

    def x(i: int) -> float:
        return PAD + inner_w * seconds[i] / span

    def y(fraction: float) -> float:
        return PAD + inner_h - inner_h * fraction

    def steps(values: list[float]) -> str:
        # Cumulative totals hold between calls: a step line, starting from zero.
        points = [f"{PAD:.1f},{y(0):.1f}"]
        for i, value in enumerate(values):
            previous = values[i - 1] if i else 0.0
            points += [f"{x(i):.1f},{y(previous):.1f}", f"{x(i):.1f},{y(value):.1f}"]
        return " ".join(points)

    token_line = steps([t / max_tokens for t in tokens])
    cost_line = steps([float(c / max_cost) for c in costs])
    marks = "".join(
        f'<circle class="call-mark{" error" if _failed(c) else ""}" '
        f'cx="{x(i):.1f}" cy="{y(tokens[i] / max_tokens):.1f}" r="3" '
        f'fill="{"#cf222e" if _failed(c) else "#0969da"}">'
        f"<title>call {c['n']}: {_e(c['cumulative_tokens'])} tokens</title></circle>"
        for i, c in enumerate(calls)
    )
    return (
        f'<svg id="usage-chart" role="img" aria-label="cumulative tokens and cost over time" '
        f'width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'xmlns="http://www.w3.org/2000/svg">'
        f'<rect x="{PAD}" y="{PAD}" width="{inner_w}" height="{inner_h}" fill="#f6f8fa"/>'
        f'<polyline class="tokens" points="{token_line}" fill="none" stroke="#0969da" '
        f'stroke-width="2"/>'
        f'<polyline class="cost" points="{cost_line}" fill="none" stroke="#bc4c00" '
        f'stroke-width="2" stroke-dasharray="5 3"/>{marks}'
        f'<text x="{PAD}" y="{PAD - 8}" fill="#0969da">tokens, up to {max_tokens:,}</text>'
        f'<text x="{WIDTH - PAD}" y="{PAD - 8}" text-anchor="end" fill="#bc4c00">'
        f"cost, up to {max_cost}</text>"
        f'<text x="{PAD}" y="{HEIGHT - PAD + 16}" fill="#59636e">'
        f"{_e(calls[0]['started_at'][11:19])} UTC</text>"
        f'<text x="{WIDTH - PAD}" y="{HEIGHT - PAD + 16}" text-anchor="end" fill="#59636e">'
        f"+{span:.3f} s</text></svg>"
    )


def _status(call: dict[str, Any]) -> str:
    if call["http_status"] == 200 and call["complete"]:
        return '<span class="badge ok">ok</span>'
    label = call["error_type"] or ("incomplete" if not call["complete"] else "error")
    return f'<span class="badge bad">{_e(call["http_status"])} {_e(label)}</span>'


def _row(c: dict[str, Any]) -> str:
    tokens = c["tokens"]
    numbers = (
        tokens["input"],
        tokens["output"],
        tokens["cache_read"],
        tokens["cache_write_5m"] + tokens["cache_write_1h"],
    )
    latency = round(c["latency_ms"]) if c["latency_ms"] is not None else ""
    classes = "call" + (" error" if _failed(c) else "") + (" retry" if c["retry"] else "")
    retry = " <span class=badge>retry</span>" if c["retry"] else ""
    return (
        f'<tr class="{classes}"><td class="num">{c["n"]}</td>'
        f"<td>{_e(c['started_at'][11:23])}</td><td>{_e(c['actor'])}</td>"
        f"<td>{_e(c['model'])}</td><td>{_status(c)}{retry}</td>"
        + "".join(f'<td class="num">{n:,}</td>' for n in numbers)
        + f'<td class="num">{_e(latency)}</td><td class="num">{_e(c["cost"] or "")}</td></tr>'
    )


def _event(e: dict[str, Any]) -> str:
    note = "proxy told to clear the key" if e["clears_key"] else ""
    return (
        f"<tr><td>{_e(e['at'][:19])}</td><td>{_e(e['action'])}</td><td>{_e(e['outcome'])}</td>"
        f"<td>{_e(e['actor_type'])}</td><td>{note}</td></tr>"
    )


def render_report(report: dict[str, Any]) -> str:
    session, totals, chain = report["session"], report["totals"], report["chain"]
    currency = report["prices"]["currency"]
    rows = "".join(_row(c) for c in report["calls"])
    seal = chain["seal"]
    if seal:
        verdict = "matches" if chain["seal_matches"] else "DOES NOT MATCH"
        seal_html = (
            f'<p id="seal">Sealed at {_e(seal["at"])} after {seal["calls"]} calls: '
            f"<code>{_e(seal['final_link'])}</code> ({verdict} the stored chain).</p>"
        )
    else:
        seal_html = '<p id="seal">Not sealed yet (sealed when grading completes).</p>'
    problems = "".join(f"<li>{_e(p)}</li>" for p in chain["problems"])
    events = "".join(_event(e) for e in report["key_events"])
    tokens = totals["tokens"]
    unpriced = totals["unpriced_calls"]
    prices = _e(report["prices"]["version"]) + (f", {unpriced} calls unpriced" if unpriced else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Session {_e(session["id"])}</title><style>{STYLE}</style></head>
<body>
<h1>Session report</h1>
<dl class="facts">
<dt>session</dt><dd><code>{_e(session["id"])}</code></dd>
<dt>state</dt><dd>{_e(session["state"])}</dd>
<dt>candidate</dt><dd><code>{_e(session["candidate_id"] or "erased")}</code></dd>
<dt>created</dt><dd>{_e(session["created_at"][:19])}</dd>
<dt>ended</dt><dd>{_e((session["ended_at"] or "")[:19])}</dd>
<dt>calls</dt><dd id="total-calls">{totals["calls"]} ({totals["errors"]} failed or cut,
{totals["retries"]} retries)</dd>
<dt>tokens</dt><dd>input {tokens["input"]:,}, output {tokens["output"]:,}, cache read
{tokens["cache_read"]:,}, cache write {tokens["cache_write_5m"] + tokens["cache_write_1h"]:,}</dd>
<dt>cost</dt><dd id="total-cost">{_e(totals["cost"])} {_e(currency)} (price table {prices})</dd>
</dl>
<h2>Tokens and cost over the session</h2>
{usage_chart(report["calls"])}
<h2>Calls</h2>
<table id="timeline"><thead><tr><th class="num">#</th><th>time (UTC)</th><th>who</th>
<th>model</th><th>status</th><th class="num">input</th><th class="num">output</th>
<th class="num">cache read</th><th class="num">cache write</th><th class="num">ms</th>
<th class="num">cost</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Transcript digest chain</h2>
<p>{chain["calls"]} links, last <code>{_e(chain["final_link"])}</code>:
{"intact" if chain["intact"] else "BROKEN"}.</p><ul>{problems}</ul>
{seal_html}
<h2>Key and session events</h2>
<table id="key-events"><thead><tr><th>time (UTC)</th><th>event</th><th>outcome</th>
<th>by</th><th></th></tr></thead><tbody>{events}</tbody></table>
</body></html>
"""
