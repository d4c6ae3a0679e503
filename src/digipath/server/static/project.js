/* /projects/{id}: uploads, the Train / Inference / Inference single / Whole slide tabs with
   the properties table, the project's info and members. */
"use strict";

(function () {
  const main = document.getElementById("main");
  const projectId = Number(main.dataset.projectId);
  const task = main.dataset.task;
  const state = {
    project: null, families: [], datasets: [], weights: [], properties: [], samples: [],
    tab: "train", polling: null,
  };

  const $ = dp.byId;

  /* ---------------------------------------------------------------- selections */

  function family() {
    return state.families.find((f) => String(f.id) === $("select-family").value) || null;
  }

  function dataset() {
    return state.datasets.find((d) => String(d.id) === $("select-dataset").value) || null;
  }

  function weights() {
    return state.weights.find((w) => String(w.id) === $("select-weights").value) || null;
  }

  async function loadFamilies() {
    state.families = await dp.api("GET", "/models?task=" + encodeURIComponent(task));
    const options = state.families.map((f) => ({ value: f.id, text: f.name + " (" + f.model_type + ")" }));
    dp.fillSelect($("select-family"), options);
    dp.fillSelect($("weights-family"), options);
  }

  async function loadDatasets(select) {
    state.datasets = await dp.api("GET", "/datasets?task=" + encodeURIComponent(task));
    const options = state.datasets.map((d) => ({
      value: d.id, text: d.name + " (" + d.samples + " samples" + (d.public ? ", public" : "") + ")",
    }));
    if (!options.length) options.push({ value: "", text: "— upload a dataset first —" });
    dp.fillSelect($("select-dataset"), options, select);
    dp.fillSelect($("weights-dataset"), [{ value: "", text: "— none —" }].concat(options.filter((o) => o.value !== "")));
  }

  let weightsRequest = 0;

  async function loadWeights(select) {
    const f = family();
    const d = dataset();
    const select_ = $("select-weights");
    if (!f) {
      state.weights = [];
      dp.fillSelect(select_, [{ value: "", text: "— choose a model —" }]);
      return;
    }
    let path = "/weights?family_id=" + f.id;
    if (d) path += "&dataset_id=" + d.id;
    const request = ++weightsRequest;
    const found = await dp.api("GET", path);
    if (request !== weightsRequest) return; /* a newer selection is loading */
    state.weights = found;
    const options = [{ value: "", text: "— new network (training only) —" }].concat(
      state.weights.map((w) => ({ value: w.id, text: w.name + " (#" + w.id + ")" })));
    dp.fillSelect(select_, options, select);
    if (select === undefined && state.tab !== "train" && state.weights.length && !select_.value) {
      select_.value = String(state.weights[0].id);
    }
  }

  function updateSplits() {
    const d = dataset();
    const splits = d ? Object.keys(d.splits || {}) : [];
    const options = splits.map((s) => ({ value: s, text: s + " (" + d.splits[s] + " images)" }));
    if (!options.length) options.push({ value: "", text: "— the dataset has no splits —" });
    dp.fillSelect($("select-split"), options, splits.includes("test") ? "test" : undefined);
  }

  let samplesRequest = 0;

  async function loadSamples() {
    const d = dataset();
    const link = $("sample-viewer-link");
    if (!d) {
      state.samples = [];
      dp.fillSelect($("select-sample"), [{ value: "", text: "— no dataset —" }]);
      link.classList.add("hidden");
      return;
    }
    const request = ++samplesRequest;
    const found = await dp.api("GET", "/datasets/" + d.id + "/samples");
    if (request !== samplesRequest) return; /* a newer selection is loading */
    state.samples = found;
    dp.fillSelect($("select-sample"), state.samples.map((s) => ({
      value: s.index, text: s.index + ": " + s.name + (s.label ? " (" + s.label + ")" : "") + (s.has_mask ? " (mask)" : ""),
    })));
    updateSampleLink();
  }

  function updateSampleLink() {
    const d = dataset();
    const link = $("sample-viewer-link");
    const index = $("select-sample").value;
    if (d && index !== "") {
      link.href = "/datasets/" + d.id + "/samples/" + encodeURIComponent(index) + "/viewer";
      link.classList.remove("hidden");
    } else {
      link.classList.add("hidden");
    }
  }

  /* ---------------------------------------------------------------- properties */

  function parseList(rule) {
    return rule.slice(1, -1).split(",").map((s) => s.trim()).filter((s) => s);
  }

  function choices(prop) {
    const rule = (prop.allowed || "").trim();
    if (rule.startsWith("[") && rule.endsWith("]")) return parseList(rule);
    if (prop.type === "LST") return prop.values || [];
    return null;
  }

  function editor(prop) {
    const options = choices(prop);
    let input;
    if (options && options.length) {
      input = dp.el("select");
      for (const value of options) input.append(dp.el("option", { value: value, text: value }));
      if (options.includes(prop.default)) input.value = prop.default;
    } else if (prop.type === "STR") {
      input = dp.el("textarea", { rows: "3", placeholder: "DeepHealth augmentations, e.g. SequentialAugmentationContainer AugMirror p=0.5 end" });
      input.value = prop.default || "";
    } else {
      input = dp.el("input", { type: "number", step: prop.type === "INT" ? "1" : "any" });
      input.value = prop.default || "";
    }
    input.dataset.property = prop.name;
    input.dataset.type = prop.type;
    input.setAttribute("aria-label", prop.name);
    input.className = "property-value";
    return input;
  }

  function allowedText(prop) {
    if (prop.allowed) return "Default: " + (prop.default === "" ? "(none)" : prop.default) + " Allowed: " + prop.allowed;
    return "No allowed values specified!";
  }

  let propertiesRequest = 0;

  async function loadProperties() {
    const body = document.querySelector("#properties-table tbody");
    const f = family();
    const request = ++propertiesRequest;
    if (!f) {
      state.properties = [];
      dp.clear(body).append(dp.el("tr", {}, dp.el("td", { colspan: "3", className: "empty", text: "Choose a model." })));
      return;
    }
    const d = dataset();
    let path = "/properties/table?family_id=" + f.id;
    if (d) path += "&dataset_id=" + d.id;
    const rows = await dp.api("GET", path);
    if (request !== propertiesRequest) return; /* a newer selection is loading */
    state.properties = rows;
    dp.clear(body);
    for (const prop of state.properties) {
      const hint = prop.allowed ? null : dp.el("div", { className: "hint", text: "Default: " + (prop.default === "" ? "(none)" : prop.default) });
      body.append(dp.el("tr", {},
        dp.el("td", { title: prop.description || "" }, dp.el("strong", { text: prop.name }),
          dp.el("div", { className: "hint", text: prop.description || "" })),
        dp.el("td", {}, editor(prop)),
        dp.el("td", {}, dp.el("div", { text: allowedText(prop) }), hint)));
    }
  }

  function checkRule(prop, text) {
    const rule = (prop.allowed || "").trim();
    if (prop.type === "INT" && !/^-?\d+$/.test(text)) return prop.name + ": " + text + " is not an integer";
    if (prop.type === "FLT" && !Number.isFinite(Number(text))) return prop.name + ": " + text + " is not a number";
    if (!rule) return null;
    if (rule.startsWith("[")) {
      return parseList(rule).includes(text) ? null : prop.name + ": " + text + " is not one of " + rule;
    }
    const match = /^(>=|>|<=|<)\s*(-?[\d.eE+-]+)$/.exec(rule);
    if (!match) return null;
    const value = Number(text);
    const limit = Number(match[2]);
    const ok = { ">": value > limit, ">=": value >= limit, "<": value < limit, "<=": value <= limit }[match[1]];
    return ok ? null : prop.name + ": " + text + " is not " + rule;
  }

  /* The properties to send ({name: value}), or throws naming the first bad value. */
  function propertyValues() {
    const values = {};
    for (const input of document.querySelectorAll("#properties-table .property-value")) {
      const prop = state.properties.find((p) => p.name === input.dataset.property);
      const text = input.value.trim();
      if (text === "") continue;
      if (prop && prop.type !== "STR") {
        const problem = checkRule(prop, text);
        if (problem) throw new Error(problem);
      }
      values[input.dataset.property] = prop && prop.type === "STR" ? input.value : text;
    }
    return values;
  }

  /* ---------------------------------------------------------------- jobs */

  function showJob(job) {
    const line = $("status-line");
    dp.clear(line);
    const percent = Math.round((job.progress || 0) * 100);
    line.append("Job ", dp.el("a", { href: "/jobs/" + job.id, id: "status-job-link", text: "#" + job.id }),
      " (" + dp.kindName(job.kind) + "): ", dp.statusBadge(job.status));
    line.dataset.jobId = String(job.id);
    line.dataset.status = job.status;
    const detail = job.status === "FAILURE" ? job.error : job.message;
    if (detail) line.append(" " + detail);
    if (!dp.finished(job.status)) line.append(" (" + percent + " %)");
  }

  function track(job) {
    if (state.polling) clearTimeout(state.polling);
    showJob(job);
    if (dp.finished(job.status)) {
      loadRecent();
      if (job.kind === "train" && job.status === "SUCCESS") loadWeights(String(job.output_weights_id || ""));
      return;
    }
    state.polling = setTimeout(async () => {
      try {
        track(await dp.api("GET", "/jobs/" + job.id));
      } catch (error) {
        dp.say("action-message", error.message, "error");
      }
    }, 2000);
  }

  async function submit(title, lines, send) {
    dp.say("action-message", "");
    if (!(await dp.confirmDialog(title, lines, "Start"))) return;
    try {
      const job = await send();
      dp.say("action-message", "Job " + job.id + " submitted; follow it below or on the Notifications page.", "ok");
      track(job);
      loadRecent();
    } catch (error) {
      dp.say("action-message", error.message, "error");
    }
  }

  function need(condition, message) {
    if (!condition) {
      dp.say("action-message", message, "error");
      return false;
    }
    return true;
  }

  function train() {
    const f = family();
    const d = dataset();
    const w = weights();
    if (!need(f, "Choose a model.") || !need(d, "Choose a dataset (upload one first).")) return;
    let properties;
    try {
      properties = propertyValues();
    } catch (error) {
      dp.say("action-message", error.message, "error");
      return;
    }
    const body = { project_id: projectId, dataset_id: d.id, properties: properties };
    if (w) body.weights_id = w.id;
    else body.family_id = f.id;
    submit("Start a training?", [
      "Model: " + f.name, "Weights: " + (w ? w.name + " (fine-tuning)" : "new network"),
      "Dataset: " + d.name, "Epochs: " + (properties.Epochs || "default"),
    ], () => dp.api("POST", "/jobs/train", body));
  }

  function inference() {
    const d = dataset();
    const w = weights();
    const split = $("select-split").value;
    if (!need(d, "Choose a dataset.") || !need(w, "Choose the weights to run.") || !need(split, "The dataset has no splits.")) return;
    submit("Start an inference?", ["Weights: " + w.name, "Dataset: " + d.name, "Split: " + split],
      () => dp.api("POST", "/jobs/inference", {
        project_id: projectId, dataset_id: d.id, weights_id: w.id, split: split,
      }));
  }

  function single() {
    const w = weights();
    const file = $("single-image").files[0];
    if (!need(w, "Choose the weights to run.") || !need(file, "Choose an image file.")) return;
    submit("Run on one image?", ["Weights: " + w.name, "Image: " + file.name], () => {
      const form = new FormData();
      form.append("project_id", String(projectId));
      form.append("weights_id", String(w.id));
      form.append("image", file, file.name);
      return dp.api("POST", "/jobs/inference-single", form);
    });
  }

  function slide() {
    const d = dataset();
    const w = weights();
    const sample = $("select-sample").value;
    if (!need(d, "Choose a dataset.") || !need(w, "Choose the weights to apply.") || !need(sample !== "", "Choose a slide.")) return;
    const body = { project_id: projectId, dataset_id: d.id, weights_id: w.id, sample: Number(sample) };
    const spacing = $("slide-spacing").value.trim();
    if (spacing) body.spacing = Number(spacing);
    const chosen = state.samples.find((s) => String(s.index) === sample);
    // HoVer-Net weights segment the nuclei (GeoJSON and an instance map); others apply.
    const nuclei = w.model_type === "hovernet";
    submit(nuclei ? "Segment the nuclei of a slide?" : "Apply the weights to a slide?", [
      "Weights: " + w.name, "Dataset: " + d.name, "Slide: " + (chosen ? chosen.name : sample),
      "Spacing: " + (spacing || "the model's"),
    ], () => dp.api("POST", nuclei ? "/jobs/nuclei" : "/jobs/wsi-apply", body));
  }

  async function loadRecent() {
    const list = $("recent-jobs");
    try {
      const page = await dp.api("GET", "/jobs?per_page=5&project_id=" + projectId);
      dp.clear(list);
      if (!page.items.length) list.append(dp.el("li", { className: "hint", text: "No jobs yet." }));
      for (const job of page.items) {
        list.append(dp.el("li", {},
          dp.el("a", { href: "/jobs/" + job.id, text: "#" + job.id + " " + dp.kindName(job.kind) }), " ",
          dp.statusBadge(job.status)));
      }
    } catch (error) {
      dp.clear(list).append(dp.el("li", { className: "message error", text: error.message }));
    }
  }

  /* ---------------------------------------------------------------- tabs */

  function selectTab(name) {
    state.tab = name;
    for (const tab of document.querySelectorAll(".tab")) {
      tab.classList.toggle("active", tab.dataset.tab === name);
      tab.setAttribute("aria-selected", tab.dataset.tab === name ? "true" : "false");
    }
    for (const panel of document.querySelectorAll(".tab-panel")) {
      panel.classList.toggle("hidden", panel.dataset.panel !== name);
    }
    const select = $("select-weights");
    if (name !== "train" && !select.value && state.weights.length) select.value = String(state.weights[0].id);
    const hints = {
      train: "Train a new network of the model, or fine-tune the chosen weights, on the dataset.",
      inference: "Run the chosen weights on one split of the dataset.",
      single: "Run the chosen weights on one image you upload.",
      slide: "Apply the chosen weights to a slide of the dataset; the output map opens in the viewer.",
    };
    $("selection-hint").textContent = hints[name];
  }

  /* ---------------------------------------------------------------- uploads */

  async function uploadDataset(event) {
    event.preventDefault();
    const form = new FormData();
    form.append("name", $("dataset-name").value);
    const yaml = $("dataset-yaml").files[0];
    const zip = $("dataset-zip").files[0];
    if (!yaml) return dp.say("dataset-message", "Choose the dataset YAML.", "error");
    form.append("dataset", yaml, yaml.name);
    if (zip) form.append("images", zip, zip.name);
    if ($("dataset-public").checked) form.append("public", "true");
    const spacing = $("dataset-spacing").value.trim();
    if (spacing) form.append("spacing", spacing);
    dp.say("dataset-message", "Uploading…");
    try {
      const made = await dp.api("POST", "/datasets", form);
      const splits = Object.keys(made.splits || {}).map((k) => k + " " + made.splits[k]).join(", ");
      if (made.task !== task) {
        dp.say("dataset-message", "Uploaded dataset " + made.id + ", but it is a " + made.task + " dataset and this project does " + task + ".", "error");
      } else {
        dp.say("dataset-message", "Uploaded dataset " + made.id + ": " + made.samples + " samples" + (splits ? " (" + splits + ")" : "") + ".", "ok");
      }
      $("dataset-form").reset();
      await loadDatasets(String(made.id));
      await selectionChanged();
    } catch (error) {
      dp.say("dataset-message", error.message, "error");
    }
  }

  async function uploadWeights(event) {
    event.preventDefault();
    const file = $("weights-file").files[0];
    if (!file) return dp.say("weights-message", "Choose the model file.", "error");
    const form = new FormData();
    form.append("name", $("weights-name").value);
    form.append("family_id", $("weights-family").value);
    form.append("file", file, file.name);
    if ($("weights-dataset").value) form.append("dataset_id", $("weights-dataset").value);
    if ($("weights-public").checked) form.append("public", "true");
    dp.say("weights-message", "Uploading…");
    try {
      const made = await dp.api("POST", "/weights", form);
      dp.say("weights-message", "Uploaded weights " + made.id + " (" + made.family + ", classes " + (made.classes.join(", ") || "?") + ").", "ok");
      $("weights-form").reset();
      if (String(made.family_id) === $("select-family").value) await loadWeights(String(made.id));
    } catch (error) {
      dp.say("weights-message", error.message, "error");
    }
  }

  /* ---------------------------------------------------------------- project info */

  function me() {
    const link = $("nav-account");
    return link ? link.textContent.trim() : "";
  }

  function showProject(project) {
    state.project = project;
    $("project-title").textContent = project.name;
    document.title = project.name + " · digipath";
    const info = dp.clear($("project-info"));
    const facts = [["Id", String(project.id)], ["Task", project.task], ["Your role", project.role || ""],
      ["Created", dp.date(project.created)], ["Description", project.description || "—"]];
    for (const [term, value] of facts) info.append(dp.el("dt", { text: term }), dp.el("dd", { text: value }));
    const list = dp.clear($("project-members-list"));
    for (const member of project.members) {
      list.append(dp.el("li", {}, dp.el("span", { text: member.username }), " ",
        dp.el("span", { className: "tag", text: member.role })));
    }
    const form = $("project-edit-form");
    if (project.role === "owner") {
      form.classList.remove("hidden");
      $("edit-name").value = project.name;
      $("edit-description").value = project.description || "";
      const rows = dp.clear($("edit-members"));
      for (const member of project.members) {
        if (member.username !== me()) dp.memberRow(rows, member);
      }
    } else {
      form.classList.add("hidden");
    }
    for (const id of ["train-button", "inference-button", "single-button", "slide-button"]) {
      $(id).disabled = project.role !== "owner";
      if (project.role !== "owner") $(id).title = "only the project's owners start jobs";
    }
  }

  async function saveProject(event) {
    event.preventDefault();
    try {
      const project = await dp.api("PATCH", "/projects/" + projectId, {
        name: $("edit-name").value,
        description: $("edit-description").value,
        members: dp.memberList($("edit-members")),
      });
      showProject(project);
      dp.say("edit-message", "Saved.", "ok");
    } catch (error) {
      dp.say("edit-message", error.message, "error");
    }
  }

  /* ---------------------------------------------------------------- start */

  let pending = 0;

  /* Reload what depends on the model and dataset; main[data-busy] says whether it is done. */
  async function selectionChanged() {
    pending += 1;
    main.dataset.busy = "true";
    try {
      updateSplits();
      await Promise.all([loadWeights(), loadProperties(), loadSamples()]);
    } catch (error) {
      dp.say("action-message", error.message, "error");
    } finally {
      pending -= 1;
      main.dataset.busy = pending > 0 ? "true" : "false";
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    for (const tab of document.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => selectTab(tab.dataset.tab));
    }
    $("select-family").addEventListener("change", selectionChanged);
    $("select-dataset").addEventListener("change", selectionChanged);
    $("select-sample").addEventListener("change", updateSampleLink);
    $("train-button").addEventListener("click", train);
    $("inference-button").addEventListener("click", inference);
    $("single-button").addEventListener("click", single);
    $("slide-button").addEventListener("click", slide);
    $("dataset-form").addEventListener("submit", uploadDataset);
    $("weights-form").addEventListener("submit", uploadWeights);
    $("project-edit-form").addEventListener("submit", saveProject);
    $("edit-add-member").addEventListener("click", () => dp.memberRow($("edit-members")).querySelector("input").focus());
    selectTab("train");
    try {
      const [project] = await Promise.all([
        dp.api("GET", "/projects/" + projectId), loadFamilies(), loadDatasets(),
      ]);
      showProject(project);
      await selectionChanged();
      loadRecent();
      main.dataset.ready = "true";
    } catch (error) {
      dp.say("action-message", error.message, "error");
    }
  });
})();
