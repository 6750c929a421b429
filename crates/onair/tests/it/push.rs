//! Push output: a local mount relayed to a remote server — a second onair station (Icecast
//! PUT and SHOUTcast v1), a real icecast2 (listened to there, and restarted mid-stream), and
//! tiny fake servers for the paths real ones do not take on demand (PUT refused → SOURCE,
//! `403 Mountpoint in use`, a broken connection in the middle of a playout).

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use onair::{
    config::MountSettings,
    mount::{Mount, SourceInfo, SourceTicket},
    output::push::{Mode, Push, PushSettings, PushState},
};
use onair_proto::{
    frame::{Format, Framer},
    icecast::{parse_request_head, RequestHead, StreamInfoHeaders},
    push::{Protocol, PushTarget},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::timeout,
};

use crate::support::*;

/// The frame indices of `audio` from its first frame on (a relay through a server that
/// does not cut on frame boundaries may start mid-frame); asserts they are consecutive.
fn consecutive_frames(audio: &[u8]) -> Vec<u32> {
    let start = (0..audio.len().min(8 * FRAME_LEN))
        .find(|&p| {
            frame_index_at(audio, p)
                .is_some_and(|i| frame_index_at(audio, p + FRAME_LEN) == Some(i + 1))
        })
        .unwrap_or_else(|| panic!("no frame run in {} bytes", audio.len()));
    let idx = frame_indices(&audio[start..]);
    for w in idx.windows(2) {
        assert_eq!(w[1], w[0] + 1, "frames skipped or repeated: {idx:?}");
    }
    idx
}

