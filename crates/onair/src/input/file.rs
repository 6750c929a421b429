//! Audio files played into a mount at real-time speed: fallback files (looped for as long as
//! the server runs) and intro files (sent once to each new listener). A file is read once,
//! cut into whole frames/pages by the same framer as live sources (tags, garbage and MP3
//! Xing/Info/VBRI header frames dropped: they describe one file and are wrong mid-stream;
//! a truncated last frame is never kept), and — for playback — released on the pacer's deadlines from the frames' own
//! durations, never from an assumed bitrate. Icecast sends fallback files as fast as the
//! network takes them; players then buffer minutes of audio and drift.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use onair_proto::{
    frame::{Format, Framer, StreamInfo, Unit, UnitKind},
    icecast::StreamInfoHeaders,
    pace::Pacer,
};
use thiserror::Error;

use crate::mount::{Compat, Mount, SourceClaim, SourceInfo};

/// Files larger than this are refused (a fallback file is held in memory).
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// How far ahead of real time frames are handed to the mount.
const LEAD: Duration = Duration::from_millis(500);
/// Media time handed over per wake-up.
const STEP: Duration = Duration::from_millis(200);

#[derive(Debug, Error)]
pub enum FileError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path}: unknown audio file type (use .mp3, .aac or .ogg/.opus)")]
    UnknownType { path: PathBuf },
    #[error("{path}: no {format:?} audio frames found")]
    NoAudio { path: PathBuf, format: Format },
}

/// A file cut into whole units.
#[derive(Debug, Clone)]
pub struct AudioFile {
    pub path: PathBuf,
    pub format: Format,
    pub content_type: &'static str,
    pub info: StreamInfo,
    /// Only the units that are stream data (junk removed), back to back.
    pub data: Bytes,
    pub units: Vec<Unit>,
    pub duration: Duration,
}

impl AudioFile {
    /// Reads and frames `path` (blocking: call at start-up or from `spawn_blocking`).
    pub fn load(path: &Path) -> Result<AudioFile, FileError> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        let (format, content_type) = match ext.as_str() {
            "mp3" | "mp2" | "mpga" => (Format::Mpeg, "audio/mpeg"),
            "aac" | "adts" => (Format::Adts, "audio/aac"),
            "ogg" | "oga" | "opus" => (Format::Ogg, "audio/ogg"),
            _ => {
                return Err(FileError::UnknownType {
                    path: path.to_path_buf(),
                })
            }
        };
        let read_err = |source| FileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read_err)?.len();
        if len > MAX_FILE_BYTES {
            return Err(FileError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let raw = std::fs::read(path).map_err(read_err)?;
        let mut framer = Framer::new(format);
        let mut data = Vec::with_capacity(raw.len());
        let mut units = Vec::new();
        let mut duration = Duration::ZERO;
        let mut pos = 0;
        while let Some(unit) = framer.next_unit(&raw[pos..]) {
            let bytes = &raw[pos..pos + unit.len];
            pos += unit.len;
            if unit.kind == UnitKind::Junk
                || (format == Format::Mpeg && onair_proto::frame::mpeg::is_info_frame(bytes))
            {
                continue;
            }
            if unit.sample_rate > 0 {
                duration += Duration::from_nanos(
                    u64::from(unit.samples) * 1_000_000_000 / u64::from(unit.sample_rate),
                );
            }
            data.extend_from_slice(bytes);
            units.push(unit);
        }
        if !units.iter().any(|u| u.kind == UnitKind::Audio) || duration.is_zero() {
            return Err(FileError::NoAudio {
                path: path.to_path_buf(),
                format,
            });
        }
        Ok(AudioFile {
            path: path.to_path_buf(),
            format,
            content_type,
            info: framer.stream_info(),
            data: Bytes::from(data),
            units,
            duration,
        })
    }

    pub fn compat(&self) -> Compat {
        Compat::new(self.format, &self.info)
    }

    fn source_info(&self) -> SourceInfo {
        SourceInfo {
            content_type: self.content_type.to_string(),
            format: self.format,
            headers: StreamInfoHeaders::default(),
            peer: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            user_agent: format!("onair file player ({})", self.path.display()),
            connected_at: SystemTime::now(),
        }
    }
}

