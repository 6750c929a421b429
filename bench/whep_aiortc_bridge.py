"""The comparison peer for bench/bridges.py: the same job as `onair whep-pull`, done with
aiortc (the Python WebRTC stack) in one process for N streams: pull WHEP, decode Opus
(aiortc's decoder), resample to 16 kHz mono (PyAV's swresample), cut 100 ms chunks and send
{"traceId","stmId","timestamp","data"} JSON messages over a WebSocket (websockets).

No loss concealment, jitter handling or reconnects: it is the happy path only, which is what
the benchmark measures.

    python3 bench/whep_aiortc_bridge.py --whep URL --ws ws://127.0.0.1:PORT/x --n 4
"""

import argparse
import asyncio
import base64
import json
import time

import aiohttp
import aioice.ice
import av
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RATE = 16000
CHUNK = RATE // 10 * 2  # bytes of 100 ms mono s16le


async def bridge(whep, ws_url, trace_id, stop):
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="recvonly")
    track_ready = asyncio.get_running_loop().create_future()
    pc.on("track", lambda t: track_ready.set_result(t))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        r = await http.post(
            whep,
            data=pc.localDescription.sdp,
            headers={"Content-Type": "application/sdp"},
        )
        answer = await r.text()
        location = r.headers["Location"]
    await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    track = await track_ready
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    async with websockets.connect(ws_url) as ws:
        pending = b""
        produced = 0
        anchor = None
        while not stop.is_set():
            frame = await track.recv()
            if anchor is None:
                anchor = time.time() - frame.samples / frame.sample_rate
            for out in resampler.resample(frame):
                pending += bytes(out.planes[0])[: out.samples * 2]
            while len(pending) >= CHUNK:
                chunk, pending = pending[:CHUNK], pending[CHUNK:]
                msg = {
                    "traceId": trace_id,
                    "stmId": "S",
                    "timestamp": anchor + produced / RATE,
                    "data": base64.b64encode(chunk).decode(),
                }
                produced += CHUNK // 2
                await ws.send(json.dumps(msg))
    await pc.close()
    base = whep.rsplit("/", 1)[0]
    async with aiohttp.ClientSession() as http:
        await http.delete(location if location.startswith("http") else base.split("/whep")[0] + location)


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--whep", required=True)
    ap.add_argument("--ws", required=True)
    ap.add_argument("--n", type=int, default=1)
    ap.add_argument("--prefix", default="peer")
    ap.add_argument("--stagger", type=float, default=0.0, help="seconds between stream starts")
    args = ap.parse_args()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    tasks = []
    for i in range(args.n):
        if i and args.stagger:
            await asyncio.sleep(args.stagger)
        name = f"{args.prefix}-{i}"
        tasks.append(asyncio.ensure_future(bridge(args.whep, f"{args.ws}/{name}", name, stop)))
    await asyncio.gather(*tasks)


if __name__ == "__main__":
    asyncio.run(main())
