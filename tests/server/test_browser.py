"""The pages in a real browser (Playwright + the system Chromium) against ``digipath serve``.

One scenario: register, log out and in, create a classification project, upload a tiny
DeepHealth dataset and model weights, train 2 epochs and see the curves, run inference on the
test split with the trained weights and see the result table, start a long training and stop
it from the notifications page (REVOKED), open the account page and the slide viewer, then use
the project page's Configuration cards (share a dataset, rename weights, set an allowed
property, delete a dataset). A full-page screenshot of every page goes to
``DIGIPATH_TEST_ARTIFACTS`` (default ``test-artifacts/screenshots``). Skipped without
``/usr/bin/chromium`` unless ``DIGIPATH_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from server.browser_support import (
    Server,
    make_classification_dataset,
    make_model_file,
    make_slide_dataset,
    make_unet_file,
)

CHROMIUM = Path("/usr/bin/chromium")
REPOSITORY = Path(__file__).resolve().parents[2]
ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
PASSWORD = "a long enough passphrase 42"
NEW_PASSWORD = "another long passphrase 43"

if not CHROMIUM.exists():
    if os.environ.get("DIGIPATH_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{CHROMIUM} is missing and DIGIPATH_REQUIRE_BROWSER=1", pytrace=False)
    pytest.skip(f"{CHROMIUM} is missing", allow_module_level=True)

sync_api = pytest.importorskip("playwright.sync_api")


def _artifacts() -> Path:
    folder = Path(
        os.environ.get("DIGIPATH_TEST_ARTIFACTS") or REPOSITORY / "test-artifacts" / "screenshots"
    )
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser-server")
    with Server(root / "data", root / "server.log") as running:
        yield running


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


class Shots:
    """Numbered full-page screenshots."""

    def __init__(self, page) -> None:
        self.page = page
        self.folder = _artifacts()
        for old in self.folder.glob("[0-9][0-9]_*.png"):
            old.unlink()
        self.count = 0
        self.taken: list[Path] = []

    def __call__(self, name: str, number: int | None = None, element: str | None = None) -> Path:
        """Save ``NN_name.png`` (``number``, or the next one): the full page, or ``element``."""
        self.count = self.count + 1 if number is None else number
        path = self.folder / f"{self.count:02d}_{name}.png"
        if element is None:
            self.page.screenshot(path=str(path), full_page=True)
        else:
            self.page.locator(element).screenshot(path=str(path))
        self.taken.append(path)
        return path


def _confirm(page) -> None:
    page.locator("dialog.confirm-dialog button.primary").click()


def _wait_status(page, statuses: str, timeout_ms: float) -> str:
    """Wait until the project page's status line shows one of ``statuses`` (``|``-separated)."""
    wanted = statuses.split("|")
    page.wait_for_function(
        "(wanted) => wanted.includes(document.getElementById('status-line').dataset.status)",
        arg=wanted, timeout=timeout_ms,
    )  # fmt: skip
    return page.locator("#status-line").get_attribute("data-status")


def _choose(page, select: str, starts: str) -> None:
    """Select the option of ``select`` whose text starts with ``starts``."""
    option = page.locator(f"{select} option").filter(has_text=re.compile("^" + re.escape(starts)))
    option.first.wait_for(state="attached")
    page.select_option(select, value=option.first.get_attribute("value"))


def _settled(page) -> None:
    """Wait until the project page has loaded what depends on the chosen model and dataset."""
    page.wait_for_selector("main[data-busy=false]", state="attached")


def _reset_token(server) -> str:
    """The newest password-reset token the server wrote to its log."""
    for _ in range(50):
        found = re.findall(r"password reset token for user alice: (\S+)", server.log_text())
        if found:
            return found[-1]
        time.sleep(0.1)
    raise AssertionError("no reset token in the server log")


def _job_id(page) -> int:
    return int(page.locator("#status-line").get_attribute("data-job-id"))


