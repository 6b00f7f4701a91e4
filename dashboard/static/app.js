// The gantry dashboard: the job list, the job that holds each promoted tag,
// a job's record, live log and metric curves (curves.js), the accuracy of
// successive jobs of each image, and sweeps with their leaderboards
// (sweeps.js). Everything comes from the API under v1/, and the event stream
// keeps it current: on each event the job's record is fetched again, and
// what shows the job (its curves, its sweep).
//
// Everything shown that comes from the API is user data (a job's output,
// its parameters, its metrics' names): it reaches the page as text nodes
// and attribute values, never as markup.
'use strict';

const TERMINAL = new Set(['succeeded', 'rejected', 'failed', 'canceled']);
const PAGE = 100;       // jobs fetched per page
const MAX_POINTS = 60;  // latest jobs shown in a chart
const SVG_NS = 'http://www.w3.org/2000/svg';

const jobs = new Map(); // id -> record
let before = '';        // where the next page starts; '' when every job is loaded
let view = null;        // the job shown: {id, abort}

const $ = (id) => document.getElementById(id);

function make(ns, tag, attrs, children) {
  const e = ns ? document.createElementNS(ns, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  e.append(...(children || []));
  return e;
}
const el = (tag, attrs, ...children) => make(null, tag, attrs, children);
const svg = (tag, attrs, ...children) => make(SVG_NS, tag, attrs, children);

function showError(err) {
  $('error').textContent = String(err && err.message ? err.message : err);
  $('error').hidden = false;
}

async function getJSON(path) {
  const res = await fetch(path, {headers: {Accept: 'application/json'}});
  if (!res.ok) {
    let msg = await res.text();
    try { msg = JSON.parse(msg).message; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${res.status} ${msg}`);
  }
  return res.json();
}

// --- the data -------------------------------------------------------------

async function loadPage() {
  const q = new URLSearchParams({limit: String(PAGE)});
  if (before) q.set('before', before);
  const page = await getJSON('v1/jobs?' + q);
  // The first page says where the event stream stood when it was read: the
  // stream is followed from there, not replayed from the start.
  if (lastSeq === '' && typeof page.event_seq === 'number') lastSeq = String(page.event_seq);
  for (const j of page.jobs) jobs.set(j.id, j);
  before = page.next || '';
  render();
}

// oldestLoaded is the ID before which jobs are not loaded; IDs sort in
// submission order.
function oldestLoaded() {
  if (!before) return '';
  let min = '';
  for (const id of jobs.keys()) if (!min || id < min) min = id;
  return min;
}

// stale reports whether event e says something the loaded record does not.
// The stream replays old events too; those need no fetch.
function stale(e) {
  const j = jobs.get(e.job);
  if (!j) return e.job > oldestLoaded();
  switch (e.type) {
    case 'state': return !TERMINAL.has(j.state) && j.state !== e.state;
    case 'accuracy': return accuracyOf(j) !== e.accuracy;
    case 'push': return !(j.pushes || []).some((p) => p.ref === e.push.ref && p.digest === e.push.digest);
  }
  return true;
}

// Fetches run in rounds, one after the other, so that an older answer never
// overwrites a newer one.
const pending = new Set();
let fetching = false;

function refresh(id) {
  pending.add(id);
  if (!fetching) {
    fetching = true;
    setTimeout(fetchPending, 50);
  }
}

async function fetchPending() {
  while (pending.size) {
    const ids = [...pending];
    pending.clear();
    await Promise.all(ids.map(async (id) => {
      try {
        jobs.set(id, await getJSON('v1/jobs/' + encodeURIComponent(id)));
      } catch (err) {
        showError(err);
      }
    }));
    render();
  }
  fetching = false;
}

let lastSeq = '';

function listen() {
  const es = new EventSource('v1/events' + (lastSeq ? '?since=' + lastSeq : ''));
  const onEvent = (msg) => {
    lastSeq = msg.lastEventId || lastSeq;
    const e = JSON.parse(msg.data);
    if (e.job && stale(e)) refresh(e.job);
    if (view && e.job === view.id) refreshCurves(e.job);
    sweepsOnEvent(e);
  };
  // A sweep's events (created, ended, its winner chosen) name no job.
  for (const type of ['state', 'accuracy', 'push', 'sweep']) es.addEventListener(type, onEvent);
  es.onopen = () => setConn('live');
  es.onerror = () => {
    // The browser reconnects by itself (sending Last-Event-ID) unless the
    // server answered with an error; then start again after a pause.
    if (es.readyState === EventSource.CLOSED) {
      setConn('disconnected');
      setTimeout(listen, 5000);
    } else {
      setConn('reconnecting');
    }
  };
}

function setConn(state) {
  $('conn').dataset.conn = state;
  $('conn').textContent = state;
}

// --- what is shown --------------------------------------------------------

const byID = (a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

// imageName is the repository of the job's first push reference, without
// its tag or digest.
function imageName(j) {
  let ref = (j.spec.push || [])[0];
  if (!ref) return '(no push)';
  ref = ref.split('@')[0];
  const colon = ref.lastIndexOf(':');
  return colon > ref.lastIndexOf('/') ? ref.slice(0, colon) : ref;
}

// accuracyOf is j's accuracy, reported by the default pattern or by name.
const accuracyOf = (j) => metricValue(j.metrics, 'accuracy');

const fmtAcc = (a) => (typeof a === 'number' ? a.toFixed(4) : '');

function fmtTime(s) {
  if (!s) return '';
  const d = new Date(s);
  const p = (n) => String(n).padStart(2, '0');
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
}

const shortDigest = (d) => (d || '').replace(/^sha256:/, '').slice(0, 12);

function stateBadge(j) {
  return el('span', {class: 'state state-' + j.state, title: j.error || null}, j.state);
}

function accuracyCell(j) {
  const cell = el('td', {class: 'num'}, fmtAcc(accuracyOf(j)) || el('span', {class: 'muted'}, '—'));
  if (typeof j.spec.min_accuracy === 'number') {
    cell.append(el('span', {class: 'gate-note'}, ' ≥ ' + j.spec.min_accuracy));
  }
  return cell;
}

function pushedCell(j, holds) {
  const cell = el('td', {class: 'ref'});
  for (const tag of holds) cell.append(el('div', null, el('span', {class: 'badge holds', 'data-tag': tag}, 'holds ' + tag)));
  for (const p of j.pushes || []) {
    cell.append(el('div', {title: p.ref + '@' + p.digest}, p.ref, el('span', {class: 'muted'}, ' @' + shortDigest(p.digest))));
  }
  if (!(j.pushes || []).length && !holds.length) {
    const target = (j.spec.push || [])[0];
    cell.append(el('span', {class: 'muted', title: target ? 'not pushed' : 'no --push'}, target ? '(' + target + ')' : '—'));
  }
  return cell;
}

function idCell(j) {
  const cell = el('td', {class: 'id'}, el('a', {href: '#/jobs/' + encodeURIComponent(j.id)}, j.id));
  if (j.sweep) {
    cell.append(el('div', null, el('a', {class: 'sweep-link', href: '#/sweeps/' + encodeURIComponent(j.sweep)}, 'sweep ' + j.sweep)));
  }
  return cell;
}

// champions returns tag -> {job, promotion}: the job that holds each tag is
// the latest of the loaded jobs whose promotion on that tag promoted.
function champions() {
  const when = (j) => (j.times.finished || j.times.created || '') + ' ' + j.id;
  const held = new Map();
  for (const j of jobs.values()) {
    for (const p of j.promotions || []) {
      if (!p.promoted) continue;
      const cur = held.get(p.tag);
      if (!cur || when(j) > when(cur.job)) held.set(p.tag, {job: j, promotion: p});
    }
  }
  return held;
}

// renderChampions shows held, by tag, and returns it so sorted.
function renderChampions(held) {
  const sorted = [...held].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const rows = sorted.map(([tag, c]) =>
    el('tr', {'data-tag': tag, 'data-job': c.job.id},
      el('td', {class: 'ref'}, tag),
      el('td', {class: 'id'}, el('a', {href: '#/jobs/' + encodeURIComponent(c.job.id)}, c.job.id)),
      el('td', null, c.promotion.reason || ''),
      el('td', {class: 'time'}, fmtTime(c.job.times.finished || c.job.times.created))));
  $('champions').tBodies[0].replaceChildren(...rows);
  $('champions-section').hidden = rows.length === 0;
  return sorted;
}

function renderTable() {
  const holds = new Map(); // job ID -> the tags it holds
  for (const [tag, c] of renderChampions(champions())) holds.set(c.job.id, (holds.get(c.job.id) || []).concat(tag));
  const rows = [...jobs.values()].sort(byID).reverse().map((j) => {
    const tr = el('tr', {'data-job': j.id, 'data-state': j.state},
      idCell(j),
      el('td', null, stateBadge(j)),
      accuracyCell(j),
      pushedCell(j, holds.get(j.id) || []),
      el('td', {class: 'time'}, fmtTime(j.times.created)));
    tr.addEventListener('click', (ev) => {
      if (!ev.target.closest('a')) location.hash = '#/jobs/' + j.id;
    });
    return tr;
  });
  $('jobs').tBodies[0].replaceChildren(...rows);
  $('no-jobs').hidden = rows.length > 0;
  $('more').hidden = !before;
}

function renderCharts() {
  const groups = new Map();
  for (const j of [...jobs.values()].sort(byID)) {
    if (typeof accuracyOf(j) !== 'number') continue;
    const name = imageName(j);
    if (!groups.has(name)) groups.set(name, []);
    groups.get(name).push(j);
  }
  // The image with the latest job first.
  const figures = [...groups]
    .sort((a, b) => byID(b[1][b[1].length - 1], a[1][a[1].length - 1]))
    .map(([name, js]) => chart(name, js.slice(-MAX_POINTS)));
  $('charts').replaceChildren(...figures);
  $('no-charts').hidden = figures.length > 0;
}

const W = 720, H = 220, M = {left: 44, right: 64, top: 12, bottom: 28};

// chart draws one image's jobs: x is the job's place in submission order,
// y its accuracy.
function chart(name, js) {
  const step = (W - M.left - M.right) / Math.max(js.length, 4);
  const x = (i) => M.left + step * (i + 0.5);
  const y = (a) => M.top + (1 - Math.min(1, Math.max(0, a))) * (H - M.top - M.bottom);
  const s = svg('svg', {viewBox: `0 0 ${W} ${H}`, class: 'plot', role: 'img', 'aria-label': 'accuracy of ' + name});

  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    s.append(svg('line', {class: 'grid', x1: M.left, x2: W - M.right, y1: y(t), y2: y(t)}),
      svg('text', {class: 'tick', x: M.left - 8, y: y(t) + 4, 'text-anchor': 'end'}, t.toFixed(2)));
  }
  s.append(svg('text', {class: 'axis', x: M.left, y: H - 8}, 'older'),
    svg('text', {class: 'axis', x: x(js.length - 1), y: H - 8, 'text-anchor': 'middle'}, 'latest'));

  // The gate, a dashed step over the jobs that had one.
  for (let i = 0; i < js.length;) {
    const g = js[i].spec.min_accuracy;
    let k = i + 1;
    while (k < js.length && js[k].spec.min_accuracy === g) k++;
    if (typeof g === 'number') {
      s.append(svg('line', {class: 'gate', x1: x(i) - step / 2, x2: x(k - 1) + step / 2, y1: y(g), y2: y(g)}));
      if (k === js.length) s.append(svg('text', {class: 'gate-label', x: x(k - 1) + step / 2 + 4, y: y(g) + 4}, 'gate ' + g));
    }
    i = k;
  }

  s.append(svg('polyline', {class: 'trend', points: js.map((j, i) => `${x(i)},${y(accuracyOf(j))}`).join(' ')}));
  js.forEach((j, i) => s.append(point(j, x(i), y(accuracyOf(j)))));
  return el('figure', {class: 'chart', 'data-image': name}, el('figcaption', null, name), s);
}

function point(j, cx, cy) {
  const kind = j.state === 'succeeded' ? 'succeeded' : j.state === 'rejected' ? 'rejected' : 'other';
  const g = svg('g', {class: 'pt pt-' + kind, 'data-job': j.id, 'data-state': j.state, transform: `translate(${cx},${cy})`});
  const pushed = (j.pushes || []).map((p) => '\npushed ' + p.ref).join('');
  g.append(svg('title', null, `${j.id}: ${j.state}, accuracy ${fmtAcc(accuracyOf(j))}${pushed}`));
  g.append(kind === 'rejected' ? svg('path', {d: 'M-5,-5L5,5M-5,5L5,-5'}) : svg('circle', {r: kind === 'other' ? 4.5 : 5.5}));
  g.addEventListener('click', () => { location.hash = '#/jobs/' + j.id; });
  return g;
}

function renderJob() {
  if (!view) return;
  const j = jobs.get(view.id);
  if (!j) return;
  $('job-state').replaceChildren(stateBadge(j));
  const parts = [];
  if (typeof accuracyOf(j) === 'number') parts.push('accuracy ' + fmtAcc(accuracyOf(j)));
  if (typeof j.spec.min_accuracy === 'number') parts.push('gate ' + j.spec.min_accuracy);
  for (const p of j.pushes || []) parts.push('pushed ' + p.ref + '@' + p.digest);
  if (j.error) parts.push(j.error);
  $('job-summary').textContent = parts.join(' · ');
  const params = Object.entries(j.params || {}).map(([k, v]) => k + '=' + v).join(' ');
  $('job-sweep').hidden = !j.sweep;
  $('job-sweep').replaceChildren(...(j.sweep ? ['a point of ', el('a', {href: '#/sweeps/' + encodeURIComponent(j.sweep)}, 'sweep ' + j.sweep), params ? ': ' + params : ''] : []));
  $('record').textContent = JSON.stringify(j, null, 2);
  $('cancel').hidden = document.body.dataset.mode !== 'cancel' || TERMINAL.has(j.state);
}

function render() {
  renderTable();
  renderCharts();
  renderJob();
}

// --- the job view ---------------------------------------------------------

function route() {
  const m = location.hash.match(/^#\/jobs\/([0-9a-z]+)$/);
  const sweep = location.hash.match(/^#\/sweeps\/([0-9a-z]+)$/);
  const listed = location.hash === '#/sweeps';
  if (view && (!m || m[1] !== view.id)) {
    view.abort.abort();
    view = null;
    openCurves('');
  }
  $('list').hidden = !!(m || sweep || listed);
  $('job').hidden = !m;
  routeSweeps(listed, sweep ? sweep[1] : '');
  document.body.dataset.view = m ? 'job' : sweep || listed ? 'sweeps' : 'jobs';
  if (m && !view) openJob(m[1]);
}

async function openJob(id) {
  view = {id, abort: new AbortController()};
  const signal = view.abort.signal;
  $('job-id').textContent = id;
  $('job-state').replaceChildren();
  $('job-summary').textContent = '';
  $('record').textContent = '';
  $('log').textContent = '';
  $('job-sweep').replaceChildren();
  $('job-sweep').hidden = true;
  if (!jobs.has(id)) {
    try {
      jobs.set(id, await getJSON('v1/jobs/' + encodeURIComponent(id)));
    } catch (err) {
      showError(err);
      return;
    }
  }
  if (signal.aborted) return;
  renderJob();
  openCurves(id);
  streamLog(id, signal);
}

// streamLog appends the job's log to the page as it grows, until the job
// ends or the view is left.
async function streamLog(id, signal) {
  const out = $('log');
  $('log-state').textContent = 'following';
  try {
    const res = await fetch(`v1/jobs/${encodeURIComponent(id)}/logs?follow=1`, {signal});
    if (!res.ok) throw new Error(`log: ${res.status} ${await res.text()}`);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const {value, done} = await reader.read();
      if (done) break;
      const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
      // gantryd's lines start with the byte 0x1E (its mark): not for show.
      out.append(value.replaceAll('\x1e', ''));
      if (atEnd) out.scrollTop = out.scrollHeight;
      curvesSoon(id);
    }
    $('log-state').textContent = '(complete)';
    refreshCurves(id);
  } catch (err) {
    if (!signal.aborted) $('log-state').textContent = String(err.message || err);
  }
}

async function cancelJob() {
  if (!view) return;
  const id = view.id;
  $('cancel').disabled = true;
  try {
    const res = await fetch(`v1/jobs/${encodeURIComponent(id)}/cancel`, {method: 'POST'});
    if (!res.ok) throw new Error(`cancel: ${res.status} ${await res.text()}`);
    jobs.set(id, await res.json());
    render();
  } catch (err) {
    showError(err);
  } finally {
    $('cancel').disabled = false;
  }
}

// --- start ----------------------------------------------------------------

$('mode').textContent = document.body.dataset.mode === 'cancel' ? '' : 'read-only';
$('more').addEventListener('click', () => loadPage().catch(showError));
$('cancel').addEventListener('click', cancelJob);
window.addEventListener('hashchange', route);
route();
loadPage().catch(showError).finally(listen);
