// report.html of `python -m rewards.score`: everything is drawn from the JSON in #data, offline.
// The filters (task, error) apply to every section, so a histogram or a best/worst list can be read
// for one task or for the rows without errors.
"use strict";

const DATA = JSON.parse(document.getElementById("data").textContent);
const COLUMNS = DATA.columns;  // reward names, then "total"
const TOP_N = 5;
const BINS = 20;

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "onclick" || key === "onchange") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

const isNumber = v => typeof v === "number" && isFinite(v);
const fmt = v => (isNumber(v) ? v.toFixed(4) : "–");
const mean = vs => (vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : null);
const valuesOf = (rows, name) => rows.map(r => r.scores[name]).filter(isNumber);

function filtered() {
  const task = document.getElementById("filter-task").value;
  const error = document.getElementById("filter-error").value;
  return DATA.rows.filter(r => {
    if (task !== "*" && (r.task || "(none)") !== task) return false;
    if (error === "none") return !r.error;
    if (error === "any") return !!r.error;
    return error === "*" || r.error_kind === error;
  });
}

function fillFilters() {
  const count = (key) => {
    const counts = new Map();
    DATA.rows.forEach(r => { const k = key(r); if (k !== null) counts.set(k, (counts.get(k) || 0) + 1); });
    return [...counts.entries()].sort((a, b) => b[1] - a[1]);
  };
  const task = document.getElementById("filter-task");
  task.append(el("option", {value: "*", text: `all tasks (${DATA.rows.length})`}));
  count(r => r.task || "(none)").forEach(([k, n]) => task.append(el("option", {value: k, text: `${k} (${n})`})));
  const error = document.getElementById("filter-error");
  const errors = DATA.rows.filter(r => r.error).length;
  error.append(el("option", {value: "*", text: "all rows"}),
               el("option", {value: "none", text: `without error (${DATA.rows.length - errors})`}),
               el("option", {value: "any", text: `with an error (${errors})`}));
  count(r => r.error_kind || null).forEach(([k, n]) =>
    error.append(el("option", {value: k, text: `${k.slice(0, 90)} (${n})`})));
  task.onchange = render;
  error.onchange = render;
}

function histogram(name, values) {
  const width = 240, height = 80, pad = 14;
  const svg = el("svg:svg", {width, height: height + 2 * pad, class: "hist", "data-reward": name});
  if (!values.length) {
    svg.append(el("svg:text", {x: 4, y: height / 2, text: "no values"}));
    return svg;
  }
  const lo = values.reduce((a, b) => Math.min(a, b)), hi = values.reduce((a, b) => Math.max(a, b));
  const counts = new Array(BINS).fill(0);
  values.forEach(v => { counts[hi > lo ? Math.min(BINS - 1, Math.floor((v - lo) / (hi - lo) * BINS)) : 0]++; });
  const top = counts.reduce((a, b) => Math.max(a, b)), barWidth = width / BINS;
  counts.forEach((c, i) => {
    const h = c / top * height;
    const from = lo + (hi - lo) * i / BINS, to = lo + (hi - lo) * (i + 1) / BINS;
    svg.append(el("svg:rect", {x: i * barWidth + 0.5, y: pad + height - h, width: barWidth - 1, height: h},
                  el("svg:title", {text: `${c} rows in [${fmt(from)}, ${fmt(to)}]`})));
  });
  const m = mean(values), x = hi > lo ? (m - lo) / (hi - lo) * width : width / 2;
  svg.append(el("svg:line", {x1: 0, x2: width, y1: pad + height, y2: pad + height, class: "axis"}),
             el("svg:line", {x1: x, x2: x, y1: pad - 2, y2: pad + height, class: "mean"},
                el("svg:title", {text: `mean ${fmt(m)}`})),
             el("svg:text", {x: 0, y: height + 2 * pad - 2, text: fmt(lo)}),
             el("svg:text", {x: width, y: height + 2 * pad - 2, "text-anchor": "end", text: fmt(hi)}),
             el("svg:text", {x: width, y: pad - 3, "text-anchor": "end", text: `max ${top}`}));
  return svg;
}

function renderHistograms(rows) {
  const box = document.getElementById("histograms");
  box.replaceChildren(...COLUMNS.map(name => {
    const values = valuesOf(rows, name);
    return el("figure", {}, histogram(name, values),
              el("figcaption", {}, el("b", {text: name}), ` n=${values.length} mean=${fmt(mean(values))}`));
  }));
}

function table(header, body) {
  return el("table", {}, el("thead", {}, el("tr", {}, ...header.map(h => el("th", {text: h})))),
            el("tbody", {}, ...body.map(cells => el("tr", {}, ...cells))));
}

function renderTaskMeans(rows) {
  const tasks = [...new Set(rows.map(r => r.task || "(none)"))].sort();
  const body = tasks.map(task => {
    const members = rows.filter(r => (r.task || "(none)") === task);
    return [el("td", {text: task}), el("td", {class: "n", text: members.length}),
            ...COLUMNS.map(name => {
              const values = valuesOf(members, name);
              return el("td", {class: "n", title: `${values.length} values`, text: fmt(mean(values))});
            })];
  });
  document.getElementById("task-means").replaceChildren(table(["task", "rows", ...COLUMNS], body));
}

