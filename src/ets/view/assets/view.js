"use strict";
// ets view: the index is parsed at load; a problem's trees are parsed and drawn only when it is shown.
(function () {
  const T0 = performance.now();
  const DATA = JSON.parse(document.getElementById("ets-index").textContent);
  const RUNS = DATA.runs;
  const COMPARE = RUNS.length === 2;
  const LETTERS = ["A", "B"];
  const BAR = ["#6a3d9a", "#b15928"];  // run A, run B in the per-depth KV bars
  const SVGNS = "http://www.w3.org/2000/svg";
  const VIRIDIS = ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58",
                   "#b5de2b", "#fde725"];
  const STATE_TEXT = {
    expanded: "a candidate, given children",
    pruned: "a candidate given no children (pruned)",
    answer: "a leaf: holds a final answer",
    budget: "retired: used up max_tokens without an answer",
    ended: "retired: the policy ended its turn without an answer (retire_empty_steps)",
    open: "alive when the search stopped (max_depth reached or the width used up)",
  };
  const state = { sortKey: null, asc: true, filter: "all", judge: "wmv", current: null, selected: null };
  const treeCache = new Map();

  // -- small helpers ----------------------------------------------------------------
  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }
  const NUMBER = new Intl.NumberFormat("en-US");  // one formatter: toLocaleString makes one per call
  function int(n) { return n === null || n === undefined ? "" : NUMBER.format(n); }
  function score(s) { return Number(s).toFixed(3); }
  function mark(ok) {
    if (ok === null || ok === undefined) return '<span class="na">–</span>';
    return ok ? '<span class="ok" title="correct">✓</span>' : '<span class="ko" title="wrong">✗</span>';
  }
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVGNS, tag);
    for (const k in attrs) el.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(el);
    return el;
  }
  function hex(c) { return [1, 3, 5].map((i) => parseInt(c.slice(i, i + 2), 16)); }
  function colour(t) {  // viridis, t in [0, 1]
    t = Math.min(1, Math.max(0, t));
    const x = t * (VIRIDIS.length - 1), i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
    const a = hex(VIRIDIS[i]), b = hex(VIRIDIS[i + 1]);
    return "rgb(" + a.map((v, j) => Math.round(v + (b[j] - v) * f)).join(",") + ")";
  }
  function tree(r, k) {
    const key = r + "-" + k;
    if (!treeCache.has(key)) {
      const el = document.getElementById("tree-" + key);
      treeCache.set(key, el ? prepare(JSON.parse(el.textContent)) : null);
    }
    return treeCache.get(key);
  }
  function prepare(t) {  // children, depth-first order and the picked paths, once per tree
    const n = t.nodes.parent.length;
    t.n = n;
    t.children = Array.from({ length: n }, () => []);
    for (let i = 1; i < n; i++) t.children[t.nodes.parent[i]].push(i);
    t.order = [];
    const stack = [0];
    while (stack.length) {
      const v = stack.pop();
      t.order.push(v);
      for (let j = t.children[v].length - 1; j >= 0; j--) stack.push(t.children[v][j]);
    }
    t.maxDepth = Math.max(...t.nodes.depth);
    t.selAt = {};
    t.allocOf = {};
    for (const s of t.selections) {
      t.selAt[s.depth] = s;
      s.candidates.forEach((c, i) => { t.allocOf[c] = s.allocation[i]; });
    }
    t.pathOf = (id) => { const p = []; for (let v = id; v !== null; v = t.nodes.parent[v]) p.push(v); return p.reverse(); };
    t.onPick = {};
    for (const key of ["bon", "wmv"]) {
      const node = t.picks[key].node;
      t.onPick[key] = new Set(node === null ? [] : t.pathOf(node));
    }
    return t;
  }

  // -- the runs ---------------------------------------------------------------------
  function renderRuns() {
    const head = "<tr><th></th><th>run</th><th class='n'>problems</th><th class='n'>right, weighted vote (last)</th>" +
      "<th class='n'>right, best-of-N (last)</th><th class='n'>nodes</th><th class='n'>KV cache</th>" +
      "<th class='n'>tokens</th><th>settings</th><th>directory</th></tr>";
    const rows = RUNS.map((r, i) => {
      const settings = Object.entries(r.config).map(([k, v]) => k + "=" + v).join(" ");
      const pct = (x) => r.problems ? " (" + (100 * x / r.problems).toFixed(1) + "%)" : "";
      return "<tr><td><b>" + (COMPARE ? LETTERS[i] : "") + "</b></td><td class='label'><b>" + esc(r.label) + "</b></td>" +
        "<td class='n'>" + int(r.problems) + "</td><td class='n'>" + int(r.wmv_correct) + pct(r.wmv_correct) +
        "</td><td class='n'>" + int(r.bon_correct) + pct(r.bon_correct) + "</td><td class='n'>" + int(r.nodes) +
        "</td><td class='n'>" + int(r.kv) + "</td><td class='n'>" + int(r.tokens) + "</td><td class='settings'>" + esc(settings) +
        "</td><td class='settings'><code>" + esc(r.path) + "</code></td></tr>";
    });
    document.getElementById("runs").innerHTML = head + rows.join("");
  }

  // -- the index --------------------------------------------------------------------
  function right(p, r) { const row = p.rows[r]; return row ? row[state.judge] : null; }
  function columns() {
    const cols = [{ key: "id", label: "id", get: (p) => p.id }];
    const num = (r, f, label, title) => ({ key: f + r, label, title, n: true, get: (p) => p.rows[r] ? p.rows[r][f] : null });
    if (COMPARE) {
      for (let r = 0; r < 2; r++) cols.push({ key: "right" + r, label: LETTERS[r] + " ✓", bool: true,
        title: "run " + LETTERS[r] + " right (judged by the selector above)", get: (p) => right(p, r) });
      for (const [f, label] of [["nodes", "nodes"], ["kv", "KV"], ["tokens", "tokens"]])
        for (let r = 0; r < 2; r++) cols.push(num(r, f, label + " " + LETTERS[r]));
      cols.push({ key: "kvratio", label: "KV B/A", n: true, title: "KV cache of B over A",
        get: (p) => p.rows[0] && p.rows[1] && p.rows[0].kv ? p.rows[1].kv / p.rows[0].kv : null, fmt: (x) => x.toFixed(2) });
    } else {
      cols.push({ key: "wmv0", label: "WMV", bool: true, title: "right by the weighted majority vote (last)", get: (p) => p.rows[0].wmv });
      cols.push({ key: "bon0", label: "BoN", bool: true, title: "right by best-of-N (last)", get: (p) => p.rows[0].bon });
      cols.push({ key: "rl0", label: "✓ leaves", n: true, title: "leaves with a right answer / leaves",
        get: (p) => p.rows[0].right_leaves, fmt: (x, p) => x + "/" + p.rows[0].leaves });
      for (const [f, label] of [["nodes", "nodes"], ["depth", "depth"], ["kv", "KV"], ["tokens", "tokens"]])
        cols.push(num(0, f, label));
    }
    cols.push({ key: "q", label: "question", get: (p) => p.question, cls: "q" });
    return cols;
  }
  const FILTERS = COMPARE ? [
    ["all", "all problems", () => true],
    ["only0", "only A right", (p) => right(p, 0) === true && right(p, 1) !== true],
    ["only1", "only B right", (p) => right(p, 1) === true && right(p, 0) !== true],
    ["onlyone", "only one run right", (p) => (right(p, 0) === true) !== (right(p, 1) === true)],
    ["bothwrong", "both wrong", (p) => right(p, 0) !== true && right(p, 1) !== true],
    ["lost", "a right leaf, a wrong pick", (p) => p.rows.some((row) => row && row.right_leaves > 0 && !row[state.judge])],
  ] : [
    ["all", "all problems", () => true],
    ["right", "right", (p) => right(p, 0) === true],
    ["wrong", "wrong", (p) => right(p, 0) === false],
    ["lost", "a right leaf, a wrong pick", (p) => p.rows[0].right_leaves > 0 && !p.rows[0][state.judge]],
  ];
  function renderIndexHead() {
    const cols = columns();
    document.querySelector("#index thead").innerHTML = "<tr>" + cols.map((c) =>
      "<th data-key='" + c.key + "'" + (c.title ? " title='" + esc(c.title) + "'" : "") + " class='" + (c.n ? "n" : "") +
      (state.sortKey === c.key ? " sorted" + (state.asc ? " asc" : "") : "") + "'>" + esc(c.label) + "</th>").join("") + "</tr>";
  }
  function compareValues(a, b) {
    if (a === b) return 0;
    if (a === null || a === undefined) return 1;  // missing last, whichever the order
    if (b === null || b === undefined) return -1;
    if (typeof a === "boolean") return (a ? 1 : 0) - (b ? 1 : 0);
    if (typeof a === "number" && typeof b === "number") return a - b;
    return String(a).localeCompare(String(b), "en", { numeric: true });
  }
  function renderIndex() {
    const t = performance.now();
    const cols = columns();
    const keep = FILTERS.find((f) => f[0] === state.filter)[2];
    let list = DATA.problems.map((p, k) => [p, k]).filter(([p]) => keep(p));
    if (state.sortKey) {
      const col = cols.find((c) => c.key === state.sortKey);
      list.sort((x, y) => {
        const a = col.get(x[0]), b = col.get(y[0]);
        if (a === null || a === undefined || b === null || b === undefined) return compareValues(a, b);
        return (state.asc ? 1 : -1) * compareValues(a, b) || x[1] - y[1];
      });
    }
    const html = list.map(([p, k]) => "<tr data-k='" + k + "'" + (k === state.current ? " class='current'" : "") + ">" +
      cols.map((c) => {
        const v = c.get(p);
        const text = c.bool ? mark(v) : v === null || v === undefined ? "–" : c.fmt ? esc(c.fmt(v, p)) : c.n ? int(v) : esc(v);
        return "<td class='" + (c.n ? "n" : "") + (c.cls ? " " + c.cls : "") + "'>" + text + "</td>";
      }).join("") + "</tr>").join("");
    document.querySelector("#index tbody").innerHTML = html;
    document.getElementById("shown").textContent = list.length + " of " + DATA.problems.length + " problems";
    renderIndexHead();
    document.body.dataset.indexMs = (performance.now() - t).toFixed(1);
    return list;
  }
  function setupIndex() {
    const filter = document.getElementById("filter");
    filter.innerHTML = FILTERS.map((f) => "<option value='" + f[0] + "'>" + esc(f[1]) + "</option>").join("");
    filter.addEventListener("change", () => { state.filter = filter.value; renderIndex(); });
    const judge = document.getElementById("judge");
    judge.addEventListener("change", () => { state.judge = judge.value; renderIndex(); });
    document.querySelector("#index thead").addEventListener("click", (e) => {
      const th = e.target.closest("th");
      if (!th) return;
      if (state.sortKey === th.dataset.key) state.asc = !state.asc;
      else { state.sortKey = th.dataset.key; state.asc = th.dataset.key === "id" || th.dataset.key === "q"; }
      renderIndex();
    });
    document.querySelector("#index tbody").addEventListener("click", (e) => {
      const tr = e.target.closest("tr");
      if (tr) showProblem(Number(tr.dataset.k));
    });
  }

  // -- one problem ------------------------------------------------------------------
  function legend(domain) {
    const stops = VIRIDIS.map((c, i) => "<stop offset='" + (i / (VIRIDIS.length - 1)) + "' stop-color='" + c + "'/>").join("");
    return "<div class='legend'><span>PRM score " + score(domain[0]) + " <svg width='110' height='12'><defs><linearGradient id='lg'>" +
      stops + "</linearGradient></defs><rect width='110' height='12' fill='url(#lg)'/></svg> " + score(domain[1]) +
      " <span title='the lowest and highest score in this page'>(this page's range)</span></span>" +
      "<span><svg width='14' height='14'><rect x='2' y='2' width='10' height='10' fill='#ccc' stroke='var(--right)' stroke-width='2.5'/></svg> answer right</span>" +
      "<span><svg width='14' height='14'><rect x='2' y='2' width='10' height='10' fill='#ccc' stroke='var(--wrong)' stroke-width='2.5'/></svg> answer wrong</span>" +
      "<span><svg width='14' height='14'><circle cx='7' cy='7' r='5' fill='#888' opacity='0.35'/></svg> pruned (0 children)</span>" +
      "<span><svg width='14' height='14'><circle cx='7' cy='7' r='5' fill='#ccc' stroke='#333' stroke-dasharray='3 2'/></svg> out of token budget</span>" +
      "<span><svg width='14' height='14'><circle cx='7' cy='7' r='5' fill='#ccc' stroke='#333' stroke-dasharray='1 2'/></svg> ended its turn, no answer</span>" +
      "<span><svg width='24' height='8'><line x1='0' y1='4' x2='24' y2='4' stroke='var(--bon)' stroke-width='3'/></svg> best-of-N (last) pick</span>" +
      "<span><svg width='24' height='8'><line x1='0' y1='4' x2='24' y2='4' stroke='var(--wmv)' stroke-width='3'/></svg> weighted vote (last) pick</span>" +
      "<span>number in a node: children allocated</span></div>";
  }
  function pickText(t, key, name) {
    const p = t.picks[key];
    let s = "<span><b>" + name + ":</b> " + (p.node === null ? "nothing picked " + mark(false) :
      esc(p.answer) + " " + mark(p.correct) + " <span class='na'>(node " + p.node + ")</span>");
    if (p.votes && p.votes.length) {
      const top = p.votes.slice().sort((a, b) => b[1] - a[1]).slice(0, 4);
      s += " <span class='na'>votes: " + top.map((v) => esc(v[0]) + " " + v[1].toFixed(2)).join(", ") + (p.votes.length > 4 ? ", …" : "") + "</span>";
    }
    return s + "</span>";
  }
  function facts(t) {
    const leaves = Object.values(t.leaves);
    let s = int(t.n) + " nodes · depth " + t.maxDepth + " · KV " + int(t.kv_derived) + " · tokens " +
      int(t.nodes.tokens.slice(1).reduce((a, b) => a + b, 0)) + " · " + leaves.length + " leaves, " +
      leaves.filter((l) => l.correct).length + " right";
    if (t.kv_recorded !== null && t.kv_recorded !== undefined && t.kv_recorded !== t.kv_derived)
      s += " <span class='warn'>(the run recorded KV " + int(t.kv_recorded) + ": this tree's selections are not those rebuilt here)</span>";
    return s;
  }
  function drawTree(t, r, domain) {
    const rows = [];
    for (const v of t.order) (rows[t.nodes.depth[v]] = rows[t.nodes.depth[v]] || []).push(v);
    const widest = Math.max(...rows.map((row) => row.length));
    const col = widest > 40 ? 16 : 26, gutter = 128, rowH = 56, top = 16;
    const inner = Math.max(320, widest * col), width = gutter + inner + 12, height = top + t.maxDepth * rowH + 40;
    const x = new Array(t.n), y = new Array(t.n);
    rows.forEach((row, d) => row.forEach((v, i) => { x[v] = gutter + (i + 0.5) * inner / row.length; y[v] = top + d * rowH; }));
    const root = svg("svg", { class: "tree", width, height, "data-run": r }, null);
    rows.forEach((row, d) => {
      const s = t.selAt[d];
      const lines = ["depth " + d + " · " + row.length + " node" + (row.length === 1 ? "" : "s")];
      if (s) lines.push(s.candidates.length + " cand. · width left " + s.width_left, "KV " + int(s.kv));
      lines.forEach((text, j) => { svg("text", { x: 4, y: top + d * rowH - 4 + j * 12, class: "gutter" }, root).textContent = text; });
    });
    const edges = svg("g", {}, root);
    for (let v = 1; v < t.n; v++) {
      const p = t.nodes.parent[v], my = (y[p] + y[v]) / 2;
      const d = "M" + x[p] + "," + y[p] + " C" + x[p] + "," + my + " " + x[v] + "," + my + " " + x[v] + "," + y[v];
      const bon = t.onPick.bon.has(v), wmv = t.onPick.wmv.has(v);
      if (bon && wmv) svg("path", { d, class: "edge bon", "stroke-width": 6 }, edges);
      svg("path", { d, class: "edge" + (wmv ? " wmv" : bon ? " bon" : ""), "data-child": v }, edges);
    }
    const nodes = svg("g", {}, root);
    const crowded = widest > 24;
    for (const v of t.order) {
      const st = t.nodes.state[v];
      const g = svg("g", { class: "node", "data-run": r, "data-id": v }, nodes);
      const fill = v === 0 ? "#c9ced4" : colour((t.nodes.score[v] - domain[0]) / (domain[1] - domain[0] || 1));
      const leaf = t.leaves[v];
      let shape;
      if (st === "answer") {
        shape = svg("rect", { x: x[v] - 7, y: y[v] - 7, width: 14, height: 14, fill, class: "answer " + (leaf.correct ? "right" : "wrong") }, g);
      } else {
        shape = svg("circle", { cx: x[v], cy: y[v], r: v === 0 ? 9 : 8, fill, class: st }, g);
      }
      shape.classList.add("shape");
      const k = t.allocOf[v];
      if (k !== undefined) {
        const t01 = v === 0 ? 1 : (t.nodes.score[v] - domain[0]) / (domain[1] - domain[0] || 1);
        svg("text", { x: x[v], y: y[v] + 3, "text-anchor": "middle", class: "alloc", fill: t01 > 0.62 ? "#111" : "#fff" }, g).textContent = k;
      }
      if (leaf) {
        const label = (crowded ? "" : String(leaf.answer).slice(0, 7) + " ") + (leaf.correct ? "✓" : "✗");
        svg("text", { x: x[v], y: y[v] + 19, "text-anchor": "middle", class: "ans " + (leaf.correct ? "right" : "wrong") }, g).textContent = label;
      }
      svg("title", {}, g).textContent = "node " + v + " · depth " + t.nodes.depth[v] + (v ? " · score " + score(t.nodes.score[v]) : "") +
        " · " + t.nodes.tokens[v] + " tokens" + (k !== undefined ? " · " + k + " children" : "") + (leaf ? " · answer " + leaf.answer : "");
    }
    root.addEventListener("click", (e) => {
      const g = e.target.closest("g.node");
      if (g) selectNode(Number(g.dataset.run), Number(g.dataset.id));
    });
    return root;
  }
  function depthTable(t) {
    let total = 0;
    const rows = t.selections.map((s) => {
      total += s.kv;
      const kept = s.allocation.filter((k) => k > 0).length;
      return "<tr><td class='n'>" + s.depth + "</td><td class='n'>" + s.candidates.length + "</td><td class='n'>" + kept +
        "</td><td class='n'>" + s.width_left + "</td><td class='alloc' title='children of each candidate, in node order'>" +
        s.allocation.join(" ") + "</td><td class='n'>" + int(s.kv) + "</td></tr>";
    });
    return "<table class='depths numbers'><thead><tr><th class='n'>depth</th><th class='n'>candidates</th>" +
      "<th class='n'>kept</th><th class='n'>width left</th><th>allocation</th><th class='n'>KV</th></tr></thead><tbody>" +
      rows.join("") + "<tr><td colspan='5'><b>all selections</b></td><td class='n'><b>" + int(total) + "</b></td></tr></tbody></table>";
  }
  function compareBlock(a, b) {
    const depths = Math.max(a.selections.length, b.selections.length);
    const stat = (label, f, fmt) => "<tr><td>" + label + "</td><td class='n'>" + fmt(f(a)) + "</td><td class='n'>" + fmt(f(b)) + "</td></tr>";
    const leaves = (t) => Object.values(t.leaves);
    const tokens = (t) => t.nodes.tokens.slice(1).reduce((x, y) => x + y, 0);
    let s = "<div class='compare'><h3>A vs B <span class='na' style='font-weight:400'>(bars: <span class='swatch' style='background:" +
      BAR[0] + "'></span>A <span class='swatch' style='background:" + BAR[1] + "'></span>B)</span></h3><div style='display:flex;gap:24px;flex-wrap:wrap'>" +
      "<table class='numbers'><thead><tr><th></th><th class='n'>A</th><th class='n'>B</th></tr></thead><tbody>" +
      stat("nodes", (t) => t.n, int) + stat("depth", (t) => t.maxDepth, int) + stat("KV cache", (t) => t.kv_derived, int) +
      stat("tokens generated", tokens, int) + stat("leaves", (t) => leaves(t).length, int) +
      stat("right leaves", (t) => leaves(t).filter((l) => l.correct).length, int) +
      stat("best-of-N (last)", (t) => t.picks.bon, (p) => esc(p.answer === null ? "–" : p.answer) + " " + mark(p.correct)) +
      stat("weighted vote (last)", (t) => t.picks.wmv, (p) => esc(p.answer === null ? "–" : p.answer) + " " + mark(p.correct)) +
      "</tbody></table><table class='numbers'><thead><tr><th class='n'>depth</th><th class='n'>cand. A</th><th class='n'>cand. B</th>" +
      "<th class='n'>KV A</th><th class='n'>KV B</th><th class='n'>B/A</th><th>KV per depth</th></tr></thead><tbody>";
    let max = 1;
    for (const t of [a, b]) for (const sel of t.selections) max = Math.max(max, sel.kv);
    for (let d = 0; d < depths; d++) {
      const sa = a.selections[d], sb = b.selections[d];
      const bar = (sel, c) => "<div style='height:5px;margin:1px 0;background:" + c + ";width:" + (sel ? 160 * sel.kv / max : 0) + "px'></div>";
      s += "<tr><td class='n'>" + d + "</td><td class='n'>" + (sa ? sa.candidates.length : "–") + "</td><td class='n'>" +
        (sb ? sb.candidates.length : "–") + "</td><td class='n'>" + (sa ? int(sa.kv) : "–") + "</td><td class='n'>" +
        (sb ? int(sb.kv) : "–") + "</td><td class='n'>" + (sa && sb && sa.kv ? (sb.kv / sa.kv).toFixed(2) : "–") +
        "</td><td>" + bar(sa, BAR[0]) + bar(sb, BAR[1]) + "</td></tr>";
    }
    return s + "</tbody></table></div></div>";
  }
  function showProblem(k) {
    const t0 = performance.now();
    state.current = k;
    state.selected = null;
    const p = DATA.problems[k];
    document.querySelectorAll("#index tbody tr.current").forEach((tr) => tr.classList.remove("current"));
    const tr = document.querySelector("#index tbody tr[data-k='" + k + "']");
    if (tr) tr.classList.add("current");
    history.replaceState(null, "", "#p=" + encodeURIComponent(p.key));
    const trees = RUNS.map((_, r) => tree(r, k));
    const present = trees.filter((t) => t);
    const first = present[0];
    const domain = DATA.score_range;
    const pane = document.getElementById("problem");
    pane.innerHTML = "<h2>Problem " + esc(p.id) + "</h2><div class='question'>" + esc(first.question) + "</div>" +
      "<div>ground truth: <b>" + esc(first.ground_truth) + "</b>" + (String(first.ground_truth_raw) !== String(first.ground_truth) ?
        " <span class='na'>(" + esc(first.ground_truth_raw) + ")</span>" : "") + "</div>" + legend(domain) +
      "<div class='runs-grid' style='--cols:" + RUNS.length + "'></div>";
    const grid = pane.querySelector(".runs-grid");
    trees.forEach((t, r) => {
      const colEl = document.createElement("div");
      colEl.className = "run-col";
      colEl.dataset.run = r;
      grid.appendChild(colEl);
      const title = "<h3>" + (COMPARE ? LETTERS[r] + ": " : "") + esc(RUNS[r].label) + "</h3>";
      if (!t) { colEl.innerHTML = title + "<p class='hint'>not in this run</p>"; return; }
      colEl.innerHTML = title + "<div class='facts'>" + facts(t) + "</div><div class='picks'>" +
        pickText(t, "bon", "best-of-N (last)") + pickText(t, "wmv", "weighted vote (last)") + "</div>";
      const scroll = document.createElement("div");
      scroll.className = "tree-scroll";
      scroll.appendChild(drawTree(t, r, domain));
      colEl.appendChild(scroll);
      colEl.insertAdjacentHTML("beforeend", depthTable(t));
    });
    if (COMPARE && trees[0] && trees[1]) pane.insertAdjacentHTML("beforeend", compareBlock(trees[0], trees[1]));
    pane.insertAdjacentHTML("beforeend", "<div id='detail'></div>");
    pane.querySelector(".legend").insertAdjacentHTML("beforeend", "<span>click a node: its step text, score, tokens and path</span>");
    document.body.dataset.problemMs = (performance.now() - t0).toFixed(1);
  }
  function selectNode(r, id) {
    const t = tree(r, state.current);
    state.selected = { r, id };
    document.querySelectorAll("svg.tree .selected").forEach((el) => el.classList.remove("selected"));
    document.querySelectorAll("svg.tree .selpath").forEach((el) => el.classList.remove("selpath"));
    const svgEl = document.querySelector("svg.tree[data-run='" + r + "']");
    const path = t.pathOf(id);
    svgEl.querySelector("g.node[data-id='" + id + "'] .shape").classList.add("selected");
    for (const v of path) { const e = svgEl.querySelector("path[data-child='" + v + "']"); if (e) e.classList.add("selpath"); }
    const st = t.nodes.state[id], leaf = t.leaves[id], k = t.allocOf[id];
    const picked = ["bon", "wmv"].filter((key) => t.picks[key].node === id)
      .map((key) => key === "bon" ? "best-of-N (last)" : "weighted vote (last)");
    let s = "<button class='close' title='close'>×</button><h3>" + (COMPARE ? LETTERS[r] + ": " : "") + esc(RUNS[r].label) + " · node " + id + " · depth " + t.nodes.depth[id] + "</h3>" +
      "<div class='meta'>" + (id ? "score <b>" + score(t.nodes.score[id]) + "</b> · " : "") + "step tokens <b>" + t.nodes.tokens[id] +
      "</b> · tokens from the root <b>" + int(t.nodes.cum_tokens[id]) + "</b> · " + esc(STATE_TEXT[st]) +
      (k !== undefined ? " · " + k + " children allocated" : "") + "</div>";
    if (leaf) s += "<div>answer <b>" + esc(leaf.answer) + "</b> " + mark(leaf.correct) + " · trajectory " + leaf.trajectory +
      " of answers.json" + (picked.length ? " · <b>picked by " + picked.join(" and ") + "</b>" : "") + "</div>";
    s += "<details><summary>prompt (" + int(t.nodes.tokens[0]) + " tokens)</summary><pre>" + esc(t.nodes.step[0]) + "</pre></details><ol>";
    for (const v of path.slice(1)) {
      s += "<li" + (v === id ? " class='current'" : "") + "><span class='meta'>node " + v + " · score " + score(t.nodes.score[v]) +
        " · " + t.nodes.tokens[v] + " tokens</span><div class='steptext'>" + esc(t.nodes.step[v]) + "</div></li>";
    }
    const detail = document.getElementById("detail");
    detail.innerHTML = s + "</ol>";
    detail.querySelector(".close").addEventListener("click", () => { detail.innerHTML = ""; });
  }

  // -- start --------------------------------------------------------------------------
  renderRuns();
  document.documentElement.style.setProperty("--header-h", document.getElementById("top").offsetHeight + "px");
  setupIndex();
  const list = renderIndex();
  const fromHash = decodeURIComponent((location.hash.match(/^#p=(.*)$/) || [])[1] || "");
  const wanted = fromHash || DATA.initial;
  let start = DATA.problems.findIndex((p) => p.key === wanted);
  if (start < 0 && list.length) start = list[0][1];
  if (start >= 0) showProblem(start);
  window.etsView = { showProblem, selectNode, renderIndex, state };
  document.body.dataset.loadMs = (performance.now() - T0).toFixed(1);  // this script
  document.body.dataset.readyMs = performance.now().toFixed(1);  // since the page was asked for
  document.body.dataset.ready = "1";
})();