/// Makes `file` the source of `mount` (before the player task runs, so the mount is live
/// as soon as the station has started).
pub fn claim(file: &AudioFile, mount: &Mount) -> Result<SourceClaim, String> {
    mount
        .attach_source(file.source_info(), None)
        .map_err(|e| format!("{}: {e}", mount.name))
}

/// Plays `file` into `mount` (claimed with [`claim`]) in a loop at real-time speed until
/// `token` is cancelled.
pub async fn run_loop(
    file: Arc<AudioFile>,
    mount: Arc<Mount>,
    claim: SourceClaim,
    token: tokio_util::sync::CancellationToken,
) -> Result<(), String> {
    tracing::info!(mount = %mount.name, file = %file.path.display(), seconds = file.duration.as_secs_f64(), "file player started");
    let mut pacer = Pacer::new(std::time::Instant::now(), LEAD);
    let mut i = 0usize;
    let mut offset = 0usize;
    loop {
        // Hand over up to STEP of media, then wait for the pacer.
        let (start_i, start_off) = (i, offset);
        let mut media = Duration::ZERO;
        while i < file.units.len() && media < STEP {
            let u = file.units[i];
            if u.sample_rate > 0 {
                media += Duration::from_nanos(
                    u64::from(u.samples) * 1_000_000_000 / u64::from(u.sample_rate),
                );
                pacer.advance(u64::from(u.samples), u.sample_rate);
            }
            offset += u.len;
            i += 1;
        }
        if !mount.ingest(
            claim.ticket,
            &file.data[start_off..offset],
            &file.units[start_i..i],
            file.info,
        ) {
            return Err(format!("{}: lost the mount", mount.name));
        }
        if i == file.units.len() {
            i = 0;
            offset = 0;
        }
        pacer.resync_if_late(std::time::Instant::now(), Duration::from_secs(2));
        let deadline = tokio::time::Instant::from_std(pacer.deadline());
        tokio::select! {
            _ = token.cancelled() => {
                mount.detach_source(claim.ticket);
                return Ok(());
            }
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn load_keeps_whole_frames_and_drops_tags() {
        let dir = std::env::temp_dir().join(format!("onair-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.mp3");
        // ID3v2 tag, 10 frames of 128k/44.1k stereo, an ID3v1 tag.
        let mut raw = b"ID3\x04\x00\x00\x00\x00\x00\x04abcd".to_vec();
        // A LAME "Info" header frame first: dropped like the tags.
        let mut info = vec![0xFF, 0xFB, 0x90, 0x64];
        info.resize(417, 0);
        info[36..40].copy_from_slice(b"Info");
        raw.extend_from_slice(&info);
        for _ in 0..10 {
            let mut f = vec![0xFF, 0xFB, 0x90, 0x64];
            f.resize(417, 0x55);
            raw.extend_from_slice(&f);
        }
        let mut v1 = b"TAG".to_vec();
        v1.resize(128, b' ');
        raw.extend_from_slice(&v1);
        std::fs::write(&path, &raw).unwrap();
        let f = AudioFile::load(&path).unwrap();
        assert_eq!(f.data.len(), 4170);
        assert!(!f.data.windows(4).any(|w| w == b"Info"));
        assert_eq!(f.units.len(), 10);
        assert_eq!(f.info.sample_rate, 44_100);
        assert_eq!(f.duration.as_micros(), 10 * 1152 * 1_000_000 / 44_100);

        std::fs::write(&path, b"not audio at all").unwrap();
        assert!(matches!(
            AudioFile::load(&path),
            Err(FileError::NoAudio { .. })
        ));
        assert!(matches!(
            AudioFile::load(&dir.join("x.wav")),
            Err(FileError::UnknownType { .. })
        ));
        assert!(matches!(
            AudioFile::load(&dir.join("missing.mp3")),
            Err(FileError::Read { .. })
        ));
    }
}
