//! Playlist files that point players at a mount: `.m3u`, `.pls` and `.xspf`; and reading
//! `.m3u` track lists (`onair push --playlist`).
//!
//! Rendering is pure: the caller supplies the absolute listen URL (built from the request's
//! Host and X-Forwarded-Proto) and the stream's display name.

/// The playlist formats served at `/mount.m3u`, `/mount.pls` and `/mount.xspf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlaylistKind {
    M3u,
    Pls,
    Xspf,
}

impl PlaylistKind {
    /// Splits `/live.m3u` into (`/live`, M3u); `None` for other paths.
    pub fn split_path(path: &str) -> Option<(&str, PlaylistKind)> {
        let (base, ext) = path.rsplit_once('.')?;
        let kind = match ext.to_ascii_lowercase().as_str() {
            "m3u" => PlaylistKind::M3u,
            "pls" => PlaylistKind::Pls,
            "xspf" => PlaylistKind::Xspf,
            _ => return None,
        };
        (!base.is_empty()).then_some((base, kind))
    }

    pub fn content_type(self) -> &'static str {
        match self {
            PlaylistKind::M3u => "audio/x-mpegurl",
            PlaylistKind::Pls => "audio/x-scpls",
            PlaylistKind::Xspf => "application/xspf+xml",
        }
    }
}

/// Renders a playlist with one entry, `url`, titled `title`.
pub fn render_playlist(kind: PlaylistKind, url: &str, title: &str) -> String {
    match kind {
        PlaylistKind::M3u => format!("#EXTM3U\n#EXTINF:-1,{}\n{url}\n", one_line(title)),
        PlaylistKind::Pls => format!(
            "[playlist]\nNumberOfEntries=1\nFile1={url}\nTitle1={}\nLength1=-1\nVersion=2\n",
            one_line(title)
        ),
        PlaylistKind::Xspf => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<playlist version=\"1\" xmlns=\"http://xspf.org/ns/0/\">\n  <trackList>\n    <track>\n      <location>{}</location>\n      <title>{}</title>\n    </track>\n  </trackList>\n</playlist>\n",
            escape_xml(url),
            escape_xml(title)
        ),
    }
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// Escapes text for XML element content and attribute values.
pub fn escape_xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

/// One entry of an `.m3u`/`.m3u8` playlist: where it is (a path or URL as written) and
/// the title from its `#EXTINF` line, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct M3uEntry {
    pub location: String,
    pub title: Option<String>,
}

/// Parses an M3U playlist (plain or extended): one location per line, `#EXTINF:secs,title`
/// before it, other `#` lines and blank lines ignored, a UTF-8 BOM and CRLF tolerated.
pub fn parse_m3u(text: &str) -> Vec<M3uEntry> {
    let mut out = Vec::new();
    let mut title = None;
    for line in text.trim_start_matches('\u{feff}').lines() {
        let line = line.trim();
        if let Some(info) = line.strip_prefix("#EXTINF:") {
            title = info
                .split_once(',')
                .map(|(_, t)| t.trim().to_string())
                .filter(|t| !t.is_empty());
        } else if !line.is_empty() && !line.starts_with('#') {
            out.push(M3uEntry {
                location: line.to_string(),
                title: title.take(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn m3u_entries() {
        let text = "\u{feff}#EXTM3U\r\n#EXTINF:215,Artist - Song, Live\r\nmusic/a.mp3\r\n\r\n# comment\n/abs/b.mp3\n#EXTINF:-1,\nc.mp3\n#EXTINF:3\n";
        let e = parse_m3u(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[0].location, "music/a.mp3");
        assert_eq!(e[0].title.as_deref(), Some("Artist - Song, Live"));
        assert_eq!(
            (e[1].location.as_str(), e[1].title.as_deref()),
            ("/abs/b.mp3", None)
        );
        assert_eq!(
            (e[2].location.as_str(), e[2].title.as_deref()),
            ("c.mp3", None)
        );
        assert!(parse_m3u("").is_empty());
    }

    #[test]
    fn split_paths() {
        assert_eq!(
            PlaylistKind::split_path("/live.m3u"),
            Some(("/live", PlaylistKind::M3u))
        );
        assert_eq!(
            PlaylistKind::split_path("/a.mp3.PLS"),
            Some(("/a.mp3", PlaylistKind::Pls))
        );
        assert_eq!(PlaylistKind::split_path("/live"), None);
        assert_eq!(PlaylistKind::split_path(".m3u"), None);
    }

    #[test]
    fn renders() {
        let url = "http://h:8000/live?a=1&b=2";
        assert!(render_playlist(PlaylistKind::M3u, url, "R\nX")
            .ends_with("#EXTINF:-1,R X\nhttp://h:8000/live?a=1&b=2\n"));
        assert!(render_playlist(PlaylistKind::Pls, url, "R")
            .contains("File1=http://h:8000/live?a=1&b=2\n"));
        let x = render_playlist(PlaylistKind::Xspf, url, "<R&D>");
        assert!(x.contains("<location>http://h:8000/live?a=1&amp;b=2</location>"));
        assert!(x.contains("<title>&lt;R&amp;D&gt;</title>"));
    }
}
