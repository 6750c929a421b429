//! Test harness: start a station, speak raw HTTP, build MP3 frames whose payload says
//! where they are, read ICY streams.

#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use onair::{
    config::{Config, Overrides, RawConfig},
    station::{self, Running},
};
use onair_proto::icy::{parse_block, Deinterleaver};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

pub const PASS: &str = "hackme";
pub const ADMIN: (&str, &str) = ("admin", "adminpw");
/// Every network step in a test is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

/// The test configuration: `toml_text` with the test credentials, listening on `bind`.
pub fn config(toml_text: &str, bind: SocketAddr) -> Config {
    let mut raw: RawConfig = toml::from_str(toml_text).expect("test config parses");
    // The demo programme (on by default without mounts) would hold /stream: tests that
    // want it say so.
    raw.demo.enabled.get_or_insert(false);
    let ov = Overrides {
        bind: Some(bind),
        source_password: Some(PASS.into()),
        admin_user: Some(ADMIN.0.into()),
        admin_password: Some(ADMIN.1.into()),
        ..Default::default()
    };
    Config::from_raw(raw, &ov).expect("valid config")
}

pub async fn start(toml_text: &str) -> Running {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    station::start(config(toml_text, "127.0.0.1:0".parse().unwrap()))
        .await
        .expect("server starts")
}

/// Fails the test loudly when a third-party peer is missing.
pub fn require(tool: &str) {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "test peer `{tool}` is not installed: run `bash .ci/run`, which installs it"
    );
}

/// A self-signed certificate (openssl tool) in `dir`: (cert.pem, key.pem). Subject `CN=cn`;
/// valid for the names `cn` and `localhost` and the address 127.0.0.1; not a CA, so TLS
/// clients that verify (rustls) accept it as its own root.
pub fn self_signed(dir: &std::path::Path, cn: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    require("openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec"])
        .args([
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
        ])
        .args(["-subj", &format!("/CN={cn}")])
        .args([
            "-addext",
            &format!("subjectAltName=DNS:{cn},DNS:localhost,IP:127.0.0.1"),
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(ok, "openssl could not make a certificate");
    (cert, key)
}

/// Starts a station whose SHOUTcast port is the main port + 1 (what SHOUTcast clients
/// assume), retrying with other ports if that one is taken.
pub async fn start_with_shoutcast(toml_text: &str) -> Running {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if port == u16::MAX {
            continue;
        }
        let mut raw: RawConfig = toml::from_str(toml_text).expect("test config parses");
        raw.demo.enabled.get_or_insert(false);
        let ov = Overrides {
            bind: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            source_password: Some(PASS.into()),
            admin_user: Some(ADMIN.0.into()),
            admin_password: Some(ADMIN.1.into()),
            ..Default::default()
        };
        if let Ok(r) = station::start(Config::from_raw(raw, &ov).unwrap()).await {
            if r.shoutcast_addr().map(|a| a.port()) == Some(port + 1) {
                return r;
            }
            r.shutdown(Duration::from_secs(1)).await;
        }
    }
    panic!("no free port pair for the SHOUTcast test");
}

pub fn basic(user: &str, pass: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
}

/// A connected source: sent a PUT with `content_type`, got its 200.
pub struct Source {
    pub stream: TcpStream,
}

impl Source {
    pub async fn put(addr: SocketAddr, mount: &str, content_type: &str) -> Source {
        Source::put_with(addr, mount, content_type, ("source", PASS)).await
    }

    pub async fn put_as(addr: SocketAddr, mount: &str, creds: (&str, &str)) -> Source {
        Source::put_with(addr, mount, "audio/mpeg", creds).await
    }

    /// A PUT whose answer is not expected to be 200: returns what the server said.
    pub async fn put_raw(addr: SocketAddr, mount: &str) -> String {
        raw_request(
            addr,
            &format!(
                "PUT {mount} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\n\r\n",
                basic("source", PASS)
            ),
        )
        .await
    }

