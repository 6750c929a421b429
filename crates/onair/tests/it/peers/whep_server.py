"""A WHEP server made of aiortc, for the WHEP bridge tests.

POST /whep with an SDP offer answers 201 + SDP + Location; DELETE on that Location ends
the session. Each session sends a tone sequence as Opus (48 kHz): each frequency of
--tones for --tone-secs, repeated. Nothing leaves 127.0.0.1: no ICE servers and
loopback-only host candidates.

Events go to stdout, one a line, flushed: "LISTEN <port>", "SESSION <id>",
"CONNECTED <id>", "START <id> <unix time of the first sample>", "DELETE <id>",
"CLOSED <id>".

Options: --drop-every N / --reorder-every M drop or delay (by one packet) every N-th / M-th
RTP packet. --preencoded encodes one cycle of the sequence once (libopus via PyAV, 20 ms
packets) and sends those packets to every session, so one server can feed ~100 sessions
(benchmarks). --codec PCMU answers with G.711 µ-law only (PCMA: A-law). --reject-first N answers the first N POSTs with 503 + Retry-After: 1, to exercise
the client's retry. --end-after SECS closes the first peer connection that long after
it connected (the server goes away without DELETE), to exercise WHEP reconnection.
--cert FILE --key FILE serve HTTPS with that certificate (PEM) instead of plain HTTP.
"""

import argparse
import asyncio
import fractions
import math
import ssl
import sys
import time
import uuid

import aioice.ice
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from aiortc.rtcdtlstransport import RTCDtlsTransport
from aiortc.rtp import is_rtcp
import av

# aioice gathers every interface address except loopback; these tests want loopback only.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

RATE = 48000
FRAME = 960  # 20 ms


def say(*words):
    print(*words, flush=True)


