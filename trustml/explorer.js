// trustml what-if explorer: the chart, drawn in the browser as SVG from the data the kernel sends.
// An anywidget ESM module (no build step, no network). trustml/explorer.py renders the same markup
// in Python for static HTML reports (_view_html); keep the two in step.

const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ESC[c]);
const pct = (x) => (100 * x).toFixed(1) + "%";
const num = (x) => (Math.round(x * 10) / 10).toFixed(1);
const sg = (x, n) => (x < 0 ? "" : "+") + x.toFixed(n);   // signed, n decimals (the kernel sends no negative zero)
const GREY = "#bbbbbb", RED = "#d62728", GREEN = "#2ca02c";
export const NOTE = "model association (what the churn model predicts), not a causal effect";
export const MODEL_KIND = "model association", CAUSAL_KIND = "causal estimate (double ML)", SURVIVAL_KIND = "hazard model: a model association";

function svg(d) {
  const W = 560, LX = 150, X0 = 158, X1 = 548, ROW = 26, BAR = 9, TOP = 22;
  const p = d.pillars || [];
  const riskY = TOP, pilY = TOP + 2 * BAR + 24, H = pilY + p.length * ROW + 30;
  const after = d.risk_after > d.risk_before + 1e-12 ? RED : GREEN;
  const rx = (v) => X0 + (X1 - X0) * Math.max(0, Math.min(1, v));
  let m = 0.25;
  for (const r of p) m = Math.max(m, Math.abs(r.before), Math.abs(r.after));
  m *= 1.1;
  const xz = (X0 + X1) / 2, half = (X1 - X0) / 2, x = (v) => xz + (v / m) * half;
  const bar = (v, y, fill, cls) => {
    const a = Math.min(x(0), x(v)), w = Math.abs(x(v) - x(0));
    return `<rect class="${cls}" x="${a.toFixed(1)}" y="${y.toFixed(1)}" width="${w.toFixed(1)}" height="${BAR}" fill="${fill}"/>`;
  };
  const out = [`<svg class="trustml-chart" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11"><title>${esc(NOTE)}</title>`,
    `<rect x="${X0}" y="4" width="10" height="8" fill="${GREY}"/><text x="${X0 + 14}" y="12">as they are</text>`,
    `<rect x="${X0 + 100}" y="4" width="10" height="8" fill="${after}"/><text x="${X0 + 114}" y="12">after the changes (what the model predicts)</text>`,
    `<text x="${LX}" y="${riskY + BAR + 4}" text-anchor="end" font-weight="bold">Churn risk</text>`,
    `<rect class="trustml-risk-before" x="${X0}" y="${riskY}" width="${(rx(d.risk_before) - X0).toFixed(1)}" height="${BAR}" fill="${GREY}"/>`,
    `<rect class="trustml-risk-after" x="${X0}" y="${riskY + BAR + 2}" width="${(rx(d.risk_after) - X0).toFixed(1)}" height="${BAR}" fill="${after}"/>`,
    `<text x="${(rx(d.risk_before) + 4).toFixed(1)}" y="${riskY + BAR - 1}">${pct(d.risk_before)}</text>`,
    `<text x="${(rx(d.risk_after) + 4).toFixed(1)}" y="${riskY + 2 * BAR + 1}">${pct(d.risk_after)}</text>`];
  p.forEach((r, i) => {
    const y = pilY + i * ROW;
    out.push(`<text x="${LX}" y="${y + BAR + 4}" text-anchor="end">${esc(r.label)}</text>`,
      bar(r.before, y, GREY, "trustml-bar-before"), bar(r.after, y + BAR + 1, r.after > 0 ? RED : GREEN, "trustml-bar-after"));
  });
  const yb = pilY + p.length * ROW;
  out.push(`<line x1="${xz.toFixed(1)}" y1="${pilY - 4}" x2="${xz.toFixed(1)}" y2="${yb}" stroke="black" stroke-width="0.6"/>`,
    `<text x="${X0}" y="${yb + 12}">${num(-m)}</text><text x="${X1}" y="${yb + 12}" text-anchor="end">+${num(m)}</text>`,
    `<text x="${xz.toFixed(1)}" y="${yb + 26}" text-anchor="middle">pillar contribution to churn risk (log-odds; right = raises risk)</text></svg>`);
  return out.join("");
}

