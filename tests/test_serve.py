"""`agiformer serve`: the HTTP API against a server started on a free loopback port, and the page in a
real browser (headless Chromium) where Chromium and its driver are installed."""

import contextlib
import json
import math
import shutil
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
import torch

pytest.importorskip("starlette")
uvicorn = pytest.importorskip("uvicorn")

from agiformer import AGIFormer, AGIFormerConfig  # noqa: E402
from agiformer.eval.inspect import byte_surprise  # noqa: E402
from agiformer.models import ByteGPT, ByteGPTConfig  # noqa: E402
from agiformer.serve.app import MAX_PROMPT_BYTES, build_app  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serving(root, *, max_generations: int):
    """The playground over `root` on a free loopback port, for the duration; yields its URL."""
    config = uvicorn.Config(build_app(root, max_generations=max_generations), host="127.0.0.1", port=free_port(),
                            log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    torch.manual_seed(0)
    AGIFormer(AGIFormerConfig.preset("tiny")).save_pretrained(root / "tiny" / "best")
    ByteGPT(ByteGPTConfig(d_model=32, n_layers=1, n_heads=1)).save_pretrained(root / "gpt")
    with serving(root, max_generations=1) as url:
        yield url, root


def call(url: str, body: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            status = response.status
    except urllib.error.HTTPError as error:
        text, status = error.read().decode(), error.code
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def events(url: str, **params) -> list[tuple[str, dict]]:
    """The server-sent events of one generation, as (event name, data)."""
    found, name = [], "message"
    with urllib.request.urlopen(url + "/api/generate?" + urllib.parse.urlencode(params), timeout=60) as response:
        for raw in response:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                found.append((name, json.loads(line[6:])))
                name = "message"
    return found


def test_the_page_and_the_checkpoint_list(server):
    url, _ = server
    status, page = call(url + "/")
    assert status == 200 and "agiformer playground" in page and "EventSource" in page
    assert call(url + "/api/checkpoints") == (200, {"checkpoints": ["gpt", "tiny/best"]})


def test_inspect_gives_surprise_reasoning_steps_and_attention_share(server):
    url, root = server
    prompt = "hello world, hello there"
    status, result = call(url + "/api/inspect", {"checkpoint": "tiny", "prompt": prompt, "effort": 1})
    assert status == 200 and result["bytes"] == list(prompt.encode())
    model = AGIFormer.from_pretrained(root / "tiny" / "best")
    expected = byte_surprise(model, prompt.encode(), effort=1.0)
    assert max(abs(a - b) for a, b in zip(result["surprise_bits"], expected)) <= 1e-9
    patches = math.ceil(len(prompt) / result["patch_size"])
    assert len(result["reasoning_steps"]) == patches
    assert len(result["attention_share"]) == model.config.n_layers
    assert all(len(g) == patches and all(0 <= v <= 1 for v in g) for g in result["attention_share"])
    _, low = call(url + "/api/inspect", {"checkpoint": "tiny", "prompt": prompt, "effort": 0})
    assert set(low["reasoning_steps"]) == {1}  # effort 0 caps reasoning at one step
    status, gpt = call(url + "/api/inspect", {"checkpoint": "gpt", "prompt": prompt})
    assert status == 200 and len(gpt["surprise_bits"]) == len(prompt) and "reasoning_steps" not in gpt


def test_generation_streams_what_the_model_generates(server):
    url, root = server
    found = events(url, checkpoint="tiny", prompt="The cat ", max_bytes=12, temperature=0, effort=0.5)
    assert [name for name, _ in found] == ["message"] * 12 + ["done"]
    model = AGIFormer.from_pretrained(root / "tiny" / "best")
    expected = list(model.generate(b"The cat ", 12, temperature=0, effort=0.5))
    assert [data["byte"] for _, data in found[:-1]] == expected
    assert all(data["steps"] >= 1 and data["per_s"] > 0 and data["unit"] == "bytes" for _, data in found[:-1])
    assert found[-1][1]["count"] == 12
    gpt = events(url, checkpoint="gpt", prompt="ab", max_bytes=3, temperature=0.5, seed=1)
    assert len(gpt) == 4 and gpt[0][1]["steps"] is None


@pytest.mark.parametrize("params, status, reason", [
    ({"checkpoint": "tiny", "max_bytes": 0}, 400, "max_bytes must be in [1, 4096]"),
    ({"checkpoint": "tiny", "temperature": "warm"}, 400, "temperature must be a number"),
    ({"checkpoint": "tiny", "effort": 2}, 400, "effort must be in [0, 1]"),
    ({"checkpoint": "../.."}, 403, "outside the served directory"),
    ({"checkpoint": "nothing-here"}, 404, "does not exist"),
    ({"checkpoint": "tiny", "prompt": "x" * (MAX_PROMPT_BYTES + 1)}, 413, "at most"),
])
def test_bad_requests_get_a_status_and_a_one_line_reason(server, params, status, reason):
    url, _ = server
    got, body = call(url + "/api/generate?" + urllib.parse.urlencode(params))
    assert got == status and reason in body["error"] and "\n" not in body["error"]


def test_inspect_refuses_a_body_that_is_not_a_json_object(server):
    url, _ = server
    request = urllib.request.Request(url + "/api/inspect", data=b"[1, 2", headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=30)
    assert error.value.code == 400 and "JSON object" in json.loads(error.value.read())["error"]


def test_generations_are_capped_and_a_disconnect_frees_its_slot(server):
    url, _ = server
    query = urllib.parse.urlencode({"checkpoint": "tiny", "prompt": "a", "max_bytes": 4096})
    first = urllib.request.urlopen(url + "/api/generate?" + query, timeout=60)
    assert first.readline().startswith(b"data: ")  # streaming: the one slot is taken
    status, body = call(url + "/api/generate?" + query)
    assert status == 429 and "already streaming" in body["error"]
    first.close()  # the client goes away: the server stops that generation and frees the slot
    deadline, status = time.time() + 30, 429
    while status == 429 and time.time() < deadline:
        time.sleep(0.2)
        status, _ = call(url + "/api/generate?" + urllib.parse.urlencode({"checkpoint": "tiny", "max_bytes": 2}))
    assert status == 200


def test_a_mag_run_streams_tokens_and_shows_its_gates(tmp_path):
    pytest.importorskip("transformers")
    from agiformer.mag.train import MAGTrainer
    from tests.test_mag_train import save_tiny_base, tiny_recipe

    base = save_tiny_base(tmp_path / "tiny-qwen3")
    MAGTrainer(tiny_recipe(base, steps=2, stages=[dict(name="all")]), out_dir=tmp_path / "runs" / "mag",
               progress=False).train()
    with serving(tmp_path / "runs", max_generations=1) as url:
        assert call(url + "/api/checkpoints")[1]["checkpoints"] == ["mag/best", "mag/last"]
        status, result = call(url + "/api/inspect", {"checkpoint": "mag", "prompt": "k1 = 42\nk2 = 7\nk1 ="})
        assert status == 200 and "".join(result["tokens"]) == "k1 = 42\nk2 = 7\nk1 ="
        assert result["surprise_bits"][0] is None and all(b > 0 for b in result["surprise_bits"][1:])
        assert result["mag_layers"] == [0, 1]
        assert all(len(g) == len(result["tokens"]) and all(0 < v < 1 for v in g) for g in result["memory_share"])
        found = events(url, checkpoint="mag", prompt="k1 = ", max_bytes=5, temperature=0)
    assert [name for name, _ in found] == ["message"] * 5 + ["done"]
    assert all(data["unit"] == "tokens" and data["steps"] is None for _, data in found[:-1])
    from agiformer.mag.eval import open_for_eval
    model, codec, _ = open_for_eval(str(tmp_path / "runs" / "mag"))
    prompt = codec("k1 = ")
    expected = model.greedy_generate(torch.tensor([prompt]), 5)[0, len(prompt):].tolist()
    assert [data["token"] for _, data in found[:-1]] == expected  # the memory on, as MAG generates


CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="Chromium and chromedriver are not installed "
                    "(Debian: apt-get install chromium chromium-driver): the browser test is skipped")
def test_the_page_in_a_browser_streams_a_sample_and_redraws_on_effort(server, tmp_path):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        browser.get(url)
        wait = WebDriverWait(browser, 60)
        wait.until(lambda b: len(b.find_elements(By.CSS_SELECTOR, "#checkpoint option")) == 2)
        browser.find_element(By.CSS_SELECTOR, "#checkpoint option[value='tiny/best']").click()
        prompt = browser.find_element(By.ID, "prompt")
        prompt.clear()
        prompt.send_keys("The history of the cat ")
        browser.find_element(By.ID, "max_bytes").clear()
        browser.find_element(By.ID, "max_bytes").send_keys("40")
        browser.find_element(By.ID, "generate").click()
        wait.until(lambda b: "done" in b.find_element(By.ID, "status").text)
        assert len(browser.find_element(By.ID, "generated").get_attribute("textContent")) > 0
        assert "bytes/s" in browser.find_element(By.ID, "status").text
        browser.find_element(By.ID, "inspect").click()
        wait.until(lambda b: b.find_elements(By.CSS_SELECTOR, "#steps div"))
        before = [c.get_attribute("title") for c in browser.find_elements(By.CSS_SELECTOR, "#steps div")]
        effort = browser.find_element(By.ID, "effort")
        for _ in range(20):  # the slider from 1 down to 0; its change event redraws the views
            effort.send_keys(Keys.ARROW_LEFT)
        wait.until(lambda b: [c.get_attribute("title") for c in b.find_elements(By.CSS_SELECTOR, "#steps div")] != before)
        assert browser.find_element(By.ID, "effort-value").text == "0"
        assert browser.find_elements(By.CSS_SELECTOR, "#surprise span")
        browser.save_screenshot(str(tmp_path / "playground.png"))
        assert (tmp_path / "playground.png").stat().st_size > 10_000
    finally:
        browser.quit()


def test_serve_refuses_a_path_that_is_not_a_directory(tmp_path, capsys):
    from agiformer.cli import main

    assert main(["serve", str(tmp_path / "nowhere")]) == 2
    assert "is not a directory of checkpoints" in capsys.readouterr().err