function renderGates(rows) {
  const rewards = COLUMNS.filter(c => c !== "total");
  const gated = rows.filter(r => r.gate);
  const tasks = [...new Set(gated.map(r => r.gate.task))].sort();
  const body = tasks.map(task => {
    const members = gated.filter(r => r.gate.task === task);
    const reasons = new Map();
    members.forEach(r => (r.gate.reasons.length ? r.gate.reasons : ["no rule matched: the default rewards"])
      .forEach(why => reasons.set(why, (reasons.get(why) || 0) + 1)));
    const why = [...reasons.entries()].sort((a, b) => b[1] - a[1])
      .map(([text, n]) => el("div", {text: `${n} × ${text}`}));
    return [el("td", {text: task}), el("td", {class: "n", text: members.length}),
            ...rewards.map(name => el("td", {class: "n", text: members.filter(r => name in r.gate.weights).length})),
            el("td", {class: "p"}, ...why)];
  });
  const header = ["task", "rows", ...rewards.map(n => `→ ${n}`), "why (rows × reason)"];
  document.getElementById("gates").replaceChildren(table(header, body));
}

function thumb(row, value) {
  const image = row.thumb ? el("img", {src: "data:image/jpeg;base64," + row.thumb, alt: row.image})
                          : el("div", {class: "missing", text: "no image"});
  return el("figure", {class: "thumb", title: row.prompt || ""}, image,
            el("figcaption", {}, el("b", {text: fmt(value)}), " ", el("small", {text: row.image})));
}

function renderExtremes(rows) {
  const box = document.getElementById("extremes");
  box.replaceChildren(...COLUMNS.map(name => {
    const scored = rows.filter(r => isNumber(r.scores[name])).sort((a, b) => b.scores[name] - a.scores[name]);
    const best = scored.slice(0, TOP_N), worst = scored.slice(-TOP_N).reverse();
    return el("div", {class: "extreme", "data-reward": name}, el("h4", {text: name}),
              el("div", {class: "strip best"}, el("span", {class: "label", text: "best"}),
                 ...best.map(r => thumb(r, r.scores[name]))),
              el("div", {class: "strip worst"}, el("span", {class: "label", text: "worst"}),
                 ...worst.map(r => thumb(r, r.scores[name]))));
  }));
}

function detailsText(details) {
  return Object.entries(details || {}).flatMap(([name, values]) => Object.entries(values).map(([key, value]) =>
    `${name}.${key}: ${typeof value === "number" ? value.toPrecision(4) : typeof value === "string" ? value
                                                                          : JSON.stringify(value)}`)).join("\n");
}

function sortBy(th) {
  const body = th.closest("table").tBodies[0], col = th.cellIndex;
  const dir = th.dataset.dir === "asc" ? "desc" : "asc";
  th.dataset.dir = dir;
  const value = r => { const c = r.cells[col];
    return c.dataset.v === undefined ? c.textContent : (c.dataset.v === "" ? null : parseFloat(c.dataset.v)); };
  const sorted = [...body.rows].sort((a, b) => { const x = value(a), y = value(b);
    if (x === null || y === null) return (x === null) - (y === null);
    return (x < y ? -1 : x > y ? 1 : 0) * (dir === "asc" ? 1 : -1); });
  sorted.forEach(r => body.appendChild(r));
}

function renderRows(rows) {
  const header = ["#", "image", "prompt / target text", "task", ...COLUMNS, "details", "error"];
  const body = rows.map(r => {
    const prompt = el("td", {class: "p", text: r.prompt || ""});
    (r.text || []).forEach(t => prompt.append(el("br"), el("b", {text: "text: "}), t));
    return [el("td", {class: "n", "data-v": r.i, text: r.i}),
            el("td", {}, ...(r.thumb ? [el("img", {src: "data:image/jpeg;base64," + r.thumb}), el("br")] : []),
               el("small", {text: r.image})),
            prompt, el("td", {text: r.task || ""}),
            ...COLUMNS.map(name => el("td", {class: "n", "data-v": isNumber(r.scores[name]) ? r.scores[name] : "",
                                             text: fmt(r.scores[name])})),
            el("td", {class: "p", text: detailsText(r.details)}), el("td", {class: "e", text: r.error || ""})];
  });
  const t = table(header, body);
  [...t.tHead.rows[0].cells].forEach(th => { th.onclick = () => sortBy(th); th.className = "sort"; });
  document.getElementById("rows").replaceChildren(t);
}

function render() {
  const rows = filtered();
  const errors = rows.filter(r => r.error).length;
  document.getElementById("counts").textContent =
    `${rows.length} of ${DATA.rows.length} images shown, ${errors} of them with errors.`;
  renderHistograms(rows);
  renderTaskMeans(rows);
  renderGates(rows);
  renderExtremes(rows);
  renderRows(rows);
}

fillFilters();
render();
