//! Raw-byte tests of the Icecast wire behaviour.

use std::time::Duration;

use tokio::{io::AsyncReadExt, time::timeout};

use crate::support::*;

/// 500 ms of 128k MP3 is 20 frames; tests send whole chunks' worth to get data published.
const CHUNK_FRAMES: u32 = 20;

#[tokio::test]
async fn source_put_then_listener_gets_frame_aligned_audio_and_headers() {
    let srv = start("").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/live", "audio/mpeg").await;
    // Junk and an ID3v2 tag before the first frame must not reach listeners.
    let mut id3 = b"ID3\x04\x00\x00\x00\x00\x00\x0a".to_vec();
    id3.extend_from_slice(&[7u8; 10]);
    src.send(b"garbage!").await;
    src.send(&id3).await;
    src.send(&frames(0..3 * CHUNK_FRAMES)).await;
    wait_ingested(addr, "/live", (3 * CHUNK_FRAMES) as u64 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/live", false).await;
    assert!(l.head.starts_with("HTTP/1.0 200 OK\r\n"), "{}", l.head);
    assert_eq!(header(&l.head, "content-type"), Some("audio/mpeg"));
    assert_eq!(header(&l.head, "icy-name"), Some("Test Radio"));
    assert_eq!(header(&l.head, "icy-genre"), Some("Test"));
    assert_eq!(header(&l.head, "icy-pub"), Some("1"));
    assert_eq!(header(&l.head, "icy-br"), Some("128"));
    assert_eq!(header(&l.head, "access-control-allow-origin"), Some("*"));
    assert!(header(&l.head, "cache-control")
        .unwrap()
        .contains("no-cache"));
    assert_eq!(
        header(&l.head, "icy-metaint"),
        None,
        "no metadata unless asked"
    );
    assert!(
        header(&l.head, "transfer-encoding").is_none()
            && header(&l.head, "content-length").is_none()
    );
    l.fill(FRAME_LEN * 2).await;
    let first = frame_index_at(&l.body, 0).expect("body starts on a frame");
    // Everything after is the following frames in order, with nothing in between.
    src.send(&frames(3 * CHUNK_FRAMES..5 * CHUNK_FRAMES)).await;
    l.fill(FRAME_LEN * (5 * CHUNK_FRAMES - first) as usize)
        .await;
    for (i, f) in l.body.chunks(FRAME_LEN).enumerate() {
        if f.len() == FRAME_LEN {
            assert_eq!(
                f,
                frame(first + i as u32),
                "frame {i} after the burst start"
            );
        }
    }
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn burst_is_bounded_by_burst_size() {
    let srv = start("[[mount]]\nname = \"/b\"\nburst_size = 20000\nchunk_ms = 100\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/b", "audio/mpeg").await;
    src.send(&frames(0..200)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut l = Listener::get(addr, "/b", false).await;
    l.fill(FRAME_LEN).await;
    let first = frame_index_at(&l.body, 0).unwrap();
    let burst_frames = 200 - first as usize;
    // 100 ms chunks are 4 frames (1668 bytes): the burst is the newest whole chunks ≤ 20000 bytes.
    assert!(
        burst_frames * FRAME_LEN <= 20000,
        "burst of {burst_frames} frames"
    );
    assert!(
        burst_frames * FRAME_LEN >= 20000 - 5 * FRAME_LEN,
        "burst of {burst_frames} frames"
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn legacy_source_and_chunked_put_are_accepted() {
    let srv = start("").await;
    let addr = srv.local_addr();
    // SOURCE, HTTP/1.0, no Expect.
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "SOURCE /old HTTP/1.0\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\n\r\n",
        basic("source", PASS)
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, head.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_until(&mut s, b"\r\n\r\n").await,
        b"HTTP/1.0 200 OK\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(&mut s, &frames(0..CHUNK_FRAMES * 2))
        .await
        .unwrap();
    // Chunked PUT.
    let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "PUT /chunked HTTP/1.1\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\nTransfer-Encoding: chunked\r\n\r\n",
        basic("source", PASS)
    );
    tokio::io::AsyncWriteExt::write_all(&mut c, head.as_bytes())
        .await
        .unwrap();
    read_until(&mut c, b"200 OK\r\n\r\n").await;
    let body = frames(0..CHUNK_FRAMES * 2);
    for piece in body.chunks(1000) {
        let framed = [format!("{:x}\r\n", piece.len()).as_bytes(), piece, b"\r\n"].concat();
        tokio::io::AsyncWriteExt::write_all(&mut c, &framed)
            .await
            .unwrap();
    }
    for mount in ["/old", "/chunked"] {
        let mut l = Listener::get(addr, mount, false).await;
        l.fill(FRAME_LEN).await;
        assert!(frame_index_at(&l.body, 0).is_some(), "{mount}");
    }
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn source_auth_and_mount_in_use() {
    let srv = start("[[mount]]\nname = \"/own\"\npassword = \"ownpw\"\n").await;
    let addr = srv.local_addr();
    let req = |mount: &str, auth: Option<(&str, &str)>| {
        let auth = auth.map_or(String::new(), |(u, p)| {
            format!("Authorization: Basic {}\r\n", basic(u, p))
        });
        format!("SOURCE {mount} HTTP/1.0\r\n{auth}Content-Type: audio/mpeg\r\n\r\n")
    };
    let no_creds = raw_request(addr, &req("/live", None)).await;
    assert!(no_creds.starts_with("HTTP/1.0 401"), "{no_creds}");
    assert!(no_creds.contains("WWW-Authenticate: Basic realm=\"Icecast2 Server\""));
    assert!(raw_request(addr, &req("/live", Some(("source", "wrong"))))
        .await
        .starts_with("HTTP/1.0 401"));
    assert!(raw_request(addr, &req("/live", Some(("admin", PASS))))
        .await
        .starts_with("HTTP/1.0 401"));
    // A mount with its own password does not take the global one.
    assert!(raw_request(addr, &req("/own", Some(("source", PASS))))
        .await
        .starts_with("HTTP/1.0 401"));

    let mut src = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut src,
        req("/own", Some(("source", "ownpw"))).as_bytes(),
    )
    .await
    .unwrap();
    read_until(&mut src, b"200 OK\r\n\r\n").await;
    let mut src = Source { stream: src };
    src.send(&frames(0..CHUNK_FRAMES * 2)).await;
    let mut l = Listener::get(addr, "/own", false).await;
    let second = raw_request(addr, &req("/own", Some(("source", "ownpw")))).await;
    assert!(second.starts_with("HTTP/1.0 403"), "{second}");
    assert!(second.ends_with("Mountpoint in use\n"), "{second}");
    // The first source is unaffected: its listener keeps getting new frames.
    src.send(&frames(CHUNK_FRAMES * 2..CHUNK_FRAMES * 4)).await;
    l.fill(FRAME_LEN * (CHUNK_FRAMES * 2) as usize).await;
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn unknown_mount_head_options_and_bad_requests() {
    let srv = start("").await;
    let addr = srv.local_addr();
    let r = raw_request(addr, "GET /nothing HTTP/1.0\r\n\r\n").await;
    assert!(
        r.starts_with("HTTP/1.1 404") || r.starts_with("HTTP/1.0 404"),
        "{r}"
    );
    let mut src = Source::put(addr, "/m", "audio/mpeg").await;
    src.send(&frames(0..CHUNK_FRAMES * 2)).await;
    let head = raw_request(addr, "HEAD /m HTTP/1.0\r\n\r\n").await;
    assert!(
        head.starts_with("HTTP/1.0 200 OK") && head.ends_with("\r\n\r\n"),
        "{head}"
    );
    let opt = raw_request(addr, "OPTIONS /m HTTP/1.1\r\nOrigin: http://a\r\n\r\n").await;
    assert!(
        opt.starts_with("HTTP/1.0 204")
            && opt.contains("Access-Control-Allow-Methods: GET, OPTIONS, HEAD"),
        "{opt}"
    );
    let bad = raw_request(addr, "\x00\x01\x02 nonsense\r\n\r\n").await;
    assert!(bad.starts_with("HTTP/1.0 400"), "{bad}");
    let huge = format!("GET /m HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(10_000));
    assert!(raw_request(addr, &huge).await.starts_with("HTTP/1.0 400"));
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn metadata_lands_at_the_byte_where_it_was_set() {
    let srv = start("[defaults]\nmetaint = 1000\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/live", "audio/mpeg").await;
    src.send(&frames(0..CHUNK_FRAMES)).await;
    wait_ingested(addr, "/live", u64::from(CHUNK_FRAMES) * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/live", true).await;
    let metaint = l.metaint().expect("icy-metaint when asked");
    assert_eq!(metaint, 1000);
    assert_eq!(
        set_title(addr, "/live", "song=First", ("source", PASS)).await,
        200
    );
    // Frames from 1000 on are sent after "First" was set.
    src.send(&frames(CHUNK_FRAMES..1000)).await;
    wait_ingested(addr, "/live", 1000 * FRAME_LEN as u64).await;
    let title = "Rock 'n' Roll; a=b \"quoted\" – Ünïcødé";
    let q = format!(
        "song={}",
        title
            .bytes()
            .map(|b| format!("%{b:02X}"))
            .collect::<String>()
    );
    assert_eq!(set_title(addr, "/live", &q, ADMIN).await, 200);
    src.send(&frames(1000..1000 + CHUNK_FRAMES * 2)).await;
    // Everything from the burst start to the last frame sent.
    l.fill(FRAME_LEN).await;
    let first_frame = frame_index_at(&l.body, 0).unwrap() as usize;
    l.fill_audio(
        metaint,
        (1000 + CHUNK_FRAMES as usize * 2 - first_frame) * FRAME_LEN,
    )
    .await;
    let (_, titles) = deinterleave(&l.body, metaint);
    let pos_of = |frame: usize| (frame - first_frame) * FRAME_LEN;
    let first_block = titles
        .iter()
        .find(|(_, t)| t == "First")
        .expect("First announced")
        .0;
    let second = titles
        .iter()
        .find(|(_, t)| t == title)
        .expect("awkward title survives")
        .0;
    // A block is announced at the first metaint boundary at or after the change.
    assert!(
        first_block >= pos_of(CHUNK_FRAMES as usize)
            && first_block < pos_of(CHUNK_FRAMES as usize) + metaint,
        "{first_block}"
    );
    assert!(
        second >= pos_of(1000) && second < pos_of(1000) + metaint,
        "{second} vs {}",
        pos_of(1000)
    );
    // A late joiner's first block carries the current title.
    let mut late = Listener::get(addr, "/live", true).await;
    late.fill(metaint + 1 + 16 * 10).await;
    let (_, late_titles) = deinterleave(&late.body, metaint);
    assert_eq!(late_titles.first().map(|t| t.1.as_str()), Some(title));
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn metadata_auth_and_charsets() {
    let srv = start("[[mount]]\nname = \"/own\"\npassword = \"ownpw\"\n").await;
    let addr = srv.local_addr();
    let mut a = Source::put(addr, "/live", "audio/mpeg").await;
    a.send(&frames(0..CHUNK_FRAMES)).await;
    assert_eq!(
        set_title(addr, "/live", "song=Good", ("source", PASS)).await,
        200
    );
    assert_eq!(
        set_title(addr, "/live", "song=Evil", ("source", "nope")).await,
        401
    );
    let (code, _) = http_get(
        addr,
        "/admin/metadata?mode=updinfo&mount=/live&song=Evil",
        None,
    )
    .await;
    assert_eq!(code, 401);
    // Latin-1 input is converted when charset says so.
    assert_eq!(
        set_title(addr, "/live", "song=Caf%E9&charset=ISO-8859-1", ADMIN).await,
        200
    );
    let (_, status) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mounts"][0]["title"], "Café");
    // artist + title form.
    assert_eq!(
        set_title(addr, "/live", "artist=A&title=B", ADMIN).await,
        200
    );
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(status.contains("\"title\":\"A - B\""), "{status}");
    // No such source.
    assert_eq!(set_title(addr, "/gone", "song=x", ADMIN).await, 400);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn status_json_keeps_icecast_shapes_and_playlists_use_host() {
    let srv = start("[[mount]]\nname = \"/hidden\"\nhidden = true\n").await;
    let addr = srv.local_addr();
    let (_, none) = http_get(addr, "/status-json.xsl", None).await;
    let v: serde_json::Value = serde_json::from_str(&none).unwrap();
    assert!(v["icestats"].get("source").is_none(), "{none}");
    assert_eq!(v["icestats"]["server_id"], onair::SERVER_ID);

    let mut a = Source::put(addr, "/a", "audio/mpeg").await;
    a.send(&frames(0..CHUNK_FRAMES)).await;
    let (_, one) = http_get(addr, "/status-json.xsl", None).await;
    let v: serde_json::Value = serde_json::from_str(&one).unwrap();
    let s = &v["icestats"]["source"];
    assert!(s.is_object(), "one source is an object: {one}");
    assert_eq!(s["listenurl"], "http://radio.test:8000/a");
    assert_eq!(s["server_name"], "Test Radio");
    assert!(s.get("title").is_none(), "title absent until set");
    assert_eq!(s["bitrate"], 128);

    let mut b = Source::put(addr, "/b", "audio/mpeg").await;
    b.send(&frames(0..CHUNK_FRAMES)).await;
    let mut h = Source::put(addr, "/hidden", "audio/mpeg").await;
    h.send(&frames(0..CHUNK_FRAMES)).await;
    set_title(addr, "/a", "song=Now", ADMIN).await;
    let (_, two) = http_get(addr, "/status-json.xsl", None).await;
    let v: serde_json::Value = serde_json::from_str(&two).unwrap();
    let arr = v["icestats"]["source"]
        .as_array()
        .expect("several sources are an array");
    assert_eq!(arr.len(), 2, "hidden mounts are not listed: {two}");
    assert_eq!(arr[0]["title"], "Now");

    let (_, api) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&api).unwrap();
    assert_eq!(v["mounts"].as_array().unwrap().len(), 2);
    assert_eq!(v["server"]["sources"], 3);

    let (code, m3u) = http_get(addr, "/a.m3u", None).await;
    assert_eq!(code, 200);
    assert!(m3u.contains("\nhttp://radio.test:8000/a\n"), "{m3u}");
    let r = raw_request(
        addr,
        "GET /a.pls HTTP/1.0\r\nHost: example.org\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .await;
    assert!(r.contains("File1=https://example.org/a\n"), "{r}");
    assert!(http_get(addr, "/a.xspf", None)
        .await
        .1
        .contains("<location>http://radio.test:8000/a</location>"));
    assert_eq!(http_get(addr, "/hidden.m3u", None).await.0, 404);
    assert_eq!(http_get(addr, "/zzz.m3u", None).await.0, 404);
    // Hidden mounts still play.
    let mut l = Listener::get(addr, "/hidden", false).await;
    l.fill(FRAME_LEN).await;
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn listeners_close_when_the_source_leaves_and_mount_is_freed() {
    let srv = start("").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/live", "audio/mpeg").await;
    src.send(&frames(0..CHUNK_FRAMES * 2)).await;
    let mut l = Listener::get(addr, "/live", false).await;
    l.fill(FRAME_LEN).await;
    src.send(&frames(CHUNK_FRAMES * 2..CHUNK_FRAMES * 2 + 5))
        .await;
    drop(src);
    // The listener gets everything the source sent, then EOF.
    let mut rest = Vec::new();
    timeout(STEP, l.stream.read_to_end(&mut rest))
        .await
        .expect("listener closed")
        .unwrap();
    l.body.extend_from_slice(&rest);
    let first = frame_index_at(&l.body, 0).unwrap();
    assert_eq!(
        l.body.len(),
        (CHUNK_FRAMES * 2 + 5 - first) as usize * FRAME_LEN
    );
    // The mount is free for the next source.
    let mut again = Source::put(addr, "/live", "audio/mpeg").await;
    again.send(&frames(0..2)).await;
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn silent_source_times_out() {
    let srv = start("[limits]\nsource_timeout = 0.5\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/quiet", "audio/mpeg").await;
    src.send(&frames(0..3)).await;
    let mut buf = [0u8; 16];
    // The server closes the silent source's connection after source_timeout.
    let n = timeout(Duration::from_secs(5), src.stream.read(&mut buf))
        .await
        .expect("source not dropped");
    assert!(matches!(n, Ok(0) | Err(_)));
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(!status.contains("/quiet"), "{status}");
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_stalled_listener_is_dropped_without_hurting_others() {
    let srv = start("[defaults]\nqueue_size = 65536\nsend_buffer = 4096\nchunk_ms = 100\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/live", "audio/mpeg").await;
    src.send(&frames(0..10)).await;
    // The stalled listener asks for a tiny receive window and never reads.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut stalled = sock.connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stalled, b"GET /live HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut good = Listener::get(addr, "/live", false).await;
    let reader = tokio::spawn(async move {
        good.fill(3_000_000).await;
        good
    });
    // ~3 MB through the mount: far beyond queue_size + both socket buffers.
    for i in 0..(3_000_000 / FRAME_LEN as u32 / 100 + 1) {
        src.send(&frames(10 + i * 100..10 + (i + 1) * 100)).await;
    }
    let good = timeout(STEP * 3, reader)
        .await
        .expect("healthy listener starved")
        .unwrap();
    let first = frame_index_at(&good.body, 0).unwrap();
    for (i, f) in good.body.chunks(FRAME_LEN).take(5000).enumerate() {
        if f.len() == FRAME_LEN {
            assert_eq!(f, frame(first + i as u32));
        }
    }
    let (_, status) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mounts"][0]["listeners_dropped_lagging"], 1, "{status}");
    // The stalled connection was closed by the server: draining it ends in EOF/reset
    // well before 3 MB.
    let mut got = Vec::new();
    let _ = timeout(STEP, stalled.read_to_end(&mut got))
        .await
        .expect("stalled listener still open");
    assert!(
        got.len() < 1_000_000,
        "stalled listener got {} bytes",
        got.len()
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_full_mount_refuses_with_503_and_frees_the_slot() {
    let srv = start("[[mount]]\nname = \"/one\"\nmax_listeners = 1\n").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/one", "audio/mpeg").await;
    src.send(&frames(0..CHUNK_FRAMES * 2)).await;
    let first = Listener::get(addr, "/one", false).await;
    let full = raw_request(addr, "GET /one HTTP/1.0\r\n\r\n").await;
    assert!(
        full.starts_with("HTTP/1.0 503") && full.ends_with("Mount is full\n"),
        "{full}"
    );
    // HEAD is not a listener and is answered even when full.
    assert!(raw_request(addr, "HEAD /one HTTP/1.0\r\n\r\n")
        .await
        .starts_with("HTTP/1.0 200"));
    drop(first);
    // The slot is freed once the server notices the first listener left (its next write).
    let deadline = std::time::Instant::now() + STEP;
    loop {
        src.send(&frames(0..CHUNK_FRAMES)).await;
        let r = raw_request(addr, "HEAD /one HTTP/1.0\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.0 200"));
        let (_, status) = http_get(addr, "/api/status", None).await;
        if status.contains("\"listeners\":0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "slot never freed: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut again = Listener::get(addr, "/one", false).await;
    again.fill(FRAME_LEN).await;
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_source_sending_garbage_is_dropped() {
    let srv = start("").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/noise", "audio/mpeg").await;
    // 100 KB with no MPEG sync and no tag magic.
    let noise: Vec<u8> = (0..100_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 26) as u8)
        .collect();
    let _ = timeout(
        STEP,
        tokio::io::AsyncWriteExt::write_all(&mut src.stream, &noise),
    )
    .await;
    let mut buf = [0u8; 64];
    let closed = timeout(STEP, src.stream.read(&mut buf))
        .await
        .expect("garbage source not dropped");
    assert!(matches!(closed, Ok(0) | Err(_)));
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(!status.contains("/noise"), "{status}");
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn shutdown_closes_listeners_and_sources_promptly() {
    let srv = start("").await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/live", "audio/mpeg").await;
    src.send(&frames(0..CHUNK_FRAMES * 2)).await;
    let mut idle = Listener::get(addr, "/live", false).await;
    idle.fill(FRAME_LEN).await;
    let started = std::time::Instant::now();
    assert!(
        srv.shutdown(Duration::from_secs(5)).await,
        "tasks still running after shutdown"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    timeout(STEP, idle.stream.read_to_end(&mut rest))
        .await
        .expect("listener not closed")
        .ok();
    let mut buf = [0u8; 16];
    let n = timeout(STEP, src.stream.read(&mut buf))
        .await
        .expect("source not closed");
    assert!(matches!(n, Ok(0) | Err(_)));
}

#[tokio::test]
async fn too_many_sources_get_403() {
    let srv = start("[limits]\nmax_sources = 1\n").await;
    let addr = srv.local_addr();
    let mut first = Source::put(addr, "/a", "audio/mpeg").await;
    first.send(&frames(0..3)).await;
    let head = format!(
        "SOURCE /b HTTP/1.0\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\n\r\n",
        basic("source", PASS)
    );
    let r = raw_request(addr, &head).await;
    assert!(
        r.starts_with("HTTP/1.0 403") && r.ends_with("too many sources connected\n"),
        "{r}"
    );
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn shoutcast_v1_source_on_port_plus_one() {
    let srv = start_with_shoutcast("[shoutcast]\nmount = \"/sc\"\n").await;
    let addr = srv.local_addr();
    let sc = srv.shoutcast_addr().unwrap();
    let wrong = raw_request(sc, "nope\r\n").await;
    assert_eq!(wrong, "invalid password\r\n");
    let mut s = tokio::net::TcpStream::connect(sc).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, format!("{PASS}\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        read_until(&mut s, b"\r\n\r\n").await,
        b"OK2\r\nicy-caps:11\r\n\r\n"
    );
    tokio::io::AsyncWriteExt::write_all(
        &mut s,
        b"icy-name:SC Radio\nicy-genre:Jazz\nicy-br:128\n\n",
    )
    .await
    .unwrap();
    let mut src = Source { stream: s };
    src.send(&frames(0..CHUNK_FRAMES * 3)).await;
    wait_ingested(addr, "/sc", u64::from(CHUNK_FRAMES * 3) * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/sc", false).await;
    assert_eq!(header(&l.head, "icy-name"), Some("SC Radio"));
    l.fill(FRAME_LEN).await;
    assert!(frame_index_at(&l.body, 0).is_some());
    // Titles come through /admin.cgi with the source password.
    let (code, _) = http_get(
        addr,
        &format!("/admin.cgi?mode=updinfo&pass={PASS}&song=SC%20Title"),
        None,
    )
    .await;
    assert_eq!(code, 200);
    let (code, _) = http_get(addr, "/admin.cgi?mode=updinfo&pass=bad&song=Evil", None).await;
    assert_eq!(code, 401);
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(status.contains("\"title\":\"SC Title\""), "{status}");
    srv.shutdown(Duration::from_secs(2)).await;
}
