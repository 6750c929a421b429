"""WHEP → WebSocket bridge benchmark: onair (N `[[bridge]]` entries in one `onair serve`)
against the same job done with aiortc (bench/whep_aiortc_bridge.py, N streams in one Python
process), on loopback, in the same run.

One aiortc WHEP server (crates/onair/tests/it/peers/whep_server.py) sends every stream (a
48 kHz Opus tone sequence); a WebSocket consumer here receives 100 ms chunks of 16 kHz mono.

Per system and N it reports, over a `--duration` window after `--warmup`:
- CPU of the bridge process (utime + stime from /proc, % of one core),
- latency p50/p95, end to end on the sender's clock: consumer receive time of chunk i minus
  the time the sender released the RTP packet holding the chunk's last sample (the sender
  prints when it released sample 0; streams are started 0.5 s apart so each stream is matched
  to its sender session by order),
- delivery: audio seconds received / wall seconds, summed over the streams,
- memory: the bridge process's RSS once all N streams run, minus its RSS before the first
  bridge started, divided by N.

    python3 bench/bridges.py [--ns 1,4,8] [--duration 15] [--onair target/release/onair]
        [--aiortc-max 20] [--preencoded] [--stagger 0.5]

--aiortc-max skips the aiortc peer above that N (one Python process cannot carry 100 streams
on 2 cores). --preencoded makes the WHEP server send packets encoded once (whep_server.py
--preencoded), so one sender can feed 100 streams.

Needs: pip install aiortc==1.16.0 aiohttp==3.14.5 websockets==17.4; a release build.
"""

import argparse
import asyncio
import base64
import json
import os
import signal
import statistics
import sys
import tempfile
import time

import aiohttp
import websockets

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SERVER = os.path.join(ROOT, "crates/onair/tests/it/peers/whep_server.py")
PEER = os.path.join(HERE, "whep_aiortc_bridge.py")
RATE = 16000
TICK = os.sysconf("SC_CLK_TCK")


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


CHUNK_S = 0.1
PACKET_S = 0.02


