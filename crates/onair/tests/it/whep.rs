//! The WHEP → WebSocket bridge against a real WebRTC peer: an aiortc WHEP server
//! (peers/whep_server.py) sending a tone sequence as Opus over loopback, and a WebSocket
//! consumer in the test. aiortc missing fails the test loudly (`bash .ci/run` installs it).

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use base64::Engine;
use futures_util::StreamExt;
use onair::{
    bridge::{Bridge, BridgeConfig},
    client_tls::ClientTls,
    input::whep::{decode::Format, signal::Endpoint, WhepConfig},
    output::ws_pcm::{Fields, Payload, WsConfig},
};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::{protocol::frame::coding::CloseCode, Message};

const RATE: u32 = 16_000;
const CHUNK_BYTES: usize = 3_200; // 100 ms of 16 kHz mono s16le

fn require_aiortc() {
    let ok = Command::new("python3")
        .args(["-c", "import aiortc, aiohttp"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "aiortc/aiohttp are not installed for python3: run `bash .ci/run`, which installs them"
    );
}

/// The aiortc WHEP server; its stdout event lines arrive on `events`.
struct WhepServer {
    child: Child,
    port: u16,
    events: mpsc::Receiver<String>,
}

impl WhepServer {
    fn start(args: &[&str]) -> WhepServer {
        require_aiortc();
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/peers/whep_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut server = WhepServer {
            child,
            port: 0,
            events,
        };
        let line = server.expect("LISTEN", Duration::from_secs(20));
        server.port = line[7..].trim().parse().expect("port");
        server
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/whep", self.port)
    }

    /// The endpoint of a server started with `--cert/--key`.
    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/whep", self.port)
    }

    /// Waits for the next event line starting with `word`; earlier lines are returned in
    /// `seen` order via the log.
    fn expect(&self, word: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(line) if line.starts_with(word) => return line,
                Ok(line) => eprintln!("whep server: {line}"),
                Err(_) => panic!("whep server did not say {word} within {within:?}"),
            }
        }
    }
}

impl WhepServer {
    /// The server saw session `sid` DELETEd.
    fn expect_deleted(&self, sid: &str) {
        let deleted = self.expect("DELETE", Duration::from_secs(10));
        assert_eq!(
            deleted[7..].trim(),
            sid,
            "the session we got is the one DELETEd"
        );
    }
}

impl Drop for WhepServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bridge_config(whep: &str, ws: SocketAddr, fields: &str) -> BridgeConfig {
    let tls = ClientTls::new(None).unwrap();
    bridge_config_with(whep, &format!("ws://{ws}/audio"), fields, tls)
}

fn bridge_config_with(whep: &str, ws_url: &str, fields: &str, tls: ClientTls) -> BridgeConfig {
    BridgeConfig {
        whep: WhepConfig {
            endpoint: Endpoint::parse(whep, Some("tok".into()), tls.clone()).unwrap(),
            ice_servers: vec![],
        },
        ws: Some(WsConfig {
            url: ws_url.to_owned(),
            headers: vec![("X-Test".into(), "yes".into())],
            trace_id: "T1".into(),
            stm_id: "S1".into(),
            rate: RATE,
            channels: 1,
            chunk_ms: 100,
            payload: Payload::Pcm,
            fields: Fields::parse(fields).unwrap(),
            buffer: Duration::from_secs(30),
            tls,
        }),
        trace_id: "T1".into(),
        stm_id: "S1".into(),
        format: Format {
            rate: RATE,
            channels: 1,
        },
        mount: None,
    }
}

/// A bridge from `server` to a WebSocket consumer of the test's, once connected.
async fn start_with_consumer(
    server: &WhepServer,
    fields: &str,
) -> (
    Bridge,
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) {
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = Bridge::start(bridge_config(
        &server.url(),
        ws.local_addr().unwrap(),
        fields,
    ))
    .unwrap();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
        .await
        .expect("bridge connects to the WebSocket")
        .unwrap();
    (bridge, tokio_tungstenite::accept_async(tcp).await.unwrap())
}

/// One received message, checked for shape.
#[derive(Debug)]
struct Received {
    timestamp: f64,
    seq: Option<u64>,
    pcm: Vec<i16>,
    at: Instant,
}

fn parse_message(text: &str, want_keys: &[&str], at: Instant) -> Received {
    parse_message_of(text, want_keys, at, ("T1", "S1"))
}

fn parse_message_of(text: &str, want_keys: &[&str], at: Instant, ids: (&str, &str)) -> Received {
    let v: serde_json::Value = serde_json::from_str(text).expect("message is JSON");
    let obj = v.as_object().expect("message is an object");
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = want_keys.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "exactly these fields: {text:.200}");
    assert_eq!(obj["traceId"], ids.0);
    assert_eq!(obj["stmId"], ids.1);
    let data = base64::engine::general_purpose::STANDARD
        .decode(obj["data"].as_str().expect("data is a string"))
        .expect("data is base64");
    assert_eq!(data.len() % 2, 0, "whole s16 mono frames");
    Received {
        timestamp: obj["timestamp"].as_f64().expect("timestamp is a number"),
        seq: obj.get("seq").and_then(|s| s.as_u64()),
        pcm: data
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect(),
        at,
    }
}

