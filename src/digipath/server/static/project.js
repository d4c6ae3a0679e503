/* /projects/{id}: uploads, the Train / Inference / Inference single / Whole slide tabs with
   the properties table, the project's info and members, and the "Configuration" cards:
   datasets (rename, publish, share, delete), the model's weights (download, edit, delete) and
   its allowed properties. */
"use strict";

(function () {
  const main = document.getElementById("main");
  const projectId = Number(main.dataset.projectId);
  const task = main.dataset.task;
  const state = {
    project: null, families: [], datasets: [], weights: [], properties: [], samples: [],
    tab: "train", polling: null,
    allDatasets: [], familyWeights: [], propertyList: [], allowedRows: [], editing: null,
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
    state.allDatasets = await dp.api("GET", "/datasets");
    state.datasets = state.allDatasets.filter((d) => d.task === task);
    showDatasets();
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
      if (job.kind === "train" && job.status === "SUCCESS") {
        loadWeights(String(job.output_weights_id || ""));
        loadWeightsTable().catch((error) => dp.say("weights-table-message", error.message, "error"));
      }
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
      if (String(made.family_id) === $("select-family").value) {
        await Promise.all([loadWeights(String(made.id)), loadWeightsTable()]);
      }
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

  /* ---------------------------------------------------------------- configuration */

  /* Whether the caller may change a dataset or weights (theirs, or shared with them as owner). */
  function canChange(item) {
    return Boolean(item.can_change);
  }

  function sharesText(item) {
    return (item.shares || []).map((s) => s.username + " (" + s.role + ")").join(", ");
  }

  function yesNo(value) {
    return value ? "yes" : "no";
  }

  function smallButton(text, className, onClick, label) {
    return dp.el("button", { type: "button", className: "small " + className, text: text, title: label, "aria-label": label, onclick: onClick });
  }

  /* One record of a table.records: its own <tbody>, a main row and a row of shares and actions. */
  function record(table, ident, cells, shares, actions) {
    const group = dp.el("tbody", { dataset: { id: String(ident) } });
    const row = dp.el("tr", { className: "main-row" });
    for (const cell of cells) row.append(cell instanceof Node && cell.tagName === "TD" ? cell : dp.el("td", {}, cell));
    group.append(row);
    if (shares || actions.length) {
      row.classList.add("has-detail");
      const detail = dp.el("td", { colspan: String(cells.length) });
      if (shares) detail.append(dp.el("div", { className: "shares", text: "Shared with: " + shares }));
      if (actions.length) detail.append(dp.el("div", { className: "record-actions" }, ...actions));
      group.append(dp.el("tr", { className: "detail-row" }, detail));
    }
    table.append(group);
  }

  function emptyTable(table, columns, text) {
    for (const old of table.querySelectorAll("tbody")) old.remove();
    if (text) table.append(dp.el("tbody", {}, dp.el("tr", {}, dp.el("td", { colspan: String(columns), className: "empty", text: text }))));
  }

  /* The Datasets card: every dataset the caller can see (of any task). */
  function showDatasets() {
    const table = $("datasets-table");
    emptyTable(table, 5, state.allDatasets.length ? "" : "No datasets yet: upload one.");
    for (const d of state.allDatasets) {
      const changeable = canChange(d);
      const toggle = dp.el("input", {
        type: "checkbox", className: "public-toggle", checked: d.public, disabled: !changeable,
        "aria-label": "public: " + d.name, title: changeable ? "public: everyone may use it" : "only its owners may change this",
      });
      toggle.addEventListener("change", () => setDatasetPublic(d, toggle));
      const name = dp.el("td", {}, dp.el("span", { className: "record-name", text: d.name }),
        dp.el("span", { className: "hint", text: " #" + d.id }));
      const actions = changeable ? [
        smallButton("Edit", "edit-button", () => openEditor("dataset", d), "edit dataset " + d.name),
        smallButton("Delete", "danger delete-button", () => deleteDataset(d), "delete dataset " + d.name),
      ] : [];
      record(table, d.id, [name, d.task, String(d.samples), d.owner || "—", dp.el("td", {}, toggle)],
        sharesText(d), actions);
      if (d.task !== task) table.lastElementChild.classList.add("other-task");
    }
  }

  /* Reload the datasets (the card and the dropdowns); reload the rest when the choice changed. */
  async function refreshDatasets() {
    const before = $("select-dataset").value;
    await loadDatasets(before);
    if ($("select-dataset").value !== before) await selectionChanged();
    else updateAllowedLabels();
  }

  async function setDatasetPublic(d, toggle) {
    try {
      const saved = await dp.api("PATCH", "/datasets/" + d.id, { public: toggle.checked });
      await refreshDatasets();
      dp.say("datasets-message", saved.name + (saved.public ? " is public now." : " is not public any more."), "ok");
    } catch (error) {
      toggle.checked = !toggle.checked;
      dp.say("datasets-message", error.message, "error");
    }
  }

  async function deleteDataset(d) {
    dp.say("datasets-message", "");
    const lines = ["Dataset #" + d.id + ": " + d.name + " (" + d.samples + " samples)",
      "Its uploaded files are deleted; weights trained on it are kept."];
    if (!(await dp.typedConfirm("Delete the dataset?", lines, d.name, "Delete dataset"))) return;
    try {
      await dp.api("DELETE", "/datasets/" + d.id);
      await refreshDatasets();
      dp.say("datasets-message", "Deleted dataset " + d.name + ".", "ok");
    } catch (error) {
      dp.say("datasets-message", error.message, "error");
    }
  }

  /* The Model weights card: the weights of the chosen model family. */
  let weightsTableRequest = 0;

  async function loadWeightsTable() {
    const f = family();
    const table = $("weights-table");
    $("weights-card-hint").textContent = f
      ? "The weights of " + f.name + " you can use: download, or rename, publish, share and delete yours."
      : "Choose a model under Details.";
    const request = ++weightsTableRequest;
    if (!f) {
      state.familyWeights = [];
      emptyTable(table, 8, "Choose a model.");
      return;
    }
    const found = await dp.api("GET", "/weights?family_id=" + f.id);
    if (request !== weightsTableRequest) return; /* a newer selection is loading */
    state.familyWeights = found;
    emptyTable(table, 8, found.length ? "" : "No weights of " + f.name + " yet.");
    for (const w of found) {
      const changeable = canChange(w);
      const trained = state.allDatasets.find((d) => d.id === w.dataset_id);
      const actions = [dp.el("a", {
        href: "/api/v1/weights/" + w.id + "/download", className: "download-link", download: "",
        text: "Download", "aria-label": "download weights " + w.name,
      })];
      if (changeable) {
        actions.push(smallButton("Edit", "edit-button", () => openEditor("weights", w), "edit weights " + w.name),
          smallButton("Delete", "danger delete-button", () => deleteWeights(w), "delete weights " + w.name));
      }
      record(table, w.id, [
        String(w.id), dp.el("td", {}, dp.el("span", { className: "record-name", text: w.name })),
        dp.el("td", { text: w.dataset_id === null ? "—" : "#" + w.dataset_id, title: trained ? trained.name : null }),
        w.pretrained_on_id === null ? "—" : "#" + w.pretrained_on_id, yesNo(w.public), w.owner || "—",
        w.classes.join(", ") || "?", yesNo(w.active),
      ], sharesText(w), actions);
    }
  }

  async function refreshWeights() {
    await Promise.all([loadWeightsTable(), loadWeights($("select-weights").value)]);
  }

  async function deleteWeights(w) {
    dp.say("weights-table-message", "");
    const lines = ["Weights #" + w.id + ": " + w.name + " (" + w.family + ")", "The model file is deleted."];
    if (!(await dp.typedConfirm("Delete the weights?", lines, w.name, "Delete weights"))) return;
    try {
      await dp.api("DELETE", "/weights/" + w.id);
      await refreshWeights();
      dp.say("weights-table-message", "Deleted weights " + w.name + ".", "ok");
    } catch (error) {
      dp.say("weights-table-message", error.message, "error");
    }
  }

  /* The edit dialog of a dataset or weights: name, public, shares. */
  function openEditor(kind, item) {
    state.editing = { kind: kind, item: item };
    $("edit-dialog-title").textContent = (kind === "dataset" ? "Edit dataset " : "Edit weights ") + item.name;
    $("edit-dialog-name").value = item.name;
    $("edit-dialog-public").checked = Boolean(item.public);
    const rows = dp.clear($("edit-dialog-shares"));
    for (const share of item.shares || []) dp.memberRow(rows, share);
    dp.say("edit-dialog-message", "");
    $("edit-dialog").showModal();
    $("edit-dialog-name").focus();
  }

  async function saveEditor(event) {
    event.preventDefault();
    const editing = state.editing;
    if (!editing) return;
    const dataset_ = editing.kind === "dataset";
    const shares = dp.memberList($("edit-dialog-shares"));
    const names = shares.map((s) => s.username);
    const twice = names.find((n, i) => names.indexOf(n) !== i);
    /* the API answers 500 for a user listed twice (a unique constraint), so say it here */
    if (twice) return dp.say("edit-dialog-message", twice + " is listed twice: keep one role.", "error");
    dp.say("edit-dialog-message", "Saving…");
    try {
      const saved = await dp.api("PATCH", (dataset_ ? "/datasets/" : "/weights/") + editing.item.id, {
        name: $("edit-dialog-name").value, public: $("edit-dialog-public").checked, shares: shares,
      });
      $("edit-dialog").close();
      state.editing = null;
      if (dataset_) {
        await refreshDatasets();
        dp.say("datasets-message", "Saved dataset " + saved.name + ".", "ok");
      } else {
        await refreshWeights();
        dp.say("weights-table-message", "Saved weights " + saved.name + ".", "ok");
      }
    } catch (error) {
      dp.say("edit-dialog-message", error.message, "error");
    }
  }

  /* The Allowed properties card: PUT /allowed-properties for the chosen family (and dataset). */
  function selectedProperty() {
    return state.propertyList.find((p) => String(p.id) === $("allowed-property").value) || null;
  }

  /* The dataset the rule is for, or null for every dataset of the family. */
  function allowedScope() {
    const d = dataset();
    return d && $("allowed-only-dataset").checked ? d : null;
  }

  function updateAllowedLabels() {
    const f = family();
    const d = dataset();
    $("allowed-family").textContent = f ? f.name : "the chosen model";
    const box = $("allowed-only-dataset");
    box.disabled = !d || !canChange(d);
    if (box.disabled) box.checked = false;
    $("allowed-dataset-label").textContent = !d ? "Only for a dataset (choose one under Details)"
      : "Only for dataset " + d.name + (canChange(d) ? "" : " (only its owners may)");
  }

  async function loadPropertyList() {
    state.propertyList = await dp.api("GET", "/properties");
    dp.fillSelect($("allowed-property"), state.propertyList.map((p) => ({ value: p.id, text: p.name + " (" + p.type + ")" })));
  }

  let allowedRequest = 0;

  async function loadAllowed() {
    updateAllowedLabels();
    const f = family();
    const table = $("allowed-table");
    const request = ++allowedRequest;
    if (!f) {
      state.allowedRows = [];
      emptyTable(table, 5, "Choose a model.");
      prefillAllowed();
      return;
    }
    const rows = await dp.api("GET", "/allowed-properties?family_id=" + f.id);
    if (request !== allowedRequest) return; /* a newer selection is loading */
    const visible = new Map(state.allDatasets.map((d) => [d.id, d]));
    state.allowedRows = rows.filter((r) => r.dataset_id === null || visible.has(r.dataset_id));
    emptyTable(table, 5, state.allowedRows.length ? "" : "No rules: every property takes its own default.");
    const body = dp.el("tbody");
    for (const row of state.allowedRows) {
      const prop = state.propertyList.find((p) => p.id === row.property_id);
      const name = prop ? prop.name : "#" + row.property_id;
      const where = row.dataset_id === null ? "all" : visible.get(row.dataset_id).name;
      const lines = row.default.split("\n");
      const shown = lines[0] + (lines.length > 1 ? " …" : "");
      const edit = smallButton("Edit", "edit-button", () => editAllowed(row), "edit the rule of " + name);
      const d = dataset();
      if (row.dataset_id !== null && !(d && d.id === row.dataset_id)) {
        edit.disabled = true;
        edit.title = "choose the dataset " + where + " under Details to edit this rule";
      }
      body.append(dp.el("tr", { dataset: { propertyId: String(row.property_id) } },
        dp.el("td", { text: name }), dp.el("td", { text: where }),
        dp.el("td", {}, dp.el("code", { text: row.allowed || "any" })),
        dp.el("td", { text: row.default === "" ? "(property's)" : shown, title: row.default }),
        dp.el("td", {}, edit)));
    }
    if (state.allowedRows.length) table.append(body);
    prefillAllowed();
  }

  function editAllowed(row) {
    $("allowed-property").value = String(row.property_id);
    $("allowed-only-dataset").checked = row.dataset_id !== null;
    prefillAllowed();
    $("allowed-rule").focus();
  }

  /* Fill the rule and default of the chosen property and scope from its row, if there is one. */
  function prefillAllowed() {
    const prop = selectedProperty();
    const field = dp.clear($("allowed-default-field"));
    const hint = $("allowed-property-hint");
    if (!prop) {
      hint.textContent = "";
      return;
    }
    const scope = allowedScope();
    const row = state.allowedRows.find((r) => r.property_id === prop.id && r.dataset_id === (scope ? scope.id : null));
    $("allowed-rule").value = row ? row.allowed : "";
    const own = prop.default === "" ? "none" : prop.default;
    let input;
    if (prop.type === "STR") {
      input = dp.el("textarea", {
        id: "allowed-default", rows: "4",
        placeholder: "DeepHealth augmentations, e.g. SequentialAugmentationContainer AugMirror p=0.5 end",
      });
    } else {
      input = dp.el("input", { id: "allowed-default", autocomplete: "off", placeholder: "empty: the property's default (" + own + ")" });
    }
    input.value = row ? row.default : "";
    field.append(dp.el("label", {}, "Default value", input));
    const choices = prop.values.length ? "; one of " + prop.values.join(", ") : "";
    hint.textContent = (prop.description || prop.name) + " (" + prop.type + choices + "; its own default: " + own + ")."
      + (row ? "" : " No rule yet for this model" + (scope ? " and dataset." : "."));
  }

  async function saveAllowed(event) {
    event.preventDefault();
    const f = family();
    const prop = selectedProperty();
    if (!f) return dp.say("allowed-message", "Choose a model under Details first.", "error");
    if (!prop) return dp.say("allowed-message", "Choose a property.", "error");
    const scope = allowedScope();
    dp.say("allowed-message", "Saving…");
    try {
      const saved = await dp.api("PUT", "/allowed-properties", {
        property_id: prop.id, family_id: f.id, dataset_id: scope ? scope.id : null,
        allowed: $("allowed-rule").value, default: $("allowed-default").value,
      });
      await busy(() => Promise.all([loadProperties(), loadAllowed()]));
      dp.say("allowed-message", "Saved " + prop.name + " for " + f.name + (scope ? " on " + scope.name : "")
        + ": allowed " + (saved.allowed || "any") + ", default " + (saved.default === "" ? "the property's" : saved.default) + ".", "ok");
    } catch (error) {
      dp.say("allowed-message", error.message, "error");
    }
  }

  /* ---------------------------------------------------------------- start */

  let pending = 0;

  /* Run `work` (a function returning a promise) with main[data-busy] true until it is done. */
  async function busy(work) {
    pending += 1;
    main.dataset.busy = "true";
    try {
      return await work();
    } finally {
      pending -= 1;
      main.dataset.busy = pending > 0 ? "true" : "false";
    }
  }

  /* Reload what depends on the model and dataset; main[data-busy] says whether it is done. */
  async function selectionChanged() {
    try {
      await busy(() => {
        updateSplits();
        return Promise.all([loadWeights(), loadProperties(), loadSamples(), loadWeightsTable(), loadAllowed()]);
      });
    } catch (error) {
      dp.say("action-message", error.message, "error");
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
    $("edit-dialog-form").addEventListener("submit", saveEditor);
    $("edit-dialog-cancel").addEventListener("click", () => $("edit-dialog").close());
    $("edit-dialog-add-share").addEventListener("click", () => dp.memberRow($("edit-dialog-shares")).querySelector("input").focus());
    $("allowed-form").addEventListener("submit", saveAllowed);
    for (const id of ["allowed-property", "allowed-only-dataset"]) {
      $(id).addEventListener("change", () => {
        dp.say("allowed-message", "");
        prefillAllowed();
      });
    }
    selectTab("train");
    try {
      const [project] = await Promise.all([
        dp.api("GET", "/projects/" + projectId), loadFamilies(), loadDatasets(), loadPropertyList(),
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
