// The live page of an hca run: regions drawn from the frames of /ws, the organism in
// a clicked cell, people's questions and payments (POST /api/ask, /api/pay).
"use strict";

const secret = new URLSearchParams(location.search).get("secret") || "";
const LOGIC = ["NOT", "NAND", "AND", "ORN", "OR", "ANDN", "NOR", "XOR", "EQU"];
const FUNCTIONS = ["identity", "negate", "square", "abs", "sine", "step"];
const GAP = 3; // pixels between panels
const ROWS = 8; // cells of a question listed
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

let world = null;
let frame = null;
let history = [];
const views = {}; // region name -> {canvas, scale, ...}
const chosen = new Map(); // "region:cell" -> {region, cell}
let shownCell = null; // {region, cell}

const $ = (id) => document.getElementById(id);

function message(text, isError) {
  const div = document.createElement("div");
  div.textContent = text;
  if (isError) div.className = "error";
  $("messages").prepend(div);
  while ($("messages").children.length > 6) $("messages").lastChild.remove();
}

// -- layout: a panel per outer cell, each a map over the last two axes (like hca render)

function unravel(index, shape) {
  const out = new Array(shape.length);
  for (let k = shape.length - 1; k >= 0; k--) {
    out[k] = index % shape[k];
    index = Math.floor(index / shape[k]);
  }
  return out;
}

function ravel(coords, shape) {
  let index = 0;
  for (let k = 0; k < shape.length; k++) index = index * shape[k] + coords[k];
  return index;
}

function place(view, cell) {
  // Cell index -> pixel (x, y) of its square's corner.
  const r = view.region, shape = r.shape;
  const c = unravel(cell, shape);
  const n = shape.length;
  const panel = n > 2 ? ravel(c.slice(0, n - 2), shape.slice(0, n - 2)) : 0;
  const row = n >= 2 ? c[n - 2] : 0, col = c[n - 1];
  const [ph, pw] = r.panel, across = r.panels[1];
  const pr = Math.floor(panel / across), pc = panel % across;
  return [pc * (pw * view.scale + GAP) + col * view.scale, pr * (ph * view.scale + GAP) + row * view.scale];
}

function cellAt(view, x, y) {
  const r = view.region, shape = r.shape, n = shape.length;
  const [ph, pw] = r.panel, [down, across] = r.panels;
  const bw = pw * view.scale + GAP, bh = ph * view.scale + GAP;
  const pc = Math.floor(x / bw), pr = Math.floor(y / bh);
  const col = Math.floor((x - pc * bw) / view.scale), row = Math.floor((y - pr * bh) / view.scale);
  if (pc >= across || pr >= down || col >= pw || row >= ph || col < 0 || row < 0) return null;
  const outer = n > 2 ? unravel(pr * across + pc, shape.slice(0, n - 2)) : [];
  const coords = n === 1 ? [col] : outer.concat([row, col]);
  return ravel(coords, shape);
}

function setUp(description) {
  world = description;
  $("title").textContent = `hca: ${world.name}`;
  document.title = `hca live: ${world.name}`;
  const holder = $("regions");
  holder.innerHTML = "";
  for (const [name, region] of Object.entries(world.regions)) {
    const box = document.createElement("div");
    box.className = "region";
    const title = document.createElement("h2");
    const kind = region.people ? ", interactive: people ask and pay here" : "";
    title.textContent = `${name}: ${region.shape.join(" x ")} (${region.axes.join(", ")})${kind}`;
    box.appendChild(title);
    const [ph, pw] = region.panel, [down, across] = region.panels;
    const scale = Math.max(2, Math.min(24, Math.floor(Math.min(760 / (across * pw), 420 / (down * ph)))));
    const canvas = document.createElement("canvas");
    canvas.width = across * (pw * scale + GAP) - GAP;
    canvas.height = down * (ph * scale + GAP) - GAP;
    canvas.dataset.region = name;
    const view = { name, region, canvas, scale, context: canvas.getContext("2d") };
    canvas.addEventListener("click", (event) => clicked(view, event));
    box.appendChild(canvas);
    if (!region.drawn) {
      const note = document.createElement("p");
      note.textContent = `${region.cells.toLocaleString()} cells: too many to draw live`;
      box.appendChild(note);
    }
    holder.appendChild(box);
    views[name] = view;
  }
  const interactive = Object.entries(world.regions).filter(([, r]) => r.people);
  $("people-card").hidden = interactive.length === 0;
  $("ask-region").innerHTML = interactive.map(([n]) => `<option>${n}</option>`).join("");
  if (interactive.length) $("ask-ticks").value = interactive[0][1].people.ticks;
  history = description.history || [];
  kindChanged();
}