class ToneTrack(MediaStreamTrack):
    """Mono s16 tones paced in real time from the first frame pulled."""

    kind = "audio"

    def __init__(self, tones, tone_secs, sid):
        super().__init__()
        # One whole cycle of the sequence, made once: frames are slices of it.
        n = int(tone_secs * RATE)
        pcm = bytearray()
        for i in range(n * len(tones)):
            v = int(12000 * math.sin(2 * math.pi * tones[i // n] * i / RATE))
            pcm += v.to_bytes(2, "little", signed=True)
        self.cycle = bytes(pcm) * 2  # doubled so a frame never needs to wrap
        self.sid = sid
        self.start = None
        self.sent = 0

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
            say("START", self.sid, f"{time.time():.6f}")
        due = self.start + self.sent / RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        at = 2 * (self.sent % (len(self.cycle) // 4))
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(self.cycle[at : at + 2 * FRAME])
        frame.sample_rate = RATE
        frame.pts = self.sent
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += FRAME
        return frame


class PacketTrack(MediaStreamTrack):
    """The same sequence as ToneTrack, encoded once: every session sends the same packets."""

    kind = "audio"
    packets = None

    def __init__(self, tones, tone_secs, sid):
        super().__init__()
        if PacketTrack.packets is None:
            PacketTrack.packets = encode_cycle(ToneTrack(tones, tone_secs, None).cycle)
        self.sid = sid
        self.start = None
        self.sent = 0

    async def recv(self):
        if self.start is None:
            self.start = time.monotonic()
            say("START", self.sid, f"{time.time():.6f}")
        due = self.start + self.sent / RATE
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        packets = PacketTrack.packets
        packet = av.Packet(packets[(self.sent // FRAME) % len(packets)])
        packet.pts = self.sent
        packet.time_base = fractions.Fraction(1, RATE)
        self.sent += FRAME
        return packet


def encode_cycle(cycle):
    """One cycle (the first half of ToneTrack's doubled buffer) as 20 ms Opus packets."""
    enc = av.CodecContext.create("libopus", "w")
    enc.sample_rate = RATE
    enc.layout = "mono"
    enc.format = "s16"
    enc.bit_rate = 64000
    cycle = cycle[: len(cycle) // 2]
    out = []
    for at in range(0, len(cycle) - 2 * FRAME + 1, 2 * FRAME):
        frame = av.AudioFrame(format="s16", layout="mono", samples=FRAME)
        frame.planes[0].update(cycle[at : at + 2 * FRAME])
        frame.sample_rate = RATE
        frame.pts = at // 2
        frame.time_base = fractions.Fraction(1, RATE)
        out += [bytes(p) for p in enc.encode(frame)]
    out += [bytes(p) for p in enc.encode(None)]
    return out


def impair(drop_every, reorder_every):
    """Every drop_every-th RTP packet is not sent; every reorder_every-th is sent after
    the next one. Deterministic, counted over all sessions."""
    send = RTCDtlsTransport._send_rtp
    state = {"n": 0, "held": None}

    async def impaired(self, data):
        if is_rtcp(data):
            return await send(self, data)
        state["n"] += 1
        n = state["n"]
        if drop_every and n % drop_every == 0:
            say("DROP", n)
            return
        if reorder_every and n % reorder_every == 0 and state["held"] is None:
            state["held"] = data
            return
        await send(self, data)
        if state["held"] is not None:
            held, state["held"] = state["held"], None
            await send(self, held)

    RTCDtlsTransport._send_rtp = impaired


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tones", default="440,880,660")
    ap.add_argument("--tone-secs", type=float, default=1.0)
    ap.add_argument("--reject-first", type=int, default=0)
    ap.add_argument("--end-after", type=float, default=0.0)
    ap.add_argument("--token", default="")
    ap.add_argument("--codec", default="", help="answer with only this codec (e.g. PCMU)")
    ap.add_argument("--drop-every", type=int, default=0)
    ap.add_argument("--reorder-every", type=int, default=0)
    ap.add_argument("--preencoded", action="store_true")
    ap.add_argument("--cert", default="", help="serve HTTPS with this certificate (PEM)")
    ap.add_argument("--key", default="", help="the certificate's private key (PEM)")
    args = ap.parse_args()
    tones = [float(t) for t in args.tones.split(",")]
    if args.drop_every or args.reorder_every:
        impair(args.drop_every, args.reorder_every)
    sessions = {}
    rejected = [0]
    ended = [False]

    async def post(request):
        if args.token and request.headers.get("Authorization") != f"Bearer {args.token}":
            return web.Response(status=401, text="bad token")
        if request.content_type != "application/sdp":
            return web.Response(status=415, text="want application/sdp")
        if rejected[0] < args.reject_first:
            rejected[0] += 1
            say("REJECT", rejected[0])
            return web.Response(status=503, headers={"Retry-After": "1"}, text="busy")
        offer = RTCSessionDescription(sdp=await request.text(), type="offer")
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        sid = uuid.uuid4().hex
        sessions[sid] = pc

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState == "connected":
                say("CONNECTED", sid)
                if args.end_after > 0 and not ended[0]:
                    ended[0] = True

                    async def end():
                        await asyncio.sleep(args.end_after)
                        say("END", sid)
                        await pc.close()
                    asyncio.ensure_future(end())
            elif pc.connectionState in ("failed", "closed"):
                say("CLOSED", sid)

        # The track's transceiver exists before the offer is applied so that codec
        # preferences (which aiortc applies while matching the offer) take effect.
        track = PacketTrack if args.preencoded else ToneTrack
        pc.addTrack(track(tones, args.tone_secs, sid))
        for t in pc.getTransceivers():
            if args.codec:
                caps = RTCRtpSender.getCapabilities("audio").codecs
                t.setCodecPreferences([c for c in caps if c.name == args.codec])
        await pc.setRemoteDescription(offer)
        for t in pc.getTransceivers():
            t.direction = "sendonly"
        await pc.setLocalDescription(await pc.createAnswer())
        say("SESSION", sid)
        return web.Response(
            status=201,
            content_type="application/sdp",
            headers={"Location": f"/whep/session/{sid}", "ETag": f'"{sid}"'},
            text=pc.localDescription.sdp,
        )

    async def delete(request):
        sid = request.match_info["sid"]
        pc = sessions.pop(sid, None)
        if pc is None:
            return web.Response(status=404, text="no such session")
        say("DELETE", sid)
        await pc.close()
        return web.Response(status=200)

    async def patch(request):
        return web.Response(status=405, text="no trickle")

    app = web.Application()
    app.router.add_post("/whep", post)
    app.router.add_delete("/whep/session/{sid}", delete)
    app.router.add_patch("/whep/session/{sid}", patch)
    runner = web.AppRunner(app)
    await runner.setup()
    tls = None
    if args.cert:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.cert, args.key)
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    say("LISTEN", port)
    try:
        await asyncio.Event().wait()
    finally:
        for pc in sessions.values():
            await pc.close()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