/// How long [`receive_live`] listens, from the first message.
const RECEIVE_FOR: Duration = Duration::from_millis(4_500);

/// The messages of [`RECEIVE_FOR`] of a running bridge (the socket must stay open).
async fn receive_live<S>(
    sock: &mut tokio_tungstenite::WebSocketStream<S>,
    keys: &[&str],
) -> Vec<Received>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut msgs = Vec::new();
    let mut first: Option<Instant> = None;
    while first.is_none_or(|f| f.elapsed() < RECEIVE_FOR) {
        let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("audio keeps coming");
        match next {
            Some(Ok(Message::Text(t))) => {
                let now = Instant::now();
                first.get_or_insert(now);
                msgs.push(parse_message(&t, keys, now));
            }
            Some(Ok(Message::Close(c))) => panic!("closed early: {c:?}"),
            Some(Ok(_)) => {}
            other => panic!("WebSocket ended: {other:?}"),
        }
    }
    msgs
}

/// The messages received live: the tail drained at a stop arrives all at once, so the
/// timeline is judged on what came within [`RECEIVE_FOR`] of the first.
fn live_part(msgs: &[Received]) -> &[Received] {
    let Some(first) = msgs.first().map(|m| m.at) else {
        return msgs;
    };
    let live = msgs
        .iter()
        .take_while(|m| m.at.duration_since(first) <= RECEIVE_FOR)
        .count();
    &msgs[..live]
}

