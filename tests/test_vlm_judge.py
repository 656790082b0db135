"""`rewards.vlm_judge.VLMJudgeReward` against tests/judge_server.py: a local HTTP server on loopback that
implements the chat-completions API and stands in for a served VLM (no VLM can run on these machines). The
requests, images, retries and answers are real HTTP; only the model behind the endpoint is simulated.
Last come the judge inside `python -m rewards.score` and `python -m rl.train`, each in a subprocess."""

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from judge_server import ECHO_SHAPES, JudgeServer
from PIL import Image
from train_helpers import REPO, save_config, tiny_config

from rewards.score import main as score_main
from rewards.vlm_judge import KeyMask, VLMJudgeReward

KEY_ENV = "XOMNI_TEST_JUDGE_KEY"
SECRET = "sk-test-4f9c2b7e-never-log-me"
# Echoed by a careless server: "-123456" is a number a parser reads first; "/", "+" and "=" change when encoded.
ECHOED = "sk-test-123456/abcd+efgh="


@pytest.fixture(scope="module")
def server():
    with JudgeServer() as running:
        yield running


@pytest.fixture
def judge(server):
    def make(**kwargs):
        return VLMJudgeReward(**{"base_url": server.base_url, "model": "judge", "prompt": "quality_1_10",
                                 "retries": 0, **kwargs})

    server.reset()
    return make


def grey(value: int, size=(24, 16)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, dtype=np.uint8)


def test_number_answers_are_divided_by_max_score_and_keep_their_order(judge, server):
    values = [10, 60, 110, 160, 210, 250]
    # Earlier rows answer later, so the responses arrive in reverse order.
    prompts = [f"a grey card [slow={0.05 * (len(values) - i):.2f}]" for i in range(len(values))]
    output = judge(concurrency=len(values))([grey(v) for v in values], prompts, [{}] * len(values))
    assert output.scores.tolist() == pytest.approx([v / 255 for v in values], abs=1e-4)
    assert output.details["nan_reason"] == [None] * len(values)
    assert output.details["answer"][0] == f"Score: {10 * values[0] / 255:.4f}"
    body = server.requests[0]["body"]
    assert body["model"] == "judge" and body["temperature"] == 0 and "logprobs" not in body
    question = body["messages"][0]["content"][1]["text"]
    assert question.startswith('An image was generated from this description: "a grey card')
    assert "1 (very poor)" in question


def test_yes_probability_reads_the_first_tokens_logprobs(judge, server):
    values = [0, 51, 128, 204, 255]
    output = judge(prompt="alignment_yes_no")([grey(v) for v in values], ["a cat"] * 5, [{}] * 5)
    # The server puts 0.9 b on "Yes", 0.9 (1 - b) on " no" and 0.1 on another token: the ratio is b.
    assert output.scores.tolist() == pytest.approx([v / 255 for v in values], abs=1e-6)
    body = server.requests[0]["body"]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1


def test_images_go_as_data_urls_in_the_chosen_format_and_size(judge, server):
    photo = np.random.default_rng(0).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    judge(image_format="jpeg", max_side=64)([photo], ["noise"], [{}])
    judge(image_format="png", max_side=None)([photo], ["noise"], [{}])
    urls = [r["body"]["messages"][0]["content"][0]["image_url"]["url"] for r in server.requests]
    assert urls[0].startswith("data:image/jpeg;base64,") and urls[1].startswith("data:image/png;base64,")
    assert [r["image_size"] for r in server.requests] == [(43, 64), (200, 300)]  # (width, height)


def test_failures_and_unreadable_answers_give_nan_with_their_reason(judge, server):
    prompts = ["fine", "[fail=1] fails once", "[fail=9] always fails", "[slow=3] too slow", "[malformed]",
               "[badjson]", "[status=404]"]
    output = judge(retries=2, timeout_s=0.5)([grey(100)] * len(prompts), prompts, [{}] * len(prompts))
    scores = output.scores.tolist()
    assert scores[:2] == pytest.approx([100 / 255] * 2, abs=1e-4)  # a 500 then a success: scored
    assert all(math.isnan(s) for s in scores[2:])
    assert output.details["nan_reason"] == [None, None, "http_500", "timeout", "unparseable", "bad_response",
                                            "http_404"]
    assert output.details["answer"][4] == "I cannot judge this image."
    attempts = Counter()
    for request in server.requests:
        attempts[request["body"]["messages"][0]["content"][1]["text"].split('"')[1]] += 1
    # Retried: 5xx (1 + 2 retries). Not retried: a timeout, a 404, answers that arrived but cannot be read.
    assert attempts == {"fine": 1, "[fail=1] fails once": 2, "[fail=9] always fails": 3, "[slow=3] too slow": 1,
                        "[malformed]": 1, "[badjson]": 1, "[status=404]": 1}


