// A job's metric curves: one chart per series the job reported (GET
// v1/jobs/ID/metrics), step on x, value on y, drawn as inline SVG. The page
// (app.js) asks for them again on each event of the job and, while it runs,
// as its log grows.
'use strict';

const CW = 480, CH = 200, CM = {left: 64, right: 96, top: 14, bottom: 32};
const MAX_DOTS = 60; // beyond this many points a curve is drawn without dots

// fmtNum shows a value with four significant digits, as JSON would write it.
const fmtNum = (v) => (typeof v === 'number' && isFinite(v) ? String(Number(v.toPrecision(4))) : '');

// metricValue is a record's final value of metric name (accuracy may be
// only in its own field, in records from before named metrics).
function metricValue(m, name) {
  if (!m) return undefined;
  if (m.values && typeof m.values[name] === 'number') return m.values[name];
  if (name === 'accuracy' && typeof m.accuracy === 'number') return m.accuracy;
  return undefined;
}

// gatesOn returns the gates of spec on metric name, min_accuracy included.
function gatesOn(spec, name) {
  const gates = (spec.gates || []).filter((g) => g.metric === name);
  if (name === 'accuracy' && typeof spec.min_accuracy === 'number') gates.push({metric: name, op: '>=', value: spec.min_accuracy});
  return gates;
}

// span returns [lo, hi] around xs, never empty.
function span(xs) {
  let lo = Math.min(...xs), hi = Math.max(...xs);
  if (lo === hi) {
    const pad = Math.abs(lo) * 0.05 || 0.5;
    lo -= pad;
    hi += pad;
  }
  return [lo, hi];
}

// curve draws one metric's series. gates are drawn as dashed lines.
function curve(name, points, gates) {
  const steps = points.map((p) => p.step), values = points.map((p) => p.value);
  const [x0, x1] = span(steps);
  const [y0, y1] = span(values.concat(gates.map((g) => g.value)));
  const pad = (y1 - y0) * 0.06;
  const x = (s) => CM.left + (s - x0) / (x1 - x0) * (CW - CM.left - CM.right);
  const y = (v) => CM.top + (1 - (v - (y0 - pad)) / (y1 - y0 + 2 * pad)) * (CH - CM.top - CM.bottom);
  const last = points[points.length - 1];
  const s = svg('svg', {viewBox: `0 0 ${CW} ${CH}`, class: 'plot', role: 'img', 'aria-label': name + ' by step'});

  // The axes' ranges: the lowest and highest value, the first and last step.
  const lo = Math.min(...values), hi = Math.max(...values);
  for (const v of lo === hi ? [lo] : [lo, hi]) {
    s.append(svg('line', {class: 'grid', x1: CM.left, x2: CW - CM.right, y1: y(v), y2: y(v)}),
      svg('text', {class: 'tick y-tick', x: CM.left - 6, y: y(v) + 4, 'text-anchor': 'end'}, fmtNum(v)));
  }
  const first = Math.min(...steps), lastStep = Math.max(...steps);
  for (const st of first === lastStep ? [first] : [first, lastStep]) {
    s.append(svg('text', {class: 'tick x-tick', x: x(st), y: CH - CM.bottom + 14, 'text-anchor': 'middle'}, String(st)));
  }
  s.append(svg('line', {class: 'axis-line', x1: CM.left, x2: CW - CM.right, y1: CH - CM.bottom, y2: CH - CM.bottom}),
    svg('text', {class: 'axis', x: (CM.left + CW - CM.right) / 2, y: CH - 4, 'text-anchor': 'middle'}, 'step'));

  for (const g of gates) {
    s.append(svg('line', {class: 'gate', x1: CM.left, x2: CW - CM.right, y1: y(g.value), y2: y(g.value)}),
      svg('text', {class: 'gate-label', x: CW - CM.right + 4, y: y(g.value) + 4}, 'gate ' + g.op + ' ' + fmtNum(g.value)));
  }
  s.append(svg('polyline', {class: 'curve', points: points.map((p) => `${x(p.step)},${y(p.value)}`).join(' ')}));
  if (points.length <= MAX_DOTS) {
    for (const p of points) {
      s.append(svg('circle', {class: 'dot', cx: x(p.step), cy: y(p.value), r: 2.5},
        svg('title', null, `step ${p.step}: ${fmtNum(p.value)}`)));
    }
  }
  s.append(svg('circle', {class: 'final-dot', cx: x(last.step), cy: y(last.value), r: 4}),
    svg('text', {class: 'final', x: x(last.step) + 8, y: y(last.value) + 4}, fmtNum(last.value)));

  return el('figure', {class: 'chart curve', 'data-metric': name, 'data-points': String(points.length), 'data-final': String(last.value)},
    el('figcaption', null, name, el('span', {class: 'muted'}, ` final ${fmtNum(last.value)} at step ${last.step}, ${points.length} point${points.length === 1 ? "" : "s"}`)),
    s);
}

// renderCurves shows series (name -> points) for job j.
function renderCurves(j, series) {
  const names = Object.keys(series || {}).filter((n) => (series[n] || []).length).sort();
  $('job-metrics').replaceChildren(...names.map((n) => curve(n, series[n], gatesOn(j.spec, n))));
  $('metrics-state').textContent = names.length ? '' : TERMINAL.has(j.state) ? 'none reported' : 'none reported yet';
  const problems = (j.metrics && j.metrics.problems) || [];
  $('metric-problems').replaceChildren(...problems.map((p) => el('li', null, p)));
  $('metric-problems').hidden = !problems.length;
}

// The curves are fetched in rounds, like the records: one fetch at a time,
// again if asked meanwhile.
const curves = {id: '', busy: false, again: false, timer: 0};

function refreshCurves(id) {
  if (id !== curves.id) return;
  curves.again = true;
  if (!curves.busy) fetchCurves();
}

async function fetchCurves() {
  curves.busy = true;
  while (curves.again) {
    curves.again = false;
    const id = curves.id;
    let series;
    try {
      series = await getJSON('v1/jobs/' + encodeURIComponent(id) + '/metrics');
    } catch (err) {
      if (id === curves.id) $('metrics-state').textContent = String(err.message || err);
      continue;
    }
    const j = jobs.get(id);
    if (id === curves.id && j) renderCurves(j, series);
  }
  curves.busy = false;
}

// curvesSoon asks for the curves again within a second: the log grew, and
// the metrics with it, without an event.
function curvesSoon(id) {
  if (curves.timer || id !== curves.id) return;
  curves.timer = setTimeout(() => {
    curves.timer = 0;
    refreshCurves(id);
  }, 1000);
}

// openCurves starts showing job id's curves ('' to stop).
function openCurves(id) {
  clearTimeout(curves.timer);
  curves.timer = 0;
  curves.id = id;
  $('job-metrics').replaceChildren();
  $('metric-problems').replaceChildren();
  $('metric-problems').hidden = true;
  $('metrics-state').textContent = '';
  if (id) refreshCurves(id);
}