/// After a stop: the messages still coming, then the normal close frame.
async fn until_close<S>(
    sock: &mut tokio_tungstenite::WebSocketStream<S>,
    msgs: &mut Vec<Received>,
    keys: &[&str],
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("bridge closes the WebSocket")
        {
            Some(Ok(Message::Text(t))) => msgs.push(parse_message(&t, keys, Instant::now())),
            Some(Ok(Message::Close(c))) => {
                assert_eq!(c.map(|c| c.code), Some(CloseCode::Normal));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
}

/// Power of `freq` in `x` (Goertzel).
fn power(x: &[i16], freq: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * freq / f64::from(RATE);
    let c = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s = f64::from(v) + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    s1 * s1 + s2 * s2 - c * s1 * s2
}

/// The dominant tone of a chunk among the sequence's, if one clearly dominates.
fn dominant(x: &[i16]) -> Option<u32> {
    let tones = [440u32, 660, 880];
    let p: Vec<f64> = tones.iter().map(|&f| power(x, f64::from(f))).collect();
    let (best, &pmax) = p
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap();
    let others = p.iter().sum::<f64>() - pmax;
    (pmax > 10.0 * others && pmax > 1e9).then_some(tones[best])
}

/// Runs of (tone, chunk count) in order.
fn runs(msgs: &[Received]) -> Vec<(Option<u32>, usize)> {
    let mut out: Vec<(Option<u32>, usize)> = Vec::new();
    for m in msgs.iter().filter(|m| m.pcm.len() * 2 == CHUNK_BYTES) {
        let d = dominant(&m.pcm);
        match out.last_mut() {
            Some((t, n)) if *t == d => *n += 1,
            _ => out.push((d, 1)),
        }
    }
    out
}

/// The bridge's own checks common to both tests: contiguous timestamps, whole chunks, audio
/// delivered ≥ 95 % of the wall-clock time the consumer spent receiving.
fn check_timeline(msgs: &[Received]) {
    assert!(msgs.len() >= 20, "only {} messages", msgs.len());
    for (i, w) in msgs.windows(2).enumerate() {
        let step = w[1].timestamp - w[0].timestamp;
        let dur = w[0].pcm.len() as f64 / f64::from(RATE);
        assert!(
            (step - dur).abs() < 1e-4,
            "message {i}: timestamp step {step} for {dur} s of audio"
        );
    }
    let body = &msgs[..msgs.len() - 1];
    assert!(
        body.iter().all(|m| m.pcm.len() * 2 == CHUNK_BYTES),
        "every chunk but the last is exactly 100 ms"
    );
    let audio: f64 = msgs.iter().map(|m| m.pcm.len() as f64).sum::<f64>() / f64::from(RATE);
    let wall = msgs[msgs.len() - 1]
        .at
        .duration_since(msgs[0].at)
        .as_secs_f64();
    assert!(
        audio >= 0.95 * wall,
        "{audio:.2} s of audio over {wall:.2} s of wall-clock"
    );
    assert!(
        audio <= wall + 1.0,
        "{audio:.2} s of audio over {wall:.2} s: more than real time"
    );
}

/// Tone runs follow 440 → 880 → 660 → 440 …, each (but the first and last) ~1 s long.
fn check_tones(msgs: &[Received]) {
    let all = runs(msgs);
    // Chunks straddling a tone change have no clear winner: drop those short runs.
    let runs: Vec<(u32, usize)> = all
        .iter()
        .filter_map(|&(t, n)| t.map(|t| (t, n)))
        .filter(|&(_, n)| n >= 2)
        .collect();
    eprintln!("tone runs (Hz, 100 ms chunks): {all:?}");
    assert!(runs.len() >= 3, "tone runs {all:?}");
    let next = |t: u32| match t {
        440 => 880,
        880 => 660,
        _ => 440,
    };
    for w in runs.windows(2) {
        assert_eq!(w[1].0, next(w[0].0), "tone order in {all:?}");
    }
    for &(t, n) in &runs[1..runs.len() - 1] {
        assert!((8..=11).contains(&n), "{t} Hz lasted {n} chunks in {all:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
// The handshake callback's Result type is tungstenite's, not ours to shrink.
#[allow(clippy::result_large_err)]
async fn whep_pull_delivers_the_tone_sequence_and_deletes_on_stop() {
    let server = WhepServer::start(&["--token", "tok"]);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = Bridge::start(bridge_config(&server.url(), ws.local_addr().unwrap(), "")).unwrap();
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
        .await
        .expect("bridge connects to the WebSocket")
        .unwrap();
    // The --ws-header reaches the consumer's handshake.
    let header = std::sync::Arc::new(std::sync::Mutex::new(None));
    let seen = header.clone();
    let mut sock = tokio_tungstenite::accept_hdr_async(
        tcp,
        move |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
            *seen.lock().unwrap() = req.headers().get("x-test").cloned();
            Ok(resp)
        },
    )
    .await
    .unwrap();
    assert_eq!(
        header.lock().unwrap().as_ref().map(|v| v.as_bytes()),
        Some(&b"yes"[..])
    );
    let session = server.expect("SESSION", Duration::from_secs(10));
    let sid = session[8..].trim().to_owned();

    let keys = ["traceId", "stmId", "timestamp", "data"];
    let mut msgs = receive_live(&mut sock, &keys).await;
    let stats = bridge.stats.clone();
    bridge.stop();
    // Stop drains: the rest of the audio, then a normal close frame.
    until_close(&mut sock, &mut msgs, &keys).await;
    server.expect_deleted(&sid);

    check_timeline(live_part(&msgs));
    for w in msgs.windows(2) {
        assert!(w[1].timestamp > w[0].timestamp, "timestamps strictly grow");
    }
    check_tones(&msgs);
    let s = stats.snapshot();
    eprintln!("{s:?}");
    assert_eq!(s.codec, "opus", "{s:?}");
    assert!(s.rtp_packets > 150, "{s:?}");
    assert_eq!(s.messages_sent as usize, msgs.len(), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_drop_loses_no_audio_and_whep_busy_is_retried() {
    // The first POST gets 503 + Retry-After: the bridge must wait and retry.
    let server = WhepServer::start(&["--reject-first", "1"]);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bridge = Bridge::start(bridge_config(
        &server.url(),
        ws.local_addr().unwrap(),
        "seq,sampleRate,channels",
    ))
    .unwrap();
    server.expect("REJECT", Duration::from_secs(10));
    server.expect("SESSION", Duration::from_secs(10));
    let keys = [
        "traceId",
        "stmId",
        "timestamp",
        "data",
        "seq",
        "sampleRate",
        "channels",
    ];
    let mut msgs: Vec<Received> = Vec::new();
    let mut connections = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(15) {
        let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
            .await
            .expect("bridge (re)connects")
            .unwrap();
        let mut sock = tokio_tungstenite::accept_async(tcp).await.unwrap();
        connections += 1;
        let mut on_this = 0;
        loop {
            let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
                .await
                .expect("audio keeps coming");
            let Some(Ok(Message::Text(t))) = next else {
                panic!("unexpected {next:?}");
            };
            msgs.push(parse_message(&t, &keys, Instant::now()));
            on_this += 1;
            // First connection: drop the TCP connection (no close frame) after 15 messages,
            // right after one arrived, then stay away for a second before accepting again.
            if connections == 1 && on_this == 15 {
                drop(sock);
                tokio::time::sleep(Duration::from_secs(1)).await;
                break;
            }
            if connections == 2 && on_this == 35 {
                break;
            }
        }
        if connections == 2 {
            break;
        }
    }
    assert_eq!(connections, 2);
    let stats = bridge.stats.clone();
    bridge.shutdown(Duration::from_secs(5)).await.unwrap();
    server.expect("DELETE", Duration::from_secs(10));

    let seqs: Vec<u64> = msgs.iter().map(|m| m.seq.expect("seq asked for")).collect();
    let want: Vec<u64> = (0..msgs.len() as u64).collect();
    assert_eq!(
        seqs, want,
        "every chunk once, in order, across the reconnect"
    );
    for w in msgs.windows(2) {
        assert!(w[1].timestamp > w[0].timestamp, "no repeated timestamp");
    }
    // Wall-clock coverage is judged from the first message to the last: the second
    // connection starts by catching up on what was buffered meanwhile.
    check_timeline(&msgs);
    check_tones(&msgs);
    let s = stats.snapshot();
    eprintln!("{s:?}");
    assert!(s.ws_reconnects >= 1, "{s:?}");
    assert!(s.whep_retries >= 1, "{s:?}");
    assert_eq!(s.messages_dropped, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whep_server_that_goes_away_is_reconnected_and_the_gap_filled() {
    // The first session ends (server side, no DELETE) 1.5 s after it connected.
    let server = WhepServer::start(&["--end-after", "1.5"]);
    let (bridge, mut sock) = start_with_consumer(&server, "seq").await;
    let keys = ["traceId", "stmId", "timestamp", "data", "seq"];
    let mut msgs = Vec::new();
    let mut sessions = 0;
    let mut until: Option<Instant> = None;
    // Read audio throughout; once the second session is up, a further 1.2 s.
    while until.is_none_or(|u| Instant::now() < u) {
        let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("audio keeps coming");
        if let Some(Ok(Message::Text(t))) = next {
            msgs.push(parse_message(&t, &keys, Instant::now()));
        }
        while let Ok(line) = server.events.try_recv() {
            if line.starts_with("SESSION") {
                sessions += 1;
                if sessions == 2 {
                    until = Some(Instant::now() + Duration::from_millis(1_200));
                }
            }
        }
    }
    let stats = bridge.stats.clone();
    bridge.shutdown(Duration::from_secs(5)).await.unwrap();
    let s = stats.snapshot();
    eprintln!("{s:?}");
    assert!(s.whep_retries >= 1, "{s:?}");
    assert!(
        s.concealed_s > 0.2,
        "the outage is filled and counted: {s:?}"
    );
    check_timeline(&msgs);
    // Audio resumed: after the filled gap (no tone) comes a full second of the new
    // session's first tone.
    let all = runs(&msgs);
    let gap = all.iter().position(|r| r.0.is_none()).expect("a gap");
    assert!(
        all[gap..].iter().any(|&(t, n)| t == Some(440) && n >= 8),
        "tones after the reconnect: {all:?}"
    );
}

/// An HTTP request with a body through the server's web app; returns (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, auth: bool, body: &str) -> (u16, String) {
    let auth = if auth {
        format!(
            "Authorization: Basic {}\r\n",
            crate::support::basic(crate::support::ADMIN.0, crate::support::ADMIN.1)
        )
    } else {
        String::new()
    };
    let resp = crate::support::raw_request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// Reads messages from one WebSocket connection until `n` arrived.
async fn read_messages(
    sock: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    n: usize,
    ids: (&str, &str),
) -> Vec<Received> {
    let keys = ["traceId", "stmId", "timestamp", "data"];
    let mut got = Vec::new();
    while got.len() < n {
        let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("audio keeps coming");
        if let Some(Ok(Message::Text(t))) = next {
            let m = parse_message_of(&t, &keys, Instant::now(), ids);
            assert_eq!(m.pcm.len() * 2, CHUNK_BYTES);
            got.push(m);
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridges_from_config_and_the_api_run_and_stop() {
    let whep = WhepServer::start(&[]);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_addr = ws.local_addr().unwrap();
    let toml = format!(
        "[[bridge]]\nwhep = \"{}\"\nws = \"ws://{ws_addr}/cfg\"\ntrace_id = \"T1\"\nstm_id = \"S1\"\n",
        whep.url()
    );
    let running = crate::support::start(&toml).await;
    let addr = running.local_addr();

    // The configured bridge connects and streams.
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
        .await
        .expect("configured bridge connects")
        .unwrap();
    let mut cfg_sock = tokio_tungstenite::accept_async(tcp).await.unwrap();
    read_messages(&mut cfg_sock, 5, ("T1", "S1")).await;

    // The API wants the admin.
    assert_eq!(http(addr, "GET", "/api/bridges", false, "").await.0, 401);
    let (status, body) = http(addr, "POST", "/api/bridges", true, "{\"whep\": 1}").await;
    assert_eq!(status, 400, "{body}");
    let spec = format!(
        "{{\"whep\":\"{}\",\"ws\":\"ws://{ws_addr}/api\",\"traceId\":\"T2\",\"stmId\":\"S2\",\"bearer\":\"secret\"}}",
        whep.url()
    );
    let (status, body) = http(addr, "POST", "/api/bridges", true, &spec).await;
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        !body.contains("secret"),
        "the bearer token is never shown: {body}"
    );
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
        .await
        .expect("API bridge connects")
        .unwrap();
    let mut api_sock = tokio_tungstenite::accept_async(tcp).await.unwrap();
    read_messages(&mut api_sock, 5, ("T2", "S2")).await;

    let (status, body) = http(addr, "GET", "/api/bridges", true, "").await;
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{body}");
    let api = list.iter().find(|b| b["id"] == id.as_str()).unwrap();
    assert_eq!(api["spec"]["trace_id"], "T2");
    assert_eq!(api["ended"], serde_json::Value::Null);
    assert_eq!(api["stats"]["state"], "connected");
    assert_eq!(api["stats"]["whep_error"], "", "{api}");
    assert_eq!(api["stats"]["ws_error"], "", "{api}");
    assert!(
        // 5 received: the 5th was sent, so the 4th send had completed and was counted.
        api["stats"]["messages_sent"].as_u64().unwrap() >= 4,
        "{api}"
    );

    // DELETE stops it: WHEP session DELETEd, normal close, gone from the list.
    let (status, body) = http(addr, "DELETE", &format!("/api/bridges/{id}"), true, "").await;
    assert_eq!(status, 200, "{body}");
    let stopped: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(stopped["ended"], "stopped");
    whep.expect("DELETE", Duration::from_secs(10));
    loop {
        match tokio::time::timeout(Duration::from_secs(10), api_sock.next())
            .await
            .expect("closed")
        {
            Some(Ok(Message::Close(c))) => {
                assert_eq!(c.map(|c| c.code), Some(CloseCode::Normal));
                break;
            }
            Some(Ok(_)) => {}
            other => panic!("no close frame: {other:?}"),
        }
    }
    assert_eq!(
        http(addr, "GET", &format!("/api/bridges/{id}"), true, "")
            .await
            .0,
        404
    );
    let (_, body) = http(addr, "GET", "/api/bridges", true, "").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Server shutdown stops the configured one the same way.
    assert!(running.shutdown(Duration::from_secs(15)).await);
    whep.expect("DELETE", Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_pcmu_is_decoded_as_g711() {
    let server = WhepServer::start(&["--codec", "PCMU"]);
    let (bridge, mut sock) = start_with_consumer(&server, "").await;
    let keys = ["traceId", "stmId", "timestamp", "data"];
    let mut msgs = Vec::new();
    while msgs.len() < 35 {
        let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("audio keeps coming");
        if let Some(Ok(Message::Text(t))) = next {
            msgs.push(parse_message(&t, &keys, Instant::now()));
        }
    }
    let stats = bridge.stats.clone();
    bridge.shutdown(Duration::from_secs(5)).await.unwrap();
    check_timeline(&msgs);
    check_tones(&msgs);
    let s = stats.snapshot();
    assert_eq!(s.codec, "pcmu", "{s:?}");
    assert!(s.rtp_packets > 100, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_and_reordered_packets_are_concealed_without_losing_time() {
    // 4 % of RTP packets never sent, one in seven sent after its successor.
    let server = WhepServer::start(&["--drop-every", "25", "--reorder-every", "7"]);
    let (bridge, mut sock) = start_with_consumer(&server, "seq").await;
    let keys = ["traceId", "stmId", "timestamp", "data", "seq"];
    let mut msgs = Vec::new();
    while msgs.len() < 40 {
        let next = tokio::time::timeout(Duration::from_secs(10), sock.next())
            .await
            .expect("audio keeps coming");
        if let Some(Ok(Message::Text(t))) = next {
            msgs.push(parse_message(&t, &keys, Instant::now()));
        }
    }
    let stats = bridge.stats.clone();
    bridge.shutdown(Duration::from_secs(5)).await.unwrap();
    let s = stats.snapshot();
    eprintln!("{s:?}");
    check_timeline(&msgs);
    check_tones(&msgs);
    // 40 chunks = 200 packets: ~8 dropped. Each loss is concealed with exactly one packet's
    // worth of audio (20 ms = 320 frames at 16 kHz), so the timeline keeps its length.
    assert!(s.lost_packets >= 4, "{s:?}");
    let concealed_frames = (s.concealed_s * 16_000.0).round() as u64;
    assert_eq!(concealed_frames, s.lost_packets * 320, "{s:?}");
    assert_eq!(
        s.dropped_packets, 0,
        "reordered packets are not late: {s:?}"
    );
}

/// A fresh directory with a self-signed certificate for localhost and 127.0.0.1.
fn test_certificate(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("onair-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    crate::support::self_signed(&dir, "localhost")
}

type Wss =
    tokio_tungstenite::WebSocketStream<tokio_rustls::server::TlsStream<tokio::net::TcpStream>>;

/// The test's WebSocket consumer over TLS: one TLS handshake, then the WebSocket one.
/// Returns the server name the client asked for (SNI) with the socket.
async fn accept_wss(
    listener: &TcpListener,
    acceptor: &tokio_rustls::TlsAcceptor,
) -> Result<(Option<String>, Wss), String> {
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .map_err(|_| "no connection".to_string())?
        .map_err(|e| e.to_string())?;
    let tls = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp))
        .await
        .map_err(|_| "TLS handshake timed out".to_string())?
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let sni = tls.get_ref().1.server_name().map(str::to_owned);
    let ws = tokio_tungstenite::accept_async(tls)
        .await
        .map_err(|e| e.to_string())?;
    Ok((sni, ws))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_pull_with_ca_delivers_over_https_and_wss_and_deletes_on_stop() {
    let (cert, key) = test_certificate("whep-https");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = WhepServer::start(&["--token", "tok", "--cert", &cert_s, "--key", &key_s]);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let acceptor = onair::tls::Tls::load(&cert, &key).unwrap().acceptor();
    // The real command line: https by address, wss by name (both in the certificate).
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["whep-pull", "--whep", &server.https_url()])
        .arg("--ws")
        .arg(format!(
            "wss://localhost:{}/audio",
            ws.local_addr().unwrap().port()
        ))
        .args([
            "--trace-id",
            "T1",
            "--stm-id",
            "S1",
            "--bearer",
            "tok",
            "--ca",
            &cert_s,
        ])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("onair binary starts");
    let killed = Killed(child.id());
    let (sni, mut sock) = accept_wss(&ws, &acceptor)
        .await
        .expect("wss consumer connected");
    assert_eq!(sni.as_deref(), Some("localhost"), "SNI is the URL's host");
    let session = server.expect("SESSION", Duration::from_secs(10));
    let sid = session[8..].trim().to_owned();

    let keys = ["traceId", "stmId", "timestamp", "data"];
    let mut msgs = receive_live(&mut sock, &keys).await;
    // SIGTERM: the session is DELETEd over https, the rest sent, a normal close.
    killed.signal("-TERM");
    until_close(&mut sock, &mut msgs, &keys).await;
    server.expect_deleted(&sid);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "whep-pull exits cleanly: {status}");
    check_timeline(live_part(&msgs));
    check_tones(&msgs);
}

/// Kills (SIGKILL) a process by id when dropped; `signal` sends another signal.
struct Killed(u32);

impl Killed {
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.0.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {}", self.0);
    }
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_an_untrusted_certificate_stops_the_bridge_and_nothing_is_sent() {
    let (cert, key) = test_certificate("whep-untrusted");
    let (cert_s, key_s) = (cert.display().to_string(), key.display().to_string());
    let server = WhepServer::start(&["--cert", &cert_s, "--key", &key_s]);
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ws_url = format!("wss://localhost:{}/audio", ws.local_addr().unwrap().port());
    let acceptor = onair::tls::Tls::load(&cert, &key).unwrap().acceptor();
    // The consumer reports every connection attempt: the TLS outcome, messages received.
    let (attempt_tx, mut attempt_rx) = tokio::sync::mpsc::unbounded_channel();
    let consumer = tokio::spawn(async move {
        loop {
            let attempt = match accept_wss(&ws, &acceptor).await {
                Ok((_, mut sock)) => {
                    let mut n = 0;
                    while let Some(Ok(m)) = sock.next().await {
                        n += usize::from(m.is_text());
                    }
                    Ok(n)
                }
                Err(e) => Err(e),
            };
            if attempt_tx.send(attempt).is_err() {
                return;
            }
        }
    });
    // Only the built-in roots: the self-signed certificate is not trusted.
    let tls = ClientTls::new(None).unwrap();
    let bridge = Bridge::start(bridge_config_with(&server.https_url(), &ws_url, "", tls)).unwrap();
    let stats = bridge.stats.clone();
    let result = tokio::time::timeout(Duration::from_secs(20), bridge.wait())
        .await
        .expect("the bridge ends by itself");
    let err = result
        .expect_err("an untrusted WHEP server is an error")
        .to_string();
    eprintln!("bridge ended: {err}");
    assert!(
        err.contains("certificate not accepted") && err.contains("UnknownIssuer"),
        "{err}"
    );
    let s = stats.snapshot();
    assert_eq!(s.state, "failed", "{s:?}");
    assert_eq!(
        s.whep_retries, 0,
        "a certificate error is not retried: {s:?}"
    );
    assert_eq!(s.messages_sent, 0, "{s:?}");
    assert_ne!(s.websocket, "connected", "{s:?}");
    // The bridge has ended, so its attempts are over on its side; the consumer may still be
    // reading the alert of the last one.
    let first = tokio::time::timeout(Duration::from_secs(10), attempt_rx.recv())
        .await
        .expect("the bridge tried the wss consumer");
    consumer.abort();
    let mut attempts: Vec<_> = first.into_iter().collect();
    while let Some(a) = attempt_rx.recv().await {
        attempts.push(a);
    }
    eprintln!("wss consumer saw: {attempts:?}");
    assert!(!attempts.is_empty(), "the consumer is gone");
    for a in &attempts {
        let e = a
            .as_ref()
            .expect_err("no TLS session with an untrusted certificate");
        assert!(e.starts_with("TLS handshake"), "{e}");
    }
    // No POST ever reached the WHEP server.
    let said: Vec<String> = server.events.try_iter().collect();
    assert!(!said.iter().any(|l| l.starts_with("SESSION")), "{said:?}");
}

#[tokio::test]
async fn a_bad_ca_file_is_refused_at_start_everywhere() {
    // Command line: a missing file stops whep-pull before any connection, with the path.
    let out = tokio::task::spawn_blocking(|| {
        Command::new("timeout")
            .arg("20")
            .arg(env!("CARGO_BIN_EXE_onair"))
            .args(["whep-pull", "--whep", "https://127.0.0.1:9/whep"])
            .args([
                "--ws",
                "wss://127.0.0.1:9/a",
                "--trace-id",
                "T",
                "--stm-id",
                "S",
            ])
            .args(["--ca", "/nonexistent/onair-ca.pem"])
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("CA file /nonexistent/onair-ca.pem") && stderr.contains("No such file"),
        "{stderr}"
    );

    // [[bridge]]: a file that is not PEM makes the config invalid.
    let dir = std::env::temp_dir().join(format!("onair-badca-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "no certificate here\n").unwrap();
    let toml_text = format!(
        "[[bridge]]\nwhep = \"https://127.0.0.1:9/whep\"\nws = \"wss://127.0.0.1:9/a\"\ntrace_id = \"T1\"\nstm_id = \"S1\"\nca_file = {:?}\n",
        garbage.display().to_string()
    );
    let raw: onair::config::RawConfig = toml::from_str(&toml_text).unwrap();
    let err = onair::config::Config::from_raw(raw, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("bridge T1")
            && err.contains("garbage.pem")
            && err.contains("no PEM certificate"),
        "{err}"
    );

    // API: 400 with the reason.
    let running = crate::support::start("").await;
    let spec = "{\"whep\":\"https://127.0.0.1:9/whep\",\"ws\":\"wss://127.0.0.1:9/a\",\"traceId\":\"T2\",\"stmId\":\"S2\",\"caFile\":\"/nonexistent/onair-ca.pem\"}";
    let (status, body) = http(running.local_addr(), "POST", "/api/bridges", true, spec).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("CA file /nonexistent/onair-ca.pem"), "{body}");
    running.shutdown(Duration::from_secs(2)).await;
}

/// Tone of each 100 ms window of decoded mount audio (mono f32 at `rate`), `None` where no
/// tone of the sequence clearly dominates (silence, a change of tone).
fn window_tones(pcm: &[f32], rate: u32) -> Vec<Option<u32>> {
    let tones = [440u32, 660, 880];
    pcm.chunks_exact(rate as usize / 10)
        .map(|w| {
            let p: Vec<f64> = tones
                .iter()
                .map(|&f| crate::encoding::power(w, rate, f64::from(f)))
                .collect();
            let (best, &pmax) = p
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .unwrap();
            let others = p.iter().sum::<f64>() - pmax;
            (pmax > 10.0 * others && pmax > 1e-4).then_some(tones[best])
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_with_a_mount_puts_the_webrtc_stream_on_air() {
    crate::support::require("ffmpeg");
    let whep = WhepServer::start(&[]);
    // The WebRTC stream becomes a radio stream, and still goes to the WebSocket.
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let toml = format!(
        "[[bridge]]\nwhep = \"{}\"\nws = \"ws://{}/m\"\ntrace_id = \"T1\"\nstm_id = \"S1\"\nmount = \"/webrtc\"\n",
        whep.url(),
        ws.local_addr().unwrap()
    );
    let running = crate::support::start(&toml).await;
    let addr = running.local_addr();
    whep.expect("CONNECTED", Duration::from_secs(20));
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(10), ws.accept())
        .await
        .expect("the bridge connects to the WebSocket too")
        .unwrap();
    let mut sock = tokio_tungstenite::accept_async(tcp).await.unwrap();

    let mut listener = crate::support::Listener::get(addr, "/webrtc", false).await;
    assert!(
        listener.head.starts_with("HTTP/1.0 200"),
        "{}",
        listener.head
    );
    assert!(
        crate::support::header(&listener.head, "content-type") == Some("audio/mpeg"),
        "{}",
        listener.head
    );
    // 7 s of 128 kbit/s MP3 (the burst is the first few seconds of it).
    tokio::time::timeout(Duration::from_secs(30), listener.fill(7 * 16_000))
        .await
        .expect("the mount carries the bridge's audio in real time");
    let pcm = crate::encoding::ffmpeg_pcm(&listener.body, 16_000);
    let tones = window_tones(&pcm, 16_000);
    let mut runs: Vec<(Option<u32>, usize)> = Vec::new();
    for t in &tones {
        match runs.last_mut() {
            Some((r, n)) if r == t => *n += 1,
            _ => runs.push((*t, 1)),
        }
    }
    eprintln!("mount tone runs (Hz, 100 ms windows): {runs:?}");
    let sure: Vec<(u32, usize)> = runs
        .iter()
        .filter_map(|&(t, n)| t.map(|t| (t, n)))
        .filter(|&(_, n)| n >= 2)
        .collect();
    assert!(sure.len() >= 4, "tone runs {runs:?}");
    let next = |t: u32| match t {
        440 => 880,
        880 => 660,
        _ => 440,
    };
    for w in sure.windows(2) {
        assert_eq!(w[1].0, next(w[0].0), "tone order in {runs:?}");
    }
    for &(t, n) in &sure[1..sure.len() - 1] {
        assert!(
            (8..=11).contains(&n),
            "{t} Hz lasted {n} windows in {runs:?}"
        );
    }

    // The WebSocket side (resampled from the 48 kHz decode the mount gets) follows the
    // same sequence.
    check_tones(&read_messages(&mut sock, 45, ("T1", "S1")).await);

    // The API shows it by stm_id; a second bridge with the same stm_id or onto the same
    // (busy) mount is refused, one with neither a WebSocket nor a mount is invalid.
    let (status, body) = http(addr, "GET", "/api/bridges/S1", true, "").await;
    assert_eq!(status, 200, "{body}");
    let info: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(info["spec"]["mount"], "/webrtc");
    assert_eq!(info["stats"]["codec"], "opus");
    assert_eq!(info["stats"]["mount_dropped"], 0, "{info}");
    let again = format!(
        "{{\"whep_url\":\"{}\",\"traceId\":\"T2\",\"stmId\":\"S1\",\"mount\":\"/other\"}}",
        whep.url()
    );
    let (status, body) = http(addr, "POST", "/api/bridges", true, &again).await;
    assert_eq!(status, 409, "{body}");
    let busy = again
        .replace("\"S1\"", "\"S2\"")
        .replace("/other", "/webrtc");
    let (status, body) = http(addr, "POST", "/api/bridges", true, &busy).await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("/webrtc"), "{body}");
    let neither = format!(
        "{{\"whep_url\":\"{}\",\"traceId\":\"T3\",\"stmId\":\"S3\"}}",
        whep.url()
    );
    assert_eq!(
        http(addr, "POST", "/api/bridges", true, &neither).await.0,
        400
    );

    // A mount-only bridge whose source is killed ends, like a kicked source client.
    let solo = format!(
        "{{\"whep_url\":\"{}\",\"traceId\":\"T4\",\"stmId\":\"S4\",\"mount\":\"/solo\"}}",
        whep.url()
    );
    let (status, body) = http(addr, "POST", "/api/bridges", true, &solo).await;
    assert_eq!(status, 201, "{body}");
    let bridge_field = |field: &'static str| async move {
        let (_, body) = http(addr, "GET", "/api/bridges/S4", true, "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if field == "ended" {
            v["ended"].clone()
        } else {
            v["stats"][field].clone()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while bridge_field("state").await != "connected" {
        assert!(Instant::now() < deadline, "S4 never connected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = http(addr, "DELETE", "/api/mounts/solo/source", true, "").await;
    assert_eq!(status, 200, "{body}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while bridge_field("ended").await.is_null() {
        assert!(Instant::now() < deadline, "S4 still runs without its mount");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(bridge_field("ended").await, "stopped");
    whep.expect("DELETE", Duration::from_secs(10));

    // DELETE by stm_id: WHEP session deleted, the mount's source ends, listeners close
    // (no fallback configured).
    let (status, body) = http(addr, "DELETE", "/api/bridges/S1", true, "").await;
    assert_eq!(status, 200, "{body}");
    whep.expect("DELETE", Duration::from_secs(10));
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = vec![0u8; 16_384];
        loop {
            match tokio::io::AsyncReadExt::read(&mut listener.stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the listener was closed when the bridge stopped"
    );
    assert!(running.shutdown(Duration::from_secs(10)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_pull_with_a_mount_runs_a_station_with_listeners() {
    crate::support::require("ffmpeg");
    let whep = WhepServer::start(&[]);
    // No --ws: the command runs a station with the bridge feeding /live.
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["whep-pull", "--whep", &whep.url()])
        .args(["--trace-id", "T1", "--stm-id", "S1", "--mount", "/live"])
        .args(["--bind", "127.0.0.1:0"])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("onair binary starts");
    let killed = Killed(child.id());
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("banner before exit").unwrap();
        if let Some(rest) = line.split(" listening on ").nth(1) {
            break rest.trim().parse().expect("address in banner");
        }
    };
    // Keep draining stdout so the station never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    whep.expect("CONNECTED", Duration::from_secs(20));
    let mut listener = crate::support::Listener::get(addr, "/live", false).await;
    assert!(
        listener.head.starts_with("HTTP/1.0 200"),
        "{}",
        listener.head
    );
    tokio::time::timeout(Duration::from_secs(20), listener.fill(3 * 16_000))
        .await
        .expect("the mount carries audio");
    let pcm = crate::encoding::ffmpeg_pcm(&listener.body, 16_000);
    let heard: Vec<u32> = window_tones(&pcm, 16_000).into_iter().flatten().collect();
    assert!(
        heard.len() >= 15,
        "at least 1.5 s of the tone sequence on the mount, heard {heard:?}"
    );
    killed.signal("-TERM");
    whep.expect("DELETE", Duration::from_secs(10));
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "whep-pull exits cleanly: {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_shows_why_each_side_is_failing() {
    let running = crate::support::start("").await;
    let addr = running.local_addr();
    // A port nobody listens on, for both sides.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = format!(
        "{{\"whep\":\"http://127.0.0.1:{closed}/whep\",\"ws\":\"ws://127.0.0.1:{closed}/a\",\"traceId\":\"T1\",\"stmId\":\"S1\"}}"
    );
    let (status, body) = http(addr, "POST", "/api/bridges", true, &spec).await;
    assert_eq!(status, 201, "{body}");
    let deadline = Instant::now() + Duration::from_secs(15);
    let stats = loop {
        let (_, body) = http(addr, "GET", "/api/bridges/S1", true, "").await;
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let stats = v["stats"].clone();
        if stats["whep_error"] != "" && stats["ws_error"] != "" {
            break stats;
        }
        assert!(Instant::now() < deadline, "no errors shown: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let whep = stats["whep_error"].as_str().unwrap();
    let ws = stats["ws_error"].as_str().unwrap();
    assert!(whep.contains("cannot reach the WHEP server"), "{whep}");
    assert!(ws.starts_with("connect:"), "{ws}");
    assert!(stats["whep_retries"].as_u64().unwrap() >= 1, "{stats}");
    assert_eq!(
        http(addr, "DELETE", "/api/bridges/S1", true, "").await.0,
        200
    );
    assert!(running.shutdown(Duration::from_secs(10)).await);
}
