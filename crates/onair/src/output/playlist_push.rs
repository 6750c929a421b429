//! `onair push FILES`: files played by the playout engine (the AutoDJ's: same pacing, same
//! format checks, titles at the first byte of each track) into an internal mount, and
//! pushed from there to the remote by a [`Push`] in [`Mode::Playout`]. MP3 files go out as
//! they are (passthrough), or every file is decoded, normalised and encoded to one format
//! ([`Encode`], the AutoDJ's encoding playout and encoder input).
//!
//! Invariants: the playout only produces while the push is `Streaming` (paused otherwise;
//! in passthrough a gate on its sink also refuses the block in flight), and the push keeps
//! its place in the mount while disconnected, so after a reconnect the remote gets the
//! exact next frame: no audio skipped, none repeated (see [`crate::output::push`] for what
//! a vanished remote can take with it).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use onair_media::encode::{Codec, EncoderSettings};
use onair_proto::{
    frame::{Format, StreamInfo, Unit},
    playlist::parse_m3u,
};
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::{
    config::MountSettings,
    input::{
        autodj::library::{is_audio_name, read_track, Library},
        encoder::{self, EncoderError, EncoderOptions},
        file::AudioFile,
        playout::{
            Delivery, MountSink, Normalize, Playout, PlayoutEnd, PlayoutError,
            Settings as PlayoutSettings, Sink, Target, Track, TrackList,
        },
    },
    mount::Mount,
    output::push::{Mode, Push, PushError, PushSettings, PushState},
};

/// Chunks of the internal mount: short, so a title update and the audio it belongs to
/// reach the remote close together and little is in flight when a connection breaks.
const CHUNK: Duration = Duration::from_millis(200);
/// How often the gate looks whether a playout paused by it may go on (a state change
/// wakes it at once; the poll covers a pause that lands just after the wake-up).
const GATE_POLL: Duration = Duration::from_millis(100);

