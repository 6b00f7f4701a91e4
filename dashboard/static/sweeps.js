// Sweeps: their list (GET v1/sweeps) and one sweep's leaderboard (GET
// v1/sweeps/ID), its points ranked best first by the objective. Both are
// fetched again on the events of the sweeps (created, ended, a winner
// chosen) and of their jobs.
'use strict';

const sweeps = {
  list: null,    // the sweeps listed, newest first; null until fetched
  listed: false, // whether the list is shown
  id: '',        // the sweep shown
  view: null,    // its SweepView
  busy: false,
  again: new Set(), // what to fetch: 'list', a sweep's ID, or 'ended:' and one
};

// routeSweeps shows the list (listed) or sweep id, or neither.
function routeSweeps(listed, id) {
  sweeps.listed = listed;
  $('sweeps').hidden = !listed;
  $('sweep').hidden = !id;
  if (listed) refreshSweeps('list');
  if (id !== sweeps.id) {
    sweeps.id = id || '';
    sweeps.view = null;
    $('sweep-id').textContent = sweeps.id;
    $('sweep-state').replaceChildren();
    $('sweep-summary').replaceChildren();
    $('sweep-objective').textContent = '';
    $('leaderboard').tHead.rows[0].replaceChildren();
    $('leaderboard').tBodies[0].replaceChildren();
  }
  if (id) refreshSweeps(id);
}

// sweepsOnEvent fetches what event e may have changed: the list while it
// is shown, and the sweep shown when e is about it or one of its points (or
// a job the page does not know yet).
function sweepsOnEvent(e) {
  if (sweeps.listed) refreshSweeps('list');
  // The winner is published after its job ended: its promotions reach its
  // record with no event of the job's own, before the sweep's last one.
  if (e.type === 'sweep' && TERMINAL.has(e.state)) refreshSweeps('ended:' + e.sweep);
  if (!sweeps.id) return;
  if (e.type === 'sweep') {
    if (e.sweep === sweeps.id) refreshSweeps(sweeps.id);
    return;
  }
  const j = jobs.get(e.job);
  const ours = !sweeps.view || (sweeps.view.sweep.jobs || []).includes(e.job) || !j || j.sweep === sweeps.id;
  if (ours) refreshSweeps(sweeps.id);
}

function refreshSweeps(what) {
  sweeps.again.add(what);
  if (!sweeps.busy) fetchSweeps();
}

async function fetchSweeps() {
  sweeps.busy = true;
  while (sweeps.again.size) {
    const todo = [...sweeps.again];
    sweeps.again.clear();
    for (const what of todo) {
      try {
        if (what === 'list') {
          sweeps.list = (await getJSON('v1/sweeps')).sweeps || [];
          renderSweepList();
        } else if (what.startsWith('ended:')) {
          const v = await getJSON('v1/sweeps/' + encodeURIComponent(what.slice(6)));
          if (v.sweep.winner) refresh(v.sweep.winner);
        } else if (what === sweeps.id) {
          const v = await getJSON('v1/sweeps/' + encodeURIComponent(what));
          if (what === sweeps.id) {
            sweeps.view = v;
            renderSweep();
          }
        }
      } catch (err) {
        showError(err);
      }
    }
  }
  sweeps.busy = false;
}

const objectiveOf = (s) => (s.spec && s.spec.job && s.spec.job.promote_on) || 'accuracy:max';
const jobLink = (id) => el('a', {href: '#/jobs/' + encodeURIComponent(id)}, id);
const none = () => el('span', {class: 'muted'}, '—');

function renderSweepList() {
  const rows = (sweeps.list || []).map((s) => el('tr', {'data-sweep': s.id, 'data-state': s.state},
    el('td', {class: 'id'}, el('a', {href: '#/sweeps/' + encodeURIComponent(s.id)}, s.id)),
    el('td', null, stateBadge(s)),
    el('td', {class: 'num'}, String((s.jobs || []).length)),
    el('td', {class: 'params'}, ((s.spec && s.spec.params) || []).map((p) => `${p.name} = ${(p.values || []).join(', ')}`).join('; ')),
    el('td', {class: 'ref'}, objectiveOf(s)),
    el('td', {class: 'id'}, s.winner ? jobLink(s.winner) : none()),
    el('td', {class: 'time'}, fmtTime(s.created))));
  $('sweep-list').tBodies[0].replaceChildren(...rows);
  $('no-sweeps').hidden = rows.length > 0;
}

// verdict says what became of a point: passed, or why not.
function verdict(p) {
  if (p.passed) return el('span', {class: 'verdict-passed'}, 'passed');
  if (!TERMINAL.has(p.state)) return el('span', {class: 'muted'}, p.state);
  return el('span', {class: 'verdict-failed'}, p.error || p.state);
}

function renderSweep() {
  const v = sweeps.view, s = v.sweep;
  const objective = v.objective || objectiveOf(s);
  const [metric, dir] = objective.split(':');
  const params = ((s.spec && s.spec.params) || []).map((p) => p.name);
  // The other finals: every metric a point reported, the objective's aside.
  const others = [...new Set(v.points.flatMap((p) => Object.keys((p.metrics && p.metrics.values) || {})
    .concat(typeof (p.metrics || {}).accuracy === 'number' ? ['accuracy'] : [])))]
    .filter((n) => n !== metric).sort();

  $('sweep-state').replaceChildren(stateBadge(s));
  const summary = [`${(s.jobs || []).length} points`];
  if (s.image) summary.push('image ' + s.image);
  if ((s.spec.job.push || []).length) summary.push('the winner is pushed to ' + s.spec.job.push.join(', '));
  if (s.error) summary.push(s.error);
  $('sweep-summary').replaceChildren(summary.join(' · '), s.winner ? el('span', null, ' · winner ', jobLink(s.winner)) : '');
  $('sweep-objective').textContent = `ranked by ${metric}, ${dir === 'min' ? 'lowest' : 'highest'} first`;

  $('leaderboard').tHead.rows[0].replaceChildren(...['#', 'Job', 'State', ...params].map((h) => el('th', null, h)),
    el('th', {class: 'objective'}, metric + (dir === 'min' ? ' ↓' : ' ↑')),
    ...others.map((n) => el('th', null, n)), el('th', null, 'Verdict'));
  const rows = v.points.map((p, i) => {
    const winner = !!s.winner && p.job === s.winner;
    const tr = el('tr', {'data-job': p.job, 'data-rank': String(i + 1), 'data-state': p.state, class: winner ? 'winner' : null},
      el('td', {class: 'num rank'}, String(i + 1)),
      el('td', {class: 'id'}, jobLink(p.job), winner ? el('span', {class: 'badge winner-badge'}, 'winner') : ''),
      el('td', null, stateBadge(p)),
      ...params.map((n) => el('td', {class: 'param', 'data-param': n}, (p.params || {})[n] ?? '')),
      el('td', {class: 'num objective', 'data-metric': metric}, fmtNum(metricValue(p.metrics, metric)) || none()),
      ...others.map((n) => el('td', {class: 'num', 'data-metric': n}, fmtNum(metricValue(p.metrics, n)) || none())),
      el('td', {class: 'verdict'}, verdict(p)));
    return tr;
  });
  $('leaderboard').tBodies[0].replaceChildren(...rows);
}