def test_an_unreachable_server_is_retried_then_scores_nan():
    judge = VLMJudgeReward("http://127.0.0.1:9/v1", "judge", "quality_1_10", retries=1, timeout_s=2)
    output = judge([grey(0), grey(1)], ["a", "b"], [{}, {}])
    assert output.scores.isnan().all() and output.details["nan_reason"] == ["connection", "connection"]


def test_the_concurrency_limit_is_honoured():
    with JudgeServer() as server:  # its own server: no request of an earlier test is still in flight
        judge = VLMJudgeReward(server.base_url, "judge", "quality_1_10", concurrency=3)
        judge([grey(i) for i in range(12)], ["[slow=0.3] slow"] * 12, [{}] * 12)
        assert len(server.requests) == 12 and server.max_in_flight == 3


def test_the_api_key_is_sent_and_never_logged(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    caplog.set_level(logging.DEBUG)  # every logger, httpx's and httpcore's included
    with JudgeServer(api_key=SECRET) as server:
        judge = VLMJudgeReward(server.base_url, "judge", "quality_1_10", retries=0, api_key_env=KEY_ENV)
        output = judge([grey(100)] * 3, ["fine", "[echo] a proxy echoes headers", "[status=500]"], [{}] * 3)
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert output.details["nan_reason"] == [None, "http_400", "http_500"]
        assert "http_400 x1" in caplog.text and "***" in caplog.text  # the echoed key was redacted
        monkeypatch.delenv(KEY_ENV)
        with pytest.raises(RuntimeError, match=f"'{KEY_ENV}' named by api_key_env is not set") as missing:
            judge([grey(0)], ["x"], [{}])
    assert SECRET not in caplog.text + repr(judge) + json.dumps(output.details) + str(missing.value)


def traces(key: str) -> set[str]:
    """What must not appear anywhere: every 8 characters in a row of the key, literal or URL-encoded."""
    forms = (key, urllib.parse.quote(key, safe=""), urllib.parse.quote_plus(key, safe=""))
    return {form[i:i + 8] for form in forms for i in range(len(form) - 7)}


def leaked(text: str | bytes, key: str) -> list[str]:
    data = text.encode() if isinstance(text, str) else text
    return sorted(t for t in traces(key) if t.encode() in data)


def test_the_key_mask_covers_every_form_a_server_can_echo():
    mask = KeyMask(ECHOED)
    echoes = [ECHOED, json.dumps(ECHOED), ECHOED.replace("/", "\\/"), urllib.parse.quote(ECHOED, safe=""),
              urllib.parse.quote(ECHOED, safe="").replace("%2F", "%2f"), urllib.parse.quote_plus(ECHOED),
              "..." + ECHOED[-8:], ECHOED[3:12]]
    for echo in echoes:
        masked = mask(f"before {echo} after")
        assert masked.startswith("before ") and masked.endswith(" after") and "***" in masked, echo
        assert leaked(masked, ECHOED) == [] and "123456" not in masked, (echo, masked)
    assert mask("Score: 7, est-123") == "Score: 7, est-123"  # fewer than 8 of the key's characters: kept
    assert KeyMask(None)("Bearer sk") == "Bearer sk"


def test_an_echoed_key_is_masked_before_it_is_parsed_or_goes_anywhere(monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, ECHOED)
    caplog.set_level(logging.DEBUG)
    shapes = list(ECHO_SHAPES)
    with JudgeServer(api_key=ECHOED) as server:
        judge = VLMJudgeReward(server.base_url, "judge", "quality_1_10", retries=0, api_key_env=KEY_ENV)
        output = judge([grey(102)] * len(shapes), [f"[echo={shape}]" for shape in shapes], [{}] * len(shapes))
    reasons = dict(zip(shapes, output.details["nan_reason"], strict=True))
    # "unparseable", not "out_of_range": no number was read out of the key.
    assert reasons == {"no_choices": "bad_response", "text": "unparseable", "number": None, "tail": "unparseable",
                       "url": "unparseable", "unicode": "unparseable", "400": "http_400", "500": "http_500",
                       "nonjson": "bad_response"}
    scores = dict(zip(shapes, output.scores.tolist(), strict=True))
    assert scores["number"] == pytest.approx(0.4, abs=1e-4)  # the judge's own "Score: 4.0", after the key
    assert output.details["answer"][shapes.index("number")] == "Bearer *** Score: 4.0000"
    assert all(math.isnan(v) for shape, v in scores.items() if shape != "number")
    assert "not scored" in caplog.text
    assert leaked(caplog.text + json.dumps(output.details), ECHOED) == []


@pytest.mark.parametrize("kwargs, message", [
    ({"prompt": "Rate this image."}, "must contain '{prompt}' or name a shipped template"),
    ({"prompt": "alignment_yes_no", "parse": "number"}, "is read with parse='yes_probability'"),
    ({"prompt": "unifiedreward_pointwise", "max_score": 10}, "is read with max_score=5.0"),
    ({"prompt": "Score {prompt} from 1 to 7.", "parse": "number"}, "max_score must be > 0"),
    ({"prompt": "Is this {prompt}?"}, "parse must be 'number' or 'yes_probability'"),
    ({"image_format": "webp"}, "image_format must be"),
    ({"concurrency": 0}, "concurrency must be an integer >= 1"),
    ({"base_url": "127.0.0.1:8000/v1"}, "base_url must start with http"),
])
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("{", r"\{").replace("}", r"\}")):
        VLMJudgeReward(**{"base_url": "http://127.0.0.1:8000/v1", "model": "m", "prompt": "quality_1_10", **kwargs})