/// Connects as an ICY listener once the mount is up (bounded).
async fn listen_when_up(addr: SocketAddr, mount: &str) -> Listener {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(s) = TcpStream::connect(addr).await {
            drop(s);
            let l = Listener::get(addr, mount, true).await;
            if l.head.starts_with("HTTP/1.0 200") || l.head.starts_with("HTTP/1.1 200") {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "{mount} never came up on {addr}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Reads until a metadata block carries `title` (bounded); returns audio and titles.
async fn read_until_title(l: &mut Listener, title: &str) -> (Vec<u8>, Vec<(usize, String)>) {
    let metaint = l.metaint().expect("icy-metaint");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (audio, titles) = deinterleave(&l.body, metaint);
        if titles.iter().any(|(_, t)| t == title) {
            return (audio, titles);
        }
        assert!(
            Instant::now() < deadline,
            "title {title:?} never arrived; saw {titles:?}"
        );
        let have = audio.len();
        l.fill_audio(metaint, have + 4 * FRAME_LEN).await;
    }
}

/// A live source on `mount` of station `addr`, sending frames from `from` on.
async fn live_source(addr: SocketAddr, mount: &str, from: u32) -> tokio::task::JoinHandle<()> {
    let src = Source::put(addr, mount, "audio/mpeg").await;
    keep_sending(src, from, 2)
}

/// Test logs (RUST_LOG) for tests that start no station.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn push_toml(mount: &str, to: &str, extra: &str) -> String {
    format!("[[mount]]\nname = \"{mount}\"\n[[mount.push]]\nto = \"{to}\"\n{extra}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_to_another_onair_station_with_titles() {
    let remote = start("").await;
    let r = remote.local_addr();
    let local = start(&push_toml(
        "/live",
        &format!("http://source:{PASS}@{r}/relay"),
        "stream_name = \"Relayed Radio\"\n",
    ))
    .await;
    let a = local.local_addr();
    let feeder = live_source(a, "/live", 0).await;
    assert_eq!(
        set_title(a, "/live", "song=First%20Song", ("source", PASS)).await,
        200
    );
    let mut l = listen_when_up(r, "/relay").await;
    assert_eq!(header(&l.head, "icy-name"), Some("Relayed Radio"));
    assert_eq!(header(&l.head, "content-type"), Some("audio/mpeg"));
    let (audio, _) = read_until_title(&mut l, "First Song").await;
    // onair cuts on frame boundaries, so the relayed stream starts on one too.
    assert!(frame_index_at(&audio, 0).is_some());
    consecutive_frames(&audio);
    assert_eq!(
        set_title(a, "/live", "song=Second%20Song", ("source", PASS)).await,
        200
    );
    let (audio, _) = read_until_title(&mut l, "Second Song").await;
    let idx = consecutive_frames(&audio);
    assert!(idx.len() > 20, "{}", idx.len());
    // The operator sees the relay in /api/status, without its password.
    let (_, status) = http_get(a, "/api/status", None).await;
    assert!(!status.contains(PASS), "password leaked: {status}");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    let live = v["mounts"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == "/live"))
        .expect("/live in the status");
    let push = &live["push"][0];
    assert_eq!(push["to"], format!("http://source:***@{r}/relay"));
    assert_eq!(push["state"], "streaming");
    assert_eq!(push["connections"], 1);
    assert!(
        push["bytes_sent"].as_u64() >= Some(audio.len() as u64 / 2),
        "{push}"
    );
    feeder.abort();
    local.shutdown(Duration::from_secs(2)).await;
    remote.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_over_shoutcast_v1_with_titles() {
    let remote = start_with_shoutcast("").await;
    let r = remote.local_addr();
    let local = start(&push_toml(
        "/live",
        &format!("http://:{PASS}@{r}/"),
        "protocol = \"shoutcast\"\ngenre = \"Jazz\"\n",
    ))
    .await;
    let a = local.local_addr();
    let feeder = live_source(a, "/live", 0).await;
    assert_eq!(
        set_title(a, "/live", "song=Over%20ICY", ("source", PASS)).await,
        200
    );
    // The SHOUTcast port feeds the remote's [shoutcast] mount.
    let mut l = listen_when_up(r, "/stream").await;
    assert_eq!(header(&l.head, "icy-genre"), Some("Jazz"));
    let (audio, _) = read_until_title(&mut l, "Over ICY").await;
    consecutive_frames(&audio);
    feeder.abort();
    local.shutdown(Duration::from_secs(2)).await;
    remote.shutdown(Duration::from_secs(2)).await;
}

/// A fake remote's view of one source connection.
struct Accepted {
    head: RequestHead,
    stream: TcpStream,
    body: Vec<u8>,
}

async fn accept_source(server: &TcpListener) -> Accepted {
    let (mut stream, _) = timeout(STEP, server.accept())
        .await
        .expect("the push never connected")
        .unwrap();
    let got = read_until(&mut stream, b"\r\n\r\n").await;
    let head = parse_request_head(&got, 8192).unwrap().unwrap();
    Accepted {
        body: got[head.head_len..].to_vec(),
        head,
        stream,
    }
}

impl Accepted {
    async fn read_body(&mut self, n: usize) {
        let mut buf = [0u8; 8192];
        while self.body.len() < n {
            let r = timeout(STEP, self.stream.read(&mut buf))
                .await
                .expect("push stopped sending")
                .unwrap();
            assert!(r > 0, "push closed after {} bytes", self.body.len());
            self.body.extend_from_slice(&buf[..r]);
        }
    }

    fn assert_source_credentials(&self) {
        let c = self.head.basic_auth().expect("credentials");
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("source", "remotepw")
        );
        assert_eq!(self.head.path(), "/relayed");
        assert_eq!(self.head.header("content-type"), Some("audio/mpeg"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_refused_falls_back_to_source() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = server.local_addr().unwrap();
    let local = start(&push_toml(
        "/live",
        &format!("http://source:remotepw@{fake}/relayed"),
        "",
    ))
    .await;
    let feeder = live_source(local.local_addr(), "/live", 0).await;
    let mut put = accept_source(&server).await;
    assert_eq!(put.head.method, "PUT");
    assert!(put.head.expects_continue());
    put.assert_source_credentials();
    put.stream
        .write_all(b"HTTP/1.0 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
        .await
        .unwrap();
    drop(put);
    let t = Instant::now();
    let mut source = accept_source(&server).await;
    assert!(
        t.elapsed() < Duration::from_millis(740),
        "the fallback waits for no backoff"
    );
    assert_eq!(source.head.method, "SOURCE");
    assert_eq!(source.head.minor_version, 0);
    source.assert_source_credentials();
    source
        .stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    source.read_body(30 * FRAME_LEN).await;
    assert!(
        frame_index_at(&source.body, 0).is_some(),
        "starts on a frame"
    );
    consecutive_frames(&source.body);
    feeder.abort();
    local.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mountpoint_in_use_is_retried_with_backoff() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = server.local_addr().unwrap();
    let local = start(&push_toml(
        "/live",
        &format!("http://source:remotepw@{fake}/relayed"),
        "",
    ))
    .await;
    let feeder = live_source(local.local_addr(), "/live", 0).await;
    let mut attempts = Vec::new();
    for _ in 0..2 {
        let mut busy = accept_source(&server).await;
        attempts.push(Instant::now());
        busy.stream
            .write_all(b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/html\r\n\r\n<html><body><b>Mountpoint in use</b></body></html>\r\n")
            .await
            .unwrap();
    }
    let mut ok = accept_source(&server).await;
    attempts.push(Instant::now());
    assert_eq!(ok.head.method, "PUT", "403 is not a reason to try SOURCE");
    ok.assert_source_credentials();
    ok.stream
        .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    ok.read_body(20 * FRAME_LEN).await;
    consecutive_frames(&ok.body);
    // Backoff: about 1 s, then about 2 s (jitter takes off at most a quarter).
    let gaps: Vec<Duration> = attempts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= Duration::from_millis(700), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(1450), "{gaps:?}");
    feeder.abort();
    local.shutdown(Duration::from_secs(2)).await;
}

/// Feeds test frames into a mount directly, as a playout does.
struct Producer {
    mount: Arc<Mount>,
    ticket: SourceTicket,
    framer: Framer,
}

impl Producer {
    fn attach(mount: Arc<Mount>) -> Producer {
        let info = SourceInfo {
            content_type: "audio/mpeg".into(),
            format: Format::Mpeg,
            headers: StreamInfoHeaders::default(),
            peer: "127.0.0.1:0".parse().unwrap(),
            user_agent: "test playout".into(),
            connected_at: std::time::SystemTime::now(),
        };
        let claim = mount.attach_source(info, None).unwrap();
        Producer {
            mount,
            ticket: claim.ticket,
            framer: Framer::new(Format::Mpeg),
        }
    }

    fn play(&mut self, range: std::ops::Range<u32>) {
        let data = frames(range.clone());
        let mut units = Vec::new();
        let mut used = 0;
        while let Some(u) = self.framer.next_unit(&data[used..]) {
            used += u.len;
            units.push(u);
        }
        assert_eq!(used, data.len());
        assert!(self
            .mount
            .ingest(self.ticket, &data, &units, self.framer.stream_info()));
        self.mount.flush();
    }
}

async fn wait_state(state: &mut tokio::sync::watch::Receiver<PushState>, want: PushState) {
    let reached = timeout(STEP, state.wait_for(|s| *s == want)).await.is_ok();
    assert!(
        reached,
        "push never reached {want:?}, is {:?}",
        *state.borrow()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn playout_resumes_at_the_frame_where_the_connection_broke() {
    logs();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = server.local_addr().unwrap();
    let mount = Arc::new(Mount::new(
        "/playout".into(),
        None,
        &MountSettings::default(),
    ));
    let mut producer = Producer::attach(mount.clone());
    let push = Push::new(
        mount.clone(),
        PushSettings {
            target: PushTarget::parse(&format!("http://source:remotepw@{fake}/relayed")).unwrap(),
            protocol: Protocol::Icecast,
            info: StreamInfoHeaders::default(),
            mode: Mode::Playout,
            once: false,
        },
    );
    let mut state = push.state();
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(push.run(token.clone()));

    // A producer that plays before the first connection is not lost either.
    producer.play(0..10);
    let mut first = accept_source(&server).await;
    first.assert_source_credentials();
    first
        .stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    wait_state(&mut state, PushState::Streaming).await;
    producer.play(10..40);
    first.read_body(40 * FRAME_LEN).await;
    assert_eq!(consecutive_frames(&first.body), (0..40).collect::<Vec<_>>());
    drop(first);
    wait_state(&mut state, PushState::Backoff).await;
    // A playout that had not paused yet: what it publishes meanwhile waits in the ring.
    producer.play(40..45);
    let mut second = accept_source(&server).await;
    second
        .stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    wait_state(&mut state, PushState::Streaming).await;
    producer.play(45..60);
    second.read_body(20 * FRAME_LEN).await;
    assert_eq!(
        consecutive_frames(&second.body),
        (40..60).collect::<Vec<_>>(),
        "resumes exactly where the first connection stopped"
    );
    // The end of the playout ends the push.
    mount.detach_source(producer.ticket);
    timeout(STEP, run).await.unwrap().unwrap().unwrap();
    assert_eq!(*state.borrow(), PushState::Finished);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_push_rejoins_the_live_edge_and_ends_with_its_source() {
    logs();
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake = server.local_addr().unwrap();
    let mount = Arc::new(Mount::new("/live".into(), None, &MountSettings::default()));
    let mut producer = Producer::attach(mount.clone());
    let settings = |to: SocketAddr| PushSettings {
        target: PushTarget::parse(&format!("http://source:remotepw@{to}/relayed")).unwrap(),
        protocol: Protocol::Icecast,
        info: StreamInfoHeaders::default(),
        mode: Mode::Live,
        once: false,
    };
    // Made while the push connects: the first connection gets it (the mount's burst).
    producer.play(0..10);
    let push = Push::new(mount.clone(), settings(fake));
    let mut state = push.state();
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(push.run(token.clone()));
    let mut first = accept_source(&server).await;
    first.assert_source_credentials();
    first
        .stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    wait_state(&mut state, PushState::Streaming).await;
    producer.play(10..20);
    first.read_body(20 * FRAME_LEN).await;
    assert_eq!(consecutive_frames(&first.body), (0..20).collect::<Vec<_>>());
    drop(first);
    wait_state(&mut state, PushState::Backoff).await;
    // Made during the outage, then newer audio: a live push does not send the old late.
    producer.play(20..30);
    producer.play(30..35);
    let mut second = accept_source(&server).await;
    second
        .stream
        .write_all(b"HTTP/1.0 200 OK\r\n\r\n")
        .await
        .unwrap();
    wait_state(&mut state, PushState::Streaming).await;
    producer.play(35..45);
    mount.detach_source(producer.ticket);
    second.read_to_end().await;
    let got = consecutive_frames(&second.body);
    assert!(
        got.first().is_some_and(|&f| (30..35).contains(&f)) && got.last() == Some(&44),
        "rejoined at the live edge and sent to the end: {got:?}"
    );
    // The end of the source ends the push (a live producer does not come back).
    timeout(STEP, run).await.unwrap().unwrap().unwrap();
    assert_eq!(*state.borrow(), PushState::Finished);

    // A source that ends while the remote is unreachable: the push reports why.
    let gone = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut producer = Producer::attach(mount.clone());
    let push = Push::new(mount.clone(), settings(gone));
    let mut state = push.state();
    let run = tokio::spawn(push.run(token.clone()));
    wait_state(&mut state, PushState::Backoff).await;
    producer.play(0..5);
    mount.detach_source(producer.ticket);
    let ended = timeout(STEP, run).await.unwrap().unwrap();
    assert!(
        matches!(ended, Err(onair::output::push::PushError::Connect { .. })),
        "{ended:?}"
    );
}

/// A real icecast2 on loopback, with its own config and log directory; killed on drop.
struct Icecast {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
}

impl Icecast {
    fn start(port: u16) -> Icecast {
        let found = Command::new("sh")
            .args(["-c", "command -v icecast2"])
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            found,
            "icecast2 is not installed: run `bash .ci/run`, which installs it"
        );
        let dir =
            std::env::temp_dir().join(format!("onair-it-{}-icecast-{port}", std::process::id()));
        let log = dir.join("log");
        std::fs::create_dir_all(&log).unwrap();
        let is_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
        let changeowner = if is_root {
            // Icecast refuses to run as root unless told which user to become.
            let ok = Command::new("chown")
                .args(["-R", "icecast2:icecast"])
                .arg(&dir)
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "cannot hand {} to the icecast2 user", dir.display());
            "<changeowner><user>icecast2</user><group>icecast</group></changeowner>"
        } else {
            ""
        };
        let config = format!(
            r#"<icecast>
  <location>loopback</location><admin>test@localhost</admin><hostname>127.0.0.1</hostname>
  <limits><clients>20</clients><sources>4</sources><source-timeout>10</source-timeout>
    <burst-on-connect>1</burst-on-connect><burst-size>16384</burst-size></limits>
  <authentication><source-password>{PASS}</source-password><relay-password>{PASS}</relay-password>
    <admin-user>admin</admin-user><admin-password>{PASS}</admin-password></authentication>
  <listen-socket><port>{port}</port><bind-address>127.0.0.1</bind-address></listen-socket>
  <fileserve>0</fileserve>
  <paths><basedir>/usr/share/icecast2</basedir><logdir>{log}</logdir>
    <webroot>/usr/share/icecast2/web</webroot><adminroot>/usr/share/icecast2/admin</adminroot></paths>
  <logging><accesslog>access.log</accesslog><errorlog>error.log</errorlog><loglevel>3</loglevel></logging>
  <security><chroot>0</chroot>{changeowner}</security>
</icecast>
"#,
            log = log.display()
        );
        std::fs::write(dir.join("icecast.xml"), config).unwrap();
        let mut ice = Icecast {
            child: None,
            dir,
            port,
        };
        ice.spawn();
        ice
    }

    fn spawn(&mut self) {
        let child = Command::new("icecast2")
            .arg("-c")
            .arg(self.dir.join("icecast.xml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("icecast2 starts");
        self.child = Some(child);
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Waits until it accepts connections (bounded).
    async fn wait_up(&self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(self.addr()).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "icecast2 did not come up; its log: {}",
                std::fs::read_to_string(self.dir.join("log/error.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Icecast {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_icecast2_survives_a_restart() {
    let mut ice = Icecast::start(free_port());
    ice.wait_up().await;
    let i = ice.addr();
    let local = start(&push_toml(
        "/live",
        &format!("http://source:{PASS}@{i}/pushed"),
        "stream_name = \"Pushed to Icecast\"\n",
    ))
    .await;
    let a = local.local_addr();
    let feeder = live_source(a, "/live", 0).await;
    assert_eq!(
        set_title(a, "/live", "song=Before%20Restart", ("source", PASS)).await,
        200
    );
    let mut l = listen_when_up(i, "/pushed").await;
    assert_eq!(header(&l.head, "icy-name"), Some("Pushed to Icecast"));
    let (audio, _) = read_until_title(&mut l, "Before Restart").await;
    let before = consecutive_frames(&audio);
    drop(l);

    ice.kill();
    ice.spawn();
    ice.wait_up().await;
    // The push reconnects on its own and sends the last title again: nobody sets it here.
    let mut l = listen_when_up(i, "/pushed").await;
    let (audio, _) = read_until_title(&mut l, "Before Restart").await;
    let after = consecutive_frames(&audio);
    assert!(
        after[0] > *before.last().unwrap(),
        "the stream went on: {:?} then {:?}",
        before.last(),
        after.first()
    );
    assert_eq!(
        set_title(a, "/live", "song=After%20Restart", ("source", PASS)).await,
        200
    );
    let (audio, _) = read_until_title(&mut l, "After Restart").await;
    consecutive_frames(&audio);
    feeder.abort();
    local.shutdown(Duration::from_secs(2)).await;
}

/// A fake remote on one port: source connections are handed to the test, title updates
/// (`GET /admin/metadata`) are answered and recorded.
struct FakeRemote {
    addr: SocketAddr,
    sources: tokio::sync::mpsc::Receiver<Accepted>,
    titles: Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRemote {
    async fn start() -> FakeRemote {
        let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let (tx, sources) = tokio::sync::mpsc::channel(4);
        let titles = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = titles.clone();
        let task = tokio::spawn(async move {
            loop {
                let mut conn = accept_source(&server).await;
                if conn.head.method == "GET" {
                    let q = onair_proto::icecast::parse_query(conn.head.query().unwrap_or(""));
                    let song = q.iter().find(|(k, _)| k == "song").map(|(_, v)| v.clone());
                    let auth = conn
                        .head
                        .basic_auth()
                        .is_some_and(|c| c.password == "remotepw");
                    assert!(auth, "title update without the source credentials");
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8(song.unwrap_or_default()).unwrap());
                    let _ = conn
                        .stream
                        .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/xml\r\n\r\n<iceresponse><return>1</return></iceresponse>\n")
                        .await;
                    continue;
                }
                if tx.send(conn).await.is_err() {
                    return;
                }
            }
        });
        FakeRemote {
            addr,
            sources,
            titles,
            task,
        }
    }

    async fn next_source(&mut self) -> Accepted {
        let mut c = timeout(Duration::from_secs(20), self.sources.recv())
            .await
            .expect("the push never connected")
            .unwrap();
        c.stream
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\n\r\n")
            .await
            .unwrap();
        c
    }

    fn titles(&self) -> Vec<String> {
        self.titles.lock().unwrap().clone()
    }
}

impl Drop for FakeRemote {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Accepted {
    /// Hangs up its sending side, then reads whatever the push still wrote until the push
    /// closes: everything the push sent on this connection is in `body`.
    async fn hang_up_and_drain(&mut self) {
        self.stream.shutdown().await.unwrap();
        let mut buf = [0u8; 8192];
        loop {
            let n = timeout(STEP, self.stream.read(&mut buf))
                .await
                .expect("push kept the connection open after the remote hung up")
                .unwrap_or(0);
            if n == 0 {
                return;
            }
            self.body.extend_from_slice(&buf[..n]);
        }
    }

    /// Reads until the push closes (the end of the track list).
    async fn read_to_end(&mut self) {
        let mut rest = Vec::new();
        timeout(Duration::from_secs(20), self.stream.read_to_end(&mut rest))
            .await
            .expect("push did not finish")
            .unwrap();
        self.body.extend_from_slice(&rest);
    }
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onair-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Two "MP3 files" of test frames (0..80 and 80..160) and a playlist naming them.
fn two_track_playlist(dir: &std::path::Path) -> PathBuf {
    std::fs::write(dir.join("one.mp3"), frames(0..80)).unwrap();
    std::fs::write(dir.join("two.mp3"), frames(80..160)).unwrap();
    let m3u = dir.join("list.m3u");
    std::fs::write(
        &m3u,
        "#EXTM3U\n#EXTINF:2,Artist - One\none.mp3\n#EXTINF:2,Artist - Two\ntwo.mp3\n",
    )
    .unwrap();
    m3u
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onair_push_plays_a_playlist_in_real_time_and_resumes_exactly() {
    use onair::output::playlist_push::{self, Tracklist};
    logs();
    let dir = scratch_dir("push-playlist");
    let m3u = two_track_playlist(&dir);
    let mut remote = FakeRemote::start().await;
    let settings = PushSettings {
        target: PushTarget::parse(&format!("http://source:remotepw@{}/relayed", remote.addr))
            .unwrap(),
        protocol: Protocol::Icecast,
        info: StreamInfoHeaders {
            name: Some("Pushed Files".into()),
            ..Default::default()
        },
        mode: Mode::Playout,
        once: false,
    };
    let list = Tracklist {
        playlist: Some(m3u),
        ..Default::default()
    };
    let started = Instant::now();
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(playlist_push::run(list, settings, token.clone()));

    let mut first = remote.next_source().await;
    first.assert_source_credentials();
    assert_eq!(first.head.header("ice-name"), Some("Pushed Files"));
    assert_eq!(first.head.header("ice-bitrate"), Some("128"));
    first.read_body(30 * FRAME_LEN).await;
    first.hang_up_and_drain().await;
    let got_first = consecutive_frames(&first.body);
    assert_eq!(got_first[0], 0, "the playout starts with the first frame");
    assert_eq!(first.body.len() % FRAME_LEN, 0, "whole frames only");

    let mut second = remote.next_source().await;
    second.read_to_end().await;
    let got_second = consecutive_frames(&second.body);
    assert_eq!(second.body.len() % FRAME_LEN, 0, "whole frames only");
    assert_eq!(
        got_second[0],
        got_first.last().unwrap() + 1,
        "resumes at the exact next frame"
    );
    assert_eq!(*got_second.last().unwrap(), 159, "plays to the end");
    timeout(STEP, run).await.unwrap().unwrap().unwrap();
    // 160 frames are 4.18 s of audio: released in real time (less the playout's lead and
    // the time the remote was away, during which the playout paused), not at network speed.
    assert!(
        started.elapsed() >= Duration::from_millis(3500),
        "{:?}",
        started.elapsed()
    );
    let titles = remote.titles();
    assert_eq!(
        titles.first().map(String::as_str),
        Some("Artist - One"),
        "{titles:?}"
    );
    assert_eq!(
        titles.last().map(String::as_str),
        Some("Artist - Two"),
        "{titles:?}"
    );
    // Reconnecting sends the title on air again: "One" twice if the cut was in track one.
    let cut_in_one = got_second[0] < 80;
    let ones = titles.iter().filter(|t| *t == "Artist - One").count();
    assert_eq!(ones, if cut_in_one { 2 } else { 1 }, "{titles:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onair_push_binary_streams_files_to_a_station_and_once_exits_on_error() {
    let dir = scratch_dir("push-binary");
    let m3u = two_track_playlist(&dir);
    let remote = start("").await;
    let r = remote.local_addr();
    let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--to"])
        .arg(format!("http://source:{PASS}@{r}/cli"))
        .args(["--name", "CLI Push", "--playlist"])
        .arg(&m3u)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("onair binary starts");
    let mut l = listen_when_up(r, "/cli").await;
    assert_eq!(header(&l.head, "icy-name"), Some("CLI Push"));
    let (audio, _) = read_until_title(&mut l, "Artist - Two").await;
    let idx = consecutive_frames(&audio);
    assert_eq!(idx[0], 0);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "onair push exits 0 at the end of the list"
    );
    remote.shutdown(Duration::from_secs(2)).await;

    // Nothing listens there: with --once the first failure is the end, with an error.
    let out = Command::new(env!("CARGO_BIN_EXE_onair"))
        .args(["push", "--once", "--to"])
        .arg(format!("http://source:{PASS}@127.0.0.1:{}/x", free_port()))
        .arg(dir.join("one.mp3"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot connect"), "{err}");
}

/// A listener's first pages: the Vorbis identification header once, first, then the rest.
async fn assert_headers_once(addr: SocketAddr, mount: &str) {
    let mut l = Listener::get(addr, mount, false).await;
    l.fill(20_000).await;
    let b = &l.body;
    let mut pos = 0;
    let mut kinds = Vec::new();
    while pos + 27 <= b.len() && &b[pos..pos + 4] == b"OggS" {
        let segs = usize::from(b[pos + 26]);
        let Some(lacing) = b.get(pos + 27..pos + 27 + segs) else {
            break;
        };
        let body = pos + 27 + segs;
        kinds.push(b.get(body..body + 7).map(<[u8]>::to_vec));
        pos = body + lacing.iter().map(|&x| usize::from(x)).sum::<usize>();
    }
    assert!(kinds.len() > 3, "not a page-aligned Ogg stream");
    let idents = kinds
        .iter()
        .filter(|k| k.as_deref() == Some(b"\x01vorbis".as_slice()))
        .count();
    assert_eq!(kinds[0].as_deref(), Some(b"\x01vorbis".as_slice()));
    assert_eq!(idents, 1, "codec headers sent more than once");
}

/// Starts a station on `port` (for a remote that must come back on the same address).
async fn start_on(port: u16) -> onair::station::Running {
    onair::station::start(config("", SocketAddr::from(([127, 0, 0, 1], port))))
        .await
        .expect("remote station starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ogg_relay_decodes_at_the_remote_before_and_after_a_reconnect() {
    use crate::interop::{ffmpeg_decode, ffmpeg_source, make_input, scratch, wait_live};
    let dir = scratch("push-ogg");
    let input = make_input(&dir, "in.ogg", &["-c:a", "libvorbis", "-q:a", "3"], 20);
    let port = free_port();
    let remote = start_on(port).await;
    let local = start(&push_toml(
        "/live.ogg",
        &format!("http://source:{PASS}@127.0.0.1:{port}/relay.ogg"),
        "",
    ))
    .await;
    let a = local.local_addr();
    let _src = ffmpeg_source(
        &input,
        &format!("icecast://source:{PASS}@{a}/live.ogg"),
        "application/ogg",
        "ogg",
    );
    let r = remote.local_addr();
    wait_live(r, "/relay.ogg").await;
    // Long after the codec headers went by: the remote must have kept them for joiners.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_headers_once(r, "/relay.ogg").await;
    let (decoded, errors) = ffmpeg_decode(&format!("http://{r}/relay.ogg"), 3).await;
    assert!(errors.trim().is_empty(), "decode errors: {errors}");
    assert!(decoded >= 2.9, "decoded only {decoded:.2} s");

    // The remote goes away and comes back: the new connection must start with the
    // stream's codec headers although the push resumes in the middle of it.
    remote.shutdown(Duration::from_secs(2)).await;
    let remote = start_on(port).await;
    wait_live(r, "/relay.ogg").await;
    assert_headers_once(r, "/relay.ogg").await;
    let (decoded, errors) = ffmpeg_decode(&format!("http://{r}/relay.ogg"), 3).await;
    assert!(
        errors.trim().is_empty(),
        "decode errors after the reconnect: {errors}"
    );
    assert!(
        decoded >= 2.9,
        "decoded only {decoded:.2} s after the reconnect"
    );
    local.shutdown(Duration::from_secs(2)).await;
    remote.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onair_push_encodes_files_of_any_format_into_one_stream() {
    use crate::interop::{make_input, scratch};
    use onair::output::playlist_push::{self, Encode, Tracklist};
    let dir = scratch("push-encode");
    make_input(&dir, "a.wav", &["-c:a", "pcm_s16le"], 3);
    make_input(
        &dir,
        "b.ogg",
        &["-c:a", "libvorbis", "-q:a", "3", "-ar", "48000"],
        3,
    );
    let m3u = dir.join("list.m3u");
    std::fs::write(
        &m3u,
        "#EXTINF:3,Tone - A\na.wav\n#EXTINF:3,Tone - B\nb.ogg\n",
    )
    .unwrap();
    let remote = start("").await;
    let r = remote.local_addr();
    let settings = PushSettings {
        target: PushTarget::parse(&format!("http://source:{PASS}@{r}/encoded")).unwrap(),
        protocol: Protocol::Icecast,
        info: StreamInfoHeaders::default(),
        mode: Mode::Playout,
        once: false,
    };
    let list = Tracklist {
        playlist: Some(m3u),
        encode: Some(Encode {
            codec: onair_media::encode::Codec::Mp3,
            bitrate_kbps: 128,
            sample_rate: 44_100,
            channels: 2,
            normalize: true,
        }),
        ..Default::default()
    };
    let token = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(playlist_push::run(list, settings, token));
    let mut l = listen_when_up(r, "/encoded").await;
    assert_eq!(header(&l.head, "content-type"), Some("audio/mpeg"));
    let (audio, titles) = read_until_title(&mut l, "Tone - B").await;
    assert!(titles.iter().any(|(_, t)| t == "Tone - A"), "{titles:?}");
    // One consistent stream: whole 44.1 kHz MP3 frames from the first byte, although the
    // second file is Vorbis at 48 kHz.
    let mut framer = Framer::new(Format::Mpeg);
    let mut pos = 0;
    let mut frames_seen = 0;
    while let Some(u) = framer.next_unit(&audio[pos..]) {
        assert_eq!(
            u.kind,
            onair_proto::frame::UnitKind::Audio,
            "junk at byte {pos}"
        );
        assert_eq!(u.sample_rate, 44_100);
        pos += u.len;
        frames_seen += 1;
    }
    assert!(frames_seen > 100, "{frames_seen} frames");
    timeout(Duration::from_secs(20), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    remote.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onair_push_encoding_resumes_exactly_after_a_break() {
    use crate::interop::{make_input, scratch};
    use onair::output::playlist_push::{self, Encode, Tracklist};
    logs();
    let dir = scratch("push-encode-break");
    make_input(&dir, "a.wav", &["-c:a", "pcm_s16le"], 2);
    make_input(&dir, "b.wav", &["-c:a", "pcm_s16le"], 2);
    let run_to = |remote: SocketAddr| {
        let settings = PushSettings {
            target: PushTarget::parse(&format!("http://source:remotepw@{remote}/relayed")).unwrap(),
            protocol: Protocol::Icecast,
            info: StreamInfoHeaders::default(),
            mode: Mode::Playout,
            once: false,
        };
        let list = Tracklist {
            inputs: vec![dir.join("a.wav"), dir.join("b.wav")],
            encode: Some(Encode {
                codec: onair_media::encode::Codec::Mp3,
                bitrate_kbps: 128,
                sample_rate: 44_100,
                channels: 2,
                normalize: true,
            }),
            ..Default::default()
        };
        let token = tokio_util::sync::CancellationToken::new();
        tokio::spawn(playlist_push::run(list, settings, token))
    };
    // The same list twice at once: once without a break, once cut in the middle.
    let mut whole = FakeRemote::start().await;
    let mut broken = FakeRemote::start().await;
    let run_whole = run_to(whole.addr);
    let run_broken = run_to(broken.addr);
    let mut reference = whole.next_source().await;
    let mut first = broken.next_source().await;
    first.read_body(20_000).await;
    first.hang_up_and_drain().await;
    let mut second = broken.next_source().await;
    let (_, _) = tokio::join!(reference.read_to_end(), second.read_to_end());
    timeout(STEP, run_whole).await.unwrap().unwrap().unwrap();
    timeout(STEP, run_broken).await.unwrap().unwrap().unwrap();
    assert!(reference.body.len() > 50_000, "{}", reference.body.len());
    assert!(!second.body.is_empty(), "the break came after the end");
    let mut joined = first.body.clone();
    joined.extend_from_slice(&second.body);
    assert_eq!(
        joined.len(),
        reference.body.len(),
        "bytes lost or repeated across the break (first connection carried {})",
        first.body.len()
    );
    assert!(
        joined == reference.body,
        "the stream differs after the break"
    );
}