def test_scenario(server, browser, tmp_path) -> None:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

    def console(message) -> None:
        if message.type != "error":
            return
        where = (message.location or {}).get("url", "")
        if "401" in message.text and where.endswith("/api/v1/auth/login"):
            return  # the wrong password, on purpose
        if "422" in message.text and re.search(
            r"/api/v1/(allowed-properties|datasets/\d+)$", where
        ):
            return  # an invalid allowed-value rule, a share with an unknown user: on purpose
        problems.append(f"console {message.type} on {page.url} ({where}): {message.text}")

    page.on("console", console)
    shot = Shots(page)
    try:
        _scenario(server, page, shot, tmp_path)
    except Exception:
        shot("failure")
        print(server.log_text()[-6000:])
        raise
    finally:
        context.close()
    assert not problems, "\n".join(problems)


def _scenario(server, page, shot, tmp: Path) -> None:
    url = server.url
    yaml_path, zip_path = make_classification_dataset(tmp / "dataset")
    model_path = make_model_file(tmp / "cifar.safetensors")
    # anonymous: the projects page sends to the log-in page
    page.goto(url + "/")
    page.wait_for_url(re.compile(r"/login\?next="))
    shot("login")

    page.click("text=Register")
    page.wait_for_url(url + "/register")
    page.fill("#register-username", "alice")
    page.fill("#register-email", "alice@example.org")
    page.fill("#register-full-name", "Alice Example")
    page.fill("#register-password", PASSWORD)
    page.fill("#register-password2", PASSWORD)
    shot("register")
    page.click("#register-form button[type=submit]")
    page.wait_for_url(url + "/")
    page.wait_for_selector("#projects-table td.empty")

    # log out and in again
    page.click("#logout-button")
    page.wait_for_url(url + "/login")
    page.fill("#login-username", "alice")
    page.fill("#login-password", "wrong password")
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#login-message.error")

    # a password reset: the token is in the server log (no mail server)
    page.click("main a[href='/reset-password']")
    page.wait_for_url(url + "/reset-password")
    page.fill("#reset-username", "alice")
    page.click("#reset-request-form button[type=submit]")
    page.wait_for_selector("#reset-request-message.ok")
    token = _reset_token(server)
    page.fill("#reset-token", token)
    page.fill("#reset-password", NEW_PASSWORD)
    page.fill("#reset-password2", NEW_PASSWORD)
    page.click("#reset-confirm-form button[type=submit]")
    page.wait_for_selector("#reset-confirm-message.ok")
    shot("reset_password")
    page.click("main a[href='/login']")
    page.fill("#login-username", "alice")
    page.fill("#login-password", NEW_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_url(url + "/")
    # a second user (a project member, a dataset share), registered through the API
    answer = page.request.post(
        f"{url}/api/v1/auth/register", data={"username": "bob", "password": PASSWORD}
    )
    assert answer.ok, answer.text()

    # a project
    page.fill("#project-name", "Colours <b>demo</b>")
    page.select_option("#project-task", "classification")
    page.fill("#project-description", "red or blue squares")
    page.click("#project-form button[type=submit]")
    page.wait_for_url(re.compile(r"/projects/\d+$"))
    project_url = page.url
    page.wait_for_selector("main[data-ready=true]")
    assert page.locator("#project-title").text_content() == "Colours <b>demo</b>"
    page.goto(url + "/")
    page.wait_for_selector("#projects-table a.project-link")
    assert page.locator("#projects-table a.project-link").text_content() == "Colours <b>demo</b>"
    shot("projects")
    page.goto(project_url)
    page.wait_for_selector("main[data-ready=true]")

    # uploads
    page.fill("#dataset-name", "colours")
    page.set_input_files("#dataset-yaml", str(yaml_path))
    page.set_input_files("#dataset-zip", str(zip_path))
    page.click("#dataset-form button[type=submit]")
    page.wait_for_selector("#dataset-message.ok")
    assert "24 samples" in page.locator("#dataset-message").text_content()
    page.fill("#weights-name", "uploaded cifar")
    page.select_option("#weights-family", label="CifarNet (cifar)")
    page.set_input_files("#weights-file", str(model_path))
    _choose(page, "#weights-dataset", "colours")
    page.click("#weights-form button[type=submit]")
    page.wait_for_selector("#weights-message.ok")

    # a short training
    page.select_option("#select-family", label="CifarNet (cifar)")
    _choose(page, "#select-dataset", "colours")
    _settled(page)
    epochs = page.locator('#properties-table [data-property="Epochs"]')
    assert page.locator("#select-weights option:has-text('uploaded cifar')").count() == 1
    page.select_option("#select-weights", value="")
    epochs.fill("2")
    page.locator('#properties-table [data-property="Batch size"]').fill("8")
    page.locator('#properties-table [data-property="Learning rate"]').fill("0.01")
    assert "Default: 32 Allowed: >0" in page.locator("#properties-table").text_content()
    assert "No allowed values specified!" in page.locator("#properties-table").text_content()
    shot("project")
    page.click("#train-button")
    shot("project_confirm_training")
    _confirm(page)
    page.wait_for_selector("#status-line a")
    training = _job_id(page)
    status = _wait_status(page, "SUCCESS|FAILURE|REVOKED", 120_000)
    assert status == "SUCCESS", page.locator("#status-line").text_content()

    page.click("#status-job-link")
    page.wait_for_url(f"{url}/jobs/{training}")
    page.wait_for_selector("main[data-done=true]")
    page.wait_for_selector("main[data-curves='2']")
    assert page.locator("canvas.curve").count() >= 2
    assert page.locator("#settings-table").text_content().count("Epochs") == 1
    assert "training" in page.locator("#job-log").text_content()
    shot("job_training_curves")
    weights = page.request.get(f"{url}/api/v1/jobs/{training}").json()["output_weights_id"]
    assert weights

    # inference on the test split with the trained weights
    page.goto(project_url)
    page.wait_for_selector("main[data-ready=true]")
    page.click("#tab-inference")
    page.select_option("#select-family", label="CifarNet (cifar)")
    _choose(page, "#select-dataset", "colours")
    _settled(page)
    page.select_option("#select-weights", value=str(weights))
    page.select_option("#select-split", value="test")
    page.click("#inference-button")
    _confirm(page)
    page.wait_for_selector("#status-line a")
    inference = _job_id(page)
    status = _wait_status(page, "SUCCESS|FAILURE|REVOKED", 90_000)
    assert status == "SUCCESS", page.locator("#status-line").text_content()
    page.goto(f"{url}/jobs/{inference}")
    page.wait_for_selector("main[data-results=shown]")
    rows = page.locator("#results-table tr.result-row")
    assert rows.count() == 4
    assert page.locator("#results-table").text_content().count("red") >= 2
    page.wait_for_timeout(300)  # thumbnails
    shot("job_inference_results")

    # one uploaded image
    image = tmp / "blue.png"
    zipfile.ZipFile(zip_path).extract("images/blue_01.png", tmp)
    (tmp / "images" / "blue_01.png").rename(image)
    page.goto(project_url)
    page.wait_for_selector("main[data-ready=true]")
    page.click("#tab-single")
    page.select_option("#select-family", label="CifarNet (cifar)")
    _settled(page)
    page.select_option("#select-weights", value=str(weights))
    page.set_input_files("#single-image", str(image))
    page.click("#single-button")
    _confirm(page)
    page.wait_for_selector("#status-line a")
    single = _job_id(page)
    status = _wait_status(page, "SUCCESS|FAILURE|REVOKED", 90_000)
    assert status == "SUCCESS", page.locator("#status-line").text_content()
    page.goto(f"{url}/jobs/{single}")
    page.wait_for_selector("main[data-results=shown]")
    assert page.locator("#results-table tr.result-row").count() == 1
    assert "blue.png" in page.locator("#results-table").text_content()
    shot("job_inference_single")

    # a long training, stopped from the notifications page
    page.goto(project_url)
    page.wait_for_selector("main[data-ready=true]")
    page.select_option("#select-family", label="CifarNet (cifar)")
    _choose(page, "#select-dataset", "colours")
    _settled(page)
    page.select_option("#select-weights", value="")
    page.locator('#properties-table [data-property="Epochs"]').fill("200")
    page.click("#train-button")
    _confirm(page)
    page.wait_for_selector("#status-line a")
    long_training = _job_id(page)
    _wait_status(page, "STARTED|PENDING", 30_000)
    page.goto(url + "/notifications")
    row = page.locator(f"#jobs-table tr[data-job-id='{long_training}']")
    row.wait_for()
    assert page.locator("#jobs-table tbody tr").count() == 4
    shot("notifications_running")
    row.locator("button.stop-button").click()
    _confirm(page)
    page.wait_for_selector(f"#jobs-table tr[data-job-id='{long_training}'][data-status=REVOKED]")
    page.wait_for_selector("#jobs-message.ok")
    shot("notifications_revoked")
    page.fill("#search-q", "revoked")
    page.click("#search-form button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#jobs-table tbody tr').length === 1")
    assert page.locator(f"#jobs-table tr[data-job-id='{long_training}']").count() == 1
    assert "q=revoked" in page.url

    # the account page
    page.goto(url + "/account")
    page.wait_for_selector("#account-facts dd")
    page.fill("#token-name", "notebook")
    page.click("#token-form button[type=submit]")
    page.wait_for_selector("#new-token:not(.hidden)")
    assert page.locator("#new-token").text_content().startswith("dp_")
    page.wait_for_selector("#tokens-table td:has-text('notebook')")
    shot("account")

    # a segmentation project: a whole-slide job and the viewer
    slide_yaml, slide_zip = make_slide_dataset(tmp / "slide")
    unet = make_unet_file(tmp / "unet.safetensors")
    page.goto(url + "/")
    page.fill("#project-name", "Slides")
    page.select_option("#project-task", "segmentation")
    page.click("#project-form button[type=submit]")
    page.wait_for_url(re.compile(r"/projects/\d+$"))
    page.wait_for_selector("main[data-ready=true]")
    # owners edit the project: a description and a second member
    page.fill("#edit-description", "one slide, one U-Net")
    page.click("#edit-add-member")
    page.locator("#edit-members .member-name").last.fill("bob")
    page.locator("#edit-members .member-role").last.select_option("viewer")
    page.click("#project-edit-form button[type=submit]")
    page.wait_for_selector("#edit-message.ok")
    assert "bob" in page.locator("#project-members-list").text_content()
    assert "one slide, one U-Net" in page.locator("#project-info").text_content()
    page.fill("#dataset-name", "one slide")
    page.set_input_files("#dataset-yaml", str(slide_yaml))
    page.set_input_files("#dataset-zip", str(slide_zip))
    page.fill("#dataset-spacing", "0.5")
    page.click("#dataset-form button[type=submit]")
    page.wait_for_selector("#dataset-message.ok")
    page.fill("#weights-name", "untrained unet")
    page.select_option("#weights-family", label="U-Net (unet)")
    page.set_input_files("#weights-file", str(unet))
    page.click("#weights-form button[type=submit]")
    page.wait_for_selector("#weights-message.ok")
    page.click("#tab-slide")
    page.select_option("#select-family", label="U-Net (unet)")
    _choose(page, "#select-dataset", "one slide")
    _settled(page)
    _choose(page, "#select-weights", "untrained unet")
    _choose(page, "#select-sample", "0: slide.tif")
    shot("project_whole_slide")
    page.click("#slide-button")
    _confirm(page)
    page.wait_for_selector("#status-line a")
    slide_job = _job_id(page)
    status = _wait_status(page, "SUCCESS|FAILURE|REVOKED", 90_000)
    assert status == "SUCCESS", page.locator("#status-line").text_content()

    # a segmentation inference: the overlay image on the job page
    page.click("#tab-inference")
    _choose(page, "#select-weights", "untrained unet")
    page.select_option("#select-split", value="test")
    page.click("#inference-button")
    _confirm(page)
    page.wait_for_function(
        "(old) => document.getElementById('status-line').dataset.jobId !== old", arg=str(slide_job)
    )
    segmentation = _job_id(page)
    status = _wait_status(page, "SUCCESS|FAILURE|REVOKED", 90_000)
    assert status == "SUCCESS", page.locator("#status-line").text_content()
    page.goto(f"{url}/jobs/{segmentation}")
    page.wait_for_selector("main[data-results=shown]")
    overlay = page.locator("#results-overlays img")
    assert overlay.count() == 1
    page.wait_for_function(
        "() => { const i = document.querySelector('#results-overlays img');"
        " return i.complete && i.naturalWidth > 0; }"
    )
    assert "Dice" in page.locator("#results-overlays").text_content()
    shot("job_segmentation_results")

    page.goto(f"{url}/jobs/{slide_job}")
    page.wait_for_selector("main[data-done=true]")
    shot("job_whole_slide")
    page.click("#viewer-link")
    page.wait_for_url(f"{url}/jobs/{slide_job}/viewer")
    if page.locator("#viewer-missing").count():
        shot("viewer_not_installed")
    else:
        page.wait_for_selector("main[data-overlay=open]", state="attached")
        page.locator("#overlay-opacity").fill("0.8")
        page.wait_for_timeout(800)  # tiles
        shot("viewer_job_overlay")
        page.goto(f"{url}/datasets/{dataset_id(page, url, 'one slide')}/samples/0/viewer")
        page.wait_for_selector("main[data-viewer=open]", state="attached")
        page.wait_for_timeout(500)
        shot("viewer_dataset_slide")

    _configuration(page, shot, url, project_url, weights, tmp)


def _configuration(page, shot, url: str, project_url: str, weights: int, tmp: Path) -> None:
    """The Configuration cards of the classification project: share a dataset, rename the
    trained weights, delete a throw-away dataset, set an allowed property (and be told off
    for a bad rule)."""
    expect = sync_api.expect
    page.goto(project_url)
    page.wait_for_selector("main[data-ready=true]")
    throwaway_yaml, throwaway_zip = make_classification_dataset(tmp / "throwaway", count=6)
    page.fill("#dataset-name", "throw-away")
    page.set_input_files("#dataset-yaml", str(throwaway_yaml))
    page.set_input_files("#dataset-zip", str(throwaway_zip))
    page.click("#dataset-form button[type=submit]")
    page.wait_for_selector("#dataset-message.ok")
    page.select_option("#select-family", label="CifarNet (cifar)")
    _choose(page, "#select-dataset", "colours")
    _settled(page)
    datasets = page.locator("#datasets-table tbody")
    expect(datasets.filter(has_text="throw-away")).to_have_count(1)
    expect(datasets.filter(has_text="one slide")).to_have_count(1)  # of the other project's task

    # share the dataset with bob
    colours = datasets.filter(has=page.locator(".record-name", has_text=re.compile("^colours$")))
    colours.locator("button.edit-button").click()
    page.wait_for_selector("#edit-dialog[open]")
    page.click("#edit-dialog-add-share")
    page.locator("#edit-dialog-shares .member-name").last.fill("bob")
    page.locator("#edit-dialog-shares .member-role").last.select_option("viewer")
    page.click("#edit-dialog-save")
    page.wait_for_selector("#datasets-message.ok")
    expect(colours.locator(".shares")).to_have_text("Shared with: bob (viewer)")
    stored = page.request.get(f"{url}/api/v1/datasets/{dataset_id(page, url, 'colours')}").json()
    assert stored["shares"] == [{"username": "bob", "role": "viewer"}]
    # a user listed twice, then an unknown user: refused, in the dialog
    colours.locator("button.edit-button").click()
    page.click("#edit-dialog-add-share")
    page.locator("#edit-dialog-shares .member-name").last.fill("bob")
    page.click("#edit-dialog-save")
    expect(page.locator("#edit-dialog-message.error")).to_have_text(
        "bob is listed twice: keep one role."
    )
    page.locator("#edit-dialog-shares .member-name").last.fill("nobody-here")
    page.click("#edit-dialog-save")
    expect(page.locator("#edit-dialog-message.error")).to_contain_text("no user 'nobody-here'")
    page.click("#edit-dialog-cancel")
    expect(page.locator("#edit-dialog")).not_to_have_attribute("open", "")

    # rename the trained weights
    row = page.locator(f"#weights-table tbody[data-id='{weights}']")
    expect(row.locator("a.download-link")).to_have_attribute(
        "href", f"/api/v1/weights/{weights}/download"
    )
    row.locator("button.edit-button").click()
    page.fill("#edit-dialog-name", "colour classifier")
    page.click("#edit-dialog-save")
    page.wait_for_selector("#weights-table-message.ok")
    expect(row.locator(".record-name")).to_have_text("colour classifier")
    expect(page.locator(f"#select-weights option[value='{weights}']")).to_contain_text(
        "colour classifier"
    )

    # delete the throw-away dataset once its name is typed
    throwaway = datasets.filter(has_text="throw-away")
    throwaway.locator("button.delete-button").click()
    delete = page.locator("dialog.typed-confirm button.danger")
    expect(delete).to_be_disabled()
    page.locator("dialog.typed-confirm input.confirm-name").fill("throw")
    expect(delete).to_be_disabled()
    page.locator("dialog.typed-confirm input.confirm-name").fill("throw-away")
    delete.click()
    page.wait_for_selector("#datasets-message.ok")
    expect(throwaway).to_have_count(0)
    expect(page.locator("#select-dataset option", has_text="throw-away")).to_have_count(0)

    # an allowed property of the model: Epochs > 0, default 3
    page.select_option("#allowed-property", label="Epochs (INT)")
    expect(page.locator("#allowed-rule")).to_have_value(">0")  # the fixture's rule
    page.fill("#allowed-rule", ">0")
    page.fill("#allowed-default", "3")
    page.click("#allowed-form button[type=submit]")
    page.wait_for_selector("#allowed-message.ok")
    _settled(page)
    epochs_row = page.locator("#properties-table tbody tr").filter(
        has=page.locator('[data-property="Epochs"]')
    )
    expect(epochs_row).to_contain_text("Default: 3 Allowed: >0")
    expect(page.locator('#properties-table [data-property="Epochs"]')).to_have_value("3")
    expect(page.locator("#allowed-table tr[data-property-id]", has_text="Epochs")).to_contain_text(
        "3"
    )
    # a rule for the chosen dataset only: Batch size default 4 on colours
    page.select_option("#allowed-property", label="Batch size (INT)")
    page.check("#allowed-only-dataset")
    page.fill("#allowed-rule", "[2,4,8]")
    page.fill("#allowed-default", "4")
    page.click("#allowed-form button[type=submit]")
    page.wait_for_selector("#allowed-message.ok")
    _settled(page)
    batch_row = page.locator("#properties-table tbody tr").filter(
        has=page.locator('[data-property="Batch size"]')
    )
    expect(batch_row).to_contain_text("Default: 4 Allowed: [2,4,8]")
    rule = page.locator("#allowed-table tr[data-property-id]", has_text="Batch size")
    expect(rule.filter(has_text="colours")).to_contain_text("[2,4,8]")
    page.uncheck("#allowed-only-dataset")
    page.select_option("#allowed-property", label="Epochs (INT)")
    shot("project_configuration", number=18, element="#configuration")
    # a rule the server refuses: its 422 message is shown, nothing changes
    page.fill("#allowed-rule", "between 1 and 5")
    page.click("#allowed-form button[type=submit]")
    message = page.locator("#allowed-message.error")
    expect(message).to_contain_text("expected '>0', '>=1'")
    expect(epochs_row).to_contain_text("Default: 3 Allowed: >0")
    page.locator("#allowed-card").scroll_into_view_if_needed()
    shot("allowed_properties", number=19)


def dataset_id(page, url: str, name: str) -> int:
    """The id of the dataset called ``name`` (through the API, with the page's session)."""
    return next(
        d["id"] for d in page.request.get(f"{url}/api/v1/datasets").json() if d["name"] == name
    )
