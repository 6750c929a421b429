"""A libshout source (python-shout): streams an MP3 file to onair in real time and sets
titles through libshout's metadata call, the way ices/ezstream-style scripts do.

usage: shout_source.py HOST PORT MOUNT PASSWORD FILE TITLE1 [TITLE2 ...]
Each title is set, then ~2 s of audio is sent; exits after the last one.
SHOUT_PROTOCOL=icy speaks SHOUTcast v1 (source on PORT+1, titles via /admin.cgi).
"""
import os
import sys
import time

import shout

host, port, mount, password, path = sys.argv[1:6]
titles = sys.argv[6:]

s = shout.Shout()
s.host = host
s.port = int(port)
s.mount = mount
s.password = password
s.format = "mp3"
s.protocol = os.environ.get("SHOUT_PROTOCOL", "http")
s.name = "Shout Test"
s.genre = "Test"
s.open()
with open(path, "rb") as f:
    for title in titles:
        s.set_metadata({"song": title})
        sent = 0
        while sent < 2 * 16000:
            buf = f.read(4096)
            if not buf:
                f.seek(0)
                continue
            s.send(buf)
            s.sync()
            sent += len(buf)
        print("sent", title, flush=True)
s.close()
