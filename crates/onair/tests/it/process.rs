//! The `onair` binary itself: started as a user starts it, driven with signals.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use tokio::{io::AsyncReadExt, time::timeout};

use crate::support::*;

/// The server process; killed when the test ends, however it ends.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts `onair serve --config FILE` and reads the address from its banner.
    fn start(config: &std::path::Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_onair"))
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("onair binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("banner before exit")
                .expect("stdout readable");
            if let Some(rest) = line.split(" listening on ").nth(1) {
                break rest.trim().parse().expect("address in banner");
            }
        };
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

fn source_request(mount: &str, pass: &str) -> String {
    format!(
        "SOURCE {mount} HTTP/1.0\r\nAuthorization: Basic {}\r\nContent-Type: audio/mpeg\r\n\r\n",
        basic("source", pass)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_without_dropping_anyone_and_sigterm_drains() {
    let dir = std::env::temp_dir().join(format!("onair-proc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("onair.toml");
    std::fs::write(
        &path,
        "bind = \"127.0.0.1:0\"\n[auth]\nadmin_password = \"adminpw\"\nsource_password = \"one\"\n[defaults]\nchunk_ms = 100\n[shoutcast]\nenabled = false\n[[mount]]\nname = \"/a\"\nmax_listeners = 1\n",
    )
    .unwrap();
    let server = Server::start(&path);
    let addr = server.addr;
    let src = keep_sending(Source::put_as(addr, "/a", ("source", "one")).await, 0, 4);
    wait_ingested(addr, "/a", 8 * FRAME_LEN as u64).await;
    let mut first = Listener::get(addr, "/a", false).await;
    first.fill(FRAME_LEN).await;
    let full = raw_request(addr, "GET /a HTTP/1.0\r\n\r\n").await;
    assert!(
        full.starts_with("HTTP/1.0 503"),
        "max_listeners = 1: {full}"
    );

    // New password, more room on /a, a new mount /b with its own password.
    std::fs::write(
        &path,
        "bind = \"127.0.0.1:0\"\n[auth]\nadmin_password = \"adminpw\"\nsource_password = \"two\"\n[defaults]\nchunk_ms = 100\n[shoutcast]\nenabled = false\n[[mount]]\nname = \"/a\"\nmax_listeners = 5\n[[mount]]\nname = \"/b\"\npassword = \"bpw\"\nhidden = true\n",
    )
    .unwrap();
    server.signal("-HUP");
    let deadline = Instant::now() + STEP;
    let mut second = loop {
        let l = Listener::get(addr, "/a", false).await;
        if l.head.starts_with("HTTP/1.0 200") {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "reload never applied: {}",
            l.head
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    second.fill(FRAME_LEN).await;
    // The first listener and the source were not disturbed.
    let have = first.body.len();
    first.fill(have + 4 * FRAME_LEN).await;
    assert!(frame_indices(&first.body)
        .windows(2)
        .all(|w| w[1] == w[0] + 1));
    let old = raw_request(addr, &source_request("/c", "one")).await;
    assert!(
        old.starts_with("HTTP/1.0 401"),
        "old password refused: {old}"
    );
    let b = Source::put_as(addr, "/b", ("source", "bpw")).await;
    let (_, status) = http_get(addr, "/api/status", None).await;
    assert!(!status.contains("\"/b\""), "/b is hidden: {status}");

    // A broken file is refused and the running configuration stays.
    std::fs::write(&path, "this is [not toml").unwrap();
    server.signal("-HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let have = first.body.len();
    first.fill(have + FRAME_LEN).await;
    let still = raw_request(addr, &source_request("/c", "one")).await;
    assert!(still.starts_with("HTTP/1.0 401"), "{still}");

    // SIGTERM: listeners are closed and the process exits well within 5 s.
    let t = Instant::now();
    server.signal("-TERM");
    let mut buf = vec![0u8; 65536];
    loop {
        match timeout(Duration::from_secs(5), first.stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(_)) => {}
            Err(_) => panic!("listener not closed within 5 s of SIGTERM"),
        }
    }
    let mut server = server;
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "still running 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "clean exit: {status}");
    drop((src, b));
}