// -- drawing -------------------------------------------------------------------------

function energyColour(value, top) {
  // viridis-like ramp on log energy
  const t = Math.max(0, Math.min(1, Math.log1p(value) / Math.log1p(top)));
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const p = t * (stops.length - 1), i = Math.min(Math.floor(p), stops.length - 2), f = p - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

function lineageColour(founder) {
  const hue = (founder * 137.508) % 360;
  return `hsl(${hue.toFixed(0)},70%,${45 + (founder % 3) * 8}%)`;
}

function draw() {
  if (!world || !frame) return;
  const colourBy = $("colour").value;
  for (const [name, view] of Object.entries(views)) {
    const data = frame.regions[name];
    const ctx = view.context, s = view.scale;
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, view.canvas.width, view.canvas.height);
    if (!data || !view.region.drawn) continue;
    const values = data.energy || data.free;
    if (!values) continue;
    let top = 1;
    for (const v of values) if (v > top) top = v;
    for (let cell = 0; cell < values.length; cell++) {
      const [x, y] = place(view, cell);
      const v = values[cell];
      if (data.energy && v < 0) ctx.fillStyle = "#c8c8c8";
      else if (data.energy && colourBy === "lineage") ctx.fillStyle = lineageColour(data.lineage[cell]);
      else ctx.fillStyle = energyColour(v, top);
      ctx.fillRect(x, y, s, s);
    }
    // People's open questions (red) and the cells chosen for the next one (white).
    ctx.lineWidth = Math.max(1, s / 8);
    for (const q of frame.questions || []) {
      if (q.region !== name || !q.open) continue;
      ctx.strokeStyle = "#e00";
      for (const c of q.cells) { const [x, y] = place(view, c.cell); ctx.strokeRect(x + 0.5, y + 0.5, s - 1, s - 1); }
    }
    ctx.strokeStyle = "#fff";
    for (const pick of chosen.values()) {
      if (pick.region !== name) continue;
      const [x, y] = place(view, pick.cell);
      ctx.strokeRect(x + 1.5, y + 1.5, s - 3, s - 3);
    }
    if (shownCell && shownCell.region === name) {
      const [x, y] = place(view, shownCell.cell);
      ctx.strokeStyle = "#000";
      ctx.strokeRect(x + 0.5, y + 0.5, s - 1, s - 1);
    }
  }
}

function chart(canvas, series, title) {
  const ctx = canvas.getContext("2d"), w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#222";
  ctx.font = "11px system-ui";
  ctx.fillText(title, 4, 11);
  const points = history;
  if (points.length < 2) return;
  let lo = Infinity, hi = -Infinity;
  for (const s of series) for (const p of points) { const v = s.get(p); if (v < lo) lo = v; if (v > hi) hi = v; }
  if (hi === lo) hi = lo + 1;
  const t0 = points[0].tick, t1 = points[points.length - 1].tick || 1;
  const X = (t) => 4 + ((t - t0) / Math.max(t1 - t0, 1)) * (w - 8);
  const Y = (v) => h - 14 - ((v - lo) / (hi - lo)) * (h - 32);
  series.forEach((s, k) => {
    ctx.strokeStyle = COLOURS[k % COLOURS.length];
    ctx.beginPath();
    points.forEach((p, i) => (i ? ctx.lineTo(X(p.tick), Y(s.get(p))) : ctx.moveTo(X(p.tick), Y(s.get(p)))));
    ctx.stroke();
    ctx.fillStyle = ctx.strokeStyle;
    ctx.fillText(`${s.label} ${Math.round(s.get(points[points.length - 1])).toLocaleString()}`, 4 + 120 * k, h - 2);
  });
  ctx.fillStyle = "#666";
  ctx.fillText(`ticks ${t0}..${t1}`, w - 110, 11);
}

