//! Status endpoints: `/status-json.xsl` in Icecast 2.4's JSON shape (quirks kept for the
//! clients that parse it: one source is an object, several an array, none omitted; `title`
//! absent until set) and the clean `/api/status` (always arrays; see docs/API.md).

use std::{
    sync::{atomic::Ordering, Arc},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{extract::State, http::HeaderMap, response::IntoResponse, Json};
use serde_json::{json, Map, Value};

use crate::{
    mount::{describe, Mount},
    station::Station,
};

use super::base_url;

pub async fn icecast_json(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let base = base_url(&station, &headers);
    let sources: Vec<Value> = visible_live(&station)
        .iter()
        .map(|m| icecast_source(m, &base))
        .collect();
    let start = unix(station.started_at);
    let mut stats = Map::new();
    stats.insert("admin".into(), station.config().admin_email.clone().into());
    stats.insert("host".into(), station.config().hostname.clone().into());
    stats.insert("location".into(), station.config().location.clone().into());
    stats.insert("server_id".into(), crate::SERVER_ID.into());
    stats.insert("server_start".into(), rfc2822(start).into());
    stats.insert("server_start_iso8601".into(), iso8601(start).into());
    match sources.len() {
        0 => {}
        1 => {
            stats.insert(
                "source".into(),
                sources.into_iter().next().unwrap_or(Value::Null),
            );
        }
        _ => {
            stats.insert("source".into(), Value::Array(sources));
        }
    }
    (
        [
            ("access-control-allow-origin", "*"),
            ("cache-control", "no-cache"),
        ],
        Json(json!({ "icestats": stats })),
    )
}

fn icecast_source(m: &Mount, base: &str) -> Value {
    let st = m.status();
    let sent = st
        .source
        .as_ref()
        .map(|s| s.headers.clone())
        .unwrap_or_default();
    let labels = describe::labels(m.conf().config.as_ref(), &sent);
    let started = st.source.as_ref().map_or(0, |s| unix(s.connected_at));
    let bitrate = describe::bitrate_kbps(&sent, &st.codec);
    let mut o = Map::new();
    o.insert(
        "audio_info".into(),
        describe::audio_info(&sent, &st.codec)
            .unwrap_or_default()
            .into(),
    );
    if let Some(b) = bitrate {
        o.insert("bitrate".into(), b.into());
    }
    if st.codec.channels > 0 {
        o.insert("channels".into(), st.codec.channels.into());
    }
    if st.codec.sample_rate > 0 {
        o.insert("samplerate".into(), st.codec.sample_rate.into());
    }
    o.insert(
        "genre".into(),
        labels.genre.clone().unwrap_or_default().into(),
    );
    o.insert(
        "listener_peak".into(),
        m.stats.listener_peak.load(Ordering::Relaxed).into(),
    );
    o.insert(
        "listeners".into(),
        m.stats.listeners.load(Ordering::Relaxed).into(),
    );
    o.insert("listenurl".into(), format!("{base}{}", m.name).into());
    o.insert(
        "server_description".into(),
        labels.description.clone().unwrap_or_default().into(),
    );
    o.insert(
        "server_name".into(),
        labels.name.clone().unwrap_or_default().into(),
    );
    o.insert(
        "server_type".into(),
        st.source
            .as_ref()
            .map_or("", |s| s.content_type.as_str())
            .into(),
    );
    o.insert(
        "server_url".into(),
        labels.url.clone().unwrap_or_default().into(),
    );
    o.insert("stream_start".into(), rfc2822(started).into());
    o.insert("stream_start_iso8601".into(), iso8601(started).into());
    if let Some(t) = &st.title {
        o.insert("title".into(), t.clone().into());
    }
    o.insert("dummy".into(), Value::Null);
    Value::Object(o)
}

/// Server-wide figures for `/admin/stats` (Icecast's element names).
pub fn admin_stats(station: &Station) -> Value {
    let c = &station.counters;
    let mounts = station.mounts.all();
    let listeners: usize = mounts
        .iter()
        .map(|m| m.stats.listeners.load(Ordering::Relaxed))
        .sum();
    let start = unix(station.started_at);
    let listener_total = c.listener_connections.load(Ordering::Relaxed);
    let connections = c.connections.load(Ordering::Relaxed);
    json!({
        "admin": station.config().admin_email,
        "client_connections": connections.saturating_sub(c.source_connections.load(Ordering::Relaxed)),
        "clients": listeners + station.mounts.live_sources(),
        "connections": connections,
        "host": station.config().hostname,
        "listener_connections": listener_total,
        "listeners": listeners,
        "location": station.config().location,
        "server_id": crate::SERVER_ID,
        "server_start": rfc2822(start),
        "server_start_iso8601": iso8601(start),
        "source_client_connections": c.source_connections.load(Ordering::Relaxed),
        "source_total_connections": c.source_connections.load(Ordering::Relaxed),
        "sources": station.mounts.live_sources(),
    })
}

/// One mount for `/admin/stats`: the public fields plus what only an operator sees.
pub fn admin_source(m: &Mount, base: &str) -> Value {
    let mut v = icecast_source(m, base);
    let st = m.status();
    if let Value::Object(o) = &mut v {
        o.remove("dummy");
        o.insert(
            "max_listeners".into(),
            m.conf().settings.max_listeners.to_string().into(),
        );
        o.insert(
            "public".into(),
            u8::from(
                st.source
                    .as_ref()
                    .is_some_and(|s| s.headers.public == Some(true)),
            )
            .into(),
        );
        o.insert(
            "slow_listeners".into(),
            m.stats.lagged_listeners.load(Ordering::Relaxed).into(),
        );
        o.insert(
            "source_ip".into(),
            st.source
                .as_ref()
                .map_or(String::new(), |s| s.peer.ip().to_string())
                .into(),
        );
        o.insert("total_bytes_read".into(), st.bytes_in.into());
        o.insert(
            "total_bytes_sent".into(),
            m.stats.bytes_sent.load(Ordering::Relaxed).into(),
        );
        o.insert(
            "user_agent".into(),
            st.source
                .as_ref()
                .map_or(String::new(), |s| s.user_agent.clone())
                .into(),
        );
        o.insert("fallback".into(), m.fallback().unwrap_or_default().into());
    }
    v
}

pub async fn api_status(
    State(station): State<Arc<Station>>,
    headers: HeaderMap,
) -> impl IntoResponse {
    let base = base_url(&station, &headers);
    let mounts: Vec<Value> = station
        .mounts
        .all()
        .iter()
        .filter(|m| !m.is_hidden())
        .map(|m| {
            let mut v = api_mount(m, &base);
            if let (Some(dj), Value::Object(o)) = (station.autodj.get(&m.name), &mut v) {
                o.insert("autodj".into(), super::autodj::autodj_json(&dj));
            }
            let pushes = station.pushes.of(&m.name);
            if let (false, Value::Object(o)) = (pushes.is_empty(), &mut v) {
                let list = pushes.iter().map(|p| p.json()).collect::<Vec<_>>();
                o.insert("push".into(), list.into());
            }
            v
        })
        .collect();
    let listeners: usize = station
        .mounts
        .all()
        .iter()
        .map(|m| m.stats.listeners.load(Ordering::Relaxed))
        .sum();
    let c = &station.counters;
    Json(json!({
        "server": {
            "id": crate::SERVER_ID,
            "started": iso8601(unix(station.started_at)),
            "uptime_s": station.started.elapsed().as_secs(),
            "sources": station.mounts.live_sources(),
            "listeners": listeners,
            "connections_total": c.connections.load(Ordering::Relaxed),
            "connections_rejected": c.rejected_connections.load(Ordering::Relaxed),
            "source_connections_total": c.source_connections.load(Ordering::Relaxed),
            "listener_connections_total": c.listener_connections.load(Ordering::Relaxed),
        },
        "mounts": mounts,
    }))
}

pub fn api_mount(m: &Mount, base: &str) -> Value {
    let st = m.status();
    let conf = m.conf();
    let cfg = conf.config.as_ref();
    let sent = st
        .source
        .as_ref()
        .map(|s| s.headers.clone())
        .unwrap_or_default();
    let labels = describe::labels(cfg, &sent);
    json!({
        "name": m.name,
        "listen_url": format!("{base}{}", m.name),
        "configured": cfg.is_some(),
        "live": st.source.is_some(),
        "content_type": st.source.as_ref().map(|s| s.content_type.clone()),
        "codec": (!st.codec.codec.is_empty()).then_some(st.codec.codec),
        "bitrate_kbps": describe::bitrate_kbps(&sent, &st.codec),
        "sample_rate": (st.codec.sample_rate > 0).then_some(st.codec.sample_rate),
        "channels": (st.codec.channels > 0).then_some(st.codec.channels),
        "title": st.title,
        "stream": {
            "name": labels.name,
            "description": labels.description,
            "genre": labels.genre,
            "url": labels.url,
            "public": labels.public,
        },
        "source": st.source.as_ref().map(|s| json!({
            "ip": s.peer.ip().to_string(),
            "user_agent": s.user_agent,
            "connected_at": iso8601(unix(s.connected_at)),
            "connected_s": st.source_uptime.as_secs(),
            "bytes_in": st.bytes_in,
            "junk_bytes": st.junk_bytes,
        })),
        "listeners": m.stats.listeners.load(Ordering::Relaxed),
        "listener_peak": m.stats.listener_peak.load(Ordering::Relaxed),
        "listener_connections_total": m.stats.listener_connections.load(Ordering::Relaxed),
        "listeners_dropped_lagging": m.stats.lagged_listeners.load(Ordering::Relaxed),
        "bytes_sent": m.stats.bytes_sent.load(Ordering::Relaxed),
    })
}

fn visible_live(station: &Station) -> Vec<Arc<Mount>> {
    station
        .mounts
        .all()
        .into_iter()
        .filter(|m| m.is_live() && !m.is_hidden())
        .collect()
}

pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// (year, month, day, hour, minute, second, weekday 0=Sunday) of a UTC unix time.
fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32, usize) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Days-to-civil conversion over 400-year eras (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    (
        y,
        m,
        d,
        (rem / 3600) as u32,
        (rem % 3600 / 60) as u32,
        (rem % 60) as u32,
        weekday,
    )
}

fn rfc2822(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (y, mo, d, h, mi, s, wd) = civil(secs);
    format!(
        "{}, {d:02} {} {y} {h:02}:{mi:02}:{s:02} +0000",
        DAYS[wd],
        MONTHS[(mo - 1) as usize]
    )
}

pub fn iso8601(secs: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(secs);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}+0000")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc2822(0), "Thu, 01 Jan 1970 00:00:00 +0000");
        assert_eq!(iso8601(1_795_338_000), "2026-11-22T09:00:00+0000");
        assert_eq!(rfc2822(951_782_400), "Tue, 29 Feb 2000 00:00:00 +0000");
    }
}
