// Statistics shared by the benchmarks (a helper module, not a benchmark: scripts/bench.mjs runs
// only the .mjs files directly under bench/). Every point is measured several times and reported
// as its median with the spread, and scaling is the slope of a least-squares fit of log t against
// log n over all points — so one noisy point moves the slope a little instead of deciding it,
// as a single t(10n)/t(n) ratio would.

/** The median of `xs` (not empty). */
export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** `{ median, min, max, spread }` of `xs`; spread is (max - min) / median. */
export function summarize(xs) {
  const med = median(xs);
  const min = Math.min(...xs);
  const max = Math.max(...xs);
  return { median: med, min, max, spread: med === 0 ? 0 : (max - min) / med };
}

/**
 * Runs `fn` `times` times (awaiting each) and returns, for every numeric key of its results,
 * the median (as the key) and the spread (under `spread[key]` as `{ min, max, spread }`);
 * non-numeric keys come from the first run.
 */
export async function repeated(times, fn) {
  const runs = [];
  for (let i = 0; i < times; i++) runs.push(await fn(i));
  const out = { ...runs[0], runs: times, spread: {} };
  for (const [k, v] of Object.entries(runs[0])) {
    if (typeof v !== "number") continue;
    const s = summarize(runs.map((r) => r[k]));
    out[k] = s.median;
    out.spread[k] = { min: s.min, max: s.max, spread: Number(s.spread.toFixed(3)) };
  }
  return out;
}

/**
 * Slope of the least-squares line through (log n, log t) for the rows with `n >= minN` (all rows
 * when fewer than two qualify): 1.0 is linear scaling, 2.0 quadratic. NaN with fewer than two
 * points.
 */
export function logLogSlope(rows, key, minN = 10_000) {
  let pts = rows.filter((r) => r.n >= minN);
  if (pts.length < 2) pts = rows;
  if (pts.length < 2) return NaN;
  const xs = pts.map((r) => Math.log(r.n));
  const ys = pts.map((r) => Math.log(r[key]));
  const mx = xs.reduce((a, b) => a + b, 0) / xs.length;
  const my = ys.reduce((a, b) => a + b, 0) / ys.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < xs.length; i++) {
    num += (xs[i] - mx) * (ys[i] - my);
    den += (xs[i] - mx) ** 2;
  }
  return num / den;
}

/** Worst t(10n)/t(n) over consecutive rows whose sizes differ by exactly 10×. */
export function worstRatio(rows, key) {
  let worst = 0;
  for (let i = 1; i < rows.length; i++) {
    if (rows[i].n !== rows[i - 1].n * 10) continue;
    worst = Math.max(worst, rows[i][key] / rows[i - 1][key]);
  }
  return worst;
}

/** Rounds a number to `digits` decimals (for JSON output). */
export const round = (x, digits = 3) => Number(x.toFixed(digits));