function drawCharts() {
  const regions = world ? Object.keys(world.regions).filter((n) => world.regions[n].life) : [];
  chart($("chart-population"), regions.map((n) => ({ label: n, get: (p) => p.population[n] || 0 })),
    "organisms per region");
  chart($("chart-ledger"), [
    { label: "total", get: (p) => p.total },
    { label: "paid by people", get: (p) => p.people },
  ], "world ledger (quanta)");
}

function showFrame(next) {
  frame = next;
  $("tick").textContent = frame.tick.toLocaleString();
  $("rate").textContent = frame.rate ? frame.rate.toFixed(0) : "-";
  const population = Object.values(frame.regions).reduce((a, r) => a + (r.population || 0), 0);
  $("population").textContent = population.toLocaleString();
  $("total").textContent = frame.ledger.total.toLocaleString();
  $("balanced").textContent = frame.ledger.balanced ? "balanced" : "NOT BALANCED";
  $("paid").textContent = (frame.ledger.people || 0).toLocaleString();
  if (frame.finished !== null && frame.finished !== undefined) $("status").textContent = `run ended at tick ${frame.finished}`;
  history.push(frame.point);
  if (history.length > 2000) history.shift();
  draw();
  drawCharts();
  showPeople();
  if (shownCell) showCell(shownCell.region, shownCell.cell, false);
}

// -- organisms -----------------------------------------------------------------------

async function showCell(region, cell, scroll) {
  const response = await fetch(`/api/cell?region=${encodeURIComponent(region)}&cell=${cell}`);
  const info = await response.json();
  if (!response.ok) { message(info.error, true); return; }
  const rows = [["region", `${info.region} (${info.at.join(", ")})`], ["tick", info.tick], ["free energy", info.free]];
  if (info.occupied === false) rows.push(["organism", "none (empty cell)"]);
  if (info.occupied) {
    rows.push(["id", info.id], ["parent", info.parent || "founder"], ["lineage", `founder of cell ${info.lineage}`],
      ["generation", info.generation], ["age", info.age], ["energy", info.energy]);
  }
  if ("answer" in info) {
    rows.push(["question open", info.asked ? "yes" : "no"],
      ["last answer", info.answer === null ? "-" : `${info.answer.toFixed(3)} by ${info.answered_by}`]);
  }
  let html = "<table>" + rows.map(([k, v]) => `<tr><th>${k}</th><td>${v}</td></tr>`).join("") + "</table>";
  if (info.answers.length) {
    html += "<h3>Recent answers</h3><table><tr><th>tick</th><th>question</th><th>organism</th><th>answer</th><th></th></tr>" +
      info.answers.slice().reverse().map((a) => `<tr><td>${a.tick}</td><td>#${a.question}</td><td>${a.organism}</td>` +
        `<td>${a.answer.toFixed(3)}</td><td>${verdict(a.right)}</td></tr>`).join("") + "</table>";
  }
  if (info.occupied && world.regions[region].people) {
    html += `<p><label>pay <input id="pay-tokens" type="number" min="1" value="50" size="6"> tokens</label>
      <button id="pay-organism">Pay this organism</button></p>`;
  }
  $("organism").innerHTML = html;
  const button = $("pay-organism");
  if (button) button.onclick = () => pay(region, info.at, Number($("pay-tokens").value), null);
}