#[derive(Debug, Error)]
pub enum PlaylistPushError {
    #[error("nothing to play: give files, a folder or --playlist")]
    NoTracks,
    #[error("cannot read playlist {path}: {source}")]
    Playlist {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: no such file or folder")]
    Missing(PathBuf),
    #[error("no playable MP3 file among {0} tracks (onair push sends MP3 frames as they are)")]
    NoPlayable(usize),
    #[error("cannot claim the internal mount: {0}")]
    Mount(#[from] crate::mount::registry::AttachError),
    #[error(transparent)]
    Push(#[from] PushError),
    #[error(transparent)]
    Playout(#[from] PlayoutError),
    #[error("encoder: {0}")]
    Encoder(#[from] EncoderError),
}

/// Encoding instead of passthrough: every file (MP3, FLAC, Ogg, AAC, WAV ...) is decoded,
/// normalised and encoded to this format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encode {
    pub codec: Codec,
    pub bitrate_kbps: u32,
    pub sample_rate: u32,
    pub channels: u8,
    /// EBU R128 loudness normalisation (ReplayGain tags when present), as the AutoDJ.
    pub normalize: bool,
}

/// What `onair push` was asked to play.
#[derive(Debug, Clone, Default)]
pub struct Tracklist {
    /// Files, or folders (every audio file in them, by path).
    pub inputs: Vec<PathBuf>,
    pub playlist: Option<PathBuf>,
    pub shuffle: bool,
    pub looped: bool,
    /// `None`: MP3 passthrough.
    pub encode: Option<Encode>,
}

/// Collects the tracks with their titles (tags, else the file name; an `#EXTINF` title
/// wins for playlist entries). Blocking: reads folders and tags.
pub fn collect_tracks(list: &Tracklist) -> Result<Vec<Track>, PlaylistPushError> {
    let mut found: Vec<(PathBuf, Option<String>)> = Vec::new();
    for input in &list.inputs {
        if input.is_dir() {
            let library = Library::new(input.clone());
            library.rescan();
            found.extend(library.snapshot().iter().map(|t| (t.path.clone(), None)));
        } else if input.is_file() {
            found.push((input.clone(), None));
        } else {
            return Err(PlaylistPushError::Missing(input.clone()));
        }
    }
    if let Some(path) = &list.playlist {
        let text = std::fs::read_to_string(path).map_err(|source| PlaylistPushError::Playlist {
            path: path.clone(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for entry in parse_m3u(&text) {
            if entry.location.contains("://") {
                tracing::warn!(entry = %entry.location, "playlist: skipping a URL (onair push plays files)");
                continue;
            }
            found.push((base.join(&entry.location), entry.title));
        }
    }
    let tracks: Vec<Track> = found
        .into_iter()
        .enumerate()
        .map(|(i, (path, title))| {
            let tags = read_track(&path).ok();
            Track {
                // The list position: the same file twice is two tracks.
                id: i as u64,
                title: title
                    .or_else(|| tags.as_ref().map(|t| t.display.clone()))
                    .unwrap_or_else(|| path.display().to_string()),
                replaygain_db: tags.and_then(|t| t.replaygain_db),
                path,
            }
        })
        .collect();
    if tracks.is_empty() {
        return Err(PlaylistPushError::NoTracks);
    }
    Ok(tracks)
}

/// The stream format: that of the first track that loads as MP3. Tracks in another
/// format are skipped by the playout, so the remote gets one consistent stream.
pub fn stream_target(tracks: &[Track]) -> Result<Target, PlaylistPushError> {
    for t in tracks.iter().filter(|t| is_audio_name(&t.path)) {
        match AudioFile::load(&t.path) {
            Ok(f) if f.format == Format::Mpeg && f.info.sample_rate > 0 => {
                return Ok(Target {
                    codec: f.info.codec,
                    sample_rate: f.info.sample_rate,
                    channels: f.info.channels,
                    bitrate_kbps: f.info.bitrate / 1000,
                });
            }
            Ok(f) => {
                tracing::warn!(path = %t.path.display(), format = ?f.format, "not MP3; it will be skipped")
            }
            Err(e) => {
                tracing::warn!(path = %t.path.display(), error = %e, "unreadable; it will be skipped")
            }
        }
    }
    Err(PlaylistPushError::NoPlayable(tracks.len()))
}

/// Plays `list` to the push's remote until the list ends (not looped), `token` is
/// cancelled, or — with `once` — the first network error.
pub async fn run(
    list: Tracklist,
    settings: PushSettings,
    token: CancellationToken,
) -> Result<(), PlaylistPushError> {
    let encode = list.encode;
    let (tracks, target) = tokio::task::spawn_blocking(move || {
        let tracks = collect_tracks(&list)?;
        // Encoding takes any decodable file: no format to discover.
        let target = match encode {
            Some(_) => None,
            None => Some(stream_target(&tracks)?),
        };
        Ok::<_, PlaylistPushError>((tracks, target, list))
    })
    .await
    .map_err(|e| PlayoutError::Sink(format!("track scan failed: {e}")))?
    .map(|(tracks, target, list)| (TrackList::new(tracks, list.shuffle, list.looped), target))?;
    let mount_settings = MountSettings {
        chunk: CHUNK,
        ..MountSettings::default()
    };
    let mount = Arc::new(Mount::new("/push".into(), None, &mount_settings));
    let push = Push::new(
        mount.clone(),
        PushSettings {
            mode: Mode::Playout,
            ..settings.clone()
        },
    );
    let state = push.state();
    let playing = token.child_token();
    let agent = format!("onair push to {}", settings.target);
    let name = settings.target.to_string();
    let mut headers = settings.info.clone();
    let (playout, played) = match encode {
        None => {
            let target = target.ok_or(PlaylistPushError::NoPlayable(0))?;
            tracing::info!(
                codec = target.codec,
                sample_rate = target.sample_rate,
                channels = target.channels,
                "onair push: MP3 passthrough; the stream format is the first playable track's"
            );
            headers.bitrate = headers
                .bitrate
                .or((target.bitrate_kbps > 0).then(|| target.bitrate_kbps.to_string()));
            let sink = MountSink::attach(mount, "audio/mpeg", agent, headers)?;
            let gate = Gate {
                inner: sink,
                state: state.clone(),
                holding: false,
            };
            let (playout, task) = Playout::start(
                PlayoutSettings::new(name),
                target,
                tracks,
                gate,
                playing.clone(),
            );
            let task = Box::pin(async move { Ok::<_, PlaylistPushError>(task.await?) });
            (
                playout,
                task as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            )
        }
        Some(e) => {
            tracing::info!(
                codec = e.codec.name(),
                bitrate_kbps = e.bitrate_kbps,
                sample_rate = e.sample_rate,
                channels = e.channels,
                "onair push: encoding every track"
            );
            let mut opts = EncoderOptions::new(
                EncoderSettings {
                    codec: e.codec,
                    bitrate_kbps: e.bitrate_kbps,
                    vbr: false,
                    rate: e.sample_rate,
                    channels: u16::from(e.channels),
                },
                agent,
            );
            opts.headers = headers;
            let (tx, encoder_task) = encoder::start(mount, opts, playing.clone())?;
            let normalize = Normalize {
                enabled: e.normalize,
                ..Default::default()
            };
            let (playout, task) = Playout::start_encoding(
                PlayoutSettings::new(name),
                normalize,
                tracks,
                tx,
                playing.clone(),
            );
            let task = Box::pin(async move {
                let end = task.await?;
                let stop = encoder_task.finished().await?;
                tracing::debug!(encoder = stop.describe(), "onair push: encoder stopped");
                Ok::<_, PlaylistPushError>(end)
            });
            (
                playout,
                task as std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>>,
            )
        }
    };
    let pushing = async {
        let r = push.run(token.clone()).await;
        playing.cancel();
        r
    };
    let (pushed, played, ()) = tokio::join!(
        pushing,
        played,
        follow_push(playout, state, playing.clone())
    );
    pushed?;
    match played? {
        PlayoutEnd::Finished => tracing::info!("onair push: end of the track list"),
        end => tracing::debug!(?end, "onair push: playout stopped"),
    }
    Ok(())
}

/// A sink that takes audio only while the push streams: otherwise the playout pauses and
/// offers the same block again on resume.
struct Gate {
    inner: MountSink,
    state: watch::Receiver<PushState>,
    /// The gate has paused the playout and not yet let it go on.
    holding: bool,
}

impl Gate {
    fn open(&mut self) -> bool {
        let state = *self.state.borrow();
        let open = state == PushState::Streaming;
        if open == self.holding {
            self.holding = !open;
            if open {
                tracing::info!("onair push: playout resumed at the next frame");
            } else {
                tracing::info!(push = ?state, "onair push: playout paused until the push streams again");
            }
        }
        open
    }
}

impl Sink for Gate {
    fn track_start(&mut self, track: &Track, info: &StreamInfo) -> Delivery {
        if !self.open() {
            return Delivery::Paused;
        }
        self.inner.track_start(track, info)
    }

    fn audio(&mut self, data: &[u8], units: &[Unit], info: StreamInfo) -> Delivery {
        if !self.open() {
            return Delivery::Paused;
        }
        self.inner.audio(data, units, info)
    }

    fn idle(&mut self) {
        self.inner.idle();
    }
}

/// Pauses the playout while the push is not streaming and resumes it when it is again.
async fn follow_push(
    playout: Playout,
    mut state: watch::Receiver<PushState>,
    token: CancellationToken,
) {
    loop {
        let streaming = *state.borrow_and_update() == PushState::Streaming;
        let paused = playout.status().paused;
        if streaming && paused {
            playout.resume();
        } else if !streaming && !paused {
            playout.pause();
        }
        tokio::select! {
            r = state.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(GATE_POLL) => {}
            _ = token.cancelled() => return,
        }
    }
}