// the customer's survival curve S(k), k = 0..H (S(0) = 1), as they are and after the changes: steps at each month
function survivalSvg(s) {
  const W = 560, X0 = 48, X1 = 540, Y0 = 52, Y1 = 196, H = s.horizon, HT = Y1 + 36;
  const xs = (k) => X0 + ((X1 - X0) * k) / H, ys = (v) => Y1 - (Y1 - Y0) * v;
  const path = (S) => `M${xs(0).toFixed(1)},${ys(1).toFixed(1)}` + S.map((v, i) => `H${xs(i + 1).toFixed(1)}V${ys(v).toFixed(1)}`).join("");
  const after = s.months_after < s.months_before - 1e-12 ? RED : GREEN;
  const step = Math.max(1, Math.ceil(H / 12));
  const out = [`<svg class="trustml-survival" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${HT}" viewBox="0 0 ${W} ${HT}" font-family="sans-serif" font-size="11"><title>${esc(SURVIVAL_KIND)}</title>`,
    `<text x="${X0}" y="12" font-weight="bold">Probability of still being a customer (${esc(SURVIVAL_KIND)})</text>`,
    `<line x1="${X0}" y1="23" x2="${X0 + 16}" y2="23" stroke="${GREY}" stroke-width="2.5"/><text class="trustml-surv-months-before" x="${X0 + 20}" y="27">as they are: ${s.months_before.toFixed(1)} expected months of the next ${H}</text>`,
    `<line x1="${X0}" y1="37" x2="${X0 + 16}" y2="37" stroke="${after}" stroke-width="1.5"/><text class="trustml-surv-months-after" x="${X0 + 20}" y="41">after the changes: ${s.months_after.toFixed(1)} expected months (${sg(s.months_after - s.months_before, 1)})</text>`,
    `<line x1="${X0}" y1="${Y0}" x2="${X0}" y2="${Y1}" stroke="black" stroke-width="0.6"/><line x1="${X0}" y1="${Y1}" x2="${X1}" y2="${Y1}" stroke="black" stroke-width="0.6"/>`];
  for (const v of [0, 0.5, 1]) out.push(`<text x="${X0 - 4}" y="${(ys(v) + 4).toFixed(1)}" text-anchor="end">${Math.round(100 * v)}%</text>`);
  for (let k = 0; k <= H; k += step) out.push(`<text x="${xs(k).toFixed(1)}" y="${Y1 + 14}" text-anchor="middle">${k}</text>`);
  out.push(`<text x="${((X0 + X1) / 2).toFixed(1)}" y="${Y1 + 30}" text-anchor="middle">${esc(s.time_label)}</text>`,
    `<path class="trustml-surv-before" d="${path(s.before)}" fill="none" stroke="${GREY}" stroke-width="2.5"/>`,
    `<path class="trustml-surv-after" d="${path(s.after)}" fill="none" stroke="${after}" stroke-width="1.5"/></svg>`);
  return out.join("");
}