function clicked(view, event) {
  const rect = view.canvas.getBoundingClientRect();
  const cell = cellAt(view, event.clientX - rect.left, event.clientY - rect.top);
  if (cell === null) return;
  shownCell = { region: view.name, cell };
  if (view.region.people) {
    const key = `${view.name}:${cell}`;
    if (chosen.has(key)) chosen.delete(key); else chosen.set(key, { region: view.name, cell });
    $("selected").textContent = chosen.size;
  }
  showCell(view.name, cell, true);
  draw();
}

// -- people --------------------------------------------------------------------------

function verdict(right) {
  if (right === true) return '<span class="right">right</span>';
  if (right === false) return '<span class="wrong">wrong</span>';
  return "";
}

let holdQuestions = false;  // the pointer is over the questions' list
let shownQuestions = "";  // the list's HTML as last shown

function showPeople() {
  if (!frame || !frame.people) return;
  const person = $("person").value;
  const me = frame.people.people[person];
  const region = $("ask-region").value;
  const initial = region && world.regions[region].people ? world.regions[region].people.tokens : 0;
  $("tokens").textContent = (me ? me.tokens : initial).toLocaleString();
  // The list holds still while the pointer is over it: rebuilt with every frame, its
  // buttons would be replaced under a person's click.
  if (holdQuestions) return;
  const questions = (frame.questions || []).slice().reverse();
  const html = questions.map((q) => {
    const what = q.kind === "logic" ? q.function : (q.function ? `${q.function}(x)` : `${q.wanted}`);
    const state = q.open ? `open until tick ${q.until}` : "closed";
    // The right answers first, then the others; the first ROWS of them.
    const rank = (c) => (c.right === true ? 0 : c.answer !== null ? 1 : 2);
    const cells = q.cells.slice().sort((a, b) => rank(a) - rank(b)).slice(0, ROWS);
    const answered = q.cells.filter((c) => c.answer !== null).length;
    const rightCount = q.cells.filter((c) => c.right === true).length;
    const more = q.cells.length > ROWS ? `<tr><td colspan="5">... and ${q.cells.length - ROWS} more cells</td></tr>` : "";
    const rows = cells.map((c) => {
      const shown = q.kind === "logic" ? `a=${c.a} b=${c.b}` : `x=${c.x}`;
      const answer = c.replaced ? "asked again" : c.answer === null ? "-" : c.answer.toFixed(3);
      const button = c.answer !== null && c.organism ?
        `<button data-q="${q.question}" data-region="${q.region}" data-at="${c.at.join(",")}" data-tokens="${q.reward}">pay ${q.reward}</button>` : "";
      return `<tr><td>(${c.at.join(",")})</td><td>${shown}</td><td>${answer}</td><td>${verdict(c.right)}</td><td>${button}</td></tr>`;
    }).join("") + more;
    return `<div class="question"><b>#${q.question}</b> ${q.person} asks ${what} in ${q.region}, ${state}, ` +
      `paid ${q.paid}; answered at ${answered} of ${q.cells.length} cells, ${rightCount} right` +
      `<table><tr><th>cell</th><th>shown</th><th>answer</th><th></th><th></th></tr>${rows}</table></div>`;
  }).join("");
  if (html !== shownQuestions) $("questions").innerHTML = shownQuestions = html;
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: { "Content-Type": "application/json", "X-HCA-Secret": secret },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) { message(`${response.status}: ${answer.error}`, true); return null; }
  return answer;
}

async function pay(region, at, tokens, question) {
  const body = { person: $("person").value, region, at, tokens };
  if (question !== null) body.question = question;
  const answer = await post("/api/pay", body);
  if (answer) message(`payment of ${tokens} tokens queued (request ${answer.request})`);
  if (answer) follow(answer.request, (o) => `request ${answer.request}: ${o.paid} tokens paid at tick ${o.tick}`);
}

