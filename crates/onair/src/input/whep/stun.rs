//! Learning a server-reflexive address from a STUN server named by `--ice-server`
//! (`stun:host[:port]`), on the session's own UDP socket, before ICE starts. TURN is not
//! supported. Bounded: three tries, one second each.

use std::net::SocketAddr;
use std::time::Duration;

use onair_proto::stun::{encode_binding_request, parse_binding_response};
use tokio::net::UdpSocket;

use super::WhepError;

const TRIES: u32 = 3;
const TRY_TIMEOUT: Duration = Duration::from_secs(1);

/// `host:port` of a `stun:` URL.
pub fn parse_url(url: &str) -> Result<String, WhepError> {
    let rest = url
        .strip_prefix("stun:")
        .ok_or_else(|| WhepError::IceServer(format!("{url:?}: only stun: URLs are supported")))?;
    let rest = rest.split('?').next().unwrap_or(rest);
    if rest.is_empty() {
        return Err(WhepError::IceServer(format!("{url:?} has no host")));
    }
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) => !host.ends_with(':') && port.parse::<u16>().is_ok(),
        None => false,
    };
    Ok(if has_port {
        rest.to_owned()
    } else {
        format!("{rest}:3478")
    })
}

/// Ask the STUN server at `url` for the address `socket` is seen from.
pub async fn binding(socket: &UdpSocket, url: &str) -> Result<SocketAddr, WhepError> {
    let target = parse_url(url)?;
    let server = tokio::net::lookup_host(&target)
        .await
        .map_err(|e| WhepError::IceServer(format!("{target}: {e}")))?
        .find(|a| a.is_ipv4() == socket.local_addr().map(|l| l.is_ipv4()).unwrap_or(true))
        .ok_or_else(|| WhepError::IceServer(format!("{target} has no usable address")))?;
    let mut transaction = [0u8; 12];
    getrandom::fill(&mut transaction).map_err(|e| WhepError::IceServer(e.to_string()))?;
    let request = encode_binding_request(transaction);
    let mut buf = [0u8; 1500];
    for _ in 0..TRIES {
        socket.send_to(&request, server).await?;
        let wait = tokio::time::timeout(TRY_TIMEOUT, async {
            loop {
                let (n, from) = socket.recv_from(&mut buf).await?;
                if from == server {
                    if let Some(mapped) = parse_binding_response(&buf[..n], transaction) {
                        return Ok::<_, std::io::Error>(mapped);
                    }
                }
            }
        })
        .await;
        if let Ok(result) = wait {
            return Ok(result?);
        }
    }
    Err(WhepError::IceServer(format!("{url}: no answer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stun_urls() {
        assert_eq!(parse_url("stun:127.0.0.1:3479").unwrap(), "127.0.0.1:3479");
        assert_eq!(parse_url("stun:stun.example").unwrap(), "stun.example:3478");
        assert!(parse_url("turn:x:3478").is_err());
        assert!(parse_url("stun:").is_err());
    }
}
