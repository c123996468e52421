"""The page in a real Chromium (Debian's chromium + chromium-driver, driven by Selenium) against a
real daemon fed frames over a real broker: the live view follows the frames with the labels the
daemon published on MQTT, teaching from the page changes the next result, a wrong password gets 401.

Set EDGE_CLASSIFIER_SCREENSHOTS=docs to write the README's screenshot (docs/web-view.png).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from support.broker import Probe, free_port
from support.daemon import DaemonProcess, write_config
from support.testdata import REPO, image, model
from support.variants import EXTRACTOR, variant
from support.web import PASSWORD, PREFIX, WebClient, classify, online, start_web_daemon, web_config

selenium = pytest.importorskip("selenium")  # in the [test] extra: an ImportError here is a broken install
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SOURCE = "cams/door/image"
V2 = model("mobilenet_v2_1.0_224_quant")
SMALL = model("mobilenet_v1_0.25_128_quant")  # in the store, to swap to
CARD = f'section.source[data-source="{SOURCE}"]'


@pytest.fixture
def browser(tmp_path):
    if not (os.access(CHROMIUM, os.X_OK) and os.access(DRIVER, os.X_OK)):
        pytest.fail(f"{CHROMIUM} and {DRIVER} are needed (bash .ci/install-system-deps installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_script_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def authorize(driver, password: str) -> None:
    """Send HTTP Basic credentials with every request the page makes (as a logged-in browser does)."""
    token = base64.b64encode(f"edge:{password}".encode()).decode()
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Basic {token}"}})


def shown(driver, frame: int, timeout: float = 20) -> dict:
    """Wait until the live view shows ``frame``; its label, caption and pixels."""
    WebDriverWait(driver, timeout).until(
        lambda d: d.find_element(By.CSS_SELECTOR, CARD).get_attribute("data-frame") == str(frame))
    card = driver.find_element(By.CSS_SELECTOR, CARD)
    pixels = driver.execute_script("return arguments[0].querySelector('canvas').toDataURL('image/png')", card)
    return {"label": card.get_attribute("data-label"), "caption": card.find_element(By.CSS_SELECTOR, ".label").text,
            "pixels": pixels}


def screenshot(driver, tmp_path: Path, name: str) -> None:
    driver.save_screenshot(str(tmp_path / name))
    target = os.environ.get("EDGE_CLASSIFIER_SCREENSHOTS")
    if target:
        (REPO / target).mkdir(exist_ok=True)
        driver.save_screenshot(str(REPO / target / name))


@pytest.fixture
def daemon_config(tmp_path, broker):
    secret = tmp_path / "web-password"
    secret.write_text(PASSWORD)
    learn = f"""[learn]
