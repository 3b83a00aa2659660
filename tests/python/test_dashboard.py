"""The built-in dashboard, read the way its users read it: Debian's headless Chromium, driven by
Selenium through chromedriver, loads `/` from the embedded default and the test reads the page's
DOM. And a dashboard that never reads its event stream must cost decoding nothing."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import myelin
from common import live
from conftest import ROOT, myelin_bin

SESSIONS = ["demo", "demo-seeg-synthetic", "demo-meg-synthetic"]
ARTEFACT = ROOT / "target/dashboard.png"


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1400,2400", f"--user-data-dir={tempfile.mkdtemp()}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def embedded_default(galleries: Path):
    env = dict(os.environ, MYELIN_SERVER__GRPC_ADDR="127.0.0.1:0", MYELIN_SERVER__HTTP_ADDR="127.0.0.1:0",
               MYELIN_MODELS__GALLERIES_DIR=str(galleries), RUST_LOG="warn")
    proc = subprocess.Popen([myelin_bin()], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in proc.stdout:
        if line.startswith("myelin ready "):
            fields = dict(kv.split("=", 1) for kv in line.split()[2:])
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, fields["http"]
    raise RuntimeError("myelin exited before it was ready")


def counts(driver) -> dict[str, int]:
    found = {}
    for section in driver.find_elements("css selector", "section.session"):
        count = section.find_elements("css selector", ".predictions")
        if count:
            found[section.get_attribute("data-session")] = int(count[0].get_attribute("data-count"))
    return found


def wait_for(predicate, what: str, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.25)
    raise TimeoutError(what)


def test_the_dashboard_shows_the_live_sessions_their_predictions_and_latency(tmp_path):
    proc, http = embedded_default(tmp_path / "galleries")
    driver = browser()
    try:
        driver.get(f"http://{http}/")
        wait_for(lambda: all(counts(driver).get(s, 0) > 0 for s in SESSIONS), f"the page never showed predictions of {SESSIONS}")
        first = counts(driver)
        time.sleep(4)
        second = counts(driver)
        assert all(second[s] > first[s] for s in ["demo", "demo-meg-synthetic"]), (first, second)
        assert second["demo-seeg-synthetic"] >= first["demo-seeg-synthetic"]
        for session in SESSIONS:
            section = driver.find_element("css selector", f'section[data-session="{session}"]')
            p99 = section.find_element("css selector", "td.p99").get_attribute("data-p99-ms")
            assert p99 and 0 < float(p99) < 1000, (session, p99)
            text = section.text
            assert "live" in text and "Hz nominal" in text
            tagged = section.find_elements("css selector", ".tag.synthetic")
            assert bool(tagged) == ("synthetic" in session), session
            mix = section.find_element("css selector", ".mix").text
            assert int(re.search(r"OK (\d+)", mix).group(1)) > 0, mix
        # Models with their queue depths; the page drew its signal and timeline charts.
        assert driver.find_element("css selector", 'tr[data-model="meg-brain-synthetic"] td[data-queued]')
        # Sessions first; the models below them, collapsed, and filterable.
        order = driver.execute_script(
            "return document.getElementById('sessions').compareDocumentPosition(document.getElementById('models'))")
        assert order & 4, "the models table comes after the sessions"
        assert driver.find_element("id", "models").get_attribute("open") is None
        everything = len(driver.find_elements("css selector", "#models tbody tr"))
        driver.find_element("css selector", "#models summary").click()
        driver.find_element("id", "model-filter").send_keys("meg-")
        wait_for(lambda: len(driver.find_elements("css selector", "#models tbody tr")) < everything, "the filter hid nothing")
        models = [r.get_attribute("data-model") for r in driver.find_elements("css selector", "#models tbody tr")]
        assert models and all("meg-" in m for m in models), models
        driver.find_element("css selector", "#models summary").click()
        assert len(driver.find_elements("css selector", "section.session canvas")) >= 3 * 2
        ARTEFACT.parent.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTEFACT))
        assert ARTEFACT.stat().st_size > 10_000
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(timeout=15)


def latencies(server, seconds: float, rng) -> list:
    """Streams `seconds` of 4-channel EEG at 256 Hz in real time into erp-linear-muse (sliding
    windows every 125 ms) and returns the predictions a gRPC subscriber got."""
    with myelin.Client(server.grpc) as client:
        session = f"steady-{rng.integers(1 << 30)}"
        stream = client.open_session(session, ["TP9", "AF7", "AF8", "TP10"], rate=256)
        attached = client.attach(session, "erp-linear-muse", hop_s=0.125, latency_budget_ms=50)
        got: list = []
        subscription = client.subscribe(attachment=attached.attachment_id)
        reader = threading.Thread(target=lambda: got.extend(subscription), daemon=True)
        reader.start()
        time.sleep(0.2)
        started = time.monotonic()
        for k in range(int(seconds * 256 / 16)):
            time.sleep(max(0.0, started + (k + 1) * 16 / 256 - time.monotonic()))
            stream.push(rng.standard_normal((16, 4)))
        stream.wait_acknowledged()
        time.sleep(0.3)
        subscription.cancel()
        stream.close()
    return got


def test_a_dashboard_that_never_reads_costs_decoding_nothing():
    server = live.Server(myelin_bin())
    stalled: list[socket.socket] = []
    rng = np.random.default_rng(11)
    try:
        before = latencies(server, 6.0, rng)
        # Five dashboards open the event stream and never read it (small receive buffers, so
        # their TCP windows fill at once).
        host, port = server.http.rsplit(":", 1)
        for _ in range(5):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect((host, int(port)))
            s.sendall(f"GET /events HTTP/1.1\r\nHost: {server.http}\r\nAccept: text/event-stream\r\n\r\n".encode())
            stalled.append(s)
        time.sleep(1.0)
        during = latencies(server, 6.0, rng)
        for got in (before, during):
            assert len(got) >= 40 and all(p.status == "ok" and p.timing.budget_met for p in got), \
                [(p.status, p.timing.server_latency) for p in got if p.status != "ok" or not p.timing.budget_met]
            assert [p.sequence for p in got] == list(range(got[0].sequence, got[0].sequence + len(got)))

        def summary(got):
            lat = np.sort([p.timing.server_latency * 1e6 for p in got])
            return f"p50 {np.percentile(lat, 50):.0f} us, p99 {np.percentile(lat, 99):.0f} us, max {lat[-1]:.0f} us ({len(got)} predictions)"

        print(f"\nserver latency without a dashboard: {summary(before)}; with 5 dashboards that never read: {summary(during)}")
        assert server.proc.poll() is None
    finally:
        for s in stalled:
            s.close()
        server.stop()


def test_the_signal_plot_shows_10_hz_not_an_alias_of_mains(server):
    """10 Hz plus twice as strong 50 Hz mains at 256 Hz, pushed at four times real time: the
    page's plotted data (the uPlot series it draws) has its spectral peak at 10 Hz, and nothing
    where mains would fold to if it were decimated without a low-pass; the effective rate comes
    from the source's timestamps (256 Hz, not the 1024 Hz of the wall clock)."""
    rate, seconds = 256.0, 12.0
    t = np.arange(int(rate * seconds)) / rate
    signal = np.sin(2 * np.pi * 10 * t) + 2 * np.sin(2 * np.pi * 50 * t)
    driver = browser()
    try:
        driver.get(f"http://{server.http}/")
        with myelin.Client(server.grpc) as client:
            stream = client.open_session("mains", ["Fz", "Cz"], rate=rate)
            started = time.monotonic()
            for begin in range(0, len(t), 32):
                time.sleep(max(0.0, started + begin / rate / 4 - time.monotonic()))
                chunk = signal[begin:begin + 32]
                stream.push(np.stack([chunk, -chunk], axis=1), 1000.0 + t[begin:begin + 32])
            stream.wait_acknowledged()
            plotted = "const s = dashboard.sessions.get('mains'); return s && s.signalPlot ? [s.signalPlot.data[0], s.signalPlot.data[1]] : null"
            wait_for(lambda: (d := driver.execute_script(plotted)) and d[0][-1] - d[0][0] > 9.5, "the page never plotted 10 s of the session")
            times, values = (np.asarray(v, dtype=np.float64) for v in driver.execute_script(plotted))
            section = driver.find_element("css selector", 'section[data-session="mains"]')
            effective = float(section.find_element("css selector", ".effective-rate").text.split()[0])
            title = section.find_element("css selector", ".u-title").text
            section.find_element("css selector", "input.highpass").click()
            filtered_title = section.find_element("css selector", ".u-title").text
            stream.close()
    finally:
        driver.quit()
    shown_rate = 1 / np.median(np.diff(times))
    assert 80 <= shown_rate <= 110, shown_rate
    # The last 8 s (the display's filter has settled), windowed.
    keep = times >= times[-1] - 8
    x = values[keep] - values[keep].mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    freqs = np.fft.rfftfreq(len(x), 1 / shown_rate)
    peak = freqs[np.argmax(spectrum)]
    alias = abs(50 - shown_rate)
    at = lambda f: spectrum[np.argmin(np.abs(freqs - f))]  # noqa: E731
    assert abs(peak - 10) < 0.5, f"plotted spectrum peaks at {peak:.2f} Hz"
    assert at(alias) < 0.01 * at(10), f"mains folded to {alias:.2f} Hz: {at(alias) / at(10):.3f} of the 10 Hz peak"
    others = spectrum[(freqs > 13) | (freqs < 7)]
    assert others.max() < 0.01 * at(10), "nothing but the 10 Hz wave in the plot"
    assert abs(effective - 256) < 1, f"effective rate {effective} Hz"
    assert "low-passed at" in title and "display filter: off" in title, title
    assert "display filter: high-pass 0.5 Hz" in filtered_title, filtered_title
