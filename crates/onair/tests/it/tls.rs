//! TLS listen socket with a self-signed certificate made by the openssl tool; ffmpeg as a
//! TLS source and a TLS listener; certificate reload with listeners attached.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use crate::support::*;

/// Kills the peer when the test ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The subject CN the server presents on `addr`, as openssl s_client sees it.
fn presented_cn(addr: std::net::SocketAddr) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {addr} </dev/null 2>/dev/null | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_sources_and_listeners_and_certificate_reload() {
    require("ffmpeg");
    let dir = std::env::temp_dir().join(format!("onair-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = self_signed(&dir, "first.test");
    let toml_text = format!(
        "[defaults]\nchunk_ms = 200\n[tls]\nbind = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    );
    let srv = start(&toml_text).await;
    let tls = srv.tls_addr().expect("TLS socket");
    assert!(presented_cn(tls).contains("first.test"));

    // A real source over TLS (ffmpeg's icecast protocol with -tls 1).
    let _source = Killed(
        std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                "sine=f=440:r=44100",
            ])
            .args(["-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k"])
            .args(["-content_type", "audio/mpeg", "-tls", "1", "-f", "mp3"])
            .arg(format!("icecast://source:{PASS}@{tls}/live"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr = srv.local_addr();
    wait_ingested(addr, "/live", 16_000).await;

    // A listener over TLS decodes for 6 s while the certificate is replaced under it.
    let url = format!("https://{tls}/live");
    let listener = tokio::task::spawn_blocking(move || {
        Command::new("timeout")
            .args([
                "30",
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-tls_verify",
                "0",
                "-i",
                &url,
            ])
            .args(["-t", "6", "-f", "s16le", "-ac", "1", "-ar", "8000", "-"])
            .output()
            .unwrap()
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = self_signed(&dir, "second.test");
    let notes = srv.station.reload(config(&toml_text, addr));
    assert!(notes.iter().all(|n| !n.contains("TLS")), "{notes:?}");
    let cn = tokio::task::spawn_blocking(move || presented_cn(tls))
        .await
        .unwrap();
    assert!(
        cn.contains("second.test"),
        "new connections get the new certificate: {cn}"
    );
    let out = listener.await.unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.trim().is_empty(), "ffmpeg over TLS: {errors}");
    let seconds = out.stdout.len() as f64 / 16_000.0;
    assert!(seconds >= 5.9, "decoded {seconds:.2} s across the reload");
    // Plain HTTP keeps working beside it.
    assert_eq!(http_get(addr, "/status-json.xsl", None).await.0, 200);
    srv.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_bad_certificate_stops_the_start_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("onair-badtls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let text = format!(
        "[tls]\nbind = \"127.0.0.1:0\"\ncert = {:?}\nkey = {:?}\n",
        cert.display().to_string(),
        cert.display().to_string()
    );
    let err = onair::station::start(config(&text, "127.0.0.1:0".parse().unwrap()))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("TLS certificate") && err.contains("cert.pem"),
        "{err}"
    );
}