def test_a_custom_template_and_the_unifiedreward_scale(judge, server):
    custom = judge(prompt="Rate {prompt} from 0 to 20.", parse="number", max_score=20)
    assert custom([grey(255)], ["this"], [{}]).scores.tolist() == [pytest.approx(0.5)]  # "Score: 10" / 20
    assert server.requests[0]["body"]["messages"][0]["content"][1]["text"] == "Rate this from 0 to 20."
    unified = judge(prompt="unifiedreward_pointwise")
    assert unified([grey(102)], ["a cat"], [{}]).scores.tolist() == [pytest.approx(0.8, abs=1e-4)]  # 4 / 5
    assert server.requests[1]["body"]["messages"][0]["content"][1]["text"].endswith("Text Caption: [a cat]")


def judge_component(server: JudgeServer, prompt: str = "quality_1_10") -> dict:
    return {"_component_": "rewards.vlm_judge.VLMJudgeReward", "base_url": server.base_url, "model": "judge",
            "prompt": prompt, "concurrency": 4, "retries": 1, "api_key_env": KEY_ENV}


def files_containing(folder: Path, needle: str) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def run_module(args: list[str], cwd: Path, **env_vars: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KEY_ENV: SECRET, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled",
           "RAY_USAGE_STATS_ENABLED": "0", **env_vars}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_the_judge_in_offline_scoring(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name, value in (("dark", 51), ("light", 204)):
        Image.fromarray(grey(value)).save(images / f"{name}.png")
        (images / f"{name}.txt").write_text(f"a {name} card")
    with JudgeServer(api_key=SECRET) as server:
        config = {"rewards": {"judge": judge_component(server)}, "ensemble": {"weights": {"judge": 1.0}}}
        (tmp_path / "judge.yaml").write_text(json.dumps(config))
        done = run_module(["rewards.score", "--images", "images", "--config", "judge.yaml", "--out", "out"],
                          tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert len(server.requests) == 2
    records = {r["image"]: r for r in map(json.loads, (tmp_path / "out" / "scores.jsonl").read_text().splitlines())}
    assert records["dark.png"]["judge"] == pytest.approx(0.2, abs=1e-4)
    assert records["light.png"]["total"] == pytest.approx(0.8, abs=1e-4)
    assert records["light.png"]["details"]["judge"]["answer"] == "Score: 8.0000"
    assert f"api_key_env: {KEY_ENV}" in (tmp_path / "out" / "config.yaml").read_text()
    assert SECRET not in done.stdout + done.stderr and files_containing(tmp_path, SECRET) == []


def test_an_echoed_key_reaches_no_byte_of_offline_scoring(tmp_path, monkeypatch, capfd, caplog):
    """Every reply shape of `ECHO_SHAPES` in `rewards.score`: scores.jsonl, report.html, scores.csv, runs.jsonl,
    the thumbnails, stdout, stderr and the log hold no trace of the key, and only the real score is read."""
    monkeypatch.setenv(KEY_ENV, ECHOED)
    images = tmp_path / "images"
    images.mkdir()
    for shape in ECHO_SHAPES:
        Image.fromarray(grey(102)).save(images / f"{shape}.png")
        (images / f"{shape}.txt").write_text(f"a grey card [echo={shape}]")
    with JudgeServer(api_key=ECHOED) as server:
        config = {"rewards": {"judge": judge_component(server)}, "ensemble": {"weights": {"judge": 1.0}}}
        (tmp_path / "judge.yaml").write_text(json.dumps(config))
        out = tmp_path / "out"
        assert score_main(["--images", str(images), "--config", str(tmp_path / "judge.yaml"), "--out", str(out)]) == 0
    records = {r["image"]: r for r in map(json.loads, (out / "scores.jsonl").read_text().splitlines())}
    scored = {key: r["judge"] for key, r in records.items() if r["judge"] is not None}
    assert scored == {"number.png": pytest.approx(0.4, abs=1e-4)}
    assert records["text.png"]["details"]["judge"] == {"answer": "Request from Bearer ***.",
                                                       "nan_reason": "unparseable"}
    captured = capfd.readouterr()
    assert leaked(captured.out + captured.err + caplog.text, ECHOED) == []
    written = [p for p in out.rglob("*") if p.is_file()]
    assert {"scores.jsonl", "report.html", "scores.csv", "runs.jsonl"} <= {p.name for p in written}
    assert [p for p in written if leaked(p.read_bytes(), ECHOED)] == []


def test_the_judge_as_a_reward_actor_in_training(tmp_path):
    """Both servers echo the key in every answer, which still scores: `judge` after its answer, `echo` before
    its number, which a parser would read first (a failed row's answer goes to the warning in Ray's worker
    log). The key reaches no file of the run and no log of Ray's (its temp folder is made short, for Ray's
    socket paths, and searched), and every score is the one the server meant."""
    run_dir = tmp_path / "run"
    ray_tmp = Path(tempfile.mkdtemp(prefix="xr-", dir="/tmp"))
    try:
        with JudgeServer(api_key=SECRET, echo=True) as server, JudgeServer(api_key=SECRET) as echo_server:
            echo = {**judge_component(echo_server, "Rate {prompt} [echo=number] from 0 to 10."), "parse": "number",
                    "max_score": 10}
            cfg = tiny_config(run_dir, {"judge": judge_component(server, "alignment_yes_no"), "echo": echo},
                              ("trainer.steps=1", "ensemble.batch_size=3"))
            done = run_module(["rl.train", str(save_config(cfg, tmp_path / "judge.yaml"))], REPO,
                              RAY_TMPDIR=str(ray_tmp))
            assert done.returncode == 0, done.stderr[-3000:]
            requests, echoed = list(server.requests), list(echo_server.requests)
        ray_logs = [p for p in ray_tmp.rglob("*.err") if p.is_file()]
        assert ray_logs and [p for p in ray_tmp.rglob("*") if p.is_file() and leaked(p.read_bytes(), SECRET)] == []
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1]
    m = metrics[0]  # 2 prompts x 4 samples, every one judged
    assert m["reward/judge/count"] == 8 and m["reward/judge/nan_frac"] == 0 and 0 <= m["reward/judge/mean"] <= 1
    for name, served in (("judge", requests), ("echo", echoed)):
        assert m[f"reward/{name}/nan_frac"] == 0 and len(served) == 8
        assert m[f"reward/{name}/mean"] == pytest.approx(np.mean([r["score"] for r in served]), abs=1e-4), name
    assert len(requests) == 8 and all(r["headers"]["authorization"] == f"Bearer {SECRET}" for r in requests)
    assert all(r["body"]["logprobs"] for r in requests)
    assert (run_dir / "checkpoints" / "step_00000001" / "config.yaml").is_file()  # the final step is saved
    assert SECRET not in done.stdout + done.stderr and files_containing(tmp_path, SECRET) == []
    assert leaked(done.stdout + done.stderr, SECRET) == []
    assert [p for p in tmp_path.rglob("*") if p.is_file() and leaked(p.read_bytes(), SECRET)] == []