// beside the model's answer: each moved lever's causal estimate (or that it has none), then every lever's in a table
function causalHtml(c, moved) {
  if (!c.length) return "";
  const est = (r) => `${sg(r.causal, 2)} [95% ${sg(r.low, 2)}, ${sg(r.high, 2)}]`;
  const line = c.filter((r) => r.moved).map((r) => r.causal === null
    ? `${esc(r.label)}: no causal estimate for this lever (${MODEL_KIND} only)`
    : `${esc(r.label)}: ${CAUSAL_KIND} of the policy &#39;${esc(r.policy)}&#39;: ${est(r)} points`
      + (r.model === null ? "" : ` (${MODEL_KIND} for the same policy: ${sg(r.model, 2)} points)`)).join("; ");
  const th = (t) => `<th style="text-align:left;padding:1px 6px">${t}</th>`, td = (t) => `<td style="padding:1px 6px">${t}</td>`;
  const rows = c.map((r) => `<tr class="trustml-causal-row${r.moved ? " trustml-moved" : ""}"${r.moved ? ' style="font-weight:bold"' : ""}>`
    + td(esc(r.label)) + td(esc(r.policy)) + td(r.model === null ? "n/a" : sg(r.model, 2))
    + td(r.causal === null ? "no causal estimate for this lever" : est(r)) + "</tr>").join("");
  return (moved.length ? `<div class="trustml-causal-line" style="margin:2px 0">Beside the model&#39;s answer: ${line}</div>` : "")
    + `<table class="trustml-causal" style="border-collapse:collapse;margin:4px 0"><caption style="text-align:left;font-weight:bold">`
    + `Each lever&#39;s policy for this customer: change in churn risk in the label window, points (negative = fewer churners; moved levers in bold)</caption>`
    + `<tr>${th("lever")}${th("policy")}${th(MODEL_KIND + " (the policy&#39;s feature change)")}${th(CAUSAL_KIND + " [95% interval]")}</tr>${rows}</table>`;
}

export function view(d) {
  const moved = d.moved || [];
  const arrow = moved.length
    ? ` &rarr; <b>${pct(d.risk_after)}</b> (${(100 * (d.risk_after - d.risk_before) >= 0 ? "+" : "") + (100 * (d.risk_after - d.risk_before)).toFixed(1)} points: ${esc(NOTE)})`
    : "";
  const changes = moved.length ? "Changes: " + moved.map((c) => `${esc(c.label)} ${esc(c.own)} &rarr; ${esc(c.value)}`).join("; ") : "No lever moved: the customer as they are.";
  const rows = (d.reasons || []).map((r) => `<tr><td style="padding:2px 6px">${esc(r.pillar)}</td><td style="padding:2px 6px">${esc(r.reason)}</td></tr>`).join("")
    || `<tr><td colspan="2" style="padding:2px 6px">nothing raises this risk above the average</td></tr>`;
  return `<div class="trustml-risk" style="font-size:14px">${esc(d.customer)}: churn risk <b>${pct(d.risk_before)}</b>${arrow}</div>`
    + `<div class="trustml-cohort" style="margin:2px 0">${esc(d.cohort)}</div>`
    + `<div class="trustml-changes" style="margin:2px 0;color:#555">${changes}</div>`
    + causalHtml(d.causal || [], moved)
    + `<div style="display:flex;gap:16px;align-items:flex-start;flex-wrap:wrap">${svg(d)}`
    + (d.survival && d.survival.horizon ? survivalSvg(d.survival) : "")
    + `<table class="trustml-reasons" style="border-collapse:collapse;max-width:520px"><caption style="text-align:left;font-weight:bold">`
    + `Why the model predicts this risk, after the changes (SHAP reasons; associations, not causes)</caption>${rows}</table></div>`;
}

const KEYS = ["customer", "risk_before", "risk_after", "moved", "pillars", "reasons", "cohort", "causal", "survival", "version", "compute_ms"];

function render({ model, el }) {
  const root = document.createElement("div");
  root.className = "trustml-explorer-view";
  el.appendChild(root);
  const draw = () => {
    const d = Object.fromEntries(KEYS.map((k) => [k, model.get(k)]));
    root.innerHTML = view(d);
    root.dataset.computeMs = String(d.compute_ms);
    root.dataset.sentAt = String(model.get("sent_at"));
    root.dataset.version = String(d.version); // last: a MutationObserver on data-version sees a finished chart
  };
  draw();
  model.on("change:version", draw);
  return () => model.off("change:version", draw);
}

export default { render };
