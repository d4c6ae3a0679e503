/* /jobs/{id}: status, settings, training curves, log and results of a job. */
"use strict";

(function () {
  const $ = dp.byId;
  const main = document.getElementById("main");
  const jobId = Number(main.dataset.jobId);
  const state = { job: null, logOffset: 0, resultsShown: false, project: null, timer: null };

  function basename(path) {
    const text = String(path || "");
    return text.split(/[\\/]/).pop();
  }

  function number(value) {
    if (typeof value !== "number") return String(value);
    if (Number.isInteger(value)) return String(value);
    return Math.abs(value) >= 1000 || Math.abs(value) < 0.001 ? value.toExponential(3) : value.toFixed(4);
  }

  function facts(list, pairs) {
    dp.clear(list);
    for (const [term, value] of pairs) {
      if (value === null || value === undefined || value === "") continue;
      list.append(dp.el("dt", { text: term }), value instanceof Node ? dp.el("dd", {}, value) : dp.el("dd", { text: String(value) }));
    }
  }

  /* ---------------------------------------------------------------- status */

  function showJob(job) {
    state.job = job;
    $("job-kind").textContent = dp.kindName(job.kind);
    dp.clear($("job-status")).append(dp.statusBadge(job.status));
    main.dataset.status = job.status;
    const project = dp.el("a", { href: "/projects/" + job.project_id, text: state.project ? state.project.name : "#" + job.project_id });
    const pairs = [
      ["Project", project], ["Started by", job.user], ["Model", job.family],
      ["Dataset", job.dataset ? job.dataset + " (#" + job.dataset_id + ")" : null],
      ["Weights", job.weights ? job.weights + " (#" + job.weights_id + ")" : null],
      ["Output weights", job.output_weights_id ? "#" + job.output_weights_id : null],
      ["Created", dp.date(job.created)], ["Started", dp.date(job.started)],
      ["Finished", dp.date(job.finished)],
      ["Run time", job.started ? dp.duration(job.started, job.finished) : null],
      ["Attempts", job.attempts > 1 ? job.attempts : null],
    ];
    if (dp.onSlide(job.kind)) {
      pairs.push(["Viewer", dp.el("a", { href: "/jobs/" + job.id + "/viewer", id: "viewer-link", text: "Open the slide viewer" })]);
    }
    facts($("job-facts"), pairs);
    $("job-progress").value = job.progress || 0;
    $("job-progress").textContent = Math.round((job.progress || 0) * 100) + " %";
    $("job-message").textContent = (job.message || "") + (dp.finished(job.status) ? "" : " (" + Math.round((job.progress || 0) * 100) + " %)");
    const error = $("job-error");
    error.textContent = job.error || "";
    error.classList.toggle("hidden", !job.error);
    $("job-stop").classList.toggle("hidden", dp.finished(job.status));
    showSettings(job);
    showResultFacts(job);
  }

  function showSettings(job) {
    const body = dp.clear(document.querySelector("#settings-table tbody"));
    const settings = job.settings || {};
    const properties = settings.properties || {};
    for (const name of Object.keys(properties)) {
      const value = properties[name];
      const cell = typeof value === "string" && value.includes("\n")
        ? dp.el("td", {}, dp.el("pre", { text: value }))
        : dp.el("td", { text: value === null ? "" : String(value) });
      body.append(dp.el("tr", {}, dp.el("td", { text: name }), cell));
    }
    for (const key of Object.keys(settings)) {
      if (key === "properties" || settings[key] === null || settings[key] === undefined) continue;
      const value = typeof settings[key] === "object" ? JSON.stringify(settings[key]) : String(settings[key]);
      body.append(dp.el("tr", {}, dp.el("td", { text: key }), dp.el("td", { text: value })));
    }
    if (!body.children.length) body.append(dp.el("tr", {}, dp.el("td", { colspan: "2", className: "empty", text: "No settings." })));
  }

  function showResultFacts(job) {
    const result = job.result || {};
    const pairs = [];
    for (const key of Object.keys(result)) {
      const value = result[key];
      if (key === "results" || key === "report" || key === "slide") continue;
      if (value && typeof value === "object" && !Array.isArray(value)) {
        for (const inner of Object.keys(value)) {
          if (/time$/.test(inner)) continue;
          pairs.push([key + ": " + inner, number(value[inner])]);
        }
      } else if (value !== null && value !== undefined) {
        pairs.push([key.replace(/_/g, " "), key === "best_model" ? basename(value) : number(value)]);
      }
    }
    facts($("result-facts"), pairs);
  }

  async function stop() {
    const job = state.job;
    if (!job) return;
    const ok = await dp.confirmDialog("Stop job " + job.id + "?", ["Kind: " + dp.kindName(job.kind), "A stopped job stays in the history as REVOKED."], "Stop");
    if (!ok) return;
    try {
      showJob(await dp.api("POST", "/jobs/" + job.id + "/stop", {}));
    } catch (error) {
      dp.say("job-action-message", error.message, "error");
    }
    refresh();
  }

  /* ---------------------------------------------------------------- curves */

  function groups(series) {
    const found = {};
    for (const name of Object.keys(series)) {
      const match = /^(training|validation|train|val) (.+)$/.exec(name);
      if (!match || /time$/.test(match[2])) continue;
      const base = match[2];
      const purpose = match[1].startsWith("train") ? "training" : "validation";
      (found[base] = found[base] || {})[purpose] = series[name];
    }
    for (const name of Object.keys(series)) {
      const match = /^averaged (.+)$/.exec(name);
      if (match) {
        const base = match[1].replace(/^(validation|training) /, "");
        if (found[base]) found[base]["averaged " + match[1]] = series[name];
      }
    }
    return found;
  }

  async function showCurves() {
    const metrics = await dp.api("GET", "/jobs/" + jobId + "/metrics");
    const card = $("curves-card");
    if (!metrics.epochs.length) {
      if (state.job && state.job.kind === "train") {
        card.classList.remove("hidden");
        const charts = dp.clear($("charts"));
        charts.append(dp.el("p", { className: "hint", text: "The curves appear after the first epoch." }));
      }
      return;
    }
    card.classList.remove("hidden");
    const charts = dp.clear($("charts"));
    const x = metrics.epochs.map((e) => e + 1);
    const found = groups(metrics.series);
    const names = Object.keys(found).sort((a, b) => (a === "loss" ? -1 : b === "loss" ? 1 : a.localeCompare(b)));
    state.charts = [];
    for (const base of names) {
      const canvas = dp.el("canvas", { className: "curve", dataset: { metric: base }, "aria-label": base + " per epoch" });
      charts.append(dp.el("div", { className: "chart" }, canvas));
      const series = Object.keys(found[base]).map((purpose) => ({
        name: purpose, values: found[base][purpose],
        colour: purpose === "training" ? "#2f6db5" : purpose === "validation" ? "#e07b1a" : "#2a9d4b",
      }));
      state.charts.push([canvas, { title: base + " per epoch", x: x, series: series, xLabel: "epoch", yLabel: base }]);
    }
    drawCharts();
    if (!names.length) charts.append(dp.el("p", { className: "hint", text: "No training or validation series: " + Object.keys(metrics.series).join(", ") }));
    main.dataset.curves = String(metrics.epochs.length);
  }

  /* Draw once every canvas is in the page (their widths depend on each other). */
  function drawCharts() {
    for (const [canvas, options] of state.charts || []) dpChart.lineChart(canvas, options);
  }

  window.addEventListener("resize", drawCharts);

  /* ---------------------------------------------------------------- log */

  async function showLog() {
    const answer = await dp.api("GET", "/jobs/" + jobId + "/log?offset=" + state.logOffset);
    if (answer.text) {
      const log = $("job-log");
      const atEnd = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
      log.append(document.createTextNode(answer.text));
      if (atEnd) log.scrollTop = log.scrollHeight;
    }
    state.logOffset = answer.offset;
  }

  /* ---------------------------------------------------------------- results */

  /* Thumbnails of dataset images through the dataset's Deep Zoom tiles: the level whose
     single tile holds the whole image. */
  async function thumbnail(datasetId, index) {
    const base = "/api/v1/datasets/" + datasetId + "/samples/" + index;
    const response = await fetch(base + "/slide.dzi", { credentials: "same-origin" });
    if (!response.ok) return null;
    const xml = new DOMParser().parseFromString(await response.text(), "application/xml");
    const image = xml.documentElement;
    const size = xml.getElementsByTagName("Size")[0];
    if (!size) return null;
    const tile = Number(image.getAttribute("TileSize")) || 254;
    const largest = Math.max(Number(size.getAttribute("Width")), Number(size.getAttribute("Height")));
    const top = Math.ceil(Math.log2(largest));
    const level = Math.max(0, top - Math.max(0, Math.ceil(Math.log2(largest / tile))));
    return base + "/slide_files/" + level + "/0_0." + (image.getAttribute("Format") || "jpeg");
  }

  /* Formats the server's slide reader opens (its Deep Zoom tiles serve them). */
  const SLIDE_FORMATS = /\.(tiff?|svs|ndpi|mrxs|scn|bif|vms|btf)$/i;

  function fileUrl(job, name) {
    return "/api/v1/jobs/" + job.id + "/files/" + String(name).split("/").map(encodeURIComponent).join("/");
  }

  async function sampleIndices(job, entries) {
    if (!job.dataset_id || job.kind !== "inference") return [];
    let samples;
    try {
      const split = (job.settings && job.settings.split) || "test";
      samples = await dp.api("GET", "/datasets/" + job.dataset_id + "/samples?split=" + encodeURIComponent(split));
    } catch (error) {
      return [];
    }
    return entries.map((entry, k) => {
      const name = basename(entry.image);
      if (samples[k] && samples[k].name === name) return samples[k].index;
      const match = samples.find((s) => s.name === name);
      return match ? match.index : null;
    });
  }

  function scoreList(entry, classes) {
    const list = dp.el("ul", { className: "score-list" });
    const scores = Array.isArray(entry.scores) ? entry.scores : [];
    const best = scores.indexOf(Math.max(...scores));
    scores.forEach((score, k) => {
      list.append(dp.el("li", { className: k === best ? "best" : "", text: (classes[k] || String(k)) + ": " + Number(score).toFixed(3) }));
    });
    return list;
  }

  async function classification(job, document_, box) {
    const classes = document_.classes || [];
    const entries = Array.isArray(document_.images) ? document_.images : [];
    const table = dp.el("table", { className: "data", id: "results-table" },
      dp.el("thead", {}, dp.el("tr", {}, ...["#", "Image", "Label", "Predicted", "Scores"].map((h) => dp.el("th", { text: h })))));
    const body = dp.el("tbody");
    table.append(body);
    box.append(table);
    const indices = await sampleIndices(job, entries);
    const rows = entries.map((entry, k) => {
      const image = dp.el("td", {}, dp.el("div", { text: basename(entry.image) }));
      const wrong = entry.label && entry.predicted && entry.label !== entry.predicted;
      const row = dp.el("tr", { className: "result-row" + (wrong ? " wrong" : "") },
        dp.el("td", { text: String(k + 1) }), image,
        dp.el("td", { text: entry.label === null || entry.label === undefined ? "—" : String(entry.label) }),
        dp.el("td", {}, dp.el("strong", { text: entry.predicted === undefined ? "?" : String(entry.predicted) })),
        dp.el("td", {}, scoreList(entry, classes)));
      body.append(row);
      return image;
    });
    if (!entries.length) body.append(dp.el("tr", {}, dp.el("td", { colspan: "5", className: "empty", text: "No images." })));
    const limit = Math.min(rows.length, 200);
    for (let k = 0; k < limit; k += 1) {
      const preview = entries[k].thumbnail || entries[k].preview;
      if (typeof preview === "string" && preview && !preview.startsWith("/")) {
        rows[k].prepend(dp.el("img", { className: "thumb", src: fileUrl(job, preview), alt: basename(entries[k].image) }));
        continue;
      }
      if (indices[k] === null || indices[k] === undefined || !SLIDE_FORMATS.test(basename(entries[k].image))) continue;
      try {
        const src = await thumbnail(job.dataset_id, indices[k]);
        if (src) rows[k].prepend(dp.el("img", { className: "thumb", src: src, alt: basename(entries[k].image) }));
      } catch (error) {
        /* no thumbnail: the name is shown */
      }
    }
  }

  function segmentation(job, document_, box) {
    const entries = Array.isArray(document_.images) ? document_.images : [];
    const figures = dp.el("div", { className: "overlays", id: "results-overlays" });
    for (const entry of entries) {
      const caption = dp.el("figcaption", { text: basename(entry.image) + (typeof entry.dice === "number" ? " · Dice " + entry.dice.toFixed(3) : "") });
      const figure = dp.el("figure", {});
      if (entry.overlay) {
        figure.append(dp.el("img", { src: fileUrl(job, entry.overlay), alt: "overlay of " + basename(entry.image) }));
      }
      figure.append(caption);
      if (entry.mask) {
        figure.append(dp.el("a", { href: fileUrl(job, entry.mask), text: "mask" }));
      }
      figures.append(figure);
    }
    if (!entries.length) figures.append(dp.el("p", { className: "hint", text: "No images." }));
    box.append(figures);
  }

  async function showResults(job) {
    if (state.resultsShown || job.status !== "SUCCESS") return;
    const card = $("results-card");
    const box = dp.clear($("results"));
    if (dp.onSlide(job.kind)) {
      state.resultsShown = true;
      card.classList.remove("hidden");
      const result = job.result || {};
      const output = String(result.output || "").replace(/^output\//, "");
      if (job.kind === "nuclei") {
        box.append(dp.el("p", { text: (result.nuclei || 0) + " nuclei in " + (result.tiles || 0) + " tiles." }));
        const geojson = String(result.geojson || "").replace(/^output\//, "");
        if (geojson) box.append(dp.el("p", {}, dp.el("a", { href: "/api/v1/jobs/" + job.id + "/files/" + encodeURIComponent(geojson), text: "Download the nuclei as QuPath GeoJSON (" + geojson + ")" })));
      }
      box.append(dp.el("p", {}, dp.el("a", { href: "/jobs/" + job.id + "/viewer", className: "button-link", text: "Open the slide with its output map in the viewer" })));
      if (output) box.append(dp.el("p", {}, dp.el("a", { href: "/api/v1/jobs/" + job.id + "/files/" + encodeURIComponent(output), text: "Download the output map (" + output + ")" })));
      return;
    }
    if (job.kind !== "inference" && job.kind !== "inference_single") return;
    state.resultsShown = true;
    card.classList.remove("hidden");
    let document_;
    try {
      document_ = await dp.api("GET", "/jobs/" + job.id + "/results");
    } catch (error) {
      box.append(dp.el("p", { className: "message error", text: error.message }));
      return;
    }
    const metrics = document_.metrics || {};
    const pairs = [["Task", document_.task], ["Split", document_.split], ["Images", document_.count],
      ["Classes", Array.isArray(document_.classes) ? document_.classes.join(", ") : null]];
    for (const name of Object.keys(metrics)) pairs.push([name, number(metrics[name])]);
    facts($("results-summary"), pairs);
    if (document_.task === "segmentation") segmentation(job, document_, box);
    else await classification(job, document_, box);
    main.dataset.results = "shown";
  }

  /* ---------------------------------------------------------------- loop */

  async function refresh() {
    if (state.timer) clearTimeout(state.timer);
    try {
      const job = await dp.api("GET", "/jobs/" + jobId);
      showJob(job);
      await Promise.all([showLog(), job.kind === "train" ? showCurves() : Promise.resolve()]);
      if (dp.finished(job.status)) {
        await showResults(job);
        main.dataset.done = "true";
        return;
      }
    } catch (error) {
      dp.say("job-action-message", error.message, "error");
    }
    state.timer = setTimeout(refresh, 2000);
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("job-stop").addEventListener("click", stop);
    try {
      const job = await dp.api("GET", "/jobs/" + jobId);
      state.project = await dp.api("GET", "/projects/" + job.project_id);
    } catch (error) {
      /* the project name is a nicety */
    }
    refresh();
  });
})();