class Consumer:
    def __init__(self):
        self.streams = {}  # path -> list of (recv_time, samples)
        self.starts = {}  # path -> sender's unix time of sample 0

    async def handle(self, ws):
        path = ws.request.path
        got = self.streams.setdefault(path, [])
        async for text in ws:
            now = time.time()
            m = json.loads(text)
            got.append((now, len(base64.b64decode(m["data"])) // 2))

    def latency(self, path, i, at):
        """Chunk i's last sample left the sender in the packet released at start + end - 20 ms."""
        return at - (self.starts[path] + (i + 1) * CHUNK_S - PACKET_S)


async def wait_streams(consumer, n, prefix, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready = [p for p, v in consumer.streams.items() if p.startswith(prefix) and len(v) >= 10]
        if len(ready) >= n:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"only {len(ready)} of {n} {prefix} streams came up")


async def stop(proc):
    if proc.returncode is None:
        proc.send_signal(signal.SIGINT)
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()


async def measure(name, proc, consumer, prefix, n, whep_pid, args, rss0, n_mem=None):
    await asyncio.sleep(args.warmup)
    rss1 = rss_kib(proc.pid)
    c0, s0, t0 = cpu_seconds(proc.pid), cpu_seconds(whep_pid), time.time()
    await asyncio.sleep(args.duration)
    c1, s1, t1 = cpu_seconds(proc.pid), cpu_seconds(whep_pid), time.time()
    lat, audio = [], 0
    for path, msgs in consumer.streams.items():
        if not path.startswith("/" + prefix):
            continue
        for i, (at, samples) in enumerate(msgs):
            if t0 <= at <= t1:
                lat.append(consumer.latency(path, i, at) * 1000)
                audio += samples / RATE
    lat.sort()
    wall = t1 - t0
    return {
        "system": name,
        "n": n,
        "cpu_pct": 100 * (c1 - c0) / wall,
        "sender_cpu_pct": 100 * (s1 - s0) / wall,
        "p50_ms": statistics.median(lat),
        "p95_ms": lat[int(0.95 * (len(lat) - 1))],
        "delivery": audio / (wall * n),
        "messages": len(lat),
        "rss_per_bridge_kib": (rss1 - rss0) / max(1, n if n_mem is None else n_mem),
        "rss_kib": rss1,
    }


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ns", default="1,4,8")
    ap.add_argument("--duration", type=float, default=15)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--onair", default=os.path.join(ROOT, "target/release/onair"))
    ap.add_argument("--aiortc-max", type=int, default=1000)
    ap.add_argument("--preencoded", action="store_true")
    ap.add_argument("--stagger", type=float, default=0.5)
    args = ap.parse_args()

    whep = await asyncio.create_subprocess_exec(
        sys.executable, SERVER, *(["--preencoded"] if args.preencoded else []),
        stdout=asyncio.subprocess.PIPE,
    )
    line = (await whep.stdout.readline()).decode()
    port = int(line.split()[1])
    whep_url = f"http://127.0.0.1:{port}/whep"

    starts = asyncio.Queue()

    async def drain():
        while line := await whep.stdout.readline():
            words = line.decode().split()
            if words and words[0] == "START":
                await starts.put(float(words[2]))

    async def next_start():
        return await asyncio.wait_for(starts.get(), 30)

    drain_task = asyncio.ensure_future(drain())
    consumer = Consumer()
    ws_server = await websockets.serve(consumer.handle, "127.0.0.1", 0, max_size=None)
    ws_port = ws_server.sockets[0].getsockname()[1]
    ws_base = f"ws://127.0.0.1:{ws_port}"
    results = []
    try:
        for n in [int(x) for x in args.ns.split(",")]:
            # onair: N bridges in one server, started through the API 0.5 s apart.
            prefix = f"onair{n}"
            # Only the bridges: no built-in demo programme encoding alongside them.
            conf = os.path.join(tempfile.mkdtemp(), "bench.toml")
            with open(conf, "w") as f:
                f.write("[demo]\nenabled = false\n")
            proc = await asyncio.create_subprocess_exec(
                args.onair, "serve", "--bind", "127.0.0.1:0", "--admin-password", "benchpw",
                "--source-password", "benchpw", "--config", conf, stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "RUST_LOG": "warn"},
            )
            try:
                banner = (await proc.stdout.readline()).decode()
                api = "http://" + banner.split("listening on ")[1].strip() + "/api/bridges"
                rss0 = rss_kib(proc.pid)
                auth = {"Authorization": "Basic " + base64.b64encode(b"admin:benchpw").decode()}
                async with aiohttp.ClientSession() as http:
                    for i in range(n):
                        name = f"{prefix}-{i}"
                        spec = {"whep": whep_url, "ws": f"{ws_base}/{name}", "traceId": name, "stmId": f"S-{name}"}
                        async with http.post(api, json=spec, headers=auth) as r:
                            assert r.status == 201, await r.text()
                        consumer.starts["/" + name] = await next_start()
                        await asyncio.sleep(args.stagger)
                await wait_streams(consumer, n, "/" + prefix)
                results.append(await measure("onair", proc, consumer, prefix, n, whep.pid, args, rss0))
            finally:
                await stop(proc)
            print(results[-1], flush=True)
            if n > args.aiortc_max:
                continue
            # aiortc: N streams in one Python process.
            prefix = f"aiortc{n}"
            proc = await asyncio.create_subprocess_exec(
                sys.executable, PEER, "--whep", whep_url, "--ws", ws_base, "--n", str(n),
                "--prefix", prefix, "--stagger", str(args.stagger),
            )
            try:
                for i in range(n):
                    consumer.starts[f"/{prefix}-{i}"] = await next_start()
                    if i == 0:
                        # Python and aiortc are loaded by now: count streams 2..N only.
                        rss0 = rss_kib(proc.pid)
                await wait_streams(consumer, n, "/" + prefix)
                results.append(await measure("aiortc", proc, consumer, prefix, n, whep.pid, args, rss0, n - 1))
            finally:
                await stop(proc)
            print(results[-1], flush=True)
    finally:
        ws_server.close()
        whep.send_signal(signal.SIGINT)
        await whep.wait()
        drain_task.cancel()

    print()
    print("| system | N | CPU % of one core | CPU % per bridge | latency p50 / p95 ms | delivery | RSS MiB | RSS per bridge KiB | sender CPU % |")
    print("|---|---:|---:|---:|---|---:|---:|---:|---:|")
    for r in sorted(results, key=lambda r: (r["n"], r["system"])):
        print(
            f"| {r['system']} | {r['n']} | {r['cpu_pct']:.1f} | {r['cpu_pct'] / r['n']:.2f} | "
            f"{r['p50_ms']:.1f} / {r['p95_ms']:.1f} | {r['delivery']:.3f} | "
            f"{r['rss_kib'] / 1024:.1f} | {r['rss_per_bridge_kib']:.0f} | {r['sender_cpu_pct']:.1f} |"
        )


if __name__ == "__main__":
    asyncio.run(main())