    async fn put_with(
        addr: SocketAddr,
        mount: &str,
        content_type: &str,
        (user, pass): (&str, &str),
    ) -> Source {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "PUT {mount} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {}\r\nContent-Type: {content_type}\r\nice-name: Test Radio\r\nice-genre: Test\r\nice-public: 1\r\nExpect: 100-continue\r\n\r\n",
            basic(user, pass)
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let reply = read_until(&mut stream, b"HTTP/1.0 200 OK\r\n\r\n").await;
        assert!(
            reply.starts_with(b"HTTP/1.1 100 Continue\r\n"),
            "{}",
            String::from_utf8_lossy(&reply)
        );
        Source { stream }
    }

    pub async fn send(&mut self, data: &[u8]) {
        timeout(STEP, self.stream.write_all(data))
            .await
            .unwrap()
            .unwrap();
    }
}

/// Reads until `end` has been seen; returns everything read.
pub async fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.windows(end.len()).any(|w| w == end) {
        let n = timeout(STEP, stream.read(&mut buf))
            .await
            .expect("read timed out")
            .unwrap();
        assert!(
            n > 0,
            "closed before {:?}: got {:?}",
            String::from_utf8_lossy(end),
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    out
}

/// Sends a raw request and reads the whole (close-delimited or not) response head + what
/// arrives until the server closes or `STEP` passes.
pub async fn raw_request(addr: SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = timeout(STEP, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// GET with `Connection: close` through hyper's side of the server; returns (status, body).
pub async fn http_get(
    addr: SocketAddr,
    path_and_query: &str,
    auth: Option<(&str, &str)>,
) -> (u16, String) {
    let auth = auth.map_or(String::new(), |(u, p)| {
        format!("Authorization: Basic {}\r\n", basic(u, p))
    });
    let resp = raw_request(
        addr,
        &format!("GET {path_and_query} HTTP/1.1\r\nHost: radio.test:8000\r\n{auth}Connection: close\r\n\r\n"),
    )
    .await;
    let (status, body) = split_response(&resp);
    (status, body.to_string())
}

/// (status code, body) of a raw HTTP response.
pub fn split_response(resp: &str) -> (u16, &str) {
    let status = resp
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, resp.split_once("\r\n\r\n").map_or("", |(_, b)| b))
}

/// Any method with an optional JSON body, `Connection: close`; returns (status, body).
pub async fn http_json(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let auth = auth.map_or(String::new(), |(u, p)| {
        format!("Authorization: Basic {}\r\n", basic(u, p))
    });
    let body = body.map_or(String::new(), |b| b.to_string());
    let resp = raw_request(
        addr,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: radio.test:8000\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
    .await;
    let (status, body) = split_response(&resp);
    (status, serde_json::from_str(body).unwrap_or_default())
}

/// Sends frames `from..` in steps of `step` every 50 ms until aborted: a live source.
pub fn keep_sending(mut src: Source, from: u32, step: u32) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut i = from;
        loop {
            if src.stream.write_all(&frames(i..i + step)).await.is_err() {
                return;
            }
            i += step;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

/// Frame indices of a body that must be a seamless run of whole test frames.
pub fn frame_indices(body: &[u8]) -> Vec<u32> {
    body.chunks(FRAME_LEN)
        .filter(|f| f.len() == FRAME_LEN)
        .enumerate()
        .map(|(i, _)| {
            frame_index_at(body, i * FRAME_LEN)
                .unwrap_or_else(|| panic!("byte {} is not a frame start", i * FRAME_LEN))
        })
        .collect()
}

pub async fn set_title(addr: SocketAddr, mount: &str, song_query: &str, auth: (&str, &str)) -> u16 {
    http_get(
        addr,
        &format!("/admin/metadata?mode=updinfo&mount={mount}&{song_query}"),
        Some(auth),
    )
    .await
    .0
}

/// Waits (bounded) until the server has taken `n` bytes from the mount's source.
pub async fn wait_ingested(addr: SocketAddr, mount: &str, n: u64) {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let (_, status) = http_get(addr, "/api/status", None).await;
        let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
        let got = v["mounts"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == mount)?["source"]["bytes_in"].as_u64());
        if got >= Some(n) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "server took only {got:?} of {n} bytes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A listener connection after its response head.
pub struct Listener {
    pub stream: TcpStream,
    pub head: String,
    pub body: Vec<u8>,
}

impl Listener {
    pub async fn get(addr: SocketAddr, mount: &str, icy: bool) -> Listener {
        let icy_h = if icy { "Icy-MetaData: 1\r\n" } else { "" };
        Listener::request(
            addr,
            &format!("GET {mount} HTTP/1.1\r\nHost: x\r\n{icy_h}\r\n"),
        )
        .await
    }

    pub async fn get_with_agent(addr: SocketAddr, mount: &str, agent: &str) -> Listener {
        Listener::request(
            addr,
            &format!("GET {mount} HTTP/1.1\r\nHost: x\r\nUser-Agent: {agent}\r\n\r\n"),
        )
        .await
    }

    async fn request(addr: SocketAddr, request: &str) -> Listener {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let got = read_until(&mut stream, b"\r\n\r\n").await;
        let split = got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        Listener {
            head: String::from_utf8_lossy(&got[..split]).into_owned(),
            body: got[split..].to_vec(),
            stream,
        }
    }

    /// Reads body bytes until at least `n` are held.
    pub async fn fill(&mut self, n: usize) {
        let mut buf = vec![0u8; 16384];
        while self.body.len() < n {
            let r = timeout(STEP, self.stream.read(&mut buf))
                .await
                .expect("listener starved")
                .unwrap();
            assert!(r > 0, "listener closed after {} bytes", self.body.len());
            self.body.extend_from_slice(&buf[..r]);
        }
    }

    /// Reads until the body holds at least `n` audio bytes once ICY blocks are removed.
    pub async fn fill_audio(&mut self, metaint: usize, n: usize) {
        while deinterleave(&self.body, metaint).0.len() < n {
            let have = self.body.len();
            self.fill(have + 1).await;
        }
    }

    pub fn metaint(&self) -> Option<usize> {
        header(&self.head, "icy-metaint")?.parse().ok()
    }
}

pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Splits an ICY body into audio and (audio offset, title) for each non-empty block.
pub fn deinterleave(body: &[u8], metaint: usize) -> (Vec<u8>, Vec<(usize, String)>) {
    let mut de = Deinterleaver::new(metaint);
    let mut audio = Vec::new();
    let mut titles = Vec::new();
    let len = std::cell::Cell::new(0usize);
    de.push(
        body,
        |a| {
            audio.extend_from_slice(a);
            len.set(len.get() + a.len());
        },
        |m| {
            if !m.is_empty() {
                let t = parse_block(m)
                    .into_iter()
                    .find(|(k, _)| k == "StreamTitle")
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                titles.push((len.get(), t));
            }
        },
    );
    (audio, titles)
}

/// MPEG-1 Layer III, 128 kbit/s, 44.1 kHz, stereo, no padding: 417 bytes, 1152 samples.
pub const FRAME_LEN: usize = 417;

/// A valid MP3 frame header followed by a payload that encodes `index` (so tests can tell
/// which frame a byte came from).
pub fn frame(index: u32) -> Vec<u8> {
    let mut f = vec![0xFF, 0xFB, 0x90, 0x64];
    let tag = index.to_be_bytes();
    while f.len() < FRAME_LEN {
        f.extend_from_slice(&tag);
    }
    f.truncate(FRAME_LEN);
    f
}

pub fn frames(range: std::ops::Range<u32>) -> Vec<u8> {
    range.flat_map(frame).collect()
}

/// The frame index encoded in the frame that starts at `audio[pos]`.
pub fn frame_index_at(audio: &[u8], pos: usize) -> Option<u32> {
    let f = audio.get(pos..pos + 8)?;
    (f[0] == 0xFF && f[1] == 0xFB).then(|| u32::from_be_bytes([f[4], f[5], f[6], f[7]]))
}
