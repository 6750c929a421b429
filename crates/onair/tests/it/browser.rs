//! Real browsers play every encoded mount: headless Chromium, driven through chromedriver's
//! WebDriver HTTP API on 127.0.0.1, plays an `<audio>` element per mount (MP3 and
//! Ogg/Opus) and must reach `currentTime` > 3 s without an error event. Chromium and
//! chromedriver are required peers (`bash .ci/run` installs them): missing ones fail the
//! test.

use std::{
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::{encoding::s16_tone, support::*};

struct Driver {
    child: Child,
    addr: SocketAddr,
    profile: std::path::PathBuf,
    /// The browser chromedriver started (killed too: a failed test never DELETEs its session).
    browser: Option<u32>,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(pid) = self.browser {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "test peer `{tool}` is not installed: run `bash .ci/run` (apt-get install -y chromium chromium-driver)"
    );
}

async fn start_driver() -> Driver {
    require("chromium");
    require("chromedriver");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let profile =
        std::env::temp_dir().join(format!("onair-it-chromium-{}-{port}", std::process::id()));
    let driver = Driver {
        child,
        addr,
        profile,
        browser: None,
    };
    let deadline = Instant::now() + STEP;
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

/// One WebDriver command; returns the response's `value`.
async fn wd(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Value {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    // chromedriver may keep the connection open: read the head, then Content-Length bytes.
    let read = async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&out[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if out.len() >= end + 4 + len {
                    return String::from_utf8_lossy(&out[end + 4..end + 4 + len]).into_owned();
                }
            }
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                let text = String::from_utf8_lossy(&out);
                return text
                    .split_once("\r\n\r\n")
                    .map_or("", |(_, b)| b)
                    .to_string();
            }
            out.extend_from_slice(&buf[..n]);
        }
    };
    let json = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("chromedriver did not answer {method} {path}"));
    let v: Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("chromedriver said {json:?}: {e}"));
    v["value"].clone()
}

/// Plays `url` in an `<audio>` element until `currentTime` passes 3 s; panics with what
/// the browser reported otherwise.
async fn plays_in_chromium(driver: &Driver, session: &str, url: &str) {
    // The page comes from the server itself: Chromium refuses loopback media requests from
    // data: pages (private network access), and a page of the same origin is what a station
    // web page would be.
    let origin = url.split('/').take(3).collect::<Vec<_>>().join("/");
    wd(
        driver.addr,
        "POST",
        &format!("/session/{session}/url"),
        Some(json!({ "url": format!("{origin}/api/status") })),
    )
    .await;
    let setup = format!(
        "document.body.innerHTML='<audio id=a autoplay></audio>'; window.errs=[]; const a=document.getElementById('a'); a.addEventListener('error',()=>window.errs.push(String(a.error&&a.error.code))); a.src='{url}'; return 1;"
    );
    wd(
        driver.addr,
        "POST",
        &format!("/session/{session}/execute/sync"),
        Some(json!({ "script": setup, "args": [] })),
    )
    .await;
    let script = "const a=document.getElementById('a'); if(a.paused){a.play().catch(e=>window.errs.push('play: '+e));} return [a.currentTime, window.errs, a.readyState, a.networkState];";
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = wd(
            driver.addr,
            "POST",
            &format!("/session/{session}/execute/sync"),
            Some(json!({ "script": script, "args": [] })),
        )
        .await;
        let t = v[0].as_f64().unwrap_or(0.0);
        assert!(
            v[1].as_array().is_some_and(|e| e.is_empty()),
            "{url}: the browser reported an error: {v}"
        );
        if t > 3.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{url}: currentTime stuck at {t} (state {v})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_encoded_mount_plays_in_headless_chromium() {
    let srv = start(
        "[[mount]]\nname = \"/pcm.mp3\"\n\
         [[mount]]\nname = \"/pcm.opus\"\ncodec = \"opus\"\nbitrate = 64\n\
         [[mount]]\nname = \"/low.mp3\"\ntranscode_from = \"/pcm.mp3\"\nbitrate = 64\n",
    )
    .await;
    let addr = srv.local_addr();
    // Raw PCM sources encoded live (MP3 and Opus), plus a transcoded mount; 40 s of audio
    // each, read by the server at real-time speed.
    let mut feeds = Vec::new();
    for (mount, freq) in [("/pcm.mp3", 440.0), ("/pcm.opus", 660.0)] {
        let mut src = Source::put(
            addr,
            mount,
            "audio/x-raw;format=S16LE;rate=44100;channels=2",
        )
        .await;
        let tone = s16_tone(freq, 40.0);
        feeds.push(tokio::spawn(async move {
            let _ = src.stream.write_all(&tone).await;
            src
        }));
    }
    let mut driver = start_driver().await;
    // "eager": an endless stream must not hold up navigation until its load event.
    let caps = json!({ "capabilities": { "alwaysMatch": { "pageLoadStrategy": "eager", "goog:chromeOptions": {
        "binary": "/usr/bin/chromium",
        "args": [
            "--headless", "--no-sandbox", "--autoplay-policy=no-user-gesture-required",
            "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
            format!("--user-data-dir={}", driver.profile.display()),
        ]
    }}}});
    let session = wd(driver.addr, "POST", "/session", Some(caps)).await;
    let id = session["sessionId"]
        .as_str()
        .unwrap_or_else(|| panic!("no WebDriver session: {session}"))
        .to_string();
    driver.browser = session["capabilities"]["goog:processID"]
        .as_u64()
        .and_then(|p| u32::try_from(p).ok());
    for mount in ["/pcm.mp3", "/pcm.opus", "/low.mp3"] {
        plays_in_chromium(&driver, &id, &format!("http://{addr}{mount}")).await;
    }
    wd(driver.addr, "DELETE", &format!("/session/{id}"), None).await;
    for f in feeds {
        f.abort();
    }
    srv.shutdown(Duration::from_secs(2)).await;
}