// A request's outcome, asked for until the run applies or drops it (a run drops what
// is still waiting when it ends): every 300 ms at first, then less often, at least
// every 3 s, since a busy run can take a long time to reach it.
async function follow(request, describe) {
  for (let wait = 300; ; wait = Math.min(wait * 1.5, 3000)) {
    await new Promise((r) => setTimeout(r, wait));
    const response = await fetch(`/api/requests/${request}`);
    if (!response.ok) return;
    const outcome = await response.json();
    if (outcome.status === "applied") { message(describe(outcome)); return; }
    if (outcome.status === "dropped") { message(`request ${request}: ${outcome.why}`, true); return; }
  }
}

function kindChanged() {
  const logic = $("ask-kind").value === "logic";
  $("ask-function").innerHTML = (logic ? LOGIC : ["(wanted)"].concat(FUNCTIONS)).map((f) => `<option>${f}</option>`).join("");
  if (logic) $("ask-function").value = "XOR"; else $("ask-function").value = "sine";
  for (const e of document.querySelectorAll(".logic-only")) e.hidden = !logic;
  for (const e of document.querySelectorAll(".value-only")) e.hidden = logic;
}

async function ask(event) {
  event.preventDefault();
  const region = $("ask-region").value;
  const shape = world.regions[region].shape;
  const cells = [...chosen.values()].filter((p) => p.region === region).map((p) => unravel(p.cell, shape));
  if (!cells.length) { message("choose the question's cells first: click them in the region", true); return; }
  const kind = $("ask-kind").value;
  const body = { person: $("person").value, region, kind, reward: Number($("ask-reward").value),
    ticks: Number($("ask-ticks").value) };
  if (kind === "logic") {
    body.function = $("ask-function").value;
    body.cells = cells.map((at) => ({ at, a: Number($("ask-a").value), b: Number($("ask-b").value) }));
  } else {
    body.cells = cells.map((at) => ({ at, x: Number($("ask-x").value) }));
    if ($("ask-function").value === "(wanted)") body.wanted = Number($("ask-wanted").value);
    else body.function = $("ask-function").value;
  }
  const answer = await post("/api/ask", body);
  if (answer) {
    message(`question queued (request ${answer.request})`);
    follow(answer.request, (o) => `question #${answer.request} posed at tick ${o.tick}`);
    chosen.clear();
    $("selected").textContent = 0;
  }
}

function pickOccupied() {
  const region = $("ask-region").value;
  const data = frame && frame.regions[region];
  if (!data || !data.energy) return;
  const limit = world.regions[region].people.max_cells;
  data.energy.forEach((v, cell) => { if (v >= 0 && chosen.size < limit) chosen.set(`${region}:${cell}`, { region, cell }); });
  $("selected").textContent = chosen.size;
  draw();
}

// -- the stream ----------------------------------------------------------------------

function connect() {
  const socket = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  socket.onopen = () => { $("status").textContent = "live"; $("status").className = "status"; };
  socket.onmessage = (event) => {
    const data = JSON.parse(event.data);
    if (data.type === "world") setUp(data); else if (data.type === "frame") showFrame(data);
  };
  socket.onclose = () => {
    $("status").textContent = "disconnected; retrying";
    $("status").className = "status down";
    setTimeout(connect, 2000);
  };
}

$("colour").addEventListener("change", draw);
$("ask-kind").addEventListener("change", kindChanged);
$("ask-form").addEventListener("submit", ask);
$("clear-cells").addEventListener("click", () => { chosen.clear(); $("selected").textContent = 0; draw(); });
$("pick-occupied").addEventListener("click", pickOccupied);
$("person").addEventListener("change", showPeople);
$("questions").addEventListener("pointerenter", () => { holdQuestions = true; });
$("questions").addEventListener("pointerleave", () => { holdQuestions = false; showPeople(); });
$("questions").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (button) {
    pay(button.dataset.region, button.dataset.at.split(",").map(Number), Number(button.dataset.tokens),
      Number(button.dataset.q));
  }
});
if (!secret) message("no secret in the address: you can watch, not act (open the address hca run printed)", true);
connect();