enabled = true
extractor = "{EXTRACTOR}"
head = "{tmp_path / "learned_head.json"}"
"""
    made = web_config(tmp_path, broker.port, model=V2, learn=learn, web=f'password_file = "{secret}"')
    shutil.copy(SMALL, tmp_path / "models" / SMALL.name)  # the store refuses links to outside it
    return made


def test_live_view_follows_the_frames_with_the_published_labels_and_teaching_changes_the_next(
        browser, daemon_config, broker, tmp_path):
    config, port = daemon_config
    rng = np.random.default_rng(5)
    cat, bird = cv2.imread(str(image("cat.bmp"))), cv2.imread(str(image("bird.bmp")))
    parrot = cv2.imread(str(image("parrot.jpg")))
    with Probe(broker.host, broker.port) as probe:
        probe.subscribe(f"{PREFIX}/status", f"{PREFIX}/result", f"{PREFIX}/event")
        with start_web_daemon(config) as daemon:
            online(probe)
            first = classify(probe, cat)  # the source exists once a frame came
            authorize(browser, PASSWORD)
            browser.get(f"http://127.0.0.1:{port}/")
            view = shown(browser, first["frame"])
            assert view["label"] == first["top"][0]["label"] and first["top"][0]["label"] in view["caption"]
            # A new frame: a new picture, with the label MQTT carried for that very frame.
            second = classify(probe, bird)
            view2 = shown(browser, second["frame"])
            assert view2["label"] == second["top"][0]["label"] != first["top"][0]["label"]
            assert view2["pixels"] != view["pixels"]
            header = browser.find_element(By.ID, "model").text
            assert header == first["model"]["name"]
            WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "broker").text == "connected")

            # Teach: three parrot frames from the live view, picked in the strip, named, sent.
            taught = []
            for _ in range(3):
                result = classify(probe, variant(parrot, rng))
                assert result["top"][0].get("learned") is not True
                shown(browser, result["frame"])
                taught.append(result["frame"])
            for frame in taught:
                WebDriverWait(browser, 10).until(
                    lambda d, f=frame: d.find_elements(By.CSS_SELECTOR, f'#recent img[data-frame="{f}"]'))
                browser.find_element(By.CSS_SELECTOR, f'#recent img[data-frame="{frame}"]').click()
            assert browser.find_element(By.ID, "picked-count").text == "3"
            browser.find_element(By.ID, "teach-label").send_keys("polly")
            browser.find_element(By.ID, "teach-picked").click()
            WebDriverWait(browser, 30).until(
                lambda d: d.find_element(By.ID, "message").text == "learned 3 examples of polly")
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=10).payload)
            while event["event"] != "class_learned":
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=10).payload)
            assert event["label"] == "polly" and event["added"] == 3  # the MQTT learn path's own event
            WebDriverWait(browser, 10).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, '#classes tr[data-label="polly"]'))
            row = browser.find_element(By.CSS_SELECTOR, '#classes tr[data-label="polly"]')
            assert row.find_elements(By.TAG_NAME, "td")[1].text == "3"
            # The next parrot frame is reported as the class taught from the page, there and on MQTT.
            after = classify(probe, variant(parrot, rng))
            assert after["top"][0]["label"] == "polly" and after["top"][0]["learned"] is True
            assert shown(browser, after["frame"])["label"] == "polly"
            WebDriverWait(browser, 10).until(lambda d: "class_learned" in d.find_element(By.ID, "events").text)
            screenshot(browser, tmp_path, "web-view.png")
            # "Teach the next 2 frames": the learn command's frames form, answered once they came.
            label = browser.find_element(By.ID, "teach-label")
            label.clear()
            label.send_keys("chick")
            frames = browser.find_element(By.ID, "teach-frames")
            frames.clear()
            frames.send_keys("2")
            browser.find_element(By.ID, "teach-next").click()
            WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "message").text.startswith(
                "collecting the next 2 frames"))
            time_limit = time.monotonic() + 30
            while browser.find_element(By.ID, "message").text != "learned 2 examples of chick":
                assert time.monotonic() < time_limit, browser.find_element(By.ID, "message").text
                classify(probe, variant(bird, rng))  # frames keep coming until the page says it learned
            assert classify(probe, bird)["top"][0]["label"] == "chick"
            browser.set_window_size(412, 1400)  # a phone's width
            screenshot(browser, tmp_path, "web-view-phone.png")
            browser.set_window_size(1280, 1000)

            # Pause and resume from the page: the daemon's pause command.
            browser.find_element(By.CSS_SELECTOR, f"{CARD} button.pause").click()
            WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "paused-state").text == "paused")
            state = json.loads(probe.request(f"{PREFIX}/cmd/status", b"{}", timeout=15).payload)["state"]
            assert state["paused"] is True
            browser.find_element(By.CSS_SELECTOR, f"{CARD} button.pause").click()
            WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "paused-state").text == "")

            # Swap the model from the store's list: the model command, with its checks and event.
            browser.find_element(By.ID, "model-load").click()
            option = f'#model-list option[value="{SMALL.name}"]'
            WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.CSS_SELECTOR, option))
            Select(browser.find_element(By.ID, "model-list")).select_by_value(SMALL.name)
            browser.find_element(By.ID, "model-swap").click()
            # Loaded and checked in the background, switched in, confirmed by its first result.
            deadline = time.monotonic() + 60
            while classify(probe, cat)["model"]["name"] != SMALL.stem:
                assert time.monotonic() < deadline, "the model from the page never classified"
            event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            while event["event"] not in ("model_swapped", "model_rejected"):
                event = json.loads(probe.expect(f"{PREFIX}/event", timeout=30).payload)
            assert event["event"] == "model_swapped", json.dumps(event)
            WebDriverWait(browser, 20).until(
                lambda d: d.find_element(By.ID, "message").text == f"now classifying with {SMALL.name}")
            WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "model").text == SMALL.stem)

            # The camera view: the frame as the camera gave it, with the region of interest drawn.
            browser.find_element(By.CSS_SELECTOR, f"{CARD} button.view").click()
            assert browser.find_element(By.CSS_SELECTOR, CARD).get_attribute("data-view") == "camera"
            tall = cv2.imread(str(image("parrot.jpg")))
            camera = shown(browser, classify(probe, tall)["frame"])
            size = browser.execute_script("const c = arguments[0].querySelector('canvas'); return [c.width, c.height]",
                                          browser.find_element(By.CSS_SELECTOR, CARD))
            scale = min(1.0, 480 / tall.shape[1])
            assert size == [round(tall.shape[1] * scale), round(tall.shape[0] * scale)] and camera["label"]

            # A wrong password: 401 and no data, in the browser too.
            authorize(browser, "not-the-password")
            status, body = browser.execute_async_script(
                "const done = arguments[0]; fetch('/api/status', {cache: 'no-store', credentials: 'omit'})"
                ".then(async r => done([r.status, await r.text()]))")
            assert status == 401 and "webpi" not in body and "{" not in body
            browser.get(f"http://127.0.0.1:{port}/api/stats")
            assert "webpi" not in browser.page_source and "fps_in" not in browser.page_source
            daemon.signal(signal.SIGTERM)
            assert daemon.wait(15) == 0


def test_a_cards_pause_pauses_only_its_own_source(browser, broker, tmp_path):
    """With several [[sources]], each card's Pause is the `pause` command naming its source."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    for name in ("cat.bmp", "bird.bmp"):
        shutil.copy(image(name), folder / name)
    port = free_port()
    (tmp_path / "models").mkdir()
    config = write_config(tmp_path / "config.toml", f"""
[device]
id = "webpi"
[[sources]]
name = "left"
kind = "images"
uri = "{folder}"
loop = true
fps = 5
[[sources]]
name = "right"
kind = "images"
uri = "{folder}"
loop = true
fps = 5
[model]
path = "{SMALL}"
dir = "{tmp_path / "models"}"
accelerator = "cpu"
[mqtt]
host = "127.0.0.1"
port = {broker.port}
[web]
enabled = true
port = {port}
""")
    client = WebClient(port)

    def inputs() -> dict:
        return client.request("GET", "/api/status").json()["inputs"]

    with DaemonProcess("-c", str(config)) as daemon:
        daemon.wait_for_log(r"web view on http://", timeout=60)
        browser.get(f"http://127.0.0.1:{port}/")
        left = 'section.source[data-source="left"] button.pause'
        WebDriverWait(browser, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, left))
        WebDriverWait(browser, 30).until(lambda d: d.find_element(By.CSS_SELECTOR, left).text == "Pause")
        browser.find_element(By.CSS_SELECTOR, left).click()
        WebDriverWait(browser, 10).until(lambda d: inputs()["left"]["paused"])
        assert inputs()["right"]["paused"] is False
        assert client.request("GET", "/api/status").json()["paused"] is False  # the daemon goes on
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.CSS_SELECTOR, left).text == "Resume")
        right = 'section.source[data-source="right"] button.pause'
        assert browser.find_element(By.CSS_SELECTOR, right).text == "Pause"
        browser.find_element(By.CSS_SELECTOR, left).click()
        WebDriverWait(browser, 10).until(lambda d: not inputs()["left"]["paused"])
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(10) == 0
