"""Screenshots of the web app for the README: ``docs/app_paint.png``, ``docs/app_tree.png``,
``docs/app_counterfactual.png``.

Serves ``phenogen app`` on a run (default ``runs/s0_base``, a full ``phenogen demo`` run) on a free local
port and drives headless Debian Chromium through Selenium with the system chromedriver (nothing is
downloaded). A minute on 2 CPU cores.

    .venv/bin/python bench/app_screenshots.py [--run runs/s0_base] [--out docs]
        [--target sp_003_i1] [--node anc024]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
from pathlib import Path

from PIL import Image

os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never look for a driver online


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver(width: int, height: int):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={width},{height}", "--hide-scrollbars"):  # fmt: skip
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def _wait(driver, condition, timeout: float = 120):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)


def _choose(driver, css: str, text: str) -> None:
    """Pick the option containing ``text`` of the Gradio dropdown at ``css``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(By.CSS_SELECTOR, f"{css} input")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(text)
    item = f"//ul[@role='listbox']//li[contains(., '{text}')]"
    _wait(driver, lambda d: d.find_elements(By.XPATH, item))
    driver.find_element(By.XPATH, item).click()


def _save(driver, path: Path, max_bytes: int = 400_000) -> None:
    """The page from its top (the window grown to fit it, up to 1,300 px) as PNG; quantised to a palette
    when the full-colour file would be too large."""
    import time

    width, height = driver.get_window_size()["width"], driver.get_window_size()["height"]
    inner = driver.execute_script("return window.innerHeight")
    page = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(width, min(height - inner + page, 1300 + height - inner))
    driver.execute_script("window.scrollTo(0, 0)")
    time.sleep(0.5)  # let the layout settle
    image = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    driver.set_window_size(width, height)
    image.save(path, optimize=True)
    if path.stat().st_size > max_bytes:
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
    print(f"{path}: {image.size[0]}x{image.size[1]}, {path.stat().st_size // 1024} KB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default="runs/s0_base")
    parser.add_argument("--out", default="docs")
    parser.add_argument("--target", default="sp_003_i1", help="a held-out target of RUN/targets.fasta")
    parser.add_argument("--node", default="anc024", help="a reconstructed ancestor to paint")
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args()

    from selenium.webdriver.common.by import By

    from phenogen import api
    from phenogen.app import build_app, launch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run = api.load_run(args.run)
    run.model  # noqa: B018 — loaded before the first request, as `phenogen app` warms it up
    demo = build_app(run)
    _, url, _ = launch(demo, port=_free_port(), block=False)
    driver = _driver(args.width, args.height)
    try:
        driver.get(url)
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#paint-target input"))
        # 1. paint a held-out barcode
        _choose(driver, "#paint-target", args.target)
        _wait(
            driver,
            lambda d: (
                args.target in d.find_element(By.CSS_SELECTOR, "#paint-text textarea").get_attribute("value")
            ),
        )
        driver.find_element(By.ID, "paint-go").click()
        _wait(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#paint-gallery img")) >= 4)
        _wait(driver, lambda d: "body_hue" in d.find_element(By.ID, "paint-table").text)
        _save(driver, out / "app_paint.png")

        # 2. the tree: paint an ancestor beside the true ancestor of its clade
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Tree')]").click()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#tree-node input"))
        _choose(driver, "#tree-node", args.node)
        driver.find_element(By.ID, "tree-go").click()
        _wait(driver, lambda d: "Painted" in d.find_element(By.ID, "tree-status").text)
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#tree-gallery img"))
        _save(driver, out / "app_tree.png")

        # 3. the counterfactual grid of the same barcode
        driver.find_element(By.XPATH, "//button[@role='tab' and contains(., 'Counterfactual')]").click()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#cf-target input"))
        _choose(driver, "#cf-target", args.target)
        _wait(
            driver,
            lambda d: (
                args.target in d.find_element(By.CSS_SELECTOR, "#cf-text textarea").get_attribute("value")
            ),
        )
        driver.find_element(By.ID, "cf-go").click()
        _wait(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#cf-grid img"))
        _wait(driver, lambda d: "mutated" in d.find_element(By.ID, "cf-table").text)
        _save(driver, out / "app_counterfactual.png")
    finally:
        driver.quit()
        demo.close()


if __name__ == "__main__":
    main()
