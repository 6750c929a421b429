//! Station operations with raw bytes: fallbacks, source takeover, admin XML and JSON API,
//! listener limits.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::{io::AsyncReadExt, time::timeout};

use crate::support::*;

const FAST: &str = "[defaults]\nchunk_ms = 100\n";

/// Reads until a frame with index in `range` has arrived; returns all frame indices.
async fn read_until_frame_in(l: &mut Listener, range: std::ops::Range<u32>) -> Vec<u32> {
    let deadline = Instant::now() + STEP;
    loop {
        let have = l.body.len();
        l.fill(have + FRAME_LEN).await;
        let idx = frame_indices(&l.body);
        if idx.iter().any(|i| range.contains(i)) {
            return idx;
        }
        assert!(Instant::now() < deadline, "no frame in {range:?}: {idx:?}");
    }
}

/// Waits (bounded) until the listener's connection is closed by the server.
async fn closed_within(l: &mut Listener, limit: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout(limit, l.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => assert!(t.elapsed() < limit, "still streaming after {limit:?}"),
            Err(_) => panic!("listener not closed within {limit:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_moves_listeners_and_override_brings_them_back() {
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/main\"\nfallback = \"/backup\"\nfallback_override = true\n[[mount]]\nname = \"/backup\"\n"
    ))
    .await;
    let addr = srv.local_addr();
    let backup = keep_sending(Source::put(addr, "/backup", "audio/mpeg").await, 100_000, 4);
    let mut main = Source::put(addr, "/main", "audio/mpeg").await;
    main.send(&frames(0..40)).await;
    wait_ingested(addr, "/main", 40 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/main", false).await;
    l.fill(FRAME_LEN * 10).await;
    assert!(frame_indices(&l.body).iter().all(|&i| i < 100_000));

    // The source leaves: the listener keeps playing, from the fallback, frame-aligned.
    drop(main);
    let idx = read_until_frame_in(&mut l, 100_000..200_000).await;
    let first_fb = idx.iter().position(|&i| i >= 100_000).unwrap();
    assert!(idx[..first_fb].iter().all(|&i| i < 40), "{idx:?}");
    assert!(
        idx[first_fb..].windows(2).all(|w| w[1] == w[0] + 1),
        "fallback frames in order: {idx:?}"
    );
    let (_, clients) = http_get(addr, "/admin/listclients?mount=/backup", Some(ADMIN)).await;
    assert!(clients.contains("<Listeners>1</Listeners>"), "{clients}");

    // The source returns: with fallback_override the listener goes back to it.
    let back = keep_sending(Source::put(addr, "/main", "audio/mpeg").await, 200_000, 4);
    let idx = read_until_frame_in(&mut l, 200_000..300_000).await;
    let first_back = idx.iter().position(|&i| i >= 200_000).unwrap();
    assert!(idx[first_back..].iter().all(|&i| i >= 200_000), "{idx:?}");
    let (_, clients) = http_get(addr, "/admin/listclients?mount=/main", Some(ADMIN)).await;
    assert!(clients.contains("<Listeners>1</Listeners>"), "{clients}");
    backup.abort();
    back.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_mount_without_fallback_closes_listeners_when_the_source_ends() {
    let srv = start(FAST).await;
    let addr = srv.local_addr();
    let mut src = Source::put(addr, "/solo", "audio/mpeg").await;
    src.send(&frames(0..40)).await;
    wait_ingested(addr, "/solo", 40 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/solo", false).await;
    l.fill(FRAME_LEN).await;
    drop(src);
    closed_within(&mut l, Duration::from_secs(2)).await;
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn listeners_of_a_mount_without_source_get_its_fallback() {
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/later\"\nfallback = \"/backup\"\n[[mount]]\nname = \"/backup\"\n"
    ))
    .await;
    let addr = srv.local_addr();
    let backup = keep_sending(Source::put(addr, "/backup", "audio/mpeg").await, 100_000, 4);
    wait_ingested(addr, "/backup", 8 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/later", false).await;
    assert!(l.head.starts_with("HTTP/1.0 200 OK"), "{}", l.head);
    let idx = read_until_frame_in(&mut l, 100_000..200_000).await;
    assert!(idx.iter().all(|&i| i >= 100_000));
    backup.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn fallback_when_full_sends_overflow_listeners_to_the_fallback() {
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/small\"\nmax_listeners = 1\nfallback = \"/backup\"\nfallback_when_full = true\n[[mount]]\nname = \"/strict\"\nmax_listeners = 1\nfallback = \"/backup\"\n[[mount]]\nname = \"/backup\"\n"
    ))
    .await;
    let addr = srv.local_addr();
    let backup = keep_sending(Source::put(addr, "/backup", "audio/mpeg").await, 100_000, 4);
    let small = keep_sending(Source::put(addr, "/small", "audio/mpeg").await, 0, 4);
    let strict = keep_sending(Source::put(addr, "/strict", "audio/mpeg").await, 0, 4);
    for m in ["/small", "/strict", "/backup"] {
        wait_ingested(addr, m, 8 * FRAME_LEN as u64).await;
    }
    let mut first = Listener::get(addr, "/small", false).await;
    first.fill(FRAME_LEN * 2).await;
    assert!(frame_indices(&first.body).iter().all(|&i| i < 100_000));
    let mut second = Listener::get(addr, "/small", false).await;
    assert!(
        second.head.starts_with("HTTP/1.0 200 OK"),
        "{}",
        second.head
    );
    second.fill(FRAME_LEN * 2).await;
    assert!(frame_indices(&second.body).iter().all(|&i| i >= 100_000));

    let _one = Listener::get(addr, "/strict", false).await;
    let refused = raw_request(addr, "GET /strict HTTP/1.0\r\n\r\n").await;
    assert!(refused.starts_with("HTTP/1.0 503"), "{refused}");
    for t in [backup, small, strict] {
        t.abort();
    }
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_source_takes_over_a_silent_predecessor() {
    let srv = start(&format!("{FAST}[limits]\nsource_takeover = 0.5\n")).await;
    let addr = srv.local_addr();
    let mut old = Source::put(addr, "/live", "audio/mpeg").await;
    old.send(&frames(0..40)).await;
    wait_ingested(addr, "/live", 40 * FRAME_LEN as u64).await;
    assert_eq!(
        set_title(addr, "/live", "song=Before", ("source", PASS)).await,
        200
    );
    let mut l = Listener::get(addr, "/live", true).await;
    let metaint = l.metaint().unwrap();
    l.fill_audio(metaint, FRAME_LEN).await;

    // A live source is not taken over...
    let busy = Source::put_raw(addr, "/live").await;
    assert!(busy.starts_with("HTTP/1.0 403"), "{busy}");
    // ...a silent one (its client is gone, TCP has not noticed) is, at once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let new = keep_sending(Source::put(addr, "/live", "audio/mpeg").await, 5_000, 4);
    let deadline = Instant::now() + STEP;
    loop {
        let have = l.body.len();
        l.fill(have + 1).await;
        let (audio, _) = deinterleave(&l.body, metaint);
        let idx = frame_indices(&audio);
        if idx.iter().any(|&i| i >= 5_000) {
            let first_new = idx.iter().position(|&i| i >= 5_000).unwrap();
            assert!(idx[..first_new].iter().all(|&i| i < 40), "{idx:?}");
            break;
        }
        assert!(Instant::now() < deadline, "new source never heard");
    }
    let (_, status) = http_get(addr, "/api/status", None).await;
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["mounts"][0]["title"], "Before", "title kept: {v}");
    assert_eq!(v["server"]["sources"], 1);
    // The dead predecessor's connection is closed by the server.
    let mut buf = [0u8; 64];
    let r = timeout(STEP, old.stream.read(&mut buf)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)), "old source still open: {r:?}");
    new.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn admin_xml_endpoints() {
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/a\"\npassword = \"apw\"\n[[mount]]\nname = \"/b\"\n"
    ))
    .await;
    let addr = srv.local_addr();
    let mut a = Source::put_as(addr, "/a", ("source", "apw")).await;
    a.send(&frames(0..40)).await;
    let b = keep_sending(Source::put(addr, "/b", "audio/mpeg").await, 100_000, 4);
    wait_ingested(addr, "/a", 40 * FRAME_LEN as u64).await;
    let mut l = Listener::get_with_agent(addr, "/a", "TestPlayer/1.0 (xml)").await;
    l.fill(FRAME_LEN).await;

    // Without admin credentials: 401, also with the mount's own source credentials.
    for path in [
        "/admin/stats",
        "/admin/listmounts",
        "/admin/listclients?mount=/a",
        "/admin/killsource?mount=/a",
        "/admin/fallbacks?mount=/a&fallback=/b",
    ] {
        assert_eq!(http_get(addr, path, None).await.0, 401, "{path}");
        assert_eq!(
            http_get(addr, path, Some(("source", "apw"))).await.0,
            401,
            "{path} with source credentials"
        );
    }
    // ...which may still set that mount's title.
    assert_eq!(
        set_title(addr, "/a", "song=Mine", ("source", "apw")).await,
        200
    );

    let (code, stats) = http_get(addr, "/admin/stats", Some(ADMIN)).await;
    assert_eq!(code, 200);
    assert!(stats.starts_with("<?xml"), "{stats}");
    assert!(stats.contains("<sources>2</sources>"), "{stats}");
    assert!(stats.contains("<source mount=\"/a\">"), "{stats}");
    assert!(stats.contains("<title>Mine</title>"), "{stats}");

    let (_, mounts) = http_get(addr, "/admin/listmounts", Some(ADMIN)).await;
    assert!(
        mounts.contains("<source mount=\"/a\"><fallback></fallback><listeners>1</listeners>"),
        "{mounts}"
    );
    assert!(
        mounts.contains("<content-type>audio/mpeg</content-type>"),
        "{mounts}"
    );

    let (_, clients) = http_get(addr, "/admin/listclients?mount=/a", Some(ADMIN)).await;
    assert!(clients.contains("<IP>127.0.0.1</IP>"), "{clients}");
    assert!(
        clients.contains("<UserAgent>TestPlayer/1.0 (xml)</UserAgent>"),
        "{clients}"
    );
    let id: u64 = clients
        .split("<ID>")
        .nth(1)
        .and_then(|r| r.split('<').next())
        .and_then(|i| i.parse().ok())
        .expect("listener id");

    // fallbacks: loops refused, valid ones set.
    let (_, r) = http_get(addr, "/admin/fallbacks?mount=/b&fallback=/a", Some(ADMIN)).await;
    assert!(r.contains("<return>1</return>"), "{r}");
    let (code, r) = http_get(addr, "/admin/fallbacks?mount=/a&fallback=/b", Some(ADMIN)).await;
    assert_eq!(code, 400, "loop /a -> /b -> /a refused: {r}");
    assert_eq!(
        http_get(addr, "/admin/fallbacks?mount=/b&fallback=", Some(ADMIN))
            .await
            .0,
        200
    );

    // moveclients: the listener continues on /b.
    let (code, r) = http_get(
        addr,
        "/admin/moveclients?mount=/a&destination=/b",
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    assert!(r.contains("Clients moved from /a to /b"), "{r}");
    let idx = read_until_frame_in(&mut l, 100_000..200_000).await;
    assert!(idx.iter().any(|&i| i < 100_000) && idx.last() >= Some(&100_000));
    let (_, clients_b) = http_get(addr, "/admin/listclients?mount=/b", Some(ADMIN)).await;
    assert!(clients_b.contains(&format!("<ID>{id}</ID>")), "{clients_b}");

    // killclient: unknown id 404, the real one is disconnected.
    assert_eq!(
        http_get(addr, "/admin/killclient?mount=/b&id=999999", Some(ADMIN))
            .await
            .0,
        404
    );
    let (code, r) = http_get(
        addr,
        &format!("/admin/killclient?mount=/b&id={id}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(code, 200, "{r}");
    closed_within(&mut l, STEP).await;

    // killsource: the source connection is closed and the mount is no longer live.
    let (code, r) = http_get(addr, "/admin/killsource?mount=/a", Some(ADMIN)).await;
    assert_eq!(code, 200, "{r}");
    assert!(r.contains("Source Removed"), "{r}");
    let mut buf = [0u8; 16];
    let read = timeout(STEP, a.stream.read(&mut buf)).await.unwrap();
    assert!(matches!(read, Ok(0) | Err(_)));
    assert_eq!(
        http_get(addr, "/admin/killsource?mount=/a", Some(ADMIN))
            .await
            .0,
        400,
        "no source any more"
    );
    assert_eq!(
        http_get(addr, "/admin/listclients?mount=/nope", Some(ADMIN))
            .await
            .0,
        404
    );
    b.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn json_api_operations() {
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/a\"\n[[mount]]\nname = \"/b\"\nhidden = true\n"
    ))
    .await;
    let addr = srv.local_addr();
    let a = keep_sending(Source::put(addr, "/a", "audio/mpeg").await, 0, 4);
    let b = keep_sending(Source::put(addr, "/b", "audio/mpeg").await, 100_000, 4);
    wait_ingested(addr, "/a", 8 * FRAME_LEN as u64).await;
    let mut l = Listener::get_with_agent(addr, "/a", "JsonPlayer/2").await;
    l.fill(FRAME_LEN).await;

    assert_eq!(
        http_json(addr, "GET", "/api/mounts", None, None).await.0,
        401
    );
    let (code, v) = http_json(addr, "GET", "/api/mounts", Some(ADMIN), None).await;
    assert_eq!(code, 200);
    let names: Vec<_> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].clone())
        .collect();
    assert_eq!(
        names,
        [json!("/a"), json!("/b")],
        "admin sees hidden mounts"
    );
    let (_, public) = http_get(addr, "/api/status", None).await;
    assert!(
        !public.contains("\"/b\""),
        "hidden from the public: {public}"
    );

    let (code, v) = http_json(addr, "GET", "/api/mounts/a/listeners", Some(ADMIN), None).await;
    assert_eq!(code, 200);
    let listener = &v["listeners"][0];
    assert_eq!(listener["ip"], "127.0.0.1");
    assert_eq!(listener["user_agent"], "JsonPlayer/2");
    let id = listener["id"].as_u64().unwrap();

    let (code, _) = http_json(
        addr,
        "PUT",
        "/api/mounts/a/metadata",
        Some(("source", PASS)),
        Some(json!({"title": "Artist - Song 'x'; y=z", "url": "http://x"})),
    )
    .await;
    assert_eq!(code, 200);
    let (_, v) = http_json(addr, "GET", "/api/mounts/a", Some(ADMIN), None).await;
    assert_eq!(v["title"], "Artist - Song 'x'; y=z");

    let (code, v) = http_json(
        addr,
        "PUT",
        "/api/mounts/a/fallback",
        Some(ADMIN),
        Some(json!({"fallback": "/b"})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    let (code, v) = http_json(
        addr,
        "PUT",
        "/api/mounts/b/fallback",
        Some(ADMIN),
        Some(json!({"fallback": "/a"})),
    )
    .await;
    assert_eq!(code, 400, "loop refused: {v}");
    assert!(v["error"].as_str().unwrap().contains("loop"));

    let (code, v) = http_json(
        addr,
        "POST",
        "/api/mounts/a/move",
        Some(ADMIN),
        Some(json!({"destination": "/b"})),
    )
    .await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["listeners"], 1);
    read_until_frame_in(&mut l, 100_000..200_000).await;

    let (code, _) = http_json(
        addr,
        "DELETE",
        &format!("/api/mounts/b/listeners/{id}"),
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 200);
    closed_within(&mut l, STEP).await;
    let (code, _) = http_json(
        addr,
        "DELETE",
        "/api/mounts/b/listeners/4242",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(code, 404);

    let (code, _) = http_json(
        addr,
        "DELETE",
        "/api/mounts/a/source",
        Some(("source", PASS)),
        None,
    )
    .await;
    assert_eq!(code, 401, "source credentials cannot kill sources");
    let (code, _) = http_json(addr, "DELETE", "/api/mounts/a/source", Some(ADMIN), None).await;
    assert_eq!(code, 200);
    let (_, v) = http_json(addr, "GET", "/api/stats", Some(ADMIN), None).await;
    assert_eq!(v["sources"], 1, "{v}");
    a.abort();
    b.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn max_listener_duration_disconnects() {
    let srv = start(&format!("{FAST}max_listener_duration = 1.0\n")).await;
    let addr = srv.local_addr();
    let src = keep_sending(Source::put(addr, "/m", "audio/mpeg").await, 0, 4);
    wait_ingested(addr, "/m", 8 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/m", false).await;
    let took = closed_within(&mut l, STEP).await;
    assert!(
        took >= Duration::from_millis(900),
        "closed too early: {took:?}"
    );
    src.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn slow_and_oversized_request_heads() {
    let srv = start("[limits]\nheader_timeout = 0.5\nmax_clients = 3\n").await;
    let addr = srv.local_addr();
    // Oversized: 400 and close.
    let big = format!("GET /x HTTP/1.0\r\nX-Junk: {}\r\n\r\n", "a".repeat(9000));
    let r = raw_request(addr, &big).await;
    assert!(r.starts_with("HTTP/1.0 400"), "{r}");
    assert!(r.contains("larger than 8192"), "{r}");
    // Slowloris: three connections trickle a head and hold every client slot...
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /x HTTP/1.1\r\nX-A: ")
            .await
            .unwrap();
        slow.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let full = raw_request(addr, "GET /status-json.xsl HTTP/1.0\r\n\r\n").await;
    assert!(full.starts_with("HTTP/1.0 503"), "{full}");
    // ...until header_timeout answers 408 and frees them.
    for mut s in slow {
        let mut out = Vec::new();
        timeout(STEP, s.read_to_end(&mut out))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&out).starts_with("HTTP/1.0 408"));
    }
    let (code, _) = http_get(addr, "/status-json.xsl", None).await;
    assert_eq!(code, 200, "slots are free again");
    srv.shutdown(Duration::from_secs(2)).await;
}

/// Reads everything that arrives during `d`.
async fn read_for(l: &mut Listener, d: Duration) {
    let end = Instant::now() + d;
    let mut buf = vec![0u8; 65536];
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match timeout(left, l.stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => l.body.extend_from_slice(&buf[..n]),
            Ok(r) => panic!("listener closed: {r:?}"),
            Err(_) => break,
        }
    }
}

fn write_frames(name: &str, range: std::ops::Range<u32>) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-ops-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, frames(range)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_file_plays_in_real_time_and_loops() {
    // 2 s of audio (77 frames of 26.1 ms).
    let file = write_frames("fb.mp3", 0..77);
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/main\"\nburst_size = 20000\nfallback_file = {:?}\n",
        file.display().to_string()
    ))
    .await;
    let addr = srv.local_addr();
    // No source: listeners hear the file.
    let mut l = Listener::get(addr, "/main", false).await;
    assert!(l.head.starts_with("HTTP/1.0 200 OK"), "{}", l.head);
    read_for(&mut l, Duration::from_secs(1)).await; // the burst
    let (t1, b1) = (Instant::now(), l.body.len());
    read_for(&mut l, Duration::from_secs(3)).await;
    let rate = (l.body.len() - b1) as f64 / t1.elapsed().as_secs_f64();
    eprintln!("fallback file: {rate:.0} bytes/s after the burst");
    // 128 kbit/s is 16,000 bytes/s; Icecast would have sent the whole file at once.
    assert!(
        (11_000.0..21_000.0).contains(&rate),
        "fallback file sent at {rate:.0} bytes/s"
    );
    let idx = frame_indices(&l.body);
    let restarts = idx.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(restarts >= 1, "the file loops: {idx:?}");
    assert!(
        idx.windows(2)
            .all(|w| w[1] == w[0] + 1 || (w[0] == 76 && w[1] == 0)),
        "whole file, in order, looped: {idx:?}"
    );

    // A source arrives: the listener moves to it (a file fallback always gives way).
    let src = keep_sending(Source::put(addr, "/main", "audio/mpeg").await, 5_000, 4);
    read_until_frame_in(&mut l, 5_000..10_000).await;
    src.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn intro_file_comes_first() {
    let intro = write_frames("intro.mp3", 50_000..50_010);
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/m\"\nintro_file = {:?}\n",
        intro.display().to_string()
    ))
    .await;
    let addr = srv.local_addr();
    let src = keep_sending(Source::put(addr, "/m", "audio/mpeg").await, 0, 4);
    wait_ingested(addr, "/m", 8 * FRAME_LEN as u64).await;
    let mut l = Listener::get(addr, "/m", false).await;
    l.fill(FRAME_LEN * 14).await;
    let idx = frame_indices(&l.body);
    assert_eq!(idx[..10], (50_000..50_010).collect::<Vec<_>>()[..]);
    assert!(idx[10..].iter().all(|&i| i < 50_000), "{idx:?}");
    src.abort();
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn mismatched_fallback_formats_are_refused_at_start() {
    let fb = write_frames("44k.mp3", 0..10);
    // MPEG-1 Layer III 128k at 48 kHz: 384-byte frames.
    let dir = fb.parent().unwrap().to_path_buf();
    let other = dir.join("48k.mp3");
    let mut f48 = Vec::new();
    for _ in 0..10 {
        let mut f = vec![0xFF, 0xFB, 0x94, 0x64];
        f.resize(384, 0);
        f48.extend_from_slice(&f);
    }
    std::fs::write(&other, f48).unwrap();
    let text = format!(
        "[[mount]]\nname = \"/a\"\nfallback = \"/b\"\nfallback_file = {:?}\n[[mount]]\nname = \"/b\"\nfallback_file = {:?}\n",
        fb.display().to_string(),
        other.display().to_string()
    );
    let err = onair::station::start(config(&text, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("formats must match"), "{err}");
    assert!(
        err.contains("44100 Hz") && err.contains("48000 Hz"),
        "{err}"
    );
}

#[tokio::test]
async fn dump_file_records_each_source_connection() {
    let dir = std::env::temp_dir().join(format!("onair-rec-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pattern = dir.join("live-%Y%m%d.mp3").display().to_string();
    let srv = start(&format!(
        "{FAST}[[mount]]\nname = \"/live\"\ndump_file = {pattern:?}\n"
    ))
    .await;
    let addr = srv.local_addr();
    for (n, range) in [(0u32, 0..30u32), (1, 100..140)] {
        let mut src = Source::put(addr, "/live", "audio/mpeg").await;
        src.send(b"junk before the first frame").await;
        src.send(&frames(range.clone())).await;
        wait_ingested(addr, "/live", (range.len() * FRAME_LEN) as u64).await;
        if n == 0 {
            drop(src);
            // The first recording is closed when its source leaves.
            let deadline = Instant::now() + STEP;
            while std::fs::read_dir(&dir).map_or(0, |d| d.count()) < 1
                || std::fs::metadata(
                    std::fs::read_dir(&dir)
                        .unwrap()
                        .next()
                        .unwrap()
                        .unwrap()
                        .path(),
                )
                .map_or(0, |m| m.len())
                    < (30 * FRAME_LEN) as u64
            {
                assert!(Instant::now() < deadline, "first recording not written");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        } else {
            // The second is flushed by a graceful shutdown with the source still connected.
            srv.shutdown(Duration::from_secs(5)).await;
            drop(src);
        }
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    // The second connection's file is "<name>-1.mp3".
    files.sort_by_key(|p| p.to_string_lossy().len());
    assert_eq!(files.len(), 2, "one file per connection: {files:?}");
    assert!(files[1].to_string_lossy().ends_with("-1.mp3"), "{files:?}");
    let first = std::fs::read(&files[0]).unwrap();
    let second = std::fs::read(&files[1]).unwrap();
    assert!(
        first == frames(0..30),
        "whole frames only, no junk: {:?}",
        frame_indices(&first)
    );
    assert!(second == frames(100..140), "{:?}", frame_indices(&second));
}
