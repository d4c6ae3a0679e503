/* /notifications: the searchable, paginated jobs table (GET /jobs), with details and Stop. */
"use strict";

(function () {
  const $ = dp.byId;
  const PER_PAGE = 20;
  const state = { page: Number(dp.query("page")) || 1, q: dp.query("q") || "", projectId: dp.query("project_id"), projects: {}, timer: null };

  function statusDate(job) {
    return job.finished || job.started || job.created;
  }

  function remember() {
    const params = new URLSearchParams();
    if (state.projectId) params.set("project_id", state.projectId);
    if (state.q) params.set("q", state.q);
    if (state.page > 1) params.set("page", String(state.page));
    const search = params.toString();
    history.replaceState(null, "", location.pathname + (search ? "?" + search : ""));
  }

  async function stop(job) {
    const ok = await dp.confirmDialog("Stop job " + job.id + "?", [
      "Kind: " + dp.kindName(job.kind), "Status: " + job.status,
      "A stopped job stays in the history as REVOKED.",
    ], "Stop");
    if (!ok) return;
    try {
      await dp.api("POST", "/jobs/" + job.id + "/stop", {});
      dp.say("jobs-message", "Job " + job.id + " stopped.", "ok");
    } catch (error) {
      dp.say("jobs-message", error.message, "error");
    }
    await load();
  }

  function row(job) {
    const project = state.projects[job.project_id];
    const options = dp.el("td", { className: "options" },
      dp.el("a", { href: "/jobs/" + job.id, className: "details-link", text: "Details" }));
    if (dp.onSlide(job.kind)) {
      options.append(" · ", dp.el("a", { href: "/jobs/" + job.id + "/viewer", text: "Viewer" }));
    }
    if (!dp.finished(job.status)) {
      const button = dp.el("button", { type: "button", className: "danger stop-button", text: "Stop" });
      button.addEventListener("click", () => stop(job));
      options.append(" ", button);
    }
    return dp.el("tr", { dataset: { jobId: String(job.id), status: job.status } },
      dp.el("td", { text: dp.date(job.created) }),
      dp.el("td", {}, project
        ? dp.el("a", { href: "/projects/" + job.project_id, text: project.name })
        : dp.el("span", { text: "#" + job.project_id })),
      dp.el("td", { text: String(job.id) }),
      dp.el("td", { text: dp.kindName(job.kind) }),
      dp.el("td", {}, dp.statusBadge(job.status)),
      dp.el("td", { text: dp.date(statusDate(job)) }),
      options);
  }

  async function load() {
    if (state.timer) clearTimeout(state.timer);
    remember();
    const params = new URLSearchParams({ page: String(state.page), per_page: String(PER_PAGE) });
    if (state.q) params.set("q", state.q);
    if (state.projectId) params.set("project_id", state.projectId);
    const body = document.querySelector("#jobs-table tbody");
    try {
      const page = await dp.api("GET", "/jobs?" + params.toString());
      dp.clear(body);
      if (!page.items.length) {
        body.append(dp.el("tr", {}, dp.el("td", { colspan: "7", className: "empty", text: state.q ? "No job matches." : "No jobs yet." })));
      }
      for (const job of page.items) body.append(row(job));
      const pages = Math.max(1, Math.ceil(page.total / page.per_page));
      $("page-info").textContent = "Page " + page.page + " of " + pages + " (" + page.total + " jobs)";
      $("page-previous").disabled = page.page <= 1;
      $("page-next").disabled = page.page >= pages;
      document.getElementById("main").dataset.loaded = String(Date.now());
      if (page.items.some((job) => !dp.finished(job.status))) state.timer = setTimeout(load, 3000);
    } catch (error) {
      dp.say("jobs-message", error.message, "error");
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    $("search-q").value = state.q;
    $("search-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.q = $("search-q").value.trim();
      state.page = 1;
      load();
    });
    $("page-previous").addEventListener("click", () => { state.page = Math.max(1, state.page - 1); load(); });
    $("page-next").addEventListener("click", () => { state.page += 1; load(); });
    try {
      for (const project of await dp.api("GET", "/projects")) state.projects[project.id] = project;
    } catch (error) {
      dp.say("jobs-message", error.message, "error");
    }
    if (state.projectId && state.projects[state.projectId]) {
      const scope = $("notifications-scope");
      scope.append("of ", dp.el("a", { href: "/projects/" + state.projectId, text: state.projects[state.projectId].name }),
        " · ", dp.el("a", { href: "/notifications", text: "all projects" }));
    }
    load();
  });
})();
