"""The replay HTML page in a real headless browser: summary, filters, expanding, and that text
from games and models is shown as text, never run.

Drives Debian's chromium through chromedriver with selenium (a test extra). Skipped only when
chromium is not installed; CI installs it (`apt-get install -y chromium chromium-driver`).
"""

import shutil
import tempfile
from pathlib import Path

import pytest

from agents.baselines import ExpertPolicy, RandomAdmissiblePolicy
from eval.evaluate import evaluate
from eval.html_report import write_html
from rollouts.records import EpisodeRecord, TurnRecord
from rollouts.transcripts import TranscriptWriter, read_transcript
from tests.conftest import FIXTURE_GAMES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: apt-get install -y chromium chromium-driver"
)

PAYLOAD = "<script>window.pwned=1</script>"
GAMES = sorted(str(p) for p in (FIXTURE_GAMES / "valid_seen").rglob("game.tw-pddl"))
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1200,900",
)


def hostile_episode() -> EpisodeRecord:
    """A model that writes script tags, on a game whose text carries them too."""
    turn = TurnRecord(
        observation=f"You see a note: {PAYLOAD}",
        action="read note",
        response=f"{PAYLOAD} read note",
        thought=None,
        admissible=False,
        malformed=True,
        reward=0.0,
    )
    return EpisodeRecord(
        "hostile/trial_1#0",
        GAMES[0],
        "hostile/trial_1",
        "look_at_obj_in_light",
        f"obey {PAYLOAD}",
        sample=0,
        seed=1,
        group=0,
        outcome="step-limit",
        final_observation=PAYLOAD,
        turns=[turn],
    )


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> Path:
    """The page of a real transcript: 2 expert wins, 2 random step-limits, 1 hostile episode."""
    folder = tmp_path_factory.mktemp("html")
    path = folder / "transcripts.jsonl"
    for policy, max_steps in ((ExpertPolicy(), 50), (RandomAdmissiblePolicy(), 3)):
        with TranscriptWriter(path, policy=policy.name) as writer:
            evaluate(policy, GAMES, seed=0, max_steps=max_steps, num_envs=2, num_workers=1, on_episode_end=writer.write)
    with TranscriptWriter(path, policy="holderpo-train", model=PAYLOAD) as writer:
        writer.write(hostile_episode())
    return write_html(folder / "page.html", read_transcript(path).episodes, "Episodes of transcripts.jsonl")


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver_path = shutil.which("chromedriver")
    assert driver_path, "chromium is installed but chromedriver is not: apt-get install -y chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="holderpo-chromium-")
    for flag in (*CHROME_FLAGS, f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def _visible(browser) -> list:
    from selenium.webdriver.common.by import By

    return [e for e in browser.find_elements(By.CSS_SELECTOR, "details.episode") if e.is_displayed()]


def _click_filter(browser, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    browser.find_element(By.CSS_SELECTOR, f'.filter[data-filter="{name}"] button[data-value="{value}"]').click()


def test_summary_and_filters(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    summary = browser.find_element(By.ID, "summary-line").text
    assert "5 episodes; success 40.0% (Wilson 95% CI 11.8-76.9%)" in summary
    rows = [row.text for row in browser.find_elements(By.CSS_SELECTOR, "#by-task-type tbody tr")]
    assert rows[-1].startswith("overall 5 40.0%") and any(r.startswith("look_at_obj_in_light 3") for r in rows)
    assert len(_visible(browser)) == 5

    _click_filter(browser, "outcome", "won")
    shown = _visible(browser)
    assert len(shown) == 2 and {e.get_attribute("data-outcome") for e in shown} == {"won"}
    assert browser.find_element(By.ID, "shown-count").text == "showing 2 of 5 episodes"

    _click_filter(browser, "task-type", "look_at_obj_in_light")
    shown = _visible(browser)
    assert len(shown) == 1 and shown[0].get_attribute("data-task-type") == "look_at_obj_in_light"

    _click_filter(browser, "outcome", "failed")
    assert {e.get_attribute("data-outcome") for e in _visible(browser)} == {"step-limit"}
    assert len(_visible(browser)) == 2  # the random agent's and the hostile episode

    _click_filter(browser, "outcome", "all")
    _click_filter(browser, "task-type", "all")
    assert len(_visible(browser)) == 5


def test_expanding_an_episode_shows_its_turns(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    episode = next(e for e in _visible(browser) if e.get_attribute("data-outcome") == "won")
    first_observation = episode.find_element(By.CSS_SELECTOR, "pre.observation")
    assert not first_observation.is_displayed()  # collapsed
    episode.find_element(By.TAG_NAME, "summary").click()
    assert episode.get_attribute("open") is not None and first_observation.is_displayed()
    assert "Your task is to:" in first_observation.text
    assert "outcome: won" in episode.find_element(By.CSS_SELECTOR, "p.outcome").text


def test_script_in_game_and_model_text_is_shown_not_run(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    assert browser.execute_script("return typeof window.pwned") == "undefined"
    assert len(browser.find_elements(By.TAG_NAME, "script")) == 1  # only the page's own
    hostile = next(e for e in _visible(browser) if e.find_element(By.CLASS_NAME, "eid").text == "hostile/trial_1#0")
    assert PAYLOAD in hostile.find_element(By.CLASS_NAME, "task").text
    hostile.find_element(By.TAG_NAME, "summary").click()
    assert PAYLOAD in hostile.find_element(By.CSS_SELECTOR, "pre.observation").text
    assert PAYLOAD in hostile.find_element(By.CSS_SELECTOR, "pre.response").text
    assert PAYLOAD in hostile.find_element(By.CSS_SELECTOR, "pre.final").text
    assert "inadmissible" in hostile.text and "malformed" in hostile.text
    assert browser.execute_script("return typeof window.pwned") == "undefined"
