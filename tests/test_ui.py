"""The MLflow UI, in a real headless Chromium, shows what a sweep logged and registered."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from sentiment import tracking
from sentiment.bench.local_servers import free_port, stop_process_group, wait_until_answers
from sentiment.config import load_config
from sentiment.sweep import run_sweep
from tests.conftest import STRONG_STUDY

pytestmark = pytest.mark.sweeps  # runs tiny sweeps: not in make test-fast

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# Flags for a sandboxed, offline machine: no background calls home, no GPU, fresh profile.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1600,1000"]


@pytest.fixture
def mlflow_ui(registry_store, tmp_path):
    # The strong study is run twice more: once with nothing to do, once resumed with one trial more.
    strong = registry_store + STRONG_STUDY
    for extra in ([], ["sweep.n_trials=2"]):
        run_sweep(load_config(strong + extra))
    cfg = load_config(registry_store)
    port = free_port()
    server = subprocess.Popen(
        [Path(sys.executable).with_name("mlflow"), "ui", "--backend-store-uri", cfg.tracking.uri,
         "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_answers(f"{url}/health", server, seconds=120)
    yield url, cfg
    stop_process_group(server)


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{missing} not installed: `make test` installs chromium and chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def _wait_for_text(driver, text: str, seconds: float = 120):  # pages of a UI server on loaded cores
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, seconds).until(lambda d: text in d.find_element(By.TAG_NAME, "body").text)


@pytest.mark.integration
def test_ui_opens_on_model_training_with_one_parent_per_study(mlflow_ui, browser, tmp_path):
    from selenium.webdriver.common.by import By

    url, cfg = mlflow_ui
    experiment_id = tracking.connect(cfg.tracking)
    browser.get(tracking.runs_table_url(url, experiment_id, ui=url))
    _wait_for_text(browser, "sweep-strong")
    body = browser.find_element(By.TAG_NAME, "body").text
    # The model-training view: runs and the model registry in the side bar, none of the GenAI pages.
    assert "Model registry" in body and not {"Judges", "Prompts", "Sessions"} & set(body.splitlines())
    assert "sweep-weak" in body
    # The strong study ran three times (created, nothing to do, resumed): still one parent row.
    rows = browser.find_elements(By.PARTIAL_LINK_TEXT, "sweep-strong")
    assert len(rows) == 1
    rows[0].find_element(By.XPATH, "./ancestor::*[@role='gridcell'][1]").find_element(By.TAG_NAME, "button").click()
    _wait_for_text(browser, "trial-001")
    assert "trial-000" in browser.find_element(By.TAG_NAME, "body").text
    browser.save_screenshot(str(tmp_path / "runs.png"))

    parent = mlflow.search_runs([experiment_id], output_format="list",
                                filter_string="tags.role = 'sweep' and tags.`sweep.study` = 'strong'")[0]
    browser.get(f"{url}/#/experiments/{experiment_id}/runs/{parent.info.run_id}?workflowType=machine_learning")
    _wait_for_text(browser, "Final model")
    assert re.search(r"(tfidf|nbsvm) baseline [0-9.]+", browser.find_element(By.TAG_NAME, "body").text)
    browser.save_screenshot(str(tmp_path / "parent.png"))

    browser.get(f"{url}/#/models/{cfg.tracking.model_name}")
    _wait_for_text(browser, "Version 2")
    body = browser.find_element(By.TAG_NAME, "body").text
    assert "Version 1" in body and "test_accuracy" in body
    browser.save_screenshot(str(tmp_path / "model.png"))
    assert (tmp_path / "runs.png").stat().st_size > 10_000


@pytest.mark.integration
def test_make_ui_opens_the_store_the_config_names(registry_store, tmp_path):
    """`make ui ARGS="tracking.uri=..."`: the printed URL has that store's experiment id."""
    cfg = load_config(registry_store)
    experiment_id = tracking.connect(cfg.tracking)
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "sentiment", "ui", "--port", str(port), *registry_store],
                          cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          start_new_session=True)
    try:
        first = next(line.strip() for line in ui.stdout if line.startswith("runs table:"))
        assert first == f"runs table: http://127.0.0.1:{port}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
        # `mlflow ui` starts its server and job runner after the CLI has loaded: minutes on a busy 2-core machine.
        reply = wait_until_answers(f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/get", ui, seconds=300,
                                   params={"experiment_id": experiment_id})
        assert reply.json()["experiment"]["name"] == cfg.tracking.experiment
    finally:
        stop_process_group(ui)
